"""`python -m medmt5.eval`: score a checkpoint on seqio tasks (T5X command-line conventions).

    python -m medmt5.eval --gin_file=runs/eval.gin --gin_file=models/mt5_tiny.gin \
        --gin.CHECKPOINT_PATH="'/tmp/tiny_ft'" --gin.MIXTURE_OR_TASK_NAME="'abstrct_tiny'"

CHECKPOINT_PATH is our MODEL_DIR (latest step), MODEL_DIR/best, a .../checkpoints/<step>
dir, a Hugging Face model dir or a T5X checkpoint. Writes EVAL_OUTPUT_DIR/metrics.json,
<task>-predictions.jsonl and TensorBoard summaries (EVAL_OUTPUT_DIR/<task>). The evaluation
itself is medmt5.run.checkpoint_eval.evaluate (gin's `evaluate`); this module parses flags.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from medmt5.cli import gin_utils
from medmt5.run.checkpoint_eval import (  # noqa: F401 (re-exported: the library's evaluate)
    default_output_dir,
    evaluate,
)
from medmt5.runtime import failures

USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    def run(flags):
        del flags
        out = gin_utils.query_macro("EVAL_OUTPUT_DIR") or default_output_dir(
            gin_utils.query_macro("CHECKPOINT_PATH"), gin_utils.query_macro("EVAL_SPLIT"))
        gin_utils.call("evaluate")
        if out:  # only for an evaluation that ran: a failed one leaves no trace there
            gin_utils.write_config(out)

    return gin_utils.run_cli(run, argv, "medmt5.eval", USAGE)


def console_main() -> None:
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
