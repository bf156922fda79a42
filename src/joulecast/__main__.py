"""``python -m joulecast``: the command line."""

import sys

from joulecast.cli import main

sys.exit(main())
