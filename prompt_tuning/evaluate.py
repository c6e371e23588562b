"""`python -m prompt_tuning.evaluate`: score a ProMoT checkpoint with its prompt attached or
removed (T5X command-line conventions; gin/promot/icl_eval.gin).

    python -m prompt_tuning.evaluate --gin_file=promot/icl_eval.gin \
        --gin.CHECKPOINT_PATH="'/runs/rte_stage2/best'" --gin.PROMPT_MODE="'removed'"

PROMPT_MODE 'attached' (the fine-tuned task's format; also the prompt-tuning baseline) puts
the checkpoint's prompt (or PROMPT_FILE) in front of every input; 'removed' evaluates the
bare backbone (ProMoT on every other task). Writes EVAL_OUTPUT_DIR/metrics.json (with the
paper's "Norm. Avg." over the tasks) and <task>-predictions.jsonl.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Mapping, Optional, Sequence

log = logging.getLogger("medmt5")


def promot_evaluate(*, checkpoint_path: str, task_feature_lengths: Mapping[str, int],
                    mixture_or_task_name: Optional[str] = None,
                    eval_tasks: Optional[Sequence[str]] = None, split: str = "test",
                    prompt_mode: str = "removed", prompt_file: Optional[str] = None,
                    output_dir: Optional[str] = None, batch_size: int = 8,
                    max_examples: Optional[int] = None, beam_size: int = 4,
                    max_decode_length: Optional[int] = None, num_partitions: int = 1) -> dict:
    """Evaluates; returns {"<task>/<metric>": value, "all/norm_avg": the paper's Norm. Avg.}."""
    import jax

    import medmt5
    from medmt5 import evaluation, partitioning
    from medmt5.model import Transformer
    from prompt_tuning import inference
    from prompt_tuning.initializers import load_npy
    from prompt_tuning.prompts import PromptedTransformer
    from tasks import promot_metrics

    if prompt_mode not in inference.PROMPT_MODES:
        raise ValueError(f"PROMPT_MODE={prompt_mode!r}; use one of {inference.PROMPT_MODES}.")
    if not eval_tasks and not mixture_or_task_name:
        raise ValueError("set MIXTURE_OR_TASK_NAME or promot_evaluate.eval_tasks")
    tasks = list(eval_tasks or evaluation.default_eval_tasks(mixture_or_task_name, split))
    cfg, params = medmt5.load_checkpoint(checkpoint_path)
    backbone, stored = inference.split_prompt(params)
    if prompt_mode == "removed":
        if prompt_file:
            raise ValueError("PROMPT_FILE is set but PROMPT_MODE='removed' uses no prompt.")
        model, params = Transformer(cfg), backbone
    else:
        prompt = load_npy(prompt_file) if prompt_file else stored
        if prompt is None:
            raise ValueError(f"{checkpoint_path} has no prompt: set PROMPT_FILE or use "
                             "PROMPT_MODE='removed'.")
        model = PromptedTransformer(cfg, prompt_length=int(prompt.shape[0]))
        params = dict(backbone, prompt={"embedding": prompt})
    mesh = partitioning.create_mesh(num_partitions=num_partitions)
    params = evaluation.place_params(model, params, mesh, task_feature_lengths)
    output_dir = output_dir or os.path.join(checkpoint_path, f"eval_prompt_{prompt_mode}_{split}")
    evaluator = evaluation.Evaluator(tasks, task_feature_lengths, split=split, mesh=mesh,
                                     batch_size=batch_size, max_examples=max_examples,
                                     beam_size=beam_size, max_decode_length=max_decode_length)
    results, per_task = {}, {}
    for td in evaluator.data:
        metrics, records = evaluator.evaluate_task(model, params, td)
        per_task[td.name] = metrics
        results.update({f"{td.name}/{k}": v for k, v in metrics.items()})
        evaluation.write_predictions(output_dir, td.name, records)
    try:
        results["all/norm_avg"] = promot_metrics.normalized_average_of_results(per_task)
    except (KeyError, ValueError) as e:  # tasks without a 0-100 headline metric
        log.info("no Norm. Avg.: %s", e)
    if jax.process_index() == 0:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump({"checkpoint": checkpoint_path, "prompt_mode": prompt_mode,
                       "prompt_file": prompt_file, "split": split, "metrics": results}, f,
                      indent=2)
    print(evaluation.format_metrics(evaluation.latest_step(checkpoint_path), results),
          flush=True)
    return results


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    from medmt5 import gin_utils

    def run(flags):
        del flags
        from prompt_tuning import configurables

        out = gin_utils.query_macro("EVAL_OUTPUT_DIR")
        if out:
            gin_utils.write_config(out)
        configurables.promot_evaluate()

    return gin_utils.run_cli(run, argv, "prompt_tuning.evaluate", USAGE)


if __name__ == "__main__":
    from medmt5 import failures
    failures.exit_process(main(sys.argv[1:]))
