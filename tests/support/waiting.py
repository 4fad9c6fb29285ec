"""How much longer than its nominal time a test waits for a condition (env TEST_WAIT_SCALE).

A condition that holds ends the wait at once, so a longer deadline only changes how long a real
failure takes to report; with it, a machine whose cores are busy elsewhere still passes.
"""

import os

WAIT_SCALE = float(os.environ.get("TEST_WAIT_SCALE", "3"))
