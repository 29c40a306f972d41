"""cerebrum.manager.agent: Cerebrum's AgentManager (package, upload,
download, list, load), cache in user_cache_dir("cerebrum"), hub = the
kernel. Requirements are never installed."""
import base64
import json
import os
from pathlib import Path

from cerebrum.manager import _hub
from cerebrum.manager.package import AgentPackage
from cerebrum.utils.manager import compare_versions, get_newest_version


class AgentManager:
    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(_hub.user_cache_dir("cerebrum"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _get_cached_versions(self, author, name):
        d = self.cache_dir / author / name
        if not d.exists():
            return []
        return [_hub.path_to_version(v.stem) for v in d.glob("*.agent") if v.is_file()]

    def _get_cache_path(self, author, name, version):
        return self.cache_dir / author / name / ("%s.agent" % _hub.version_to_path(version))

    def package_agent(self, folder_path):
        with open(os.path.join(folder_path, "config.json")) as f:
            config = json.load(f)
        meta, build = config.get("meta", {}), config.get("build", {})
        result = dict(config)
        result.update({"author": meta.get("author"), "name": config.get("name"),
                       "version": meta.get("version"), "license": meta.get("license"),
                       "entry": build.get("entry"), "module": build.get("module")})
        result["files"] = _hub.files_of(folder_path, only=(".py", ".txt", ".json"))
        return result

    def upload_agent(self, payload):
        _hub.upload(self, "/cerebrum/upload", payload, "Agent")

    def download_agent(self, author, name, version=None):
        return _hub.download(self, "/cerebrum/download", AgentPackage, author, name, version)

    def list_agenthub_agents(self):
        agents = _hub.http("GET", self.base_url + "/cerebrum/get_all_agents")
        latest = {}
        for v in list(agents.values())[:-1]:
            key = "%s/%s" % (v["author"], v["name"])
            if key not in latest or compare_versions(v["version"], latest[key]["version"]) > 0:
                latest[key] = {"name": v["name"], "author": v["author"],
                               "version": v["version"], "description": v["description"]}
        return list(latest.values())

    def check_agent_updates(self, author, name, current_version):
        return _hub.http("GET", self.base_url + "/cerebrum/check_updates",
                         params={"author": author, "name": name,
                                 "current_version": current_version})["update_available"]

    def load_agent(self, author="", name="", version=None, local=False, path=None):
        if local:
            pkg_data = self.package_agent(path)
            pkg = AgentPackage(None)
            pkg.metadata = {k: pkg_data.get(k) for k in ("author", "name", "version", "license",
                                                      "entry", "module")}
            pkg.files = {f["path"]: base64.b64decode(f["content"]) for f in pkg_data["files"]}
        else:
            author, name, version = self.download_agent(author, name, version)
            pkg = AgentPackage(self._get_cache_path(author, name, version))
            pkg.load()
        config = pkg.get_config()
        cls_name = config.get("build", {}).get("class") or pkg.get_module_name()
        cls = _hub.load_class(self.cache_dir / "temp" / ("%s_%s_%s" % (author, name, version)),
                              pkg.files, pkg.get_entry_point(), cls_name)
        return cls, config
