"""cerebrum.manager.tool: Cerebrum's ToolManager (same methods, same cache
layout: user_cache_dir("cerebrum_tools")/author/name/<version with '-'>.tool).
aios fills that cache from its hub for every agent it launches, so
load_tool finds hub tools offline; a tool not in the cache is downloaded
from base_url (the kernel's own hub). Requirements are never installed:
missing ones are reported."""
import json
import os
from pathlib import Path

from cerebrum.manager import _hub
from cerebrum.manager.package import ToolPackage
from cerebrum.utils.manager import compare_versions, get_newest_version


class ToolManager:
    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(_hub.user_cache_dir("cerebrum_tools"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _get_cached_versions(self, author, name):
        d = self.cache_dir / author / name
        if not d.exists():
            return []
        return [_hub.path_to_version(v.stem) for v in d.glob("*.tool") if v.is_file()]

    def _get_cache_path(self, author, name, version):
        return self.cache_dir / author / name / ("%s.tool" % _hub.version_to_path(version))

    def package_tool(self, folder_path):
        with open(os.path.join(folder_path, "config.json")) as f:
            meta = json.load(f)
        return {
            "author": meta.get("meta", {}).get("author"),
            "name": meta.get("name"),
            "version": meta.get("meta", {}).get("version"),
            "license": meta.get("license", "Unknown"),
            "files": _hub.files_of(folder_path),
            "entry": meta.get("build", {}).get("entry", "tool.py"),
            "module": meta.get("build", {}).get("module", "Tool"),
        }

    def upload_tool(self, payload):
        _hub.upload(self, "/cerebrum/tools/upload", payload, "Tool")

    def download_tool(self, author, name, version=None):
        return _hub.download(self, "/cerebrum/tools/download", ToolPackage, author, name, version)

    def check_reqs_installed(self, tool_path):
        pkg = ToolPackage(tool_path)
        pkg.load()
        reqs = pkg.files.get("requirements.txt")
        return not self.missing_requirements(reqs)

    @staticmethod
    def missing_requirements(reqs):
        import importlib.metadata as md
        import importlib.util
        import re
        missing = []
        for line in (reqs or b"").decode("utf-8", "replace").splitlines():
            line = line.split("#")[0].strip()
            if not line or line.startswith("-"):
                continue
            name = re.split(r"[<>=!~;\[\s@]", line, maxsplit=1)[0]
            try:
                md.version(name)
            except Exception:
                if importlib.util.find_spec(name.replace("-", "_").lower()) is None:
                    missing.append(name)
        return missing

    def load_tool(self, author="", name="", version=None, local=False):
        if local:
            raise FileNotFoundError("no local tool %s: the stand-in SDK has no built-in tools; "
                                    "publish it to the hub (aios hub add FOLDER)" % name)
        if version is None:
            version = get_newest_version(self._get_cached_versions(author, name))
        path = self._get_cache_path(author, name, version) if version else None
        if path is None or not path.exists():
            author, name, version = self.download_tool(author, name, version)
            path = self._get_cache_path(author, name, version)
        pkg = ToolPackage(path)
        pkg.load()
        missing = self.missing_requirements(pkg.files.get("requirements.txt"))
        if missing:
            raise ImportError("tool %s/%s needs Python packages that are not installed: %s "
                              "(nothing is installed at run time)" % (author, name,
                                                                       ", ".join(missing)))
        cls = _hub.load_class(self.cache_dir / "temp" / ("%s_%s_%s" % (author, name, version)),
                              pkg.files, pkg.get_entry_point(), pkg.get_module_name())
        return cls, pkg.get_config()

    def list_toolhub_tools(self):
        tools = _hub.http("GET", self.base_url + "/cerebrum/tools/list")
        latest = {}
        for t in tools.values():
            key = "%s/%s" % (t["author"], t["name"])
            if key not in latest or compare_versions(t["version"], latest[key]["version"]) > 0:
                latest[key] = {"name": t["name"], "author": t["author"], "version": t["version"],
                               "description": t.get("description", "No description available")}
        return list(latest.values())

    def list_local_tools(self):
        return []

    def check_tool_updates(self, author, name, current_version):
        return _hub.http("GET", self.base_url + "/cerebrum/tools/check_updates",
                         params={"author": author, "name": name,
                                 "current_version": current_version})["update_available"]
