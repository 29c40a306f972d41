from aios_client import (create_memory, get_memory, update_memory, delete_memory,  # noqa: F401
                         search_memories, create_agentic_memory)
