"""Write a MicroPython firmware image to a board: `heatgw flash --board BOARD FIRMWARE`.

    heatgw flash --board esp32_devkitc --port /dev/ttyUSB0 ESP32_GENERIC-v1.26.bin
    heatgw flash --board pico_w RPI_PICO_W-v1.26.uf2          [--drive /media/me/RPI-RP2]
    heatgw flash --board esp32_devkitc --check-only FIRMWARE   the file's checks, no board

The file is checked before any board is touched; nothing is written when it is wrong:

- ESP32 boards (esp32_devkitc, olimex_esp32_poe: mpy arch xtensawin): the image is read
  with esptool's own image loader. MicroPython's ESP32 firmware.bin starts with the
  second-stage bootloader and is written at the ESP32's bootloader offset, 0x1000; a
  merged image (`esptool merge-bin`, 0xFF up to 0x1000) is written at 0x0. Either way the
  bootloader, the partition table (with its MD5) and the application it names must be
  there whole, for the ESP32 (an ESP32-S3 image is refused), with valid checksums and
  SHA-256 digests. Then through esptool: the chip on --port is detected (it must be an
  ESP32), its flash erased (--no-erase keeps the file system, e.g. for an upgrade), the
  image written at that offset with esptool's progress bar and verified (esptool compares
  the flash's MD5 with the file's), and the chip reset.
- RP2040 boards (pico_w: armv6m): a UF2 file (host_tools/uf2.py: magic numbers, RP2040
  family id 0xE48BFF56 on every block, the block sequence, 256-byte payloads inside the
  RP2040's 2 MB flash), copied to the board's BOOTSEL drive (hold BOOTSEL while plugging
  it in): the mounted drive whose INFO_UF2.TXT says `Board-ID: RPI-RP2`, or --drive PATH.
  The board reboots into the new firmware once the last block arrived.

Exit status: 0 written, 1 the board or drive failed (or is the wrong chip), 2 bad usage or
a firmware file that is wrong for the board (nothing written).
"""

import argparse
import glob
import hashlib
import os
import struct
import sys
import time
from pathlib import Path

from host_tools import uf2

# chip per mpy arch (boards/<board>/board.py `ARCH`, host_tools.build_mpy)
CHIPS = {"xtensawin": "esp32", "armv6m": "rp2040"}
ESP32_NAME = "ESP32"  # esptool's CHIP_NAME of the classic ESP32
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_MD5_MAGIC = b"\xeb\xeb"
APP_TYPE = 0x00
RP2040_FLASH_BYTES = 2 << 20  # the Pico W's W25Q16JV
RP2_BOARD_ID = "RPI-RP2"  # INFO_UF2.TXT of the RP2040's boot ROM
DRIVE_GLOBS = ("/media/*/RPI-RP2", "/run/media/*/RPI-RP2", "/media/RPI-RP2",
               "/Volumes/RPI-RP2")
COPY_CHUNK = 32 * 1024


class FirmwareError(Exception):
    """The file is wrong for the board: exit 2, nothing written."""


class DeviceError(Exception):
    """No port, no drive, the wrong chip, a failed write: exit 1."""


def board_chips():
    from host_tools.build_mpy import TARGET_ARCHES

    return {b: CHIPS[a] for b, a in sorted(TARGET_ARCHES.items()) if a in CHIPS}


# -- ESP32: the image, offline ----------------------------------------------------------

def _rom(chip):
    from esptool.targets import CHIP_DEFS

    return CHIP_DEFS[chip]


def _chip_of_image_id(chip_id):
    from esptool.targets import CHIP_DEFS

    for name, rom in CHIP_DEFS.items():
        if name != "esp8266" and rom.IMAGE_CHIP_ID == chip_id:
            return rom.CHIP_NAME
    return f"unknown chip id {chip_id}"


def _what_else(data):
    """What a file that is no ESP image looks like, for the message."""
    if data[:4] == struct.pack("<I", uf2.MAGIC_START0):
        return "it is a UF2 file (for a UF2 drive, e.g. the Pico W's)"
    if data[:4] == b"\x7fELF":
        return "it is an ELF file (make a .bin of it with esptool elf2image)"
    return f"it starts with {data[:4].hex(' ')}, not the image magic 0xe9"


def _load_image(chip, data, what, flash_addr):
    """esptool's image loader on one image; FirmwareError unless whole and valid."""
    from esptool.bin_image import LoadFirmwareImage

    if not data or data[0] != 0xE9:
        if not data or set(data[:16]) == {0xFF}:
            raise FirmwareError(f"truncated or incomplete: no {what} at {flash_addr:#x} "
                                "(the file ends before it, or that part is empty)")
        raise FirmwareError(f"no {what} at {flash_addr:#x}: {_what_else(data)}")
    (chip_id,) = struct.unpack_from("<H", data.ljust(16, b"\x00"), 12)
    found = _chip_of_image_id(chip_id)
    want = _rom(chip).CHIP_NAME
    if found != want:
        raise FirmwareError(f"wrong chip: the file's {what} is an {found} image; "
                            f"this board takes an {want} image (MicroPython's "
                            f"{want.replace('-', '_')}_GENERIC firmware)")
    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as e:  # noqa: BLE001 - esptool: FatalError, struct.error, TypeError
        raise FirmwareError(f"truncated or damaged: the {what} at {flash_addr:#x} cannot be "
                            f"read whole ({e})") from None
    if image.checksum != image.calculate_checksum():
        raise FirmwareError(f"damaged: the {what} at {flash_addr:#x} fails its checksum")
    if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
        raise FirmwareError(f"truncated or damaged: the {what} at {flash_addr:#x} fails its "
                            "SHA-256 digest")
    return image


def _partitions(data, flash_addr):
    """The partition table's entries [(type, subtype, offset, size, label)]."""
    if len(data) < 32:
        raise FirmwareError(f"truncated: the file ends before the partition table at "
                            f"{flash_addr:#x}")
    rows, md5_ok = [], None
    for i in range(0, min(len(data), 0xC00) - 31, 32):
        e = data[i:i + 32]
        if e[:2] == PARTITION_MAGIC:
            ptype, sub, off, size, label, _ = struct.unpack("<2xBBLL16sL", e)
            rows.append((ptype, sub, off, size, label.rstrip(b"\x00").decode(errors="replace")))
        elif e[:2] == PARTITION_MD5_MAGIC:
            md5_ok = e[16:32] == hashlib.md5(data[:i]).digest()
            break
        else:
            break
    if not rows:
        raise FirmwareError(f"no partition table at {flash_addr:#x} (its magic 0xAA50 is "
                            "missing)")
    if md5_ok is False:
        raise FirmwareError(f"damaged: the partition table at {flash_addr:#x} fails its MD5")
    return rows


def check_esp32(data, chip="esp32"):
    """Where the image goes and what is in it: {"address", "layout", "app_offset",
    "app_bytes", "end"}; FirmwareError names what is wrong (module doc)."""
    if not data:
        raise FirmwareError("the file is empty")
    boot = _rom(chip).BOOTLOADER_FLASH_OFFSET
    if data[0] == 0xE9:
        address, layout = boot, "starts with the bootloader"
    elif boot and len(data) > boot and set(data[:boot]) == {0xFF} and data[boot] == 0xE9:
        address, layout = 0, "merged (from 0x0)"
    else:
        raise FirmwareError(f"not an {_rom(chip).CHIP_NAME} firmware image: {_what_else(data)}")

    def part(flash_addr):
        return data[flash_addr - address:] if flash_addr >= address else b""

    _load_image(chip, part(boot), "bootloader", boot)
    rows = _partitions(part(PARTITION_TABLE_OFFSET), PARTITION_TABLE_OFFSET)
    apps = [r for r in rows if r[0] == APP_TYPE]
    if not apps:
        raise FirmwareError("the partition table names no application partition")
    app_offset = apps[0][2]
    app = _load_image(chip, part(app_offset), "application", app_offset)
    return {"address": address, "layout": layout, "app_offset": app_offset,
            "app_segments": len(app.segments), "end": address + len(data),
            "partitions": [r[4] for r in rows]}


# -- ESP32: the board, through esptool -------------------------------------------------

def _serial_ports():
    try:
        from serial.tools import list_ports

        return [p.device for p in list_ports.comports()]
    except Exception:  # noqa: BLE001 - only for the message
        return []


def check_port(port):
    if not port:
        found = _serial_ports()
        raise DeviceError("no port: give the board's serial port with --port ("
                          + (f"serial ports here: {', '.join(found)}" if found
                             else "no serial port found here: is the board plugged in?")
                          + ")")
    if "://" not in port and not os.path.exists(port):
        raise DeviceError(f"no port {port}: no such device (is the board plugged in? "
                          f"serial ports here: {', '.join(_serial_ports()) or 'none'})")


def flash_esp32(data, port, chip="esp32", erase=True, baud=460800, attempts=3):
    info = check_esp32(data, chip)
    check_port(port)
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        detect_flash_size,
        erase_flash,
        reset_chip,
        run_stub,
        write_flash,
    )
    from esptool.util import flash_size_bytes

    want = _rom(chip).CHIP_NAME
    try:
        esp = detect_chip(port, connect_attempts=attempts)
    except Exception as e:  # noqa: BLE001 - esptool FatalError, SerialException, OSError
        raise DeviceError(f"no {want} answered on {port}: {str(e).splitlines()[0]} (hold "
                          "BOOT while pressing EN to enter the bootloader; check the USB "
                          "cable carries data)") from None
    try:
        if esp.CHIP_NAME != want:
            raise DeviceError(f"wrong chip: the board on {port} is an {esp.CHIP_NAME}, this "
                              f"board and its firmware are for an {want}")
        esp = run_stub(esp)
        if baud and baud != esp.ESP_ROM_BAUD:
            esp.change_baud(baud)
        attach_flash(esp)
        size = detect_flash_size(esp)
        if size and flash_size_bytes(size) < info["end"]:
            raise DeviceError(f"the image ends at {info['end']:#x}, past the board's {size} "
                              "flash")
        if erase:
            erase_flash(esp)
        write_flash(esp, [(info["address"], data)])  # verifies the flash's MD5 after
        reset_chip(esp, "hard-reset")
    except DeviceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DeviceError(f"writing to {port} failed: {e}") from None
    finally:
        try:
            esp._port.close()
        except Exception:  # noqa: BLE001, S110
            pass
    return info


# -- RP2040: the UF2 drive -------------------------------------------------------------

def read_info(drive):
    """INFO_UF2.TXT of a UF2 drive as {key: value}; DeviceError if it is none."""
    p = Path(drive)
    if not p.is_dir():
        raise DeviceError(f"no drive at {drive}: not a mounted folder")
    try:
        text = (p / "INFO_UF2.TXT").read_text(errors="replace")
    except OSError:
        raise DeviceError(f"{drive} is no UF2 bootloader drive (it has no INFO_UF2.TXT)") \
            from None
    info = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            info[k.strip()] = v.strip()
    return info


def _mount_points():
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]


def find_drives(candidates=None):
    """Mounted RP2040 BOOTSEL drives: folders whose INFO_UF2.TXT says Board-ID: RPI-RP2."""
    if candidates is None:
        candidates = _mount_points() + [p for g in DRIVE_GLOBS for p in glob.glob(g)]
    found = []
    for c in dict.fromkeys(candidates):
        try:
            if read_info(c).get("Board-ID") == RP2_BOARD_ID:
                found.append(c)
        except DeviceError:
            continue
    return found


def pick_drive(drive=None, wait_s=0.0):
    if drive:
        board_id = read_info(drive).get("Board-ID")
        if board_id != RP2_BOARD_ID:
            raise DeviceError(f"wrong chip: the drive at {drive} is a {board_id or 'UF2'} "
                              f"bootloader (Board-ID), not the RP2040's {RP2_BOARD_ID}")
        return drive
    give_up = time.monotonic() + wait_s
    while True:
        drives = find_drives()
        if len(drives) == 1:
            return drives[0]
        if len(drives) > 1:
            raise DeviceError(f"{len(drives)} RPI-RP2 drives are mounted ({', '.join(drives)}):"
                              " pick one with --drive")
        if time.monotonic() >= give_up:
            raise DeviceError("no drive: no RPI-RP2 drive is mounted (hold BOOTSEL while "
                              "plugging the Pico W in; mount the drive; or give its folder "
                              "with --drive)")
        time.sleep(0.5)


def copy_uf2(data, drive, name, progress):
    """The UF2 onto the drive in chunks (a progress bar), synced."""
    dest = Path(drive) / name
    task = progress.add_task(f"copying {name}", total=len(data))
    try:
        with open(dest, "wb") as f:
            for i in range(0, len(data), COPY_CHUNK):
                f.write(data[i:i + COPY_CHUNK])
                progress.update(task, advance=min(COPY_CHUNK, len(data) - i))
            f.flush()
            try:
                os.fsync(f.fileno())
            except OSError:
                pass  # the boot ROM may have rebooted the board once the last block came
    except OSError as e:
        raise DeviceError(f"copying to {dest} failed: {e.strerror or e}") from None
    return dest


def flash_rp2(data, name, drive=None, wait_s=0.0, console=None):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    try:
        info = uf2.check(data, family=uf2.RP2040_FAMILY,
                         flash=(uf2.RP2040_FLASH_BASE, RP2040_FLASH_BYTES))
    except uf2.Uf2Error as e:
        raise FirmwareError(str(e)) from None
    target = pick_drive(drive, wait_s)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  console=console, transient=False) as progress:
        copy_uf2(data, target, name, progress)
    info["drive"] = str(target)
    return info


# -- the command -----------------------------------------------------------------------

def parser():
    chips = board_chips()
    ap = argparse.ArgumentParser(
        description="Write a MicroPython firmware image to a board (ESP32: esptool; "
                    "RP2040: the UF2 BOOTSEL drive). The file is checked first.",
        epilog="Exit: 0 written, 1 the board/drive failed or is the wrong chip, 2 bad usage "
               "or a firmware file wrong for the board (nothing written).")
    ap.add_argument("--board", required=True, choices=sorted(chips),
                    help="the board (its chip: "
                         + ", ".join(f"{b} {c}" for b, c in chips.items()) + ")")
    ap.add_argument("firmware", metavar="FIRMWARE",
                    help="MicroPython's firmware for the board: .bin (ESP32), .uf2 (RP2040)")
    ap.add_argument("--port", help="ESP32: the board's serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--baud", type=int, default=460800,
                    help="ESP32: the baud rate for writing (default 460800)")
    ap.add_argument("--no-erase", action="store_true",
                    help="ESP32: do not erase the whole flash first (keeps the file system)")
    ap.add_argument("--drive", help="RP2040: the BOOTSEL drive's folder (default: the "
                                    "mounted RPI-RP2 drive)")
    ap.add_argument("--wait", type=float, default=0.0, metavar="S",
                    help="RP2040: wait up to S seconds for the drive to appear")
    ap.add_argument("--check-only", action="store_true",
                    help="check the file for the board and say where it would go; touch "
                         "no board")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    prog = ap.prog
    chip = board_chips()[args.board]
    if chip == "rp2040" and args.port:
        ap.error(f"--port is for ESP32 boards: the {args.board} takes its UF2 on its BOOTSEL "
                 "drive (--drive)")
    if chip != "rp2040" and (args.drive or args.wait):
        ap.error(f"--drive and --wait are for RP2040 boards: the {args.board} is written "
                 "through its serial port (--port)")
    try:
        try:
            data = Path(args.firmware).read_bytes()
        except OSError as e:
            raise FirmwareError(f"{args.firmware}: cannot be read ({e.strerror})") from None
        if chip == "rp2040":
            if args.check_only:
                info = uf2.check(data, family=uf2.RP2040_FAMILY,
                                 flash=(uf2.RP2040_FLASH_BASE, RP2040_FLASH_BYTES))
                print(f"{args.firmware}: RP2040 UF2, {info['blocks']} blocks, "
                      f"{info['bytes']} bytes at {info['first']:#010x}..{info['end']:#010x}")
                return 0
            info = flash_rp2(data, Path(args.firmware).name, args.drive, args.wait)
            print(f"{args.firmware}: {info['blocks']} blocks ({info['bytes']} bytes) copied to "
                  f"{info['drive']}; the board reboots into it")
            return 0
        if args.check_only:
            info = check_esp32(data, chip)
        else:
            info = flash_esp32(data, args.port, chip, erase=not args.no_erase,
                               baud=args.baud)
        print(f"{args.firmware}: {_rom(chip).CHIP_NAME} image, {info['layout']}, "
              f"{'goes' if args.check_only else 'written'} at {info['address']:#x} "
              f"(application at {info['app_offset']:#x}; partitions "
              f"{', '.join(info['partitions'])})")
        return 0
    except (FirmwareError, uf2.Uf2Error) as e:
        print(f"{prog}: error: {args.firmware}: {e}", file=sys.stderr)
        return 2
    except DeviceError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
