"""What boot.py decided, for main.py: set once per reset, read-only afterwards."""

safe_boot = False  # an installer asked to stop the application (pin held or flag file)
reason = None
app = None  # heatgw.start: "running" once started, "stopped" after an orderly stop
