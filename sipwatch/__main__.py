"""``python -m sipwatch``: the same as the ``sipwatch`` command."""

import sys

from sipwatch.cli import main

sys.exit(main())
