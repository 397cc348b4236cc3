"""heatgw host tools (CPython): build, run firmware on the host, flash, deploy, report."""
