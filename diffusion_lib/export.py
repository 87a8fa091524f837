"""``python -m diffusion_lib.export MODEL.pt OUT.onnx``: export a trained model to ONNX.

The exporter lives in :mod:`diffusion_lib.nets.onnx`; this module is its
documented entry point.
"""

import sys

from .nets.onnx import main

if __name__ == "__main__":
    sys.exit(main())
