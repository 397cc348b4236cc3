"""Generate firmware/heatgw/config_parts.py: heatgw.config_schema.SCHEMA in pieces.

    .venv/bin/python -m host_tools.gen_config_parts          # write it
    .venv/bin/python -m host_tools.gen_config_parts --check  # exit 1 when it is stale

The schema is data (config_schema.py), and a dict literal is built in RAM when its module
is imported: the whole SCHEMA costs 17 KB of heap even from ROMFS (23 KB from .mpy, 64-bit
host). A node that boots has the heap for it; a running node that saves its configuration
(the console's `config save`, MQTT config_set) does not. config_parts holds the same data
as one function per top-level key, each building only its section when called (its
strings stay in ROM from ROMFS or a frozen image), and heatgw.cfgedit validates with the
very same validator (heatgw.schema) one section at a time. tests/test_config_heap.py fails
when the file differs from a fresh generation, and checks on the binary that every
section equals config_schema's.
"""

import argparse
import pprint
import sys

from host_tools.paths import FIRMWARE

OUT = FIRMWARE / "heatgw" / "config_parts.py"
WIDTH = 99

HEADER = '''# GENERATED FILE - do not edit by hand.
# Written by host_tools/gen_config_parts.py from firmware/heatgw/config_schema.py; after
# any change there, regenerate with
#     .venv/bin/python -m host_tools.gen_config_parts
# tests/test_config_heap.py fails when this file differs from a fresh generation.
"""heatgw.config_schema.SCHEMA in pieces (generated): SECTIONS[name]() builds one
top-level key's schema node, rules() the cross-field rules, so that a running node
validates its configuration one section at a time (heatgw.cfgedit) instead of holding the
whole schema in RAM. Without the documentation no error message quotes ("doc" is kept
where a required key or a "chars" check says it)."""
'''


class _Name:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


def _lean_tree(node, shared):
    """(lean copy of node, the lean copies of the shared dicts, still shared in it)."""
    memo = {}

    def walk(v):
        if isinstance(v, dict):
            if id(v) in memo:
                return memo[id(v)]
            out = {k: walk(x) for k, x in v.items()}
            if "doc" in out and not (v.get("req") or v.get("chars")):
                del out["doc"]
            if any(v is d for d in shared):
                memo[id(v)] = out
            return out
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    lean_node = walk(node)
    return lean_node, [memo[id(d)] for d in shared]


def _shared(node):
    """Dicts that occur more than once under node (by identity), in first-seen order."""
    seen, twice = {}, []

    def walk(v):
        if isinstance(v, dict):
            if id(v) in seen:
                if v is not node and all(x is not v for x in twice):
                    twice.append(v)
                return
            seen[id(v)] = v
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(node)
    return twice


def _swap(v, names):
    """v with every shared dict replaced by its variable's name."""
    for d, n in names:
        if v is d:
            return n
    if isinstance(v, dict):
        return {k: _swap(x, names) for k, x in v.items()}
    if isinstance(v, list):
        return [_swap(x, names) for x in v]
    return v


def _assign(lead, value):
    """`lead` + the value pretty-printed within WIDTH, continuation lines indented."""
    indent = " " * len(lead)
    text = pprint.pformat(value, width=WIDTH - len(lead), sort_dicts=True)
    lines = text.splitlines()
    return [lead + lines[0]] + [indent + x for x in lines[1:]]


def generate():
    # from the source, in a namespace of its own: never a SCHEMA that a host tool has
    # already completed in this process (mbschema.install replaces the modbus stub)
    import runpy

    ns = runpy.run_path(str(FIRMWARE / "heatgw" / "config_schema.py"))
    SCHEMA, VERSION = ns["SCHEMA"], ns["VERSION"]  # noqa: N806 - the module's names

    out = [HEADER, f"VERSION = {VERSION}",
           *_assign("ROOT = ", {k: v for k, v in SCHEMA.items()
                                if k not in ("keys", "rules")}),
           *_assign("NAMES = ", tuple(sorted(SCHEMA["keys"]))), ""]
    for name in sorted(SCHEMA["keys"]):
        node, lean_shared = _lean_tree(SCHEMA["keys"][name], _shared(SCHEMA["keys"][name]))
        shared = [(d, _Name(f"n{i}")) for i, d in enumerate(lean_shared)]
        out += ["", f"def _{name}():"]
        for d, n in shared:
            out += _assign(f"    {n} = ", _swap(d, [x for x in shared if x[0] is not d]))
        out += _assign("    return ", _swap(node, shared))
        out.append("")
    out += ["", "def rules():", *_assign("    return ", SCHEMA["rules"]), "", ""]
    out += _assign("SECTIONS = ", {n: _Name(f"_{n}") for n in sorted(SCHEMA["keys"])})
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    ns = ap.parse_args(argv)
    text = generate()
    if ns.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run .venv/bin/python -m host_tools.gen_config_parts",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
