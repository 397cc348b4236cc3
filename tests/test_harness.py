"""The harness itself: the real micropython binary runs, with the firmware path set."""

import os

from host_tools import fetch_mplibs
from host_tools.paths import MPLIBS, micropython_cmd


def test_micropython_binary_runs(mp):
    out = mp.run_code("import sys\nprint(sys.implementation.name)")
    assert out.strip() == "micropython"


def test_micropython_env_var_selects_binary(monkeypatch):
    monkeypatch.setenv("MICROPYTHON", "/opt/other/micropython")
    monkeypatch.setenv("MICROPYTHON_ARGS", "-X heapsize=64wK")
    assert micropython_cmd() == ["/opt/other/micropython", "-X", "heapsize=64wK"]


def test_pinned_mplibs_are_unpacked_and_import(mp):
    pins = fetch_mplibs.read_lock()
    assert {p[0] for p in pins} == {"micropython-umqtt.simple", "micropython-modbus"}
    for name, version, sha in pins:
        stamp = MPLIBS / f"{name}-{version}" / ".sha256"
        assert stamp.read_text().strip() == sha
    # Both import on the unix port (umqtt.simple imports `ussl` only for TLS connections,
    # and this port has no `ussl` alias: the MQTT issue has to provide one).
    out = mp.run_code("import umqtt.simple\nimport umodbus.tcp\nprint('ok')")
    assert out.strip() == "ok"


def test_index_url_comes_from_pip_configuration(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    assert fetch_mplibs.index_url() == "http://127.0.0.1:9/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    assert fetch_mplibs.index_url().startswith(("http", "file"))
    assert os.path.isabs(str(MPLIBS))
