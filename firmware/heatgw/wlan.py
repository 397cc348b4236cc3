"""Wi-Fi station bring-up and reconnect: the body of heatgw.net's task on a board whose
interface is "wlan" (loaded only there).

Credentials `wifi_ssid` / `wifi_password` come from the secrets file. connect() returns
at once on the ports; the task polls isconnected() and status() with asyncio sleeps,
gives up an attempt after `connect_timeout_ms` or on a failure status (wrong password, no
AP), then waits a capped exponential backoff with jitter (heatgw.net.Backoff) before the
next. A link lost later is noticed by the same polling. No event or exception text
carries a secret.
"""

from heatgw import clock

try:
    import network
except ImportError:  # the unix port: tests bring a stand-in
    network = None

_FAILED = ("STAT_WRONG_PASSWORD STAT_NO_AP_FOUND STAT_CONNECT_FAIL STAT_ASSOC_FAIL "
           "STAT_HANDSHAKE_TIMEOUT STAT_BEACON_TIMEOUT")


def _status_name(st):
    # "wrong_password" for network.STAT_WRONG_PASSWORD; the number when unknown
    if network is not None:
        for n in dir(network):
            if n.startswith("STAT_") and getattr(network, n) == st:
                return n[5:].lower()
    return "status_%s" % st


def _failed(st):
    if network is None:
        return False
    for n in _FAILED.split():
        if getattr(network, n, None) == st:
            return True
    return False


async def run(net, asyncio):
    """Bring the station up and keep it up (heatgw.net.Net.run on a Wi-Fi board)."""
    s = net.secrets.get("wifi_ssid") if net.secrets is not None else None
    if s is None:
        net._event("error", error="no wifi_ssid in the secrets file")
        while True:  # nothing to try until provisioning (the task is restarted then)
            await asyncio.sleep_ms(net.backoff.cap_ms)
    p = net.secrets.get("wifi_password")
    iface = net.iface
    iface.active(True)
    while True:
        t0 = clock.real_us()
        if not iface.isconnected():
            net._set_down("link_lost")
            clock.took(t0, "net")
            reason = await _connect(net, asyncio, s, p)
            t0 = clock.real_us()
            if reason is not None:
                d = net.backoff.next_ms()
                net._event("down", reason=reason, retry_in_ms=d)
                clock.took(t0, "net")
                await asyncio.sleep_ms(d)
                continue
            net._set_up(net._addr())
        elif not net.up:  # restarted with the link still up: no reconnect
            net._set_up(net._addr())
        clock.took(t0, "net")
        await net._services(asyncio)
        await asyncio.sleep_ms(net.poll_ms)


async def _connect(net, asyncio, ssid, password):
    # One attempt: None when connected, else why not. connect() returns at once.
    iface = net.iface
    r0 = clock.real_us()
    try:
        iface.disconnect()
    except OSError:
        pass
    try:
        if password is None:
            iface.connect(ssid.reveal())
        else:
            iface.connect(ssid.reveal(), password.reveal())
    except OSError as e:
        return "connect_error_%s" % (e.args[0] if e.args else "?")
    finally:
        clock.took(r0, "net")
    t0 = clock.ticks_ms()
    while not iface.isconnected():
        st = iface.status()
        if _failed(st):
            return _status_name(st)
        if clock.ticks_diff(clock.ticks_ms(), t0) >= net.connect_timeout_ms:
            return "timeout_" + _status_name(st)
        await asyncio.sleep_ms(net.poll_ms)
    return None
