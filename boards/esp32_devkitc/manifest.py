# Frozen-image manifest (MicroPython manifest syntax): everything the node imports,
# in flash:  cd ports/esp32 && make BOARD=ESP32_GENERIC \
#             FROZEN_MANIFEST=<repo>/boards/esp32_devkitc/manifest.py
# It replaces the port's default manifest, which require()s umqtt.simple and more from
# micropython-lib: a second, unpinned copy. So only the port's own pieces are taken here.
# Paths are relative to this file.
# boot.py and main.py stay files on the board's file system: frozen, they would shadow
# the deployed ones (pyexec runs a frozen boot.py/main.py first).
# The port: _boot.py (mounts the file system), machine.py, inisetup.py, flashbdev.py
freeze("$(PORT_DIR)/modules")
# asyncio, the drivers, the fetched libraries and heatgw: the same on every board
include("../app_manifest.py")
# the flow pulses' counters: PCNT (machine.Counter), the interrupt counter for a debounce
# beyond the PCNT's filter
module("pcntcounter.py", base_path="../../lib/pcntcounter")
module("pulsecounter.py", base_path="../../lib/pulsecounter")
module("board.py")
