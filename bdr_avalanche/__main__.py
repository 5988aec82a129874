"""``python -m bdr_avalanche``: the ``bdr-avalanche`` command line."""

import sys

from .experiment.cli import main

sys.exit(main())
