"""`python -m sep.cli`: the same app as the `sep` entry point (accelerate launch -m sep.cli ...)."""

import sys

from sep.cli import app

sys.exit(app())
