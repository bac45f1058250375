"""``python -m sweeps`` = ``python -m sweeps.run``."""
import sys

from sweeps.run import main

sys.exit(main())
