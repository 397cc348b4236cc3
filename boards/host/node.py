"""Start the host board like a reset starts a chip: boot.py, then main.py.

    MICROPYPATH=... micropython boards/host/node.py

The unix port runs neither file by itself; this does, in one interpreter, in order.
"""

import boot  # noqa: F401
import main  # noqa: F401
