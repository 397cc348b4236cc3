"""The board contract: what every `boards/<name>/board.py` provides to the firmware.

A board file is the only place that knows GPIO numbers and buses. The firmware imports it
as `board` (boot.py, heatgw.start, heatgw.app, heatgw.clock) and uses nothing else of the
hardware. Adding a board means one board.py (plus its manifest.py) that meets this
contract; tests/test_boards.py checks the real boards against it by importing them on the
unix port against a recording stub `machine` module. This file is documentation and test
data: it is not deployed.

Every board (the host board too)
--------------------------------
NAME              str, the board's name (the folder name)
R_REF_OHM         int, reference resistor on the MAX31865 boards (4300 for PT1000)
RELAY_PINS        {relay name: (pin, active_level)}: the safe state of each relay is its
                  coil de-energised, i.e. the pin at 1 - active_level (heat to the dry
                  cooler). Names: "reuse", "cooler_inhibit".
RELAY_PULL        "up" or "down": the relay module's own input resistor, which holds a
                  floating pin (reset, before boot.py) at the inactive level: "up" for
                  active-low modules (active_level 0), "down" for active-high ones.
INPUT_PINS        {input name: (pin, active_level)}: board-level contacts (sink_available,
                  maintenance, trip_reset, valve_at_reuse).
DEAD_MAN_HOLD_MS  int, the dead-man hardware's hold time: the relay drivers stay enabled
                  this long after the last edge on the dead-man output. The configuration
                  is refused unless control.tick_ms <= DEAD_MAN_HOLD_MS <= 1.5 * tick_ms.

relays_safe()            drive every relay pin to 1 - active_level (output); returns
                         {name: pin}. boot.py calls it first thing after reset, the
                         application again at start, and main.py when the application
                         stops.
spi()                    the SPI bus shared by the MAX31865 chips (mode 1, <= 5 MHz).
rtd_cs(name)             the chip-select pin of the converter `name`, an output driven high.
inputs()                 {name: (pin, active_level)} for every INPUT_PINS entry, inputs
                         with the pull they need.
flow_pulse_counter(min_pulse_us=0, flag=None)
                         the flow meter's pulse input (active low) as a pulse reader:
                         count() wrapping at 2**30, last_edge_ms() (ticks_ms at the latest
                         pulse's falling edge, None before one), read() -> (count,
                         last_edge_ms), active() (the input is low now), `hard`. The board
                         picks the driver: a hardware counter where the MCU has one
                         (lib/pcntcounter on an ESP32's PCNT unit, lib/piocounter on an
                         RP2040 PIO state machine: no pulse lost while interrupts are
                         masked), else lib/pulsecounter (a GPIO interrupt). Lows shorter
                         than min_pulse_us are not pulses (debounce); `flag` (an asyncio
                         ThreadSafeFlag) is set at each pulse.
watchdog(timeout_ms)     a started hardware watchdog (an object with feed()).
safe_boot_requested()    True while the safe-boot input is held (boot.py samples it).
data_dir()               the folder holding config.json and the state files ("" = root).
dead_man()               the dead-man output pin (machine.Pin, an output): the control
                         task toggles it with .value() on every healthy tick; its edges
                         retrigger the monostable that enables the relay drivers.

Optional, probed by the firmware with getattr
---------------------------------------------
clock             the tick source (ticks_ms, ticks_add, ticks_diff, sleep_ms; utc_s
                  optional) used by heatgw.clock; without it, the `time` module.
install_asyncio() returns the asyncio module to run on (the host board's virtual-time
                  asyncio); without it, `import asyncio` (heatgw.start).
observer          a record sink (kind, record) that sees every event and save (the host
                  board's link to the harness); without it, none (heatgw.start).
NET_INTERFACES    tuple of the network interfaces the board has, the one to use first:
                  "wlan" (Wi-Fi station), "lan" (wired Ethernet), "host" (the host
                  board: the network is the host's). Without it, the node has no network.
network_interface(kind)  the port's interface object for a NET_INTERFACES kind, made on
                  call (never at import): network.WLAN(network.STA_IF), network.LAN(...)
                  with the board's PHY pins; None for "host" (heatgw.net then reports the
                  network up at once); ValueError for a kind the board lacks.
awaits_replies(fn) a network client registers fn(), true while it awaits a reply it has
                  asked for (the host board's virtual time waits for real replies);
                  without it, nothing: a real board's time is real.
io_sent()         a client writing to a raw socket or a UART says it sent something its
                  peer will answer (the host board: virtual time follows real time while
                  the reply is due); without it, nothing.
io_serving(sock, kind)  a server says which sockets are its own: kind "listen", "conn"
                  (an accepted client), None (closed). What arrives there is a request,
                  not a reply (the host board: while a client is connected, virtual
                  time keeps pace with it); without it, nothing.
RS485_PORTS       tuple of the board's RS-485 port names ("rs485"), () or absent: none.
rs485(port, baudrate, parity, stop_bits)  (uart, de) of an RS-485 port for Modbus RTU: a
                  machine.UART (8 data bits; parity None, 0 even, 1 odd) whose reads never
                  wait (timeout=0) and that asyncio can poll, and the transceiver's
                  driver-enable pin (an output, low = receiving) or None for an
                  auto-direction transceiver; ValueError for a port the board lacks.
hold_watchdog()   keep a started watchdog fed from a timer while the application is
                  stopped (machine.WDT cannot be stopped): heatgw.start calls it after
                  the orderly stop (Ctrl-C), boot.py at every boot (after a soft reset
                  the watchdog runs on; after power-on there is none and it does
                  nothing). watchdog() releases the hold: the supervisor feeds again.
                  Safe: nothing toggles the dead-man output then, so the relay drivers
                  stay off in hardware. True when a watchdog is held. Real boards:
                  lib/wdthold on a machine.Timer; the host board: a virtual-time timer.
console_in()      non-blocking input from the REPL's serial port, for a console task:
                  an object with readinto(buf) -> count (0: nothing typed; never
                  blocks, never allocates) and any() (true while input waits). A Ctrl-C
                  typed still raises KeyboardInterrupt and stops the application in
                  order. Real boards: sys.stdin with select.poll (lib/consolein); the
                  host board: its pty (None when it was started without one). Poll it
                  from a task (e.g. every 20-50 ms): reading never waits.
technician(gw)    the host board's stand-in for the console in calibration scenarios: a
                  task's coroutine function (heatgw.start adds it as "technician") or None;
                  boards/host/technician.py. Goes when the console lands.

Real boards (GPIO numbers) also have
------------------------------------
ARCH              the mpy-cross architecture of the board's MCU ("xtensawin", "armv6m").
RTD_CS_PINS       {sensor name: gpio} for rtd_cs().
FLOW_PULSE_PIN    gpio of the flow meter's pulse input.
FLOW_PCNT_UNIT    (ESP32) the PCNT unit counting it; FLOW_PIO_SM (RP2040) the PIO state
                  machine counting it (0-3: PIO0; the Pico W's radio takes one of PIO1).
SAFE_BOOT_PIN     gpio of the safe-boot input (held low at reset).
DEAD_MAN_PIN      gpio of the dead-man output.
NET_PINS          {signal: gpio} the network interface takes (a wired PHY's RMII, MDIO,
                  clock and power pins); optional: absent when the radio is on-module.
RS485_PINS        {"tx": gpio, "rx": gpio, "de": gpio} of the RS-485 port (with
                  RS485_PORTS); "de" absent for an auto-direction transceiver.

and keep these rules, which tests/test_boards.py checks on the stub `machine`:
- relays_safe() constructs each relay pin as an output at 1 - active_level, and the
  relays' polarity matches RELAY_PULL (a floating pin is a de-energised coil);
- no GPIO is used twice across chip-selects, relays, inputs, flow, safe boot, dead man,
  the SPI bus pins, NET_PINS and RS485_PINS; an ESP32 board with "lan" has the ESP32's
  fixed RMII pins (19, 21, 22, 25, 26, 27) in NET_PINS;
- rs485() makes one UART on exactly RS485_PINS' tx and rx (on the RP2040 pins that carry
  that UART's function), with timeout=0, and the DE pin an output at 0 (receiving), on a
  pin that is low from reset (not an ESP32 strapping pin pulled up at reset: 0, 5, 15);
- input-only pins (ESP32 GPIO 34-39: no output driver, no internal pulls) are never
  outputs and are never asked for a pull; pins the MCU reserves (ESP32 flash GPIO 6-11,
  Pico W GP23-25 and GP29 for the wireless chip) are not used; the dead-man output is
  not on a strapping pin.
"""

EVERY_BOARD_CONSTANTS = ("NAME", "R_REF_OHM", "RELAY_PINS", "RELAY_PULL", "INPUT_PINS",
                         "DEAD_MAN_HOLD_MS")
EVERY_BOARD_FUNCTIONS = ("relays_safe", "spi", "rtd_cs", "inputs", "flow_pulse_counter",
                         "watchdog", "safe_boot_requested", "data_dir", "dead_man")
OPTIONAL = ("clock", "install_asyncio", "observer", "NET_INTERFACES", "network_interface",
            "NET_PINS", "awaits_replies", "hold_watchdog", "console_in", "io_sent",
            "io_serving", "RS485_PORTS", "RS485_PINS", "rs485")
NET_KINDS = ("wlan", "lan", "host")
REAL_BOARD_CONSTANTS = ("ARCH", "RTD_CS_PINS", "FLOW_PULSE_PIN", "SAFE_BOOT_PIN",
                        "DEAD_MAN_PIN")
RELAY_NAMES = ("reuse", "cooler_inhibit")
INPUT_NAMES = ("sink_available", "maintenance", "trip_reset", "valve_at_reuse")
