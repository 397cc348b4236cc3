import os

import pytest

from host_tools import mprun
from host_tools.paths import micropython_cmd


@pytest.fixture(scope="session")
def mp():
    """Run MicroPython source on the real `micropython` binary ($MICROPYTHON)."""
    exe = micropython_cmd()[0]
    if not os.path.exists(exe):
        pytest.fail(f"micropython binary not found: {exe} (set MICROPYTHON)")
    return mprun


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HEATGW_PORT"):
        return
    skip = pytest.mark.skip(reason="needs hardware: set HEATGW_PORT to a board's serial port")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
