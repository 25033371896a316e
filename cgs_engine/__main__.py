"""`python -m cgs_engine ...` is the `cgs` command (handy under `torchrun -m cgs_engine train ...`)."""

import sys

from cgs_engine.cli.main import main

sys.exit(main())
