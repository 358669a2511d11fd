"""`python -m shapeatlas` runs the command line."""

import sys

from shapeatlas.cli import main

sys.exit(main())
