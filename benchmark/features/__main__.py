"""``python -m benchmark.features``: see :mod:`benchmark.features.cli`."""
import sys

from benchmark.features.cli import main

sys.exit(main())
