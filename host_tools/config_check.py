"""Check a heatgw configuration file on the host with the firmware's own validator.

    python -m host_tools.config_check FILE     errors on stderr, exit 1; or the filled
                                               config (defaults included) on stdout, exit 0
    python -m host_tools.config_check --doc    every key: type, default, range, unit, doc

The schema and validator are firmware/heatgw/config_schema.py and schema.py, imported
unchanged (firmware/ goes on sys.path), so the host and the device judge a file alike.
"""

import json
import sys

from host_tools.paths import FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config  # noqa: E402  (needs firmware/ on sys.path)
from heatgw.config_schema import SCHEMA  # noqa: E402


def check(path):
    """(filled config, []) for a valid file, else (None, [error, ...]). Never raises."""
    cfg, errors, source = config.load(str(path))
    if source != "file":
        return None, errors
    return cfg, []


def doc_lines(node=SCHEMA, path=""):
    """One line per key of the schema, for installers."""
    lines = []
    for key in sorted(node.get("keys", {})):
        sub = node["keys"][key]
        p = f"{path}.{key}" if path else key
        parts = [sub["type"] + (" or null" if sub.get("null") else "")]
        if sub.get("req"):
            parts.append("required")
        elif "default" in sub and sub["type"] != "object":
            parts.append("default " + json.dumps(sub["default"]))
        if "enum" in sub:
            parts.append("one of " + ", ".join(json.dumps(e) for e in sub["enum"]))
        if "min" in sub or "max" in sub:
            parts.append(f"{sub.get('min', '')} ... {sub.get('max', '')}")
        if "unit" in sub:
            parts.append(sub["unit"])
        lines.append(f"{p}: {'; '.join(parts)} - {sub.get('doc', '')}")
        if sub["type"] == "object":
            lines += doc_lines(sub, p)
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--doc"]:
        print("\n".join(doc_lines()))
        return 0
    if len(argv) != 1:
        print("usage: python -m host_tools.config_check FILE | --doc", file=sys.stderr)
        return 2
    cfg, errors = check(argv[0])
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    print(json.dumps(cfg, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
