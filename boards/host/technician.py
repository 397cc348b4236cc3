"""The technician at the console, as the plant harness plays one (host board only).

INTEGRATION POINT for the console. The calibration procedure runs "at the console"; until
the console exists, a scenario's `technician` events come over the link as `T` lines
(boards/host/linkproto.py) and this task makes, against heatgw.calprocedure, exactly the
calls the console's `calibrate` command makes, shows what the console would show (a
`technician:` line) and reports it to the harness (observer record `technician`). The
physical steps (precision resistors, baths, sensors back in the pipe) stay the harness's
world events. When the console lands, the harness types `calibrate ...` lines on the host
board's serial port instead; this module, board.technician()/technician_line(), the `T`
opcode and heatgw.start's `technician` hook go, and nothing else changes.

    T begin <method> <n> <name>[,<name>..]    cp.begin(gw, method, names, n=n)
    T measure <ref>|-                         cp.measure(gw, ref), then cp.poll(gw) every
                                              tick until done (as the console waits)
    T finish | T abort | T status             cp.finish(gw) ...
    T release [<name>[,<name>..]]             cp.release(gw, names)
    T clear <name>                            cp.clear(gw, name)
"""

requests = []  # queued by the link (board.technician_line), taken in order


def task(gw):
    """The coroutine function for Gateway.add_task."""

    async def technician(asyncio):
        await _run(gw, asyncio)

    return technician


async def _run(gw, asyncio):
    import board
    from heatgw.start import _forget

    while True:
        if not requests:
            await asyncio.sleep_ms(gw.tick_ms)
            continue
        args = requests.pop(0)
        call = args[0]
        ok = True
        # loaded for the step and dropped after it, as the console does with rarely used
        # code (the session lives on the Gateway)
        from heatgw import calprocedure as cp

        try:
            if call == "begin":
                text = cp.begin(gw, args[1], args[3].split(","), n=int(args[2]))
            elif call == "measure":
                text = cp.measure(gw, None if args[1] == "-" else float(args[1]))
                while True:
                    await asyncio.sleep_ms(gw.tick_ms)
                    done, more = cp.poll(gw)
                    if done:
                        text += "; " + more
                        break
            elif call in ("finish", "abort", "status"):
                text = getattr(cp, call)(gw)
            elif call == "release":
                text = cp.release(gw, args[1].split(",") if len(args) > 1 else None)
            elif call == "clear":
                text = cp.clear(gw, args[1])
            else:
                raise ValueError("unknown step %r" % call)
        except Exception as e:  # noqa: BLE001 - what the console shows: a refusal, or
            ok = False  # e.g. a MemoryError (the task stays up, as the console's would)
            text = str(e) if type(e) is ValueError else repr(e)
        cp = None
        _forget("calprocedure")
        _forget("calibration")
        print("technician:", " ".join(args), "->", text)
        board.observer("technician", {"call": call, "args": args[1:], "ok": ok, "text": text})
