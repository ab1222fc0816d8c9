"""``python -m medpipe.cli``: the same command line as the ``medpipe`` console script."""

import sys

from medpipe.cli import main

sys.exit(main())
