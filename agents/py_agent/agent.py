"""py_agent: a Cerebrum-style Python agent (a class with run(task)) on the
stdlib-only aios_client module. aios runs it through sdk/python/aios_runner.py
(build.module in config.json), like AIOS's agent factory does.

It chats with the LLM, keeps a note in memory and a file in storage; a
manager the kernel does not have (HTTP 501) is reported under "skipped".
"""

from aios_client import AiosError, create_memory, llm_chat, search_memories, write_file


class PyAgent:
    def __init__(self, agent_name):
        self.agent_name = agent_name

    def run(self, task):
        print("py_agent: task:", task, flush=True)
        messages = [{"role": "system", "content": "You are a helpful agent."},
                    {"role": "user", "content": task}]
        r = llm_chat(self.agent_name, messages, max_new_tokens=8, temperature=0.7, seed=3)
        resp = r["response"]
        text = resp["response_message"]
        print("py_agent: llm answered %d tokens in %.3fs"
              % (resp.get("usage", {}).get("completion_tokens", 0), r["turnaround_times"][0]),
              flush=True)
        result = {"agent": "py_agent", "answer_chars": len(text), "skipped": []}
        try:
            m = create_memory(self.agent_name, "task: " + task)["response"]
            hits = search_memories(self.agent_name, task, k=3)["response"]
            result["memory_id"] = m.get("memory_id")
            result["memory_hits"] = len(hits.get("search_results") or [])
            print("py_agent: memory note", m.get("memory_id"), flush=True)
        except AiosError as e:
            if e.status != 501:
                raise
            print("SKIP: memory manager not in this kernel (501)", flush=True)
            result["skipped"].append("memory")
        try:
            w = write_file(self.agent_name, "py_agent/answer.txt", text)["response"]
            result["file"] = "py_agent/answer.txt"
            print("py_agent: storage:", w.get("response_message"), flush=True)
        except AiosError as e:
            if e.status != 501:
                raise
            print("SKIP: storage manager not in this kernel (501)", flush=True)
            result["skipped"].append("storage")
        return result
