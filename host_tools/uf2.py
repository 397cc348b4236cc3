"""UF2 files (Microsoft's USB flashing format, github.com/microsoft/uf2): read and check.

    info = check(data, family=RP2040_FAMILY, flash=(0x10000000, 2 << 20))  # or Uf2Error
    blocks = parse(data)                                                    # every block

A UF2 file is a sequence of 512-byte blocks, each standing alone:

    offset  field
    0       magic 0x0A324655 ("UF2\\n")
    4       magic 0x9E5D5157
    8       flags (0x00000001 not main flash, 0x00001000 file container, 0x00002000 family
            id present, 0x00004000 MD5 checksum present, 0x00008000 extension tags)
    12      target address of the payload
    16      payload size (256 for the RP2040's boot ROM)
    20      block number, from 0
    24      number of blocks in the file
    28      family id (with flag 0x2000; else the file size or 0)
    32      payload, 476 bytes (only `payload size` of them used)
    508     magic 0x0AB16F30

The RP2040's boot ROM (the RPI-RP2 drive) takes blocks of family 0xE48BFF56 with 256-byte
payloads at 256-byte aligned addresses in flash (XIP, from 0x10000000). check() refuses
anything else with the reason, so a file meant for another chip, a truncated download or a
damaged file never reaches the drive.
"""

import struct

BLOCK = 512
MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FILE_CONTAINER = 0x00001000
FLAG_FAMILY_ID = 0x00002000
PAYLOAD_MAX = 476
RP2040_FAMILY = 0xE48BFF56
RP2040_PAYLOAD = 256
RP2040_FLASH_BASE = 0x10000000

# families a wrong file is likely to be, for the message (the UF2 spec's uf2families.json)
FAMILY_NAMES = {
    0xE48BFF56: "RP2040",
    0xE48BFF57: "RP2XXX absolute",
    0xE48BFF58: "RP2XXX data",
    0xE48BFF59: "RP2350 (ARM, secure)",
    0xE48BFF5A: "RP2350 (RISC-V)",
    0xE48BFF5B: "RP2350 (ARM, non-secure)",
    0x1C5F21B0: "ESP32",
    0xBFDD4EEE: "ESP32-S2",
    0xC47E5767: "ESP32-S3",
    0xD42BA06C: "ESP32-C3",
    0x68ED2B88: "SAMD21",
    0x55114460: "SAMD51",
    0xADA52840: "nRF52840",
}

_HEAD = struct.Struct("<8I")


class Uf2Error(ValueError):
    """The file is no UF2 for this target; the text says why."""


def family_name(family):
    return FAMILY_NAMES.get(family, f"unknown family {family:#010x}")


def parse(data):
    """Every block of `data` as a dict (flags, addr, size, block_no, num_blocks, family,
    payload); Uf2Error for anything that is not a well-formed UF2 file."""
    if not data:
        raise Uf2Error("the file is empty")
    head = _HEAD.unpack_from(data.ljust(32, b"\x00"))
    if head[0] != MAGIC_START0 or head[1] != MAGIC_START1:
        raise Uf2Error("not a UF2 file: its first block does not start with the UF2 magic "
                       "numbers (0x0A324655 0x9E5D5157)")
    if len(data) % BLOCK:
        whole = len(data) // BLOCK
        raise Uf2Error(f"truncated: {len(data)} bytes is no whole number of 512-byte blocks "
                       f"(block {whole} is cut after {len(data) % BLOCK} bytes)")
    out = []
    for i in range(len(data) // BLOCK):
        b = data[i * BLOCK:(i + 1) * BLOCK]
        m0, m1, flags, addr, size, block_no, num_blocks, family = _HEAD.unpack_from(b)
        (m_end,) = struct.unpack_from("<I", b, 508)
        if m0 != MAGIC_START0 or m1 != MAGIC_START1 or m_end != MAGIC_END:
            raise Uf2Error(f"block {i} (file offset {i * BLOCK}) is damaged: wrong magic "
                           "numbers")
        if size > PAYLOAD_MAX:
            raise Uf2Error(f"block {i}: payload size {size} is over the format's "
                           f"{PAYLOAD_MAX} bytes")
        out.append({"flags": flags, "addr": addr, "size": size, "block_no": block_no,
                    "num_blocks": num_blocks, "family": family,
                    "payload": bytes(b[32:32 + size])})
    return out


def check(data, family=RP2040_FAMILY, flash=(RP2040_FLASH_BASE, 2 << 20),
          payload_size=RP2040_PAYLOAD):
    """Check a UF2 file for a chip: its family id on every block, the block sequence
    (0..n-1, n on every block, none missing), every payload `payload_size` bytes at an
    aligned address inside the flash [base, base + size), no address twice.
    Returns {"blocks", "bytes", "first", "end", "family"}; Uf2Error says what is wrong."""
    blocks = parse(data)
    base, size = flash
    want = family_name(family)
    seen = set()
    n = blocks[0]["num_blocks"]
    for i, b in enumerate(blocks):
        if b["flags"] & FLAG_NOT_MAIN_FLASH:
            continue  # comments and the like: the boot ROM skips them too
        if b["flags"] & FLAG_FILE_CONTAINER:
            raise Uf2Error(f"block {i} is part of a file container, not a firmware image")
        if not b["flags"] & FLAG_FAMILY_ID:
            raise Uf2Error(f"block {i} names no family id (flag 0x2000): a {want} UF2 has "
                           f"{family:#010x} on every block")
        if b["family"] != family:
            raise Uf2Error(f"wrong chip: block {i} is for {family_name(b['family'])} "
                           f"(family {b['family']:#010x}), not {want} ({family:#010x})")
        if b["num_blocks"] != n:
            raise Uf2Error(f"block {i} says the file has {b['num_blocks']} blocks, block 0 "
                           f"says {n}")
        if b["block_no"] != i:
            raise Uf2Error(f"block sequence broken: block {i} of the file is numbered "
                           f"{b['block_no']}")
        if b["size"] != payload_size:
            raise Uf2Error(f"block {i}: payload of {b['size']} bytes, the {want} boot ROM "
                           f"takes {payload_size}")
        a = b["addr"]
        if a % payload_size:
            raise Uf2Error(f"block {i}: address {a:#010x} is not {payload_size}-byte aligned")
        if not base <= a <= base + size - payload_size:
            raise Uf2Error(f"block {i}: address {a:#010x} is outside the {want}'s flash "
                           f"({base:#010x}..{base + size:#010x})")
        if a in seen:
            raise Uf2Error(f"block {i}: address {a:#010x} is written twice")
        seen.add(a)
    if len(blocks) < n:
        raise Uf2Error(f"truncated: {len(blocks)} of its {n} blocks")
    if len(blocks) > n:
        raise Uf2Error(f"{len(blocks)} blocks, but each says the file has {n}")
    if not seen:
        raise Uf2Error("no block writes the main flash")
    return {"blocks": len(blocks), "bytes": len(seen) * payload_size, "first": min(seen),
            "end": max(seen) + payload_size, "family": family}

