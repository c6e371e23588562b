"""`python -m medmt5.convert`: the command line lives in medmt5/cli/convert.py."""
from medmt5.cli.convert import console_main, main  # noqa: F401 (main: in-process callers, demo)

if __name__ == "__main__":
    console_main()
