"""`python -m clusterucb_core.cli ...` (what `torchrun -m clusterucb_core.cli features` runs)."""

import sys

from . import main

sys.exit(main())
