"""`python -m kiln` runs the command line."""

import sys

from kiln.cli.main import main

sys.exit(main())
