"""cerebrum.manager.package: Cerebrum's package files (a zip of
metadata.json plus the package's files), as its SDK reads and writes them."""
import json
import os
import zipfile


class _Package:
    default_entry, default_module = "tool.py", "Tool"

    def __init__(self, path):
        self.path = path
        self.metadata = {}
        self.files = {}

    def load(self):
        with zipfile.ZipFile(self.path, "r") as z:
            self.metadata = json.loads(z.read("metadata.json").decode("utf-8"))
            for info in z.infolist():
                if info.filename != "metadata.json":
                    self.files[info.filename] = z.read(info.filename)

    def save(self):
        os.makedirs(os.path.dirname(str(self.path)), exist_ok=True)
        with zipfile.ZipFile(self.path, "w") as z:
            z.writestr("metadata.json", json.dumps(self.metadata))
            for name, content in self.files.items():
                z.writestr(name, content)

    def get_entry_point(self):
        return self.metadata.get("entry", self.default_entry)

    def get_module_name(self):
        return self.metadata.get("module", self.default_module)


class ToolPackage(_Package):
    def get_config(self):
        return self.metadata


class AgentPackage(_Package):
    default_entry, default_module = "agent.py", "Agent"

    def get_config(self):
        if "config.json" not in self.files:
            raise FileNotFoundError("Config file not found in package")
        config = json.loads(self.files["config.json"].decode("utf-8"))
        result = dict(config)
        meta, build = config.get("meta", {}), config.get("build", {})
        for key, src in (("author", meta), ("version", meta), ("license", meta),
                         ("entry", build), ("module", build)):
            result.setdefault(key, src.get(key))
        return result
