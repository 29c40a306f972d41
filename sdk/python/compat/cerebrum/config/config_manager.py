"""cerebrum.config.config_manager: Cerebrum's ConfigManager, without YAML.

The defaults of Cerebrum's config.yaml, overridden by the same environment
variables (CEREBRUM_KERNEL_URL, CEREBRUM_TOOL_HUB_URL, ...). Under aios the
kernel URL comes from AIOS_KERNEL_URL first, and the tool and agent hubs
default to the kernel itself, which serves them (nothing from the
internet)."""
import os


class ConfigManager:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._initialized = False
        return cls._instance

    def __init__(self):
        if self._initialized:
            return
        self._initialized = True
        kernel = (os.environ.get("AIOS_KERNEL_URL") or os.environ.get("CEREBRUM_KERNEL_URL")
                  or "http://localhost:8000").rstrip("/")
        self._config = {
            "kernel": {"base_url": kernel, "timeout": 30},
            "manager": {"agent_hub_url": kernel, "tool_hub_url": kernel},
        }
        env = {
            "CEREBRUM_KERNEL_TIMEOUT": ("kernel", "timeout"),
            "CEREBRUM_MEMORY_LIMIT": ("client", "memory_limit"),
            "CEREBRUM_MAX_WORKERS": ("client", "max_workers"),
            "CEREBRUM_ROOT_DIR": ("client", "root_dir"),
            "CEREBRUM_AGENT_HUB_URL": ("manager", "agent_hub_url"),
            "CEREBRUM_TOOL_HUB_URL": ("manager", "tool_hub_url"),
        }
        for var, path in env.items():
            if os.environ.get(var) is not None:
                self._set(path, os.environ[var])

    def _set(self, path, value):
        d = self._config
        for key in path[:-1]:
            d = d.setdefault(key, {})
        d[path[-1]] = value

    def get(self, *keys, default=None):
        cur = self._config
        for key in keys:
            if not isinstance(cur, dict):
                return default
            cur = cur.get(key, default)
            if cur is None:
                return default
        return cur

    def get_kernel_url(self):
        return self.get("kernel", "base_url")

    def get_agent_hub_url(self):
        return self.get("manager", "agent_hub_url")

    def get_tool_hub_url(self):
        return self.get("manager", "tool_hub_url")

    def update(self, **kwargs):
        for key, value in kwargs.items():
            self._set(tuple(key.split(".")), value)


config = ConfigManager()
