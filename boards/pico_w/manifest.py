# Frozen-image manifest (MicroPython manifest syntax): everything the node imports,
# in flash:  cd ports/rp2 && make BOARD=RPI_PICO_W \
#             FROZEN_MANIFEST=<repo>/boards/pico_w/manifest.py
# It replaces the port's default manifest, which require()s umqtt.simple and more from
# micropython-lib: a second, unpinned copy. So only the port's own pieces are taken here.
# Paths are relative to this file.
# boot.py and main.py stay files on the board's file system: frozen, they would shadow
# the deployed ones (pyexec runs a frozen boot.py/main.py first).
# The port: _boot.py (mounts the file system), rp2.py
freeze("$(PORT_DIR)/modules")
# asyncio, the drivers, the fetched libraries and heatgw: the same on every board
include("../app_manifest.py")
# the flow pulses' hardware counter (a PIO state machine; rp2.py is the port's)
module("piocounter.py", base_path="../../lib/piocounter")
module("board.py")
