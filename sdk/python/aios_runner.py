"""aios_runner: runs a Cerebrum-style agent package the way AIOS's agent
factory does: import build.entry, take the class named build.module,
construct it with the agent's name, call .run(task), print the result as
the last line of stdout (JSON when it is a dict or list). Without an
installed Cerebrum SDK, `import cerebrum.llm.apis` and friends resolve to
the stand-in in compat/ (aios_client under Cerebrum's module names).

    python3 aios_runner.py ENTRY.py MODULE TASK
"""

import importlib.util
import inspect
import json
import os
import sys


def main(argv):
    if len(argv) != 4:
        print("usage: aios_runner.py ENTRY.py MODULE TASK", file=sys.stderr)
        return 2
    entry, module, task = argv[1], argv[2], argv[3]
    sys.path.insert(0, os.path.dirname(os.path.abspath(entry)))
    # agents written for AIOS import cerebrum.*: without the real SDK, use
    # the stand-in in compat/ (appended, so an installed cerebrum wins)
    try:
        import cerebrum  # noqa: F401
    except ImportError:
        sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat"))
    spec = importlib.util.spec_from_file_location("aios_agent_entry", entry)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = getattr(mod, module, None)
    if cls is None:
        print("aios_runner: %s defines no %s (build.module in config.json)" % (entry, module),
              file=sys.stderr)
        return 2
    name = os.environ.get("AIOS_AGENT_NAME", module)
    obj = cls
    if inspect.isclass(cls):
        try:
            obj = cls(name)
        except TypeError:
            obj = cls()
    result = obj.run(task) if hasattr(obj, "run") else obj(task)
    if isinstance(result, (dict, list)):
        line = json.dumps(result)
    else:
        line = str(result)
    rf = os.environ.get("AIOS_RESULT_FILE")
    if rf:
        with open(rf, "w") as f:
            f.write(line)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
