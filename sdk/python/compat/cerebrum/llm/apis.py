from aios_client import (llm_chat, llm_chat_with_json_output, llm_chat_with_tool_call_output,  # noqa: F401
                         llm_call_tool, llm_operate_file, list_available_llms)
