"""``python -m diffusion_lib.train --config FILE [--resume | --fresh]``: the training program.

The program lives in :mod:`diffusion_lib.training.cli`; this module is its
documented entry point.
"""

import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
