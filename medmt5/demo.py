"""`python -m medmt5.demo`: the command line lives in medmt5/cli/demo.py."""
import sys

from medmt5.cli.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
