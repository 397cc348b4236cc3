"""The reason codes of the relay decision: telemetry's `reason` and the bits of its
`active`/`latched` (heatgw.recqueue re-exports them), the BMS's registers (heatgw.bms).
Codes are indexes: append new names at the end, never reorder (records on flash, and a
building's BMS, hold them). The bitmaps hold codes 1..15 only. A table is one string of
space-separated names (code_of() and name_of() look them up), not a tuple of str objects."""

# 13, 14: heatgw.analog's value trips (input_low:<name>, input_high:<name>)
REASONS = ("none boot no_config it_coolant_high sink_return_high valve_stuck sink_flow_low "
           "sink_unavailable flow_implausible maintenance sensor_fault sensor_stale recovered "
           "input_low input_high")


def code_of(names, name):
    """The index of `name` in the table `names` (above), -1 when it is not there.
    Allocation-free."""
    if type(name) is not str or not name or " " in name:
        return -1
    i = 0
    at = 0
    while True:
        end = names.find(" ", at)
        if end < 0:
            end = len(names)
        if end - at == len(name) and names.startswith(name, at):
            return i
        if end == len(names):
            return -1
        at = end + 1
        i += 1


def name_of(names, code):
    """The name at index `code` of the table `names` (above), None when there is none."""
    at = 0
    for _ in range(code):
        at = names.find(" ", at) + 1
        if not at:
            return None
    end = names.find(" ", at)
    return names[at:] if end < 0 else names[at:end]


def reason_code(reason):
    """REASONS index of a fail-safe reason ("sensor_fault:supply" -> sensor_fault); 0 for
    None."""
    if reason is None:
        return 0
    i = reason.find(":")
    name = reason if i < 0 else reason[:i]
    c = code_of(REASONS, name)
    return 255 if c < 0 else c


def reason_bits(reasons):
    bits = 0
    for r in reasons:
        c = reason_code(r)
        if 0 < c < 16:
            bits |= 1 << c
    return bits
