"""``python -m operation_dispatcher ...`` does what the ``operation-dispatcher`` command does."""

import sys

from .cli import main

sys.exit(main())
