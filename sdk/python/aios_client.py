"""aios_client: a stdlib-only Python client for the AIOS /query protocol.

Agents written for AIOS/Cerebrum call functions such as ``llm_chat``,
``llm_call_tool``, ``create_memory``, ``search_memories`` or ``write_file``;
this one module provides them with the same names and arguments, so a Python
agent runs on aios with no ``pip install``. Every call is one
``POST {base_url}/query`` with ``{"agent_name", "query_type", "query_data"}``
and returns the kernel's answer as a dict: ``{"response": {...},
"start_times": [...], ...}``. A kernel error (4xx/5xx) raises ``AiosError``
with the HTTP status and the kernel's message; ``AiosError.status == 501``
means the kernel has no manager for that kind of call. As with the
reference kernel, a tool query or LLM action whose calls all failed is not
an exception: its ``response`` has ``finished: False``, ``error`` and the
failure's ``status_code``.

The kernel URL comes from ``base_url``, else ``$AIOS_KERNEL_URL``, else
``$CEREBRUM_KERNEL_URL``, else http://127.0.0.1:8000. When the agent runs
under aios its token ($AIOS_AGENT_TOKEN) is sent as ``X-Aios-Agent-Token``.
"""

import json
import os
import urllib.error
import urllib.request

__all__ = [
    "AiosError", "kernel_url", "send_request",
    "llm_chat", "llm_chat_with_json_output", "llm_chat_with_tool_call_output",
    "llm_call_tool", "llm_operate_file", "list_available_llms",
    "create_memory", "get_memory", "update_memory", "delete_memory",
    "search_memories", "create_agentic_memory",
    "mount", "create_file", "create_dir", "write_file", "retrieve_file",
    "rollback_file", "share_file", "call_tool",
    "submit_agent", "agent_status", "agents_ps",
]


class AiosError(Exception):
    """A refused or failed call: .status is the HTTP status (0: unreachable)."""

    def __init__(self, status, message):
        super().__init__("HTTP %s: %s" % (status, message) if status else message)
        self.status = status
        self.message = message


def kernel_url(base_url=None):
    url = (base_url or os.environ.get("AIOS_KERNEL_URL")
           or os.environ.get("CEREBRUM_KERNEL_URL") or "http://127.0.0.1:8000")
    return url.rstrip("/")


def _http(method, base_url, path, body=None, timeout=300):
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(kernel_url(base_url) + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    token = os.environ.get("AIOS_AGENT_TOKEN") or os.environ.get("AIOS_TOKEN")
    if token:
        req.add_header("X-Aios-Agent-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            j = json.loads(raw)
            msg = (j.get("error") or {}).get("message") or j.get("detail") or raw
        except ValueError:
            msg = raw
        raise AiosError(e.code, msg) from None
    except urllib.error.URLError as e:
        raise AiosError(0, "cannot reach the kernel at %s: %s"
                        % (kernel_url(base_url), e.reason)) from None


def send_request(agent_name, query_type, query_data, base_url=None, timeout=300):
    """One AIOS query; returns the whole answer dict."""
    return _http("POST", base_url, "/query", {
        "agent_name": agent_name, "query_type": query_type, "query_data": query_data,
    }, timeout)


# ---- LLM -------------------------------------------------------------------

def _llm(agent_name, messages, action, base_url=None, llms=None, tools=None,
         response_format=None, temperature=None, max_new_tokens=None,
         message_return_type="text", **extra):
    qd = {
        "query_class": "llm", "llms": llms, "messages": messages, "tools": tools,
        "action_type": action, "message_return_type": message_return_type,
        "response_format": response_format,
    }
    if temperature is not None:
        qd["temperature"] = temperature
    if max_new_tokens is not None:
        qd["max_new_tokens"] = max_new_tokens
    qd.update(extra)
    return send_request(agent_name, "llm", qd, base_url)


def llm_chat(agent_name, messages, base_url=None, llms=None, **kw):
    return _llm(agent_name, messages, "chat", base_url, llms, **kw)


def llm_chat_with_json_output(agent_name, messages, base_url=None, llms=None,
                              response_format=None, **kw):
    return _llm(agent_name, messages, "chat_with_json_output", base_url, llms,
                response_format=response_format, message_return_type="json", **kw)


def llm_chat_with_tool_call_output(agent_name, messages, tools, base_url=None, llms=None, **kw):
    return _llm(agent_name, messages, "chat_with_tool_call_output", base_url, llms,
                tools=tools, **kw)


def llm_call_tool(agent_name, messages, tools, base_url=None, llms=None, **kw):
    return _llm(agent_name, messages, "call_tool", base_url, llms, tools=tools, **kw)


def llm_operate_file(agent_name, messages, tools=None, base_url=None, llms=None, **kw):
    return _llm(agent_name, messages, "operate_file", base_url, llms, tools=tools, **kw)


def list_available_llms(base_url=None):
    return _http("GET", base_url, "/core/llms/list")


# ---- memory ----------------------------------------------------------------

def _mem(agent_name, op, params, base_url):
    return send_request(agent_name, "memory", {
        "query_class": "memory", "operation_type": op, "params": params}, base_url)


def create_memory(agent_name, content, metadata=None, base_url=None):
    return _mem(agent_name, "add_memory", {"content": content, "metadata": metadata or {}}, base_url)


def get_memory(agent_name, memory_id, base_url=None):
    return _mem(agent_name, "get_memory", {"memory_id": memory_id}, base_url)


def update_memory(agent_name, memory_id, content, metadata=None, base_url=None):
    return _mem(agent_name, "update_memory",
                {"memory_id": memory_id, "content": content, "metadata": metadata or {}}, base_url)


def delete_memory(agent_name, memory_id, base_url=None):
    return _mem(agent_name, "remove_memory", {"memory_id": memory_id}, base_url)


def search_memories(agent_name, query, k=5, base_url=None):
    return _mem(agent_name, "retrieve_memory", {"content": query, "k": k}, base_url)


def create_agentic_memory(agent_name, content, metadata=None, base_url=None):
    return _mem(agent_name, "add_agentic_memory",
                {"content": content, "metadata": metadata or {}}, base_url)


# ---- storage ---------------------------------------------------------------

def _sto(agent_name, op, params, base_url):
    return send_request(agent_name, "storage", {
        "query_class": "storage", "operation_type": op, "params": params}, base_url)


def mount(agent_name, root_dir, base_url=None):
    return _sto(agent_name, "mount", {"root": root_dir}, base_url)


def create_file(agent_name, file_path, base_url=None):
    return _sto(agent_name, "create_file", {"file_path": file_path}, base_url)


def create_dir(agent_name, dir_path, base_url=None):
    return _sto(agent_name, "create_dir", {"dir_path": dir_path}, base_url)


def write_file(agent_name, file_path, content, base_url=None):
    return _sto(agent_name, "write", {"file_path": file_path, "content": content}, base_url)


def retrieve_file(agent_name, query_text, k=3, keywords=None, root_dir=None, base_url=None):
    p = {"query_text": query_text, "k": k}
    if keywords:
        p["keywords"] = keywords
    if root_dir:
        p["root_dir"] = root_dir
    return _sto(agent_name, "retrieve", p, base_url)


def rollback_file(agent_name, file_path, n=1, time=None, base_url=None):
    return _sto(agent_name, "rollback", dict({"file_path": file_path, "n": n}, **({"time": time} if time else {})), base_url)


def share_file(agent_name, file_path, base_url=None, with_agent=None):
    p = {"file_path": file_path}
    if with_agent:
        p["agent"] = with_agent
    return _sto(agent_name, "share", p, base_url)


# ---- tools -----------------------------------------------------------------

def call_tool(agent_name, tool_calls, base_url=None):
    """tool_calls: [{"name": "author/tool", "parameters": {...}}, ...]"""
    return send_request(agent_name, "tool", {"query_class": "tool", "tool_calls": tool_calls},
                        base_url)


# ---- agents (kernel routes) ------------------------------------------------

def submit_agent(agent_id, task, base_url=None):
    return _http("POST", base_url, "/agents/submit",
                 {"agent_id": agent_id, "agent_config": {"task": task}})


def agent_status(execution_id, base_url=None):
    return _http("GET", base_url, "/agents/%d/status" % int(execution_id))


def agents_ps(base_url=None):
    return _http("GET", base_url, "/agents/ps")
