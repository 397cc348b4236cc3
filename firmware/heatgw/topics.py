"""Every MQTT topic of the node, in one place: pure logic, no I/O.

    t = Topics("heatgw", "site1", "gw-07")   # validated; strings built once
    t.status     # heatgw/site1/gw-07/status      retained online/offline (last will)
    t.telemetry  # .../telemetry                  every telemetry.interval_s
    t.event      # .../event                      every event
    t.state      # .../state                      retained: state, firmware, config hash
    t.alarm(id)  # .../alarm/<id>                 retained per alarm; empty payload = gone
    t.cmd        # .../cmd                        commands in (HMAC-authenticated)
    t.cmd_ack    # .../cmd/ack                    each command's answer

Build a Topics once per connection (or once at boot); its strings are kept, so the
publishing path allocates no topic strings (`alarm(id)` concatenates: alarms are rare).

Names: MQTT 3.1.1 (section 4.7) forbids the wildcards `+` and `#` and NUL in a topic
name, and a topic starting with `$` is the broker's (`$SYS`). The node is stricter: site,
node and each level of the prefix are 1..32 of `[A-Za-z0-9_-]` (the characters Home
Assistant allows in discovery ids, so one name serves both), the prefix has 1..4 levels
separated by `/`. Alarm ids are 1..48 of `[a-z0-9_:-]`.
"""

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
_ALARM_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_:-"
_NAME_MAX = 32
_PREFIX_LEVELS = 4
ALARM_ID_MAX = 48
ONLINE = b"online"
OFFLINE = b"offline"


def check_name(what, value, chars=_NAME_CHARS, max_len=_NAME_MAX):
    """ValueError naming `what` unless value is a str of 1..max_len of `chars`."""
    if type(value) is not str or not 0 < len(value) <= max_len:
        raise ValueError("%s must be a string of 1..%d characters, got %r"
                         % (what, max_len, value))
    for c in value:
        if c not in chars:
            raise ValueError("%s: character %r not allowed in %r (MQTT forbids + # NUL in "
                             "topic names; allowed here: letters, digits%s)"
                             % (what, c, value, " _ : -" if chars is _ALARM_CHARS
                                else " _ -"))
    return value


def check_prefix(what, prefix):
    """A topic prefix: 1..4 levels of check_name(), separated by '/'."""
    if type(prefix) is not str:
        raise ValueError("%s must be a string, got %r" % (what, prefix))
    levels = prefix.split("/")
    if len(levels) > _PREFIX_LEVELS:
        raise ValueError("%s %r has more than %d levels" % (what, prefix, _PREFIX_LEVELS))
    for level in levels:
        check_name(what + " level", level)  # an empty level (a//b, /a, a/) fails here
    return prefix


class Topics:
    def __init__(self, prefix, site, node):
        check_prefix("mqtt topic prefix", prefix)
        check_name("site id", site)
        check_name("node id", node)
        self.prefix = prefix
        self.site = site
        self.node = node
        base = prefix + "/" + site + "/" + node + "/"
        self.base = base
        self.status = base + "status"
        self.telemetry = base + "telemetry"
        self.event = base + "event"
        self.state = base + "state"
        self.cmd = base + "cmd"
        self.cmd_ack = base + "cmd/ack"
        self.alarm_base = base + "alarm/"
        self.alarm_filter = base + "alarm/+"  # subscribe: every retained alarm

    def alarm(self, alarm_id):
        check_name("alarm id", alarm_id, _ALARM_CHARS, ALARM_ID_MAX)
        return self.alarm_base + alarm_id

    def all(self):
        """(name, topic, retained) of every fixed topic (docs and tests)."""
        return (("status", self.status, True), ("telemetry", self.telemetry, False),
                ("event", self.event, False), ("state", self.state, True),
                ("alarm", self.alarm_base + "<id>", True), ("cmd", self.cmd, False),
                ("cmd_ack", self.cmd_ack, False))
