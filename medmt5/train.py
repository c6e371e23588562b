"""`python -m medmt5.train`: the command line lives in medmt5/cli/train.py."""
from medmt5.cli.train import console_main, main  # noqa: F401 (main: in-process callers, demo)

if __name__ == "__main__":
    console_main()
