"""Allow ``python -m batchsync``."""

import sys

from batchsync.cli import main

sys.exit(main())
