"""``python -m sashimi``: the command line."""

import sys

from sashimi.cli import main

sys.exit(main())
