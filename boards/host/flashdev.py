"""A file-backed NOR flash for littlefs on the unix port, with power cuts.

FlashDev(path, block_size=4096, block_count=64) is a block device with MicroPython's
extended interface (vfs.AbstractBlockDev): readblocks(block, buf, offset),
writeblocks(block, buf, offset) = program only, ioctl(op, arg) with 1 init, 2 deinit,
3 sync, 4 block count, 5 block size, 6 erase. It behaves like NOR flash: a program can
only clear bits (new = old & data), an erase sets the whole block to 0xFF. Every program
and erase goes to the backing file at once (write + flush), so the file holds exactly the
operations done before a cut and a new FlashDev on it is the flash after a reset.

Power cut: arm_cut(after_ops, torn_bytes, on_cut=None) tears operation number
ops + after_ops (after_ops=1: the next one). A torn program lands only its first
torn_bytes bytes, a torn erase erases only the first torn_bytes bytes of the block. Then
on_cut(info) is called and every later program/erase is dropped silently (power is gone);
reads keep returning the frozen image. Don't raise from on_cut: the call comes from inside
littlefs's C code, which must not be unwound mid-operation.

Failing flash: fail_ops(n) makes the next n programs/erases fail with EIO (the device
returns -EIO to littlefs, which raises OSError(EIO) from the file operation; raising
from the block device itself would unwind littlefs's C code mid-operation). Nothing is
written and the power stays on: a worn or flaky chip, not a cut. `failed` counts them.

on_op(erase), when set, is called after every program (False) or erase (True) that
reaches the flash: the host board masks interrupts meanwhile, as a chip does.

Counters: ops (programs + erases that reached the flash, the torn one included),
programs, erases, bytes_programmed, dropped (operations after the cut); wear() gives the
erase count of each block.

mount(dev, path) mounts littlefs v2 on dev at path and formats only a blank device.
"""

from array import array

import vfs

IOCTL_INIT = 1
IOCTL_DEINIT = 2
IOCTL_SYNC = 3
IOCTL_BLOCK_COUNT = 4
IOCTL_BLOCK_SIZE = 5
IOCTL_BLOCK_ERASE = 6

# littlefs geometry for a few small files. Programs of 16 bytes are what SPI NOR on the
# ESP32/RP2040 can do (any size up to a 256-byte page); the cache littlefs uses is
# 4 * max(readsize, progsize) = 64 bytes. lookahead is in bytes of bitmap, 8 blocks each:
# 16 covers 128 blocks, more than the 64 of the default device.
LFS_READSIZE = 16
LFS_PROGSIZE = 16
LFS_LOOKAHEAD = 16


class FlashDev:
    def __init__(self, path, block_size=4096, block_count=64):
        if block_size <= 0 or block_count <= 0:
            raise ValueError("block size/count must be > 0")
        self.path = path
        self.block_size = block_size
        self.block_count = block_count
        size = block_size * block_count
        self._ff = b"\xff" * 256  # erased flash, written in chunks (no 4 KB buffer in RAM)
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
        f.seek(0, 2)
        have = f.tell()
        while have < size:  # extend with erased flash
            n = min(256 - have % 256, size - have)
            f.write(self._ff[:n])
            have += n
        f.flush()
        self._f = f
        # No copy of the image in RAM: it would count against the node's heap, which
        # the 64 KB heap test measures. Reads go to the file (the OS caches it).
        self._wear = array("I", bytes(4 * block_count))  # erases per block
        self.ops = 0
        self.programs = 0
        self.erases = 0
        self.bytes_programmed = 0
        self.dropped = 0
        self.cut_done = False
        self.cut_info = None
        self._cut_at = 0  # op number to tear; 0 = not armed
        self._fail_n = 0  # programs/erases still to fail with EIO
        self.failed = 0
        self.on_op = None  # on_op(erase) after each program/erase (the host board's hook)

    # --- power cut ---------------------------------------------------------------------

    def arm_cut(self, after_ops, torn_bytes, on_cut=None):
        if after_ops < 1:
            raise ValueError("after_ops counts from 1")
        if torn_bytes < 0:
            raise ValueError("torn_bytes must be >= 0")
        self._cut_at = self.ops + after_ops
        self._torn_bytes = torn_bytes
        self._on_cut = on_cut

    def fail_ops(self, n):
        """The next n programs/erases fail with EIO (n = 0 disarms)."""
        if type(n) is not int or n < 0:
            raise ValueError("fail_ops takes an int >= 0")
        self._fail_n = n

    # --- block device protocol ---------------------------------------------------------

    def readblocks(self, block, buf, offset=0):
        n = len(buf)
        addr = block * self.block_size + offset
        if block < 0 or offset < 0 or addr + n > self.block_size * self.block_count:
            raise OSError(5)  # EIO
        f = self._f
        f.seek(addr)
        if f.readinto(buf) != n:
            raise OSError(5)
        return 0

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple interface: whole blocks, erased first by the device itself.
            nblocks = len(buf) // self.block_size
            mv = memoryview(buf)
            for i in range(nblocks):
                self.erase(block + i)
                self.program(block + i, 0, mv[i * self.block_size:(i + 1) * self.block_size])
            return 0
        return self.program(block, offset, buf)

    def program(self, block, offset, data):
        return self._op(block, offset, data)

    def erase(self, block):
        return self._op(block, 0, None)

    def _op(self, block, offset, data):
        # One program (data) or erase (None); it stays inside one block, as littlefs
        # guarantees.
        n = self.block_size if data is None else len(data)
        if block < 0 or block >= self.block_count or offset < 0 or offset + n > self.block_size:
            raise OSError(5)  # EIO
        if self.cut_done:
            self.dropped += 1
            return 0
        if self._fail_n:
            self._fail_n -= 1
            self.failed += 1
            return -5  # -EIO: littlefs reports it as OSError(EIO)
        self.ops += 1
        torn = self.ops == self._cut_at
        if torn:  # this operation is cut: only its first torn_bytes bytes land
            n = min(self._torn_bytes, n)
            self.cut_done = True
            self._cut_at = 0
            self.cut_info = {"op": "program" if data is not None else "erase", "block": block,
                             "offset": offset, "len": self.block_size if data is None
                             else len(data), "torn_bytes": n}
        f = self._f
        f.seek(block * self.block_size + offset)
        if data is None:
            k = n
            while k > 0:
                f.write(self._ff if k >= 256 else self._ff[:k])
                k -= 256
            self.erases += 1
            self._wear[block] += 1
        else:
            if n:
                data = memoryview(data)[:n]
                old = f.read(n)
                if old.count(b"\xff") == n:
                    new = bytes(data)  # erased: NOR programs exactly the data
                else:
                    new = (int.from_bytes(old, "big")
                           & int.from_bytes(bytes(data), "big")).to_bytes(n, "big")
                f.seek(block * self.block_size + offset)
                f.write(new)
            self.programs += 1
            self.bytes_programmed += n
        f.flush()
        if self.on_op is not None:
            self.on_op(data is None)
        if torn and self._on_cut is not None:
            cb = self._on_cut
            self._on_cut = None
            cb(self.cut_info)
        return 0

    def ioctl(self, op, arg):
        if op == IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == IOCTL_BLOCK_ERASE:
            return self.erase(arg)
        if op in (IOCTL_INIT, IOCTL_DEINIT, IOCTL_SYNC):
            return 0  # every operation is already in the file
        return None

    # --- inspection --------------------------------------------------------------------

    def wear(self):
        return list(self._wear)

    def max_wear(self):
        """The most erases of one block, allocation-free (the day's end: a full heap)."""
        m = 0
        for n in self._wear:
            if n > m:
                m = n
        return m

    def close(self):
        self._f.close()


def is_blank(dev):
    """True when every byte of the block device reads 0xFF (never formatted)."""
    bs = dev.ioctl(IOCTL_BLOCK_SIZE, 0) or 512
    nb = dev.ioctl(IOCTL_BLOCK_COUNT, 0)
    ff = b"\xff" * bs
    buf = bytearray(bs)
    for b in range(nb):
        dev.readblocks(b, buf, 0)
        if buf != ff:
            return False
    return True


def mount(dev, path, readsize=LFS_READSIZE, progsize=LFS_PROGSIZE, lookahead=LFS_LOOKAHEAD):
    """Mount littlefs v2 on dev at path; returns True when the device had to be formatted.

    Formats only a blank (all 0xFF) device. A device holding data that littlefs cannot
    mount raises the OSError: reformatting it would silently lose the meter totals.
    Whatever was mounted at path before is unmounted first (after a reset nothing is).
    """
    try:
        vfs.umount(path)
    except OSError:
        pass
    kw = {"readsize": readsize, "progsize": progsize, "lookahead": lookahead}
    formatted = False
    try:
        fs = vfs.VfsLfs2(dev, mtime=False, **kw)
    except OSError:
        if not is_blank(dev):
            raise
        vfs.VfsLfs2.mkfs(dev, **kw)
        formatted = True
        fs = vfs.VfsLfs2(dev, mtime=False, **kw)
    vfs.mount(fs, path)
    return formatted
