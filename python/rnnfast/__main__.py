"""`python -m rnnfast ...`: the same command line as the `rnnfast` console script (rnnfast.cli.main).
Not a library entry point (importing it does nothing; running it runs the command line)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
