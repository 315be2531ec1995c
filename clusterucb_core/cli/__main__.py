"""`python -m clusterucb_core.cli ...` (what `torchrun -m clusterucb_core.cli features` runs)."""

import sys

from clusterucb_core.cli import main

sys.exit(main())
