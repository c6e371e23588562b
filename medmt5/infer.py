"""`python -m medmt5.infer`: the command line lives in medmt5/cli/infer.py."""
from medmt5.cli.infer import console_main, main  # noqa: F401 (main: in-process callers, demo)

if __name__ == "__main__":
    console_main()
