"""`python -m dewy` is the `dewy` command."""

import sys

from dewy.cli import main

if __name__ == "__main__":
    sys.exit(main())
