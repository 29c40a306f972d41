from aios_client import AiosError, send_request as _send  # noqa: F401


def send_request(agent_name, query, base_url=None):
    """Cerebrum's send_request(agent_name, query, base_url): query is a dict
    (or an object with model_dump()) holding query_class and its fields."""
    qd = query.model_dump() if hasattr(query, "model_dump") else dict(query)
    return _send(agent_name, qd.get("query_class", "llm"), qd, base_url)
