"""Keep a started watchdog fed from a periodic timer while the application is stopped.

    hold = WatchdogHold(wdt, machine.Timer(0), period_ms=wdt_ms // 4)
    ...
    hold.release()  # the application's supervisor takes the watchdog over

machine.WDT cannot be stopped once started (ESP32, RP2040). When the application stops
in order (Ctrl-C at the serial port) or after a soft reset, the node sits at its REPL and
the watchdog would reset it a few seconds later, in the middle of an mpremote copy. The
timer's callback is a soft one (scheduled: it runs between bytecodes and while the REPL
waits for input), so a REPL that runs code keeps it fed too. Only the board uses this,
after the relays were made safe: nothing toggles the dead-man output then, so the relay
drivers stay disabled in hardware whatever the GPIOs do.
"""


class WatchdogHold:
    def __init__(self, wdt, timer, period_ms):
        if period_ms <= 0:
            raise ValueError("period_ms must be > 0")
        self._wdt = wdt
        self._timer = timer
        wdt.feed()
        timer.init(period=period_ms, mode=timer.PERIODIC, callback=self._feed)

    def _feed(self, _timer):
        self._wdt.feed()

    def release(self):
        """Stop feeding (the application feeds the watchdog itself again)."""
        self._timer.deinit()
