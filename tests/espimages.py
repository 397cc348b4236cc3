"""ESP32-family firmware images for the flash tests, made by the real esptool.

    elf = tiny_elf(path, iram=0x40080000, dram=0x3FFB0000)   # an Xtensa ELF32, by hand
    fw = firmware(tmp, chip="esp32", layout="micropython")   # esptool elf2image + merge-bin

A firmware image is what MicroPython's build leaves: the second-stage bootloader, the
partition table and the application, each made here from a tiny ELF by `esptool
elf2image` and laid out by `esptool merge-bin` (layout "micropython": the image starts
with the bootloader and is written at the chip's bootloader offset, 0x1000 on the ESP32;
"merged": the image starts at flash address 0x0). Nothing here is recorded output:
every image is made by esptool in the test, and esptool's own `image-info` reads it.
"""

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

ESPTOOL = str(Path(sys.executable).parent / "esptool")

# where the chips' ROM bootloaders expect things (esp-idf defaults)
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s3": 0x0}
PARTITION_TABLE_OFFSET = 0x8000
APP_OFFSET = 0x10000
# RAM the loader may load a segment into: (IRAM, DRAM) per chip
RAM = {"esp32": (0x40080000, 0x3FFB0000), "esp32s3": (0x40378000, 0x3FC88000)}


def tiny_elf(path, iram, dram, code=b"\x06\xff\xff" * 8, data=b"heatgw-test\x00"):
    """An Xtensa (e_machine 0x5E) ELF32 executable: .iram0.text at `iram`, .dram0.data at
    `dram`, their two PT_LOAD segments and the section name table; entry = iram."""
    names = b"\x00.iram0.text\x00.dram0.data\x00.shstrtab\x00"
    n_text, n_data, n_str = 1, names.index(b".dram0.data"), names.index(b".shstrtab")
    ehsize, phsize, shsize = 0x34, 0x20, 0x28
    off_text = ehsize + 2 * phsize
    off_data = off_text + len(code)
    off_str = off_data + len(data)
    shoff = (off_str + len(names) + 3) & ~3
    hdr = struct.pack("<16sHHLLLLLHHHHHH",
                      b"\x7fELF\x01\x01\x01" + bytes(9), 2, 0x5E, 1, iram, ehsize, shoff,
                      0x300, ehsize, phsize, 2, shsize, 4, 3)
    ph = b"".join(struct.pack("<LLLLLLLL", 1, off, addr, addr, len(b), len(b), flags, 4)
                  for off, addr, b, flags in ((off_text, iram, code, 5),
                                              (off_data, dram, data, 6)))
    sh = bytes(shsize)
    sh += struct.pack("<LLLLLLLLLL", n_text, 1, 6, iram, off_text, len(code), 0, 0, 4, 0)
    sh += struct.pack("<LLLLLLLLLL", n_data, 1, 3, dram, off_data, len(data), 0, 0, 4, 0)
    sh += struct.pack("<LLLLLLLLLL", n_str, 3, 0, 0, off_str, len(names), 0, 0, 1, 0)
    blob = hdr + ph + code + data + names
    blob += bytes(shoff - len(blob)) + sh
    Path(path).write_bytes(blob)
    return Path(path)


def partition_table(path, app_size=0x100000):
    """esp-idf's binary partition table: nvs, phy_init, factory app, vfs, the MD5 entry."""
    def entry(ptype, subtype, offset, size, name):
        return struct.pack("<2sBBLL16sL", b"\xaa\x50", ptype, subtype, offset, size,
                           name.encode().ljust(16, b"\x00"), 0)

    rows = (entry(1, 0x02, 0x9000, 0x6000, "nvs") + entry(1, 0x01, 0xF000, 0x1000, "phy_init")
            + entry(0, 0x00, APP_OFFSET, app_size, "factory")
            + entry(1, 0x81, APP_OFFSET + app_size, 0x100000, "vfs"))
    md5 = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(rows).digest()
    Path(path).write_bytes((rows + md5).ljust(0xC00, b"\xff"))
    return Path(path)


def esptool(*args):
    r = subprocess.run([ESPTOOL, *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"esptool {' '.join(map(str, args))}:\n{r.stdout}{r.stderr}")
    return r.stdout


def firmware(tmp, chip="esp32", layout="micropython"):
    """A firmware image for `chip`, made by esptool (module doc); its path."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    iram, dram = RAM[chip]
    boot = tmp / f"{chip}-bootloader.bin"
    app = tmp / f"{chip}-app.bin"
    esptool("--chip", chip, "elf2image", "--output", boot,
            tiny_elf(tmp / f"{chip}-boot.elf", iram, dram))
    esptool("--chip", chip, "elf2image", "--output", app,
            tiny_elf(tmp / f"{chip}-app.elf", iram + 0x1000, dram + 0x1000,
                     code=b"\x06\xff\xff" * 4000))
    table = partition_table(tmp / "partition-table.bin")
    out = tmp / f"{chip}-{layout}.bin"
    offset = BOOTLOADER_OFFSET[chip] if layout == "micropython" else 0
    esptool("--chip", chip, "merge-bin", "--output", out, "--target-offset", hex(offset),
            hex(BOOTLOADER_OFFSET[chip]), boot, hex(PARTITION_TABLE_OFFSET), table,
            hex(APP_OFFSET), app)
    return out
