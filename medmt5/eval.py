"""`python -m medmt5.eval`: the command line lives in medmt5/cli/eval.py."""
from medmt5.cli.eval import console_main, main  # noqa: F401 (main: in-process callers, demo)

if __name__ == "__main__":
    console_main()
