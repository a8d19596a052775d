"""``python -m lib.cli``: the headless command line (see lib/cli/__init__.py)."""

import sys

from lib.cli import main

sys.exit(main())
