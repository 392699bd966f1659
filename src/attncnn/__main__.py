"""`python -m attncnn ...` (also what `torchrun -m attncnn` runs)."""
import sys

from attncnn.cli import main

sys.exit(main())
