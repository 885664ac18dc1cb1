"""python -m counting_addon: the same as the counting-proxy command (launcher/run.py)."""

import sys

from counting_addon.launcher.run import main

sys.exit(main(sys.argv[1:], prog="python -m counting_addon"))
