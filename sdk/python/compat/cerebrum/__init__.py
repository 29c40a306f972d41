"""A stand-in for the Cerebrum SDK (agiresearch/Cerebrum), used by
aios_runner.py only when the real `cerebrum` package is not installed. It
keeps Cerebrum's module names, classes and wire calls, with the standard
library only: cerebrum.llm.apis, cerebrum.memory.apis,
cerebrum.storage.apis, cerebrum.tool.apis (aios_client underneath),
cerebrum.tool.base (BaseTool), cerebrum.interface (AutoTool, AutoAgent),
cerebrum.manager.{tool,agent,package} (the hub client and Cerebrum's cache
layout), cerebrum.config.config_manager (config), cerebrum.utils."""
