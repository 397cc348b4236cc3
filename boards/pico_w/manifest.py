# Frozen-image manifest (MicroPython manifest syntax): everything the node imports,
# in flash:  cd ports/rp2 && make BOARD=RPI_PICO_W \
#             FROZEN_MANIFEST=<repo>/boards/pico_w/manifest.py
# It replaces the port's default manifest, which require()s umqtt.simple and more from
# micropython-lib: a second, unpinned copy. So only the port's own pieces are taken here.
# Paths are relative to this file; build/mplibs comes from `make mplibs` (mplibs.lock).
# boot.py and main.py stay files on the board's file system: frozen, they would shadow
# the deployed ones (pyexec runs a frozen boot.py/main.py first).
# The port: _boot.py (mounts the file system), rp2.py
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
