"""``python -m aoai_helpers`` — see :mod:`aoai_helpers.cli.main`."""

import sys

from aoai_helpers.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
