"""heatgw: the gateway application (README)."""

FW_VERSION = "0.8.0"  # the firmware's version: the state payload, HA's sw_version, `status`


def forget(name):
    """Drop heatgw.<name> from the module cache so its code can be collected: a module
    loaded for a rare job (hadisc, command, secrets, topics, dns, ntp) and not needed
    until the next one."""
    import sys

    sys.modules.pop("heatgw." + name, None)
    g = globals()
    if name in g:
        del g[name]
