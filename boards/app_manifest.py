# The application's part of every real board's frozen image (MicroPython manifest syntax),
# included by each boards/<board>/manifest.py. Paths are relative to this file;
# build/mplibs comes from `make mplibs` (mplibs.lock).
include("$(MPY_DIR)/extmod/asyncio")
# The drivers by module(), as their own manifests list them: include() of two manifests
# that each call metadata() fails the build ("Duplicate call to metadata()"). Each board's
# manifest adds the flow pulse counters it uses.
module("max31865.py", base_path="../lib/max31865", opt=3)
module("mbcore.py", base_path="../lib/modbus")
module("mbrtu.py", base_path="../lib/modbus")
module("mbtcp.py", base_path="../lib/modbus")
module("mbserver.py", base_path="../lib/modbus")
module("sdm.py", base_path="../lib/sdm")
module("adcin.py", base_path="../lib/adcin")
module("wdthold.py", base_path="../lib/wdthold")
module("consolein.py", base_path="../lib/consolein")
package("umqtt", base_path="../build/mplibs/micropython-umqtt.simple-1.3.4")
package("umodbus", base_path="../build/mplibs/micropython-modbus-2.3.7")
package("heatgw", base_path="../firmware")
