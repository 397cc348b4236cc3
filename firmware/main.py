# main.py: runs after boot.py. The gateway application (sampling, metering, fail-safe
# control, telemetry) plugs in here; until it is installed, a node runs its on-device
# self-test so an installer can check a freshly flashed board: the metering kernel's
# arithmetic on this CPU's 32-bit viper ints, the RTD conversion and the heap.
from heatgw import selftest

selftest.run()
