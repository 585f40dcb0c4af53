"""``python -m wattshift.daemon.cli``: the wattshift command without its entry point."""

import sys

from .main import main

sys.exit(main())
