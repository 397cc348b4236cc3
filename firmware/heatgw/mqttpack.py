"""CONNECT and SUBSCRIBE packets for heatgw.mqtt, encoded by umqtt.simple (micropython-lib,
pinned in mplibs.lock), loaded for one connect and dropped again:

    n, end = encode(client, rx)   # CONNECT in rx[:n], the client's SUBSCRIBEs in rx[n:end]

umqtt.simple's methods write to `self.sock`: here _Buf, a stand-in over the client's
receive buffer, and its blocking wait for the broker's reply stops at once (_Buf.read
raises _Sent). _Buf is its `socket` module too (socket(), getaddrinfo(), connect()): its
connect() never touches the network. Sockets, the CONNACK and everything after are
heatgw.mqtt's. encode() removes umqtt.simple and this module from the module cache before
it returns, so neither stays in the heap between connections (the few identifiers they
intern stay: qstrs are never freed).
"""

import sys

from heatgw import forget


class _Sent(Exception):
    """umqtt.simple has written its packet and would now block on the reply."""


class _Buf:
    def __init__(self, mv):
        self.mv = mv
        self.n = 0

    def write(self, b, n=-1):
        if n < 0:
            n = len(b)
        end = self.n + n
        if end > len(self.mv):
            raise ValueError("packet of over %d bytes does not fit its buffer" % len(self.mv))
        self.mv[self.n:end] = memoryview(b)[:n]
        self.n = end
        return n

    def read(self, n):
        raise _Sent

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        pass

    def socket(self, *a):
        return self

    def getaddrinfo(self, host, port, *a):
        return ((0, 0, 0, "", None),)


def _nop(topic, msg):
    pass


def encode(client, mv):
    """CONNECT (client id, the will: status "offline", QoS 1, retained; user name and
    password) and a SUBSCRIBE (QoS 1, packet ids from the client) per client.subs into
    mv; returns (n, end): CONNECT is mv[:n], the SUBSCRIBEs mv[n:end]."""
    try:
        from umqtt import simple

        buf = _Buf(mv)
        simple.socket = buf  # what its connect() calls "socket": the stand-in
        login = client._login
        u = simple.MQTTClient(client.client_id, "", 1, login[0] if login else None,
                              login[1] if login else None, client.keepalive_ms // 1000)
        if client.will_topic:
            u.set_last_will(client.will_topic, b"offline", True, 1)
        u.cb = _nop  # its subscribe() insists on a callback
        u.sock = buf
        try:
            u.connect(client.clean_session)
        except _Sent:  # written; it would wait for the CONNACK now
            pass
        n = buf.n
        for t in client.subs:
            u.pid = client._new_pid() - 1  # it takes the next id
            try:
                u.subscribe(t, 1)
            except _Sent:
                pass
        return n, buf.n
    finally:
        sys.modules.pop("umqtt.simple", None)
        sys.modules.pop("umqtt", None)
        forget("mqttpack")
