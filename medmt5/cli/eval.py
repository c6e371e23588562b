"""`python -m medmt5.eval`: score a checkpoint on seqio tasks (T5X command-line conventions).

    python -m medmt5.eval --gin_file=runs/eval.gin --gin_file=models/mt5_tiny.gin \
        --gin.CHECKPOINT_PATH="'/tmp/tiny_ft'" --gin.MIXTURE_OR_TASK_NAME="'abstrct_tiny'"

CHECKPOINT_PATH is our MODEL_DIR (latest step), MODEL_DIR/best, a .../checkpoints/<step>
dir, a Hugging Face model dir or a T5X checkpoint. Writes EVAL_OUTPUT_DIR/metrics.json,
<task>-predictions.jsonl and TensorBoard summaries (EVAL_OUTPUT_DIR/<task>).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

import jax

from medmt5.model.transformer import Transformer
from medmt5.run import checkpoint_eval, evaluation

log = logging.getLogger(__name__)


def default_output_dir(checkpoint_path: str | None, split: str | None) -> str | None:
    """CHECKPOINT_PATH/eval_<split>, next to it for a checkpoint file (None if unknown)."""
    if not checkpoint_path or not split or not isinstance(checkpoint_path, str):
        return None
    from medmt5.data import hub

    if hub.is_hub_id(checkpoint_path):  # never inside the hub cache, nor ./org/name (an id)
        repo_id, revision = hub.parse_hub_id(checkpoint_path)
        name = repo_id.replace("/", "--") + (f"@{revision}" if revision else "")
        return os.path.abspath(os.path.join("eval", name, f"eval_{split}"))
    base = checkpoint_path if not os.path.isfile(checkpoint_path) else \
        os.path.dirname(os.path.abspath(checkpoint_path))
    return os.path.join(base, f"eval_{split}")


def evaluate(*, checkpoint_path: str, task_feature_lengths: Mapping[str, int],
             mixture_or_task_name: str | None = None,
             eval_tasks: Sequence[str] | None = None, split: str = "validation",
             output_dir: str | None = None, batch_size: int = 8,
             max_examples: int | None = None, beam_size: int = 1,
             max_decode_length: int | None = None, num_partitions: int = 1,
             allow_vocabulary_change: bool = False) -> dict:
    """Loads the checkpoint and evaluates it; returns {"<task>/<metric>": value}.

    eval_tasks default to MIXTURE_OR_TASK_NAME itself (or its sub-tasks) with `split`.
    """
    if not eval_tasks and not mixture_or_task_name:
        raise ValueError("evaluate needs MIXTURE_OR_TASK_NAME or evaluate.eval_tasks")
    tasks = list(eval_tasks or evaluation.default_eval_tasks(mixture_or_task_name, split))
    cfg, params = checkpoint_eval.load_for_scoring(checkpoint_path, tasks,
                                                   allow_vocabulary_change)
    model = Transformer(cfg)
    log.info("%s parameters from %s", f"{sum(x.size for x in jax.tree.leaves(params)):,}",
             checkpoint_path)
    return checkpoint_eval.evaluate_checkpoint(
        tasks, task_feature_lengths, checkpoint_path=checkpoint_path,
        output_dir=output_dir or default_output_dir(checkpoint_path, split),
        model_for=lambda task: (None, model, params), split=split, batch_size=batch_size,
        max_examples=max_examples, beam_size=beam_size, max_decode_length=max_decode_length,
        num_partitions=num_partitions, tensorboard=True)


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    from medmt5.cli import gin_utils

    def run(flags):
        del flags
        out = gin_utils.query_macro("EVAL_OUTPUT_DIR") or default_output_dir(
            gin_utils.query_macro("CHECKPOINT_PATH"), gin_utils.query_macro("EVAL_SPLIT"))
        gin_utils.call("evaluate")
        if out:  # only for an evaluation that ran: a failed one leaves no trace there
            gin_utils.write_config(out)

    return gin_utils.run_cli(run, argv, "medmt5.eval", USAGE)


def console_main() -> None:
    from medmt5.runtime import failures
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
