"""`python -m medmt5.eval`: the command line lives in medmt5/cli/eval.py."""
from medmt5.cli.eval import console_main

if __name__ == "__main__":
    console_main()
