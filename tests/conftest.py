import os

import pytest

from host_tools import mprun
from host_tools.paths import micropython_cmd
from tests.siteday import complete_node_day  # noqa: F401 - the complete-node day fixture


@pytest.fixture(scope="session", autouse=True)
def _host_flash(tmp_path_factory):
    """The host board keeps its littlefs image in $HEATGW_FLASH: one per test session,
    never a shared file in /tmp."""
    if "HEATGW_FLASH" not in os.environ:
        os.environ["HEATGW_FLASH"] = str(tmp_path_factory.mktemp("flash") / "flash.bin")
    yield


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
