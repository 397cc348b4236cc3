"""`heatgw flash`, up to the device boundary, with the real tools.

ESP32: firmware images made in the test by esptool itself (elf2image from a tiny Xtensa
ELF, merge-bin into MicroPython's layout and into a merged image) and read by esptool's
own `image-info`; wrong-chip (an ESP32-S3 image), truncated and damaged files refused with
their messages; the serial side against a port with no ESP32 behind it (a pty) through the
real esptool. RP2040: a UF2 file written here with struct (not by the code under test),
checked by the flash code and copied to a folder standing in for the BOOTSEL drive, with
an INFO_UF2.TXT like the boot ROM's; every error message. A real board: tests marked
`hardware` (HEATGW_PORT, and HEATGW_FIRMWARE for a write).
"""

import hashlib
import os
import pty
import random
import re
import struct
import subprocess
import sys

import pytest

from host_tools import flash, uf2
from host_tools.paths import REPO
from tests.espimages import APP_OFFSET, ESPTOOL, esptool, firmware

RP2_INFO = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
RP2350_INFO = "UF2 Bootloader v1.0\nModel: Raspberry Pi RP2350\nBoard-ID: RP2350\n"


def heatgw_flash(*args):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "flash", *map(str, args)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("esp")
    return {(chip, layout): firmware(tmp, chip, layout)
            for chip in ("esp32", "esp32s3") for layout in ("micropython", "merged")}


# -- ESP32 images -----------------------------------------------------------------------

def test_micropython_layout_is_written_at_0x1000_and_esptool_agrees(images):
    fw = images["esp32", "micropython"]
    info = esptool("image-info", fw)  # the bootloader at the file's start
    assert "Chip ID: 0 (ESP32)" in info and "Checksum: " in info
    assert info.count("(valid)") == 2, info
    app = fw.read_bytes()[APP_OFFSET - 0x1000:]
    assert "(valid)" in esptool("--chip", "esp32", "image-info", _save(fw, "app", app))
    got = flash.check_esp32(fw.read_bytes())
    assert got["address"] == 0x1000 and got["app_offset"] == APP_OFFSET
    assert got["partitions"] == ["nvs", "phy_init", "factory", "vfs"]
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only", fw)
    assert rc == 0 and "starts with the bootloader, goes at 0x1000" in out, out


def test_merged_image_is_written_at_0x0(images):
    fw = images["esp32", "merged"]
    data = fw.read_bytes()
    assert set(data[:0x1000]) == {0xFF}  # merge-bin's fill up to the bootloader
    r = subprocess.run([ESPTOOL, "image-info", str(fw)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "invalid magic number: 0xff" in r.stdout + r.stderr
    for name, at in (("boot", 0x1000), ("app", APP_OFFSET)):  # the parts, where they sit
        part = _save(fw, name, data[at:])
        assert "(valid)" in esptool("--chip", "esp32", "image-info", part)
    assert flash.check_esp32(data)["address"] == 0
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only", fw)
    assert rc == 0 and "merged (from 0x0), goes at 0x0" in out, out
    # the Olimex board is an ESP32 too
    assert heatgw_flash("--board", "olimex_esp32_poe", "--check-only", fw)[0] == 0


def _save(fw, name, data):
    p = fw.with_name(f"{fw.stem}-{name}.bin")
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("layout", ["micropython", "merged"])
def test_an_esp32_s3_image_is_refused_for_an_esp32_board(images, layout):
    fw = images["esp32s3", layout]
    if layout == "micropython":  # esptool says what it is
        assert "Chip ID: 9 (ESP32-S3)" in esptool("image-info", fw)
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only", fw)
    assert rc == 2
    assert ("wrong chip: the file's bootloader is an ESP32-S3 image; this board takes an "
            "ESP32 image (MicroPython's ESP32_GENERIC firmware)") in out, out


def _cut(images, tmp_path, n=None, flip=None):
    data = bytearray(images["esp32", "micropython"].read_bytes())
    if flip is not None:
        data[flip] ^= 0x55
    p = tmp_path / f"cut-{n}-{flip}.bin"
    p.write_bytes(bytes(data[:n]))
    return p


@pytest.mark.parametrize("where,message", [
    (0x20, "truncated or damaged: the bootloader at 0x1000 cannot be read whole"),
    (0x6000, "truncated: the file ends before the partition table at 0x8000"),
    (APP_OFFSET - 0x1000, "truncated or incomplete: no application at 0x10000"),
    (APP_OFFSET - 0x1000 + 4000, "truncated or damaged: the application at 0x10000 cannot "
                                 "be read whole"),
    (-10, "truncated or damaged: the application at 0x10000 fails its SHA-256 digest"),
])
def test_truncated_images_are_refused_with_where(images, tmp_path, where, message):
    p = _cut(images, tmp_path, n=where)
    r = subprocess.run([ESPTOOL, "image-info", str(p)],
                       capture_output=True, text=True)
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only", p)
    assert rc == 2 and message in out, out
    if where > 0x1000:  # esptool's view of the bootloader is unchanged: the cut is later
        assert r.returncode == 0


def test_damaged_images_are_refused(images, tmp_path):
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only",
                           _cut(images, tmp_path, flip=APP_OFFSET - 0x1000 + 200))
    assert rc == 2 and "damaged: the application at 0x10000 fails its checksum" in out, out
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--check-only",
                           _cut(images, tmp_path, flip=0x8000 - 0x1000 + 40))
    assert rc == 2 and "damaged: the partition table at 0x8000 fails its MD5" in out, out


def test_files_that_are_no_esp32_image(tmp_path, images):
    cases = {
        "empty.bin": (b"", "the file is empty"),
        "x.uf2": (_uf2(b"\x00" * 512), "not an ESP32 firmware image: it is a UF2 file"),
        "x.elf": ((images["esp32", "micropython"].parent / "esp32-app.elf").read_bytes(),
                  "not an ESP32 firmware image: it is an ELF file"),
        "x.txt": (b"hello world\n" * 100, "not an ESP32 firmware image: it starts with 68 65 "
                                          "6c 6c, not the image magic 0xe9"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        rc, out = heatgw_flash("--board", "esp32_devkitc", tmp_path / name)
        assert rc == 2 and message in out, (name, out)
    rc, out = heatgw_flash("--board", "esp32_devkitc", tmp_path / "missing.bin")
    assert rc == 2 and "missing.bin: cannot be read (No such file or directory)" in out


def test_esp32_port_errors_through_the_real_esptool(images):
    fw = images["esp32", "micropython"]
    rc, out = heatgw_flash("--board", "esp32_devkitc", fw)
    assert rc == 1 and "error: no port: give the board's serial port with --port (" in out
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--port", "/dev/ttyHEATGW-none", fw)
    assert rc == 1 and "error: no port /dev/ttyHEATGW-none: no such device" in out
    master, slave = pty.openpty()  # a serial port with nothing behind it
    try:
        port = os.ttyname(slave)
        rc, out = heatgw_flash("--board", "esp32_devkitc", "--port", port, fw)
    finally:
        os.close(master)
        os.close(slave)
    assert rc == 1, out
    assert (f"error: no ESP32 answered on {port}: Failed to connect to Espressif device: "
            "No serial data received.") in out, out
    assert "hold BOOT while pressing EN" in out
    # a bad file is refused before any port is opened
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--port", port,
                           images["esp32s3", "merged"])
    assert rc == 2 and "wrong chip" in out


def test_usage_errors():
    rc, out = heatgw_flash("--board", "esp8266", "x.bin")
    assert rc == 2 and "invalid choice: 'esp8266'" in out
    rc, out = heatgw_flash("--board", "pico_w", "--port", "/dev/ttyACM0", "x.uf2")
    assert rc == 2 and "--port is for ESP32 boards: the pico_w takes its UF2" in out
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--drive", "/tmp", "x.bin")
    assert rc == 2 and "--drive and --wait are for RP2040 boards" in out


# -- RP2040 UF2 --------------------------------------------------------------------------

def _uf2(payload, base=0x10000000, family=0xE48BFF56, chunk=256, flags=0x2000):
    """A UF2 file written here, field by field (the format in host_tools/uf2.py's doc)."""
    parts = [payload[i:i + chunk] for i in range(0, len(payload), chunk)]
    out = b""
    for i, part in enumerate(parts):
        out += struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, base + i * chunk, chunk, i,
                           len(parts), family)
        out += part.ljust(chunk, b"\xff").ljust(476, b"\x00") + struct.pack("<I", 0x0AB16F30)
    return out


@pytest.fixture
def payload():
    return random.Random(7).randbytes(300 * 1024 + 100)  # 1201 blocks, the last one short


def drive(tmp_path, info=RP2_INFO, name="RPI-RP2"):
    d = tmp_path / name
    d.mkdir()
    if info is not None:
        (d / "INFO_UF2.TXT").write_text(info)
        (d / "INDEX.HTM").write_text('<html><head><meta http-equiv="refresh" content="0;'
                                     'URL=\'https://raspberrypi.com/device/RP2?version=E0C9'
                                     '125B0D9B\'"/></head></html>\n')
    return d


def test_a_uf2_is_checked_and_copied_to_the_bootsel_drive(tmp_path, payload):
    fw = tmp_path / "RPI_PICO_W-test.uf2"
    fw.write_bytes(_uf2(payload))
    assert fw.stat().st_size == 1201 * 512
    info = uf2.check(fw.read_bytes())
    assert info == {"blocks": 1201, "bytes": 1201 * 256, "first": 0x10000000,
                    "end": 0x10000000 + 1201 * 256, "family": 0xE48BFF56}
    blocks = uf2.parse(fw.read_bytes())
    assert b"".join(b["payload"] for b in blocks)[:len(payload)] == payload
    d = drive(tmp_path)
    rc, out = heatgw_flash("--board", "pico_w", "--drive", d, fw)
    assert rc == 0, out
    assert f"1201 blocks ({1201 * 256} bytes) copied to {d}; the board reboots into it" in out
    copied = d / fw.name
    assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(
        fw.read_bytes()).digest()
    assert re.search(r"copying RPI_PICO_W-test\.uf2 +━+ +614\.9/614\.9 kB", out), out
    rc, out = heatgw_flash("--board", "pico_w", "--check-only", fw)
    assert rc == 0 and "RP2040 UF2, 1201 blocks, 307456 bytes at 0x10000000..0x1004b100" in out


def test_the_drive_is_found_by_its_info_uf2_txt(tmp_path):
    ok = drive(tmp_path)
    other = drive(tmp_path, RP2350_INFO, "RP2350")
    plain = drive(tmp_path, None, "USBSTICK")
    assert flash.find_drives([str(plain), str(other), str(ok), "/nonexistent"]) == [str(ok)]
    assert flash.read_info(ok) == {"Model": "Raspberry Pi RP2", "Board-ID": "RPI-RP2"}


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_uf2_errors_each_with_its_message(tmp_path, payload, images):
    small = payload[:4096]  # 16 blocks
    good = _uf2(small)
    swapped = bytearray(good)
    swapped[512 * 3:512 * 4], swapped[512 * 4:512 * 5] = good[512 * 4:512 * 5], \
        good[512 * 3:512 * 4]
    damaged = bytearray(good)
    damaged[512 * 5 + 508] ^= 1
    s3_uf2 = tmp_path / "s3.uf2"  # esptool's own UF2, for an ESP32-S3
    esptool("--chip", "esp32s3", "merge-bin", "--format", "uf2", "-o", s3_uf2, "0x0",
            images["esp32s3", "micropython"])
    cases = {
        "esp32-image.bin": (images["esp32", "micropython"].read_bytes(),
                            "not a UF2 file: its first block does not start with the UF2 "
                            "magic numbers"),
        "empty.uf2": (b"", "the file is empty"),
        "cut-in-block.uf2": (good[:512 * 7 + 100], "truncated: 3684 bytes is no whole number "
                                                   "of 512-byte blocks (block 7 is cut after "
                                                   "100 bytes)"),
        "cut-blocks.uf2": (good[:512 * 10], "truncated: 10 of its 16 blocks"),
        "swapped.uf2": (bytes(swapped), "block sequence broken: block 3 of the file is "
                                        "numbered 4"),
        "damaged.uf2": (bytes(damaged), "block 5 (file offset 2560) is damaged: wrong magic "
                                        "numbers"),
        "rp2350.uf2": (_uf2(small, family=0xE48BFF59),
                       "wrong chip: block 0 is for RP2350 (ARM, secure) (family 0xe48bff59), "
                       "not RP2040 (0xe48bff56)"),
        "esp32s3.uf2": (s3_uf2.read_bytes(), "wrong chip: block 0 is for ESP32-S3 (family "
                                             "0xc47e5767), not RP2040"),
        "no-family.uf2": (_uf2(small, flags=0, family=len(small)),
                          "block 0 names no family id (flag 0x2000)"),
        "ram.uf2": (_uf2(small, base=0x20000000), "block 0: address 0x20000000 is outside the "
                                                  "RP2040's flash (0x10000000..0x10200000)"),
        "too-big.uf2": (_uf2(small, base=0x10200000 - 8 * 256),
                        "block 8: address 0x10200000 is outside the RP2040's flash"),
        "unaligned.uf2": (_uf2(small, base=0x10000080), "block 0: address 0x10000080 is not "
                                                        "256-byte aligned"),
        "chunk476.uf2": (_uf2(small, chunk=476), "block 0: payload of 476 bytes, the RP2040 "
                                                 "boot ROM takes 256"),
    }
    twice = bytearray(good)
    twice[512 * 2 + 12:512 * 2 + 16] = struct.pack("<I", 0x10000000)
    cases["twice.uf2"] = (bytes(twice), "block 2: address 0x10000000 is written twice")
    d = drive(tmp_path)
    for name, (data, message) in cases.items():
        rc, out = heatgw_flash("--board", "pico_w", "--drive", d, _write(tmp_path, name, data))
        assert rc == 2, (name, out)
        assert f"error: {tmp_path / name}: {message}" in out, (name, out)
    assert sorted(p.name for p in d.iterdir()) == ["INDEX.HTM", "INFO_UF2.TXT"]  # none copied


def test_drive_errors_each_with_its_message(tmp_path, payload):
    fw = _write(tmp_path, "fw.uf2", _uf2(payload[:2048]))
    rc, out = heatgw_flash("--board", "pico_w", fw)  # this machine has no RPI-RP2 mounted
    assert rc == 1 and ("error: no drive: no RPI-RP2 drive is mounted (hold BOOTSEL while "
                        "plugging the Pico W in") in out, out
    rc, out = heatgw_flash("--board", "pico_w", "--drive", tmp_path / "gone", fw)
    assert rc == 1 and f"error: no drive at {tmp_path / 'gone'}: not a mounted folder" in out
    plain = drive(tmp_path, None, "USBSTICK")
    rc, out = heatgw_flash("--board", "pico_w", "--drive", plain, fw)
    assert rc == 1 and f"{plain} is no UF2 bootloader drive (it has no INFO_UF2.TXT)" in out
    other = drive(tmp_path, RP2350_INFO, "RP2350")
    rc, out = heatgw_flash("--board", "pico_w", "--drive", other, fw)
    assert rc == 1 and ("wrong chip: the drive at " f"{other} is a RP2350 bootloader "
                        "(Board-ID), not the RP2040's RPI-RP2") in out, out
    full = drive(tmp_path, RP2_INFO, "BROKEN")  # the copy itself fails (here: the name
    (full / "fw.uf2").mkdir()                   # is taken by a folder; also a full drive)
    rc, out = heatgw_flash("--board", "pico_w", "--drive", full, fw)
    assert rc == 1 and f"copying to {full / 'fw.uf2'} failed: Is a directory" in out, out


# -- a real board --------------------------------------------------------------------------

@pytest.mark.hardware
def test_flash_a_real_esp32():
    """HEATGW_PORT: an ESP32 board; HEATGW_FIRMWARE: MicroPython's ESP32_GENERIC .bin.
    Erases the board: run it on a bench board only."""
    fw = os.environ.get("HEATGW_FIRMWARE")
    if not fw or not fw.endswith(".bin"):
        pytest.skip("set HEATGW_FIRMWARE to an ESP32 firmware .bin")
    rc, out = heatgw_flash("--board", "esp32_devkitc", "--port", os.environ["HEATGW_PORT"], fw)
    assert rc == 0 and "written at 0x1000" in out, out
