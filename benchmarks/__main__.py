"""``python -m benchmarks [--quick] [--sizes ...] [--device cpu|cuda] [--out DIR]``."""

import sys

from .harness import main

if __name__ == "__main__":
    sys.exit(main())
