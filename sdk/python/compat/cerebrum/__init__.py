"""A minimal stand-in for the Cerebrum SDK (agiresearch/Cerebrum), used by
aios_runner.py only when the real `cerebrum` package is not installed. It
maps Cerebrum's API modules onto aios_client so agents written for AIOS run
unchanged: cerebrum.llm.apis, cerebrum.memory.apis, cerebrum.storage.apis,
cerebrum.tool.apis, cerebrum.config.config_manager."""
