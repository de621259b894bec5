"""``python -m torch_slt``: the ``torch-slt`` command line."""

import sys

from torch_slt.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
