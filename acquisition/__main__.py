"""``python -m acquisition`` is the ``galacto`` command."""

import sys

from acquisition.cli import main

sys.exit(main())
