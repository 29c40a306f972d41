"""cerebrum.tool.base: the base classes Cerebrum's tools derive from."""


class BaseTool:
    def __init__(self) -> None:
        pass

    def run(self, params):
        pass

    def get_tool_call_format(self) -> dict:
        pass


class BaseRapidAPITool(BaseTool):
    def __init__(self):
        super().__init__()
        self.url = None
        self.host_name = None
        self.api_key = None


class BaseHuggingfaceTool(BaseTool):
    def __init__(self):
        super().__init__()
        self.url = None
        self.host_name = None
        self.api_key = None
