"""`python -m ml.cli` is the same as `mlops`."""

import sys

from ml.cli import main

sys.exit(main())
