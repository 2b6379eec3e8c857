"""`python -m bench [--quick] [--cases p3,p4] [--repeat N]`; see `bench/harness.py`."""

import sys

from .harness import main

sys.exit(main())
