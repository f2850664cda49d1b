"""``python -m aoai_helpers`` — see :mod:`aoai_helpers.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
