"""`python -m cgs_engine ...` is the `cgs` command (handy under `torchrun -m cgs_engine train ...`)."""

from cgs_engine.cli.main import exit_process, main

exit_process(main())
