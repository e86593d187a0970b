"""Run the emulator with ``python -m batchsync.emulator``; same options as ``batchsync emulator``."""

import sys

from batchsync.emulator.cli import main

sys.exit(main(sys.argv[1:]))
