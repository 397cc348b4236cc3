"""The dead-man monostable in front of the relay drivers (README, "Dead-man output").

Every edge on the node's dead-man output retriggers it; its output enables the relay
drivers for `hold_ms` after the last edge (the board's DEAD_MAN_HOLD_MS, which the node
sends on its `D` line). Before the first edge, after power-off and with no hold known,
the drivers are disabled: a coil is energised only while its pin is active AND the
monostable is up.
"""


class DeadMan:
    def __init__(self):
        self.hold_ms = None
        self.level = None  # last level the node drove (None: floating, after reset)
        self.last_edge_vt = None
        self.edges = 0
        self.drops_t_s = []  # when it dropped energised coils by itself

    def set_level(self, level, vt):
        """The node drove the output to level (0/1) at vt; a change is an edge (the
        first level after a reset is none: the pin only stops floating)."""
        if self.level is not None and level != self.level:
            self.last_edge_vt = vt
            self.edges += 1
        self.level = level

    def up(self, vt):
        """True while the drivers are enabled at vt."""
        return (self.hold_ms is not None and self.last_edge_vt is not None
                and vt < self.last_edge_vt + self.hold_ms)

    def expiry(self):
        """When the output falls unless retriggered (None: it is not up)."""
        if self.hold_ms is None or self.last_edge_vt is None:
            return None
        return self.last_edge_vt + self.hold_ms

    def power_off(self):
        self.level = None
        self.last_edge_vt = None

    def summary(self):
        return {"hold_ms": self.hold_ms, "edges": self.edges, "drops_t_s": self.drops_t_s}
