"""heatgw: the gateway application (README)."""

FW_VERSION = "0.8.0"  # the firmware's version: the state payload, HA's sw_version, `status`
