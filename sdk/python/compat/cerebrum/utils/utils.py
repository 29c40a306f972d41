"""cerebrum.utils.utils: the helpers Cerebrum's tools and agents import."""
import json
import os
import random
import re


def generator_tool_call_id():
    return str(random.randint(0, 1000))


def get_from_env(env_key, default=None):
    """An environment variable's value, else default, else ValueError."""
    value = os.environ.get(env_key)
    if value:
        return value
    if default is not None:
        return default
    raise ValueError("Did not find %s, please add an environment variable `%s` which "
                     "contains it." % (env_key, env_key))


def _parse_json_output(text):
    """The JSON object in a model's answer: inside ``` or \"\"\" fences or bare;
    {} when there is none."""
    for pattern in (r"```(?:json)?\s*(.*?)\s*```", r'"""(?:json)?\s*(.*?)\s*"""'):
        m = re.search(pattern, text, re.DOTALL)
        if m:
            text = m.group(1).strip()
    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(text[start:end + 1])
            except ValueError:
                pass
    return {}
