"""One checkpoint evaluation: load -> place -> Evaluator -> predictions, summaries, metrics.json.

`python -m medmt5.eval` (`evaluate` below, gin's `evaluate`) and ProMoT evaluation
(prompt_tuning.evaluate.promot_evaluate) are both this sequence; they differ only in which
model and parameters score each task (`model_for`) and in extra metrics and summaries.

    cfg, params = load_for_scoring(checkpoint_path, tasks)
    results = evaluate_checkpoint(tasks, lengths, checkpoint_path=..., output_dir=...,
                                  model_for=lambda task: (None, Transformer(cfg), params))
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax

from medmt5.checkpointing.atomic_dir import atomic_write_text
from medmt5.checkpointing.checkpoint_io import load_checkpoint
from medmt5.data import hub, paths, vocab_record
from medmt5.model.transformer import Transformer
from medmt5.run import evaluation, progress
from medmt5.training import partitioning

log = logging.getLogger(__name__)

# task name -> (placement key, model, host params): tasks with the same key share one placement
ModelFor = Callable[[str], tuple[Hashable, Any, Any]]


def load_for_scoring(checkpoint_path: str, tasks: Sequence[str],
                     allow_vocabulary_change: bool = False):
    """(T5Config, host params) of the checkpoint, once its vocabulary fits the tasks'."""
    cfg, params = load_checkpoint(checkpoint_path)
    vocab_record.check_scoring_run(checkpoint_path, tasks, cfg.vocab_size,
                                   allow_vocabulary_change)
    return cfg, params


def evaluate_checkpoint(tasks: Sequence[str], task_feature_lengths: Mapping[str, int], *,
                        checkpoint_path: str, output_dir: str, model_for: ModelFor,
                        split: str = "validation", batch_size: int = 8,
                        max_examples: int | None = None, beam_size: int = 1,
                        max_decode_length: int | None = None, num_partitions: int = 1,
                        tensorboard: bool = False,
                        task_metrics: Callable[[str, dict, list], None] | None = None,
                        summarize: Callable[[dict], dict] | None = None,
                        record: Mapping[str, Any] | None = None) -> dict:
    """Scores every task; returns {"<task>/<metric>": value} plus summarize(per_task)'s.

    Writes OUTPUT_DIR/<task>-predictions.jsonl, OUTPUT_DIR/metrics.json ({"checkpoint",
    "step", "split", **record, "metrics"}, process 0, atomically) and, with tensorboard,
    summaries in OUTPUT_DIR/<task>. task_metrics(task, metrics, records) may add to a
    task's metrics; the table of all metrics is printed at the end.
    """
    mesh = partitioning.create_mesh(num_partitions=num_partitions)
    step = evaluation.latest_step(checkpoint_path)
    log.info("mesh %s; evaluating %s (step %d) on %s", dict(mesh.shape), checkpoint_path,
             step, list(tasks))
    evaluator = evaluation.Evaluator(list(tasks), task_feature_lengths, split=split, mesh=mesh,
                                     batch_size=batch_size, max_examples=max_examples,
                                     beam_size=beam_size, max_decode_length=max_decode_length)
    results, per_task, placed = {}, {}, {}
    for td in evaluator.data:
        key, model, params = model_for(td.name)
        if key not in placed:  # place each distinct (model, params) once
            placed[key] = (model, evaluation.place_params(model, params, mesh,
                                                           task_feature_lengths))
        model, params = placed[key]
        metrics, records = evaluator.evaluate_task(model, params, td)
        if task_metrics is not None:
            task_metrics(td.name, metrics, records)
        per_task[td.name] = metrics
        results.update({f"{td.name}/{k}": v for k, v in metrics.items()})
        evaluation.write_predictions(output_dir, td.name, records)
        if tensorboard:
            writer = progress.SummaryLogger(paths.join(output_dir, td.name))
            writer.scalars(step, metrics)
            writer.close()
    if summarize is not None:
        results.update(summarize(per_task))
    if jax.process_index() == 0:
        paths.makedirs(output_dir)
        atomic_write_text(paths.join(output_dir, "metrics.json"), json.dumps(
            {"checkpoint": checkpoint_path, "step": step, "split": split, **(record or {}),
             "metrics": results}, indent=2))
    print(evaluation.format_metrics(step, results), flush=True)
    return results


def default_output_dir(checkpoint_path: str | None, split: str | None) -> str | None:
    """CHECKPOINT_PATH/eval_<split>, next to it for a checkpoint file (None if unknown)."""
    if not checkpoint_path or not split or not isinstance(checkpoint_path, str):
        return None
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
    cfg, params = load_for_scoring(checkpoint_path, tasks, allow_vocabulary_change)
    model = Transformer(cfg)
    log.info("%s parameters from %s", f"{sum(x.size for x in jax.tree.leaves(params)):,}",
             checkpoint_path)
    return evaluate_checkpoint(
        tasks, task_feature_lengths, checkpoint_path=checkpoint_path,
        output_dir=output_dir or default_output_dir(checkpoint_path, split),
        model_for=lambda task: (None, model, params), split=split, batch_size=batch_size,
        max_examples=max_examples, beam_size=beam_size, max_decode_length=max_decode_length,
        num_partitions=num_partitions, tensorboard=True)
