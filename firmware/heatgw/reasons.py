"""The reason codes of the relay decision: telemetry's `reason` and the bits of its
`active`/`latched` (heatgw.recqueue re-exports them), the BMS's registers (heatgw.bms).
Codes are indexes: append new names at the end, never reorder (records on flash, and a
building's BMS, hold them). The bitmaps hold codes 1..15 only."""

REASONS = ("none", "boot", "no_config", "it_coolant_high", "sink_return_high", "valve_stuck",
           "sink_flow_low", "sink_unavailable", "flow_implausible", "maintenance",
           "sensor_fault", "sensor_stale", "recovered")


def reason_code(reason):
    """REASONS index of a fail-safe reason ("sensor_fault:supply" -> sensor_fault); 0 for
    None."""
    if reason is None:
        return 0
    i = reason.find(":")
    name = reason if i < 0 else reason[:i]
    return REASONS.index(name) if name in REASONS else 255


def reason_bits(reasons):
    bits = 0
    for r in reasons:
        c = reason_code(r)
        if 0 < c < 16:
            bits |= 1 << c
    return bits
