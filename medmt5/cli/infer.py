"""`python -m medmt5.infer`: write a checkpoint's predictions as JSONL (T5X conventions).

    python -m medmt5.infer --gin_file=runs/infer.gin \
        --gin.CHECKPOINT_PATH="'/tmp/tiny_ft'" --gin.MIXTURE_OR_TASK_NAME="'abstrct_tiny'" \
        --gin.OUTPUT_FILE="'/tmp/predictions.jsonl'"

Inputs come from the task's split, or from INPUT_FILE (one model input per line, or JSONL
with an "inputs" field), tokenized with the task's vocabulary. Each output line is
{"inputs", "prediction", "target"} (target is "" for INPUT_FILE lines). The work is
medmt5.run.inference.infer (gin's `infer`); this module parses flags.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from medmt5.cli import gin_utils
from medmt5.run.inference import infer, read_inputs  # noqa: F401 (re-exported)
from medmt5.runtime import failures

USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    def run(flags):
        del flags
        gin_utils.call("infer")

    return gin_utils.run_cli(run, argv, "medmt5.infer", USAGE)


def console_main() -> None:
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
