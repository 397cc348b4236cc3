"""The lockstep link's opcodes: one table for the node (boards/host/link.py, MicroPython)
and the harness (host_tools/linkcodec.py, CPython).

The harness owns virtual time, the plant, the relays' physical state, the watchdog and
the power. The node runs until every task is idle, tells the harness how long it may
sleep, and blocks until the harness moves time forward. One text line per message on a
loopback TCP socket (stdin/stdout stay the node's console); a line starts with its
one-character opcode, then space-separated fields:

node -> harness (vt: the node's time)   harness -> node
  H <pid>          hello after reset       A <vt> <horizon> [<utc_s>]  time is now vt
  I <vt_ms>|-      idle until vt / no task r <rtd> <ohm>         RTD resistance
  P <relay> 0|1 vt relay pin level         f <rtd> <fault>       RTD fault injection
  W <timeout> vt   watchdog started        d <input> 0|1         digital input level
  F vt             watchdog fed
  O <kind> vt json application record      p <level>|- <low> <e>.. flow input: level now
                                           (at boot; "-": as the node has it), then pulses
                                           low from each e for <low> ms, due before horizon
  X vt <json>      power cut reached       k <ops> <torn_bytes>  cut power at a flash op
  D <hold_ms> vt   dead-man hold time      R <rtd> <ohm> <lsb>   that converter chip's fitted
                                                                 reference resistor, its noise
                                           T <call> <arg>..      a technician's calibration
                                                                 step (the console's stand-in:
                                                                 boards/host/technician.py)
                                           h                     hang the next relay write
                                           e                     the next SPI transfer fails
                                           c                     the next watchdog feed fails
                                           w <n>                 the next n flash ops fail
                                           s                     orderly stop (Ctrl-C)
                                           B <vt0> <tick0> 0|1   boot: time base, safe-boot pin
                                           .                     end of this step

Nothing the harness serves changes before `horizon` (the next plant step, scenario event
or watchdog expiry), so the node moves its own time to any deadline before it without
asking: one round trip per plant step instead of one per poll.

Each opcode is the character's code (an int: the node compares it with a received byte
without making a string; the harness writes chr(code)). Plain ints, no const(), so
CPython imports this file too. boards/host/board.py writes the P, W, D and O lines itself.
"""

# node -> harness
HELLO = 72  # H
IDLE = 73  # I
PIN = 80  # P
WDT_START = 87  # W
WDT_FEED = 70  # F
RECORD = 79  # O
CUT_REACHED = 88  # X
DEAD_MAN = 68  # D
# harness -> node
TIME = 65  # A
RTD_OHM = 114  # r
RTD_FAULT = 102  # f
INPUT = 100  # d
PULSES = 112  # p
CUT_AT = 107  # k
HANG = 104  # h
BUS_ERROR = 101  # e
WDT_ERROR = 99  # c
FLASH_ERROR = 119  # w
STOP = 115  # s
BOOT = 66  # B
CHIP = 82  # R
TECHNICIAN = 84  # T
END = 46  # .

NONE = "-"  # "no value" in a field (idle without deadline, no pulse edge yet)

# The node process's exit status for a reset asked at its serial port (the host REPL:
# Ctrl-D, mpremote soft-reset, machine.reset()). Its runner (the harness, benchnode)
# starts it again behind the same port: a soft reset with $HEATGW_RESET = "soft" (and
# $HEATGW_REPL = "raw" from the raw REPL: boot.py runs, main.py does not, as pyexec does;
# $HEATGW_WDT_MS when a watchdog runs on), a hard reset as after power-on.
EXIT_SOFT_RESET = 64
EXIT_SOFT_RESET_RAW = 65
EXIT_HARD_RESET = 66
