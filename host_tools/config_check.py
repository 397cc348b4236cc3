"""Check a heatgw configuration file on the host with the firmware's own validator.

    python -m host_tools.config_check FILE     errors on stderr, exit 1; or the filled
                                               config (defaults included) on stdout, exit 0
    python -m host_tools.config_check --doc    every key: type, default, range, unit, doc

The schema, validator and migrations are firmware/heatgw/config_schema.py, schema.py and
migrate.py, imported unchanged (firmware/ goes on sys.path), so the host and the device
judge a file alike. A file of an older version is migrated as the node would (never
written back here) and the migration is reported on stderr: "FILE: version 1 -> 2: ...".
"""

import json
import sys

from host_tools.paths import FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import anschema, bmsschema, config, mbschema, recschema  # noqa: E402 - on path
from heatgw.config_schema import SCHEMA  # noqa: E402

mbschema.install(SCHEMA)  # the host's tools know the whole schema (the node loads it on need)
recschema.install(SCHEMA)
anschema.install(SCHEMA)
bmsschema.install(SCHEMA)


def check(path):
    """(filled config, [], migration) for a valid file, else (None, [error, ...],
    migration); migration is None for a current file, else the node's migration event.
    The file is never modified. Never raises."""
    cfg, errors, source, migration = config.load(str(path), save=False)
    if source != "file":
        return None, errors, migration
    return cfg, [], migration


def migration_lines(path, migration):
    """What the node does with this file at boot, for the technician."""
    if migration is None:
        return []
    old, new = migration["migrated"][0], migration["migrated"][-1]
    lines = [f"{path}: version {old}, migrated to {new} as the node does at boot"]
    lines += [f"  {note}" for note in migration["notes"]]
    if not migration["needs"]:
        lines.append(f"  the node writes it back once as version {new}, the old file kept "
                     f"as <file>.v{old}")
    return lines


_REQ_WITH = {r[1]: r[2] for r in SCHEMA["rules"] if r[0] == "req"}  # key: required with
_ONE_OF = {f"{r[1]}.{k}": r[2] for r in SCHEMA["rules"] if r[0] == "one" for k in r[2]}


def doc_lines(node=SCHEMA, path=""):
    """One line per key of the schema, for installers."""
    lines = []
    for key in sorted(node.get("keys", {})):
        sub = node["keys"][key]
        p = f"{path}.{key}" if path else key
        parts = [sub["type"] + (" or null" if sub.get("null") else "")]
        if sub.get("req"):
            parts.append("required")
        elif p in _REQ_WITH:
            parts.append("required with " + _REQ_WITH[p])
        elif p in _ONE_OF:
            parts.append("exactly one of " + " or ".join(_ONE_OF[p]))
        elif "default" in sub and sub["type"] != "object":
            parts.append("default " + json.dumps(sub["default"]))
        if "enum" in sub:
            parts.append("one of " + ", ".join(json.dumps(e) for e in sub["enum"]))
        if "min" in sub or "max" in sub:
            parts.append(f"{sub.get('min', '')} ... {sub.get('max', '')}")
        if "step" in sub:
            parts.append(f"in steps of {sub['step']:g}")
        if "unit" in sub:
            parts.append(sub["unit"])
        lines.append(f"{p}: {'; '.join(parts)} - {sub.get('doc', '')}")
        if sub["type"] == "object":
            lines += doc_lines(sub, p)
            if "items" in sub:  # members the installer names: <name>
                it = sub["items"]
                lines.append(f"{p}.<name>: {it['type']} - {it.get('doc', '')}")
                lines += doc_lines(it, p + ".<name>")
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--doc"]:
        print("\n".join(doc_lines()))
        return 0
    if len(argv) != 1:
        print("usage: python -m host_tools.config_check FILE | --doc", file=sys.stderr)
        return 2
    cfg, errors, migration = check(argv[0])
    for line in migration_lines(argv[0], migration):
        print(line, file=sys.stderr)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    print(json.dumps(cfg, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
