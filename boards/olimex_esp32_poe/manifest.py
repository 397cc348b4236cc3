# Frozen-image manifest (MicroPython manifest syntax): everything the node imports,
# in flash:  cd ports/esp32 && make BOARD=ESP32_GENERIC \
#             FROZEN_MANIFEST=<repo>/boards/olimex_esp32_poe/manifest.py
# It replaces the port's default manifest, which require()s umqtt.simple and more from
# micropython-lib: a second, unpinned copy. So only the port's own pieces are taken here.
# Paths are relative to this file; build/mplibs comes from `make mplibs` (mplibs.lock).
# boot.py and main.py stay files on the board's file system: frozen, they would shadow
# the deployed ones (pyexec runs a frozen boot.py/main.py first).
# The port: _boot.py (mounts the file system), machine.py, inisetup.py, flashbdev.py
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
# The drivers by module(), as their own manifests list them: include() of two manifests
# that each call metadata() fails the build ("Duplicate call to metadata()").
module("max31865.py", base_path="../../lib/max31865", opt=3)
module("pulsecounter.py", base_path="../../lib/pulsecounter")
package("umqtt", base_path="../../build/mplibs/micropython-umqtt.simple-1.3.4")
package("umodbus", base_path="../../build/mplibs/micropython-modbus-2.3.7")
package("heatgw", base_path="../../firmware")
module("board.py")
