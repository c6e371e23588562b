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

import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

import numpy as np

import gin
from medmt5.cli import gin_utils
from medmt5.data import vocab_record
from medmt5.model.transformer import Transformer
from medmt5.run import checkpoint_eval, evaluation
from medmt5.runtime import failures
from prompt_tuning import inference, recipe
from prompt_tuning.initializers import load_npy
from prompt_tuning.prompts import PARAM_NAME, PromptedTransformer
from tasks import promot_metrics

log = logging.getLogger(__name__)


def promot_evaluate(*, checkpoint_path: str, task_feature_lengths: Mapping[str, int],
                    mixture_or_task_name: str | None = None,
                    eval_tasks: Sequence[str] | None = None, split: str = "test",
                    prompt_mode: str = "removed", prompt_file: str | None = None,
                    prompt_tasks: Sequence[str] | None = None,
                    output_dir: str | None = None, batch_size: int = 8,
                    max_examples: int | None = None, beam_size: int = 4,
                    max_decode_length: int | None = None, num_partitions: int = 1,
                    format_pattern: str | None = None,
                    target_task: str | None = None) -> dict:
    """Evaluates; returns {"<task>/<metric>": value, "all/norm_avg": the paper's Norm. Avg.}.

    prompt_tasks: the task order of a multi-task prompt table [N, P, H] (MULTITASK_TASKS of
    stage 2); with PROMPT_MODE 'attached' each task gets its own row. format_pattern (or
    target_task, whose labels make the pattern): adds "<task>/format_rate", the share of
    outputs in the fine-tuned target's format. Tasks named *_<lang>_<k>shot are also
    summarised per language ("<lang>/norm_avg", "<lang>/format_rate").
    """
    if prompt_mode not in inference.PROMPT_MODES:
        raise ValueError(f"PROMPT_MODE={prompt_mode!r}; use one of {inference.PROMPT_MODES}.")
    if not eval_tasks and not mixture_or_task_name:
        raise ValueError("set MIXTURE_OR_TASK_NAME or promot_evaluate.eval_tasks")
    tasks = list(eval_tasks or evaluation.default_eval_tasks(mixture_or_task_name, split))
    if format_pattern is None and target_task:
        format_pattern = recipe.target_format_pattern(target_task)
    cfg, params = checkpoint_eval.load_for_scoring(checkpoint_path, tasks)
    if prompt_file:  # the prompt's vocabulary record, too
        vocab_record.check_checkpoint(prompt_file, vocab_record.run_identity(tasks[0]),
                                      "PROMPT_FILE")
    backbone, stored = inference.split_prompt(params)
    prompts = task_prompts(tasks, prompt_mode, stored, prompt_file, prompt_tasks,
                           checkpoint_path)

    def model_for(task):  # tasks sharing a prompt array share one placement
        prompt = prompts[task]
        if prompt is None:
            return None, Transformer(cfg), backbone
        return (id(prompt), PromptedTransformer(cfg, prompt_length=int(prompt.shape[0])),
                dict(backbone, prompt={PARAM_NAME: prompt}))

    def add_format_rate(task, metrics, records):
        if format_pattern is not None and records:
            metrics["format_rate"] = promot_metrics.format_rate(
                [r["prediction"] for r in records], format_pattern)

    per_task = {}

    def summarize(scored):
        per_task.update(scored)
        return summaries(scored)

    results = checkpoint_eval.evaluate_checkpoint(
        tasks, task_feature_lengths, checkpoint_path=checkpoint_path,
        output_dir=output_dir or os.path.join(checkpoint_path,
                                              f"eval_prompt_{prompt_mode}_{split}"),
        model_for=model_for, split=split, batch_size=batch_size, max_examples=max_examples,
        beam_size=beam_size, max_decode_length=max_decode_length,
        num_partitions=num_partitions, task_metrics=add_format_rate, summarize=summarize,
        record={"prompt_mode": prompt_mode, "prompt_file": prompt_file,
                "prompt_tasks": list(prompt_tasks or []), "format_pattern": format_pattern})
    if any(k.endswith("/format_rate") for k in results) or any(
            k.split("/")[0] in LANGUAGES for k in results):
        print(language_table(per_task), flush=True)
    return results


LANGUAGES = ("en", "es", "fr", "it")
_LANG_RE = re.compile(r"_(en|es|fr|it)_\d+shot$")


def language_of(task: str) -> str | None:
    """"es" for icl_med_bioasq_es_1shot; None for a task name without a language."""
    m = _LANG_RE.search(task)
    return m.group(1) if m else None


def summaries(per_task: Mapping[str, Mapping[str, float]]) -> dict:
    """all/norm_avg, all/format_rate and, per language, <lang>/norm_avg and
    <lang>/format_rate (the medical in-context suite's per-language view)."""
    out = {}
    groups = {"all": list(per_task)}
    for task in per_task:
        lang = language_of(task)
        if lang:
            groups.setdefault(lang, []).append(task)
    for group, members in groups.items():
        try:
            out[f"{group}/norm_avg"] = promot_metrics.normalized_average_of_results(
                {t: per_task[t] for t in members})
        except (KeyError, ValueError) as e:  # tasks without a 0-100 headline metric
            log.info("no Norm. Avg. for %s: %s", group, e)
        rates = [per_task[t]["format_rate"] for t in members if "format_rate" in per_task[t]]
        if rates:
            out[f"{group}/format_rate"] = sum(rates) / len(rates)
    return out


def language_table(per_task: Mapping[str, Mapping[str, float]]) -> str:
    """task | headline score | format rate, then one row per language."""
    rows = [("task", "score", "format_rate")]
    for task, m in per_task.items():
        try:
            score = f"{promot_metrics.headline_score(m):.1f}"
        except KeyError:
            score = "-"
        rows.append((task, score, f"{m['format_rate']:.1f}" if "format_rate" in m else "-"))
    summary = summaries(per_task)
    for group in ("all",) + LANGUAGES:
        if f"{group}/norm_avg" in summary or f"{group}/format_rate" in summary:
            na, fr = summary.get(f"{group}/norm_avg"), summary.get(f"{group}/format_rate")
            rows.append((f"[{group}] Norm. Avg.", "-" if na is None else f"{na:.1f}",
                         "-" if fr is None else f"{fr:.1f}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]:>6}  {r[2]:>11}" for r in rows)


def task_prompts(tasks: Sequence[str], prompt_mode: str, stored, prompt_file: str | None,
                 prompt_tasks: Sequence[str] | None, checkpoint_path: str) -> dict:
    """{task: the [P, H] prompt to attach, or None (removed)}.

    A multi-task table [N, P, H] (stored, or PROMPT_FILE) needs prompt_tasks, its task order
    (MULTITASK_TASKS): each evaluated task gets its own row, and must have one."""
    if prompt_mode == "removed":
        if prompt_file:
            raise ValueError("PROMPT_FILE is set but PROMPT_MODE='removed' uses no prompt.")
        return {t: None for t in tasks}
    prompt = load_npy(prompt_file) if prompt_file else stored
    if prompt is None:
        raise ValueError(f"{checkpoint_path} has no prompt: set PROMPT_FILE or use "
                         "PROMPT_MODE='removed'.")
    prompt = np.asarray(prompt, np.float32)
    if prompt.ndim == 2:
        if prompt_tasks:
            raise ValueError(f"MULTITASK_TASKS={list(prompt_tasks)} is set but the prompt is a "
                             f"single [P, H] = {prompt.shape} prompt; unset it.")
        return {t: prompt for t in tasks}
    source = f"PROMPT_FILE={prompt_file!r}" if prompt_file else f"{checkpoint_path}"
    if not prompt_tasks:
        raise ValueError(f"{source} holds a multi-task prompt table [N, P, H] = {prompt.shape}: "
                         "set --gin.MULTITASK_TASKS=\"['task0', 'task1', ...]\" (stage 2's task "
                         "order, one per row) so each task gets its own prompt, or "
                         "--gin.PROMPT_FILE to one task's [P, H] prompt.")
    if len(prompt_tasks) != prompt.shape[0]:
        raise ValueError(f"MULTITASK_TASKS has {len(prompt_tasks)} tasks but {source}'s prompt "
                         f"table has {prompt.shape[0]} rows.")
    rows = {t: prompt[i] for i, t in enumerate(prompt_tasks)}
    missing = [t for t in tasks if t not in rows]
    if missing:
        raise ValueError(f"PROMPT_MODE='attached' with a multi-task table: task(s) {missing} "
                         f"have no row in MULTITASK_TASKS={list(prompt_tasks)}; evaluate them "
                         "with PROMPT_MODE='removed'.")
    return {t: rows[t] for t in tasks}


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    def run(flags):
        del flags
        out = gin_utils.query_macro("EVAL_OUTPUT_DIR")
        # By name: prompt_tuning.configurables (imported by the gin file) registers it and
        # imports this module, so importing it here would close a cycle.
        gin.get_configurable("promot_evaluate")()
        if out:  # only for an evaluation that ran: a failed one leaves no trace there
            gin_utils.write_config(out)

    return gin_utils.run_cli(run, argv, "prompt_tuning.evaluate", USAGE)


if __name__ == "__main__":
    failures.exit_process(main(sys.argv[1:]))
