from aios_client import call_tool  # noqa: F401
