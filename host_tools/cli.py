"""`heatgw`: one command for installers and operators, subcommands in one table.

    heatgw --help                 the table below, one line each
    heatgw NAME --help            a subcommand's own options
    heatgw NAME [ARGS...]         run it (exit status: the subcommand's)

Installed into the venv as a console script (pyproject.toml `[project.scripts]`; the
Makefile's venv bootstrap installs the project editable, so `make` on a fresh clone gives
`.venv/bin/heatgw`); `python -m host_tools.cli` is the same command.

The table, COMMANDS, maps a name to (handler module, one-line help), as mpremote keeps its
commands in one table. A handler module is imported only when its command runs, so
`heatgw --help` imports nothing but this file (the table's help lines are here, not in the
modules) and answers at once.

Adding a subcommand (e.g. `monitor`, `report`, `sim`) is one line here and a module:
1. write host_tools/NAME.py (or reuse the module that does the job) with
   `def main(argv=None) -> int`: it parses `argv` with its own argparse parser and returns
   the exit status: 0 done, 1 the job failed (the device, the node, the broker), 2 bad
   usage or input (argparse's own exit status too). Build the parser with no `prog=`:
   argparse takes it from sys.argv[0], which this command sets to `heatgw NAME`, so
   usage and errors read `heatgw NAME ...` (and `python -m host_tools.NAME` still works).
   Errors are one clear line on stderr naming what is wrong, never a traceback;
2. import heavy libraries (paho, rich, the firmware) inside main(), not at module level,
   when the module is imported by others too;
3. add `"NAME": ("host_tools.NAME", "one line of help")` to COMMANDS below, in the order
   an installer meets them;
4. add it to tests/test_cli.py's expectations if it needs more than `--help` to work
   (every entry's `--help` is run by the tests already).
"""

import importlib
import sys

PROG = "heatgw"

COMMANDS = {
    "sim": ("host_tools.sim",
            "the gateway on a simulated plant and a broker: live view, faults, record, report"),
    "scenario": ("host_tools.harness",
                 "run one scenario of the simulated plant against the real firmware"),
    "flash": ("host_tools.flash",
              "write MicroPython's firmware to a board (ESP32: esptool; Pico W: UF2 drive)"),
    "provision": ("host_tools.provision",
                  "a node's configuration and secrets, validated, written sealed, read back"),
    "deploy": ("host_tools.deploy",
               "copy the node's code and configuration to a board, only what changed"),
    "command": ("host_tools.command",
                "sign a command for a node, and publish it to its broker"),
    "monitor": ("host_tools.monitor",
                "show a site's nodes live; record every record (SQLite, PostgreSQL)"),
    "report": ("host_tools.report",
               "the commissioning report of a record: HTML with plots, JSON, PDF"),
}


def usage():
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: {PROG} COMMAND [ARGS...]   ({PROG} COMMAND --help for its options)",
             "", "heatgw: waste-heat gateway tools", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    entry = COMMANDS.get(name)
    if entry is None:
        sys.stderr.write(usage())
        sys.stderr.write(f"{PROG}: error: no command {name!r} (choose from "
                         f"{', '.join(COMMANDS)})\n")
        return 2
    module = importlib.import_module(entry[0])
    saved = sys.argv[0]
    sys.argv[0] = f"{PROG} {name}"  # argparse's prog: usage and errors read `heatgw NAME`
    try:
        rc = module.main(rest)
    except SystemExit as e:  # argparse: --help (0), bad usage (2); sys.exit("why"): 1
        rc = e.code
        if rc is not None and not isinstance(rc, int):
            sys.stderr.write(f"{rc}\n")
            rc = 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {name}: interrupted\n")
        rc = 130
    finally:
        sys.argv[0] = saved
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
