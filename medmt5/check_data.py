"""`python -m medmt5.check_data`: the command line lives in medmt5/cli/check_data.py."""
from medmt5.cli.check_data import console_main, main  # noqa: F401 (main: in-process callers, demo)

if __name__ == "__main__":
    console_main()
