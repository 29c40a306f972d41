"""The hub client shared by the tool and agent managers: Cerebrum's cache
directory (platformdirs.user_cache_dir on Linux, without platformdirs) and
its HTTP calls, with urllib. Under aios the hub is the kernel itself."""
import base64
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def user_cache_dir(app):
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return os.path.join(base, app)


def http(method, url, params=None, body=None):
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    token = os.environ.get("AIOS_AGENT_TOKEN") or os.environ.get("AIOS_TOKEN")
    if token:
        req.add_header("X-Aios-Agent-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            msg = (json.loads(raw).get("error") or {}).get("message") or raw
        except ValueError:
            msg = raw
        raise RuntimeError("HTTP %d from %s: %s" % (e.code, url, msg)) from None


def files_of(folder, only=None):
    out = []
    for root, _, names in os.walk(folder):
        for n in names:
            if only and not n.endswith(only):
                continue
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out.append({"path": os.path.relpath(p, folder),
                            "content": base64.b64encode(f.read()).decode("ascii")})
    return out


def upload(manager, route, payload, what):
    """POST a package to the kernel's hub (route: /cerebrum/tools/upload or
    /cerebrum/upload); what: "Tool" or "Agent"."""
    http("POST", manager.base_url + route, body=payload)
    print("%s %s/%s (v%s) uploaded successfully." % (
        what, payload.get("author"), payload.get("name"), payload.get("version")))


def download(manager, route, package_cls, author, name, version=None):
    """A package into the manager's cache, unless the asked (or newest
    cached) version is there: (author, name, version)."""
    from cerebrum.utils.manager import get_newest_version
    if version is None:
        version = get_newest_version(manager._get_cached_versions(author, name))
    if version is not None and manager._get_cache_path(author, name, version).exists():
        return author, name, version
    params = {"author": author, "name": name}
    if version:
        params["version"] = version
    data = http("GET", manager.base_url + route, params=params)
    actual = data.get("version", version)
    pkg = package_cls(manager._get_cache_path(author, name, actual))
    pkg.metadata = {k: data.get(k) for k in ("author", "name", "version", "license",
                                              "entry", "module")}
    pkg.files = {f["path"]: base64.b64decode(f["content"]) for f in data["files"]}
    pkg.save()
    return author, name, actual


def version_to_path(v):
    return v.replace(".", "-")


def path_to_version(p):
    return p.replace("-", ".")


def load_class(temp_dir, files, entry, module_name):
    """Write files into temp_dir, import entry, return its module_name."""
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = temp_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    sys.path.insert(0, str(temp_dir))
    try:
        spec = importlib.util.spec_from_file_location(module_name, str(temp_dir / entry))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return getattr(module, module_name)
    finally:
        sys.path.remove(str(temp_dir))
        sys.modules.pop(module_name, None)
