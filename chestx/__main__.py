"""`python -m chestx`."""

import sys

from chestx.cli import main

sys.exit(main())
