"""``python -m odenet``: the ``odenet`` command (see :mod:`odenet.cli`)."""

import sys

from odenet.cli import main

if __name__ == "__main__":
    sys.exit(main())
