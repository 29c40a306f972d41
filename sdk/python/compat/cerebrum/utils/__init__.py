from .utils import get_from_env, _parse_json_output  # noqa: F401

__all__ = ["get_from_env"]
