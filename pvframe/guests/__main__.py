"""``python -m pvframe.guests [--check]``: rebuild the shipped demo-guest images."""

import sys

from pvframe.guests import main

raise SystemExit(main(sys.argv[1:]))
