# Deploy manifest (MicroPython manifest syntax): application, drivers, board definition.
include("../../lib/max31865/manifest.py")
include("../../lib/pulsecounter/manifest.py")
package("heatgw", base_path="../../firmware")
module("board.py")
