"""cerebrum.interface: AutoTool and AutoAgent as Cerebrum has them.

AutoTool.from_preloaded("author/name") returns an instance of the hub
tool's class: from Cerebrum's tool cache, which aios fills from its hub
for every agent it launches, else downloaded from the hub (the kernel,
or $CEREBRUM_TOOL_HUB_URL). AutoAgent.from_preloaded("author/name")
returns the agent's class loaded from the agent hub."""
from cerebrum.config.config_manager import config
from cerebrum.manager.agent import AgentManager
from cerebrum.manager.tool import ToolManager


class AutoTool:
    TOOL_MANAGER = ToolManager(config.get_tool_hub_url())

    @classmethod
    def from_preloaded(cls, tool_name, local=False):
        if local:
            try:
                tool, _ = cls.TOOL_MANAGER.load_tool(local=True, name=tool_name)
            except Exception:
                raise Exception("Tool %s not found in your local device" % tool_name)
            return tool()
        if tool_name.count("/") != 1:
            raise Exception("Tool %s not found in the tool hub (name it author/name)" % tool_name)
        author, name = tool_name.split("/")
        try:
            tool, _ = cls.TOOL_MANAGER.load_tool(author, name)
        except ImportError as e:
            raise Exception("Tool %s cannot load: %s" % (tool_name, e))
        except Exception as e:
            raise Exception("Tool %s not found in the tool hub (%s)" % (tool_name, e))
        return tool()

    @classmethod
    def from_batch_preloaded(cls, tool_names):
        return [cls.from_preloaded(n) for n in tool_names]


class AutoAgent:
    AGENT_MANAGER = AgentManager(config.get_agent_hub_url())

    @classmethod
    def from_preloaded(cls, agent_name):
        if agent_name.count("/") != 1:
            raise Exception("Agent %s not found in the agent hub (name it author/name)"
                            % agent_name)
        author, name = agent_name.split("/")
        agent_class, _ = cls.AGENT_MANAGER.load_agent(author, name)
        return agent_class
