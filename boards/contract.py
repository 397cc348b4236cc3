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
ADC_CHANNELS      tuple of the board's analogue input channels ("ain1", "ain2", "ain3"),
                  () or absent: none. Each has a front end for 4-20 mA (a shunt to GND,
                  AIN_SHUNT_OHM) or 0-10 V (a divider, AIN_DIVIDER), chosen when wiring.
adc(channel)      a machine.ADC on that channel, set up for the front end's range (ESP32:
                  ATTN_11DB, 150..2450 mV; its read_uv() is the eFuse-calibrated reading);
                  ValueError for a channel the board lacks. heatgw.analog reads it through
                  lib/adcin (oversampled, allocation-free).
AIN_SHUNT_OHM     int, the 4-20 mA shunt (100 ohm: 20 mA = 2.0 V at the pin).
AIN_DIVIDER       (top_ohm, bottom_ohm) of the 0-10 V divider (39k/10k: 10 V = 2.04 V).
ADC_UV_FULL_SCALE int, µV at read_u16() == 65535, for an ADC without read_uv() (RP2040:
                  the 3.3 V reference); absent where read_uv() exists.
valve_output()    the valve's 0-10 V command output: a machine.PWM (duty_u16) driving an RC
                  filter and a x3.03 amplifier, made at duty 0 (closed); only
                  heatgw.app.Gateway.drive_relays writes it. ValueError when the board
                  has none. VALVE_OUT_FULL_V: the volts at 100 % duty (10.0).
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
                  from a task (e.g. every 20-50 ms): reading never waits. The console
                  (heatgw.console) sets its `live` attribute, where it has one, while a
                  person waits for an answer: the host board's virtual time then follows
                  real time.
reset_cause()     why the node started: "power_on", "soft", "hard", "watchdog" (or
                  "deepsleep"), for the boot-loop check (heatgw.bootloop: watchdog and
                  hard resets count). Without it, machine.reset_cause() mapped the same
                  way (the real boards: ESP32 panics and machine.reset() are HARD_RESET,
                  RP2040's machine.reset() is a WDT_RESET; the node marks its own resets
                  as planned). The host board: from the harness's boot line.
reset()           a hard reset asked by the firmware (the console's reboot); without it,
                  machine.reset(). The host board: the process ends for its runner to
                  restart it (boards/host/linkproto.py EXIT_HARD_RESET).

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
ADC_PINS          {channel: gpio} of ADC_CHANNELS (ESP32: ADC1 only, GPIO 32-39: ADC2
                  stops while Wi-Fi runs; Pico W: GP26-28, ADC0-2).
VALVE_OUT_PIN     gpio of the valve's PWM command output (with valve_output()).

and keep these rules, which tests/test_boards.py checks on the stub `machine`:
- relays_safe() constructs each relay pin as an output at 1 - active_level, and the
  relays' polarity matches RELAY_PULL (a floating pin is a de-energised coil);
- no GPIO is used twice across chip-selects, relays, inputs, flow, safe boot, dead man,
  the SPI bus pins, NET_PINS, RS485_PINS, ADC_PINS and VALVE_OUT_PIN; an ESP32 board
  with "lan" has the ESP32's fixed RMII pins (19, 21, 22, 25, 26, 27) in NET_PINS;
- rs485() makes one UART on exactly RS485_PINS' tx and rx (on the RP2040 pins that carry
  that UART's function), with timeout=0, and the DE pin an output at 0 (receiving), on a
  pin that is low from reset (not an ESP32 strapping pin pulled up at reset: 0, 5, 15);
- the ADC channels are on the MCU's ADC pins that work with the radio on (ESP32 ADC1:
  32-39; RP2040: 26-28, not 29: the Pico W's wireless clock), set up at construction
  (ESP32: ATTN_11DB), never asked for a pull; the valve output is a PWM at duty 0 from
  the start, on a pin low from reset (its filter must see 0 V until boot.py: bypass);
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
            "io_serving", "RS485_PORTS", "RS485_PINS", "rs485", "reset_cause", "reset",
            "ADC_CHANNELS", "ADC_PINS", "adc", "AIN_SHUNT_OHM", "AIN_DIVIDER",
            "ADC_UV_FULL_SCALE", "VALVE_OUT_PIN", "VALVE_OUT_FULL_V", "valve_output")
NET_KINDS = ("wlan", "lan", "host")
REAL_BOARD_CONSTANTS = ("ARCH", "RTD_CS_PINS", "FLOW_PULSE_PIN", "SAFE_BOOT_PIN",
                        "DEAD_MAN_PIN")
RELAY_NAMES = ("reuse", "cooler_inhibit")
INPUT_NAMES = ("sink_available", "maintenance", "trip_reset", "valve_at_reuse")
