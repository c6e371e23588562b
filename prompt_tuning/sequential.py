"""Sequential ProMoT (and its baselines): tasks learnt one after another, resumable.

    python -m prompt_tuning.sequential --gin_file=mt5_tiny.gin \
        --gin_file=promot/sequential.gin --gin.MODEL_DIR="'/tmp/seq'" \
        --gin.SEQUENTIAL_TASKS="['promot_rte', 'promot_wmt14_enfr']" \
        --gin.INITIAL_CHECKPOINT_PATH="'/path/to/pretrained'"

For each task in turn (method):
  "promot"         stage "prompt": a new prompt for the task on the current backbone (backbone
                   frozen); stage "model": the backbone tuned with that prompt attached and
                   frozen.
  "finetune"       stage "model": plain fine-tuning of the backbone (no prompt).
  "prompt_tuning"  stage "prompt" only: the backbone never changes.
Every stage is the recipe's stage (prompt_tuning.recipe.stage_train_kwargs, the same settings
as gin/promot/stage1_prompt.gin and stage2_model.gin: Adafactor without parameter scaling and
weight decay 1e-5 for the prompt, dropout 0.1 in both stages, label smoothing 0.1 in stage 2,
the best step on the task's metric kept), an ordinary `medmt5.run.loop.train` run in
MODEL_DIR/stages/<i>_<task>_<stage>/ (resumable on its own). After a stage MODEL_DIR holds:
  prompts/<task>.npy              the task's best prompt [P, H] (kept for every earlier task)
  backbones/<i>_<task>/           the best backbone after task i (checkpoint without prompt)
  state.json                      completed stages and their measurements (atomic writes)
  metrics.jsonl / metrics.csv     one row per measurement (also printed)
Measurements (after the initial model and after every stage, decoded with beam 4): each task
seen so far scored on `eval_split` with its own prompt attached when it has one (shows
forgetting; the prompt-tuning baseline is scored with its prompt on its own task, as the
paper reports it), and the held-out in-context tasks scored with every prompt removed, plus
their normalised average ("Norm. Avg.").
Rerunning the same command skips completed stages and continues where it stopped.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import gin
import medmt5
from medmt5.checkpointing.atomic_dir import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from medmt5.cli import gin_utils
from medmt5.data import (
    paths,  # MODEL_DIR (state, tables, prompts) may be gs://
    vocab_record,
)
from medmt5.model.transformer import Transformer
from medmt5.run import configs, evaluation, loop
from medmt5.runtime import failures
from prompt_tuning import initializers, recipe, stages
from prompt_tuning.inference import split_prompt
from prompt_tuning.prompt_init import prompt_initializer
from prompt_tuning.prompts import PromptedTransformer
from tasks.promot_metrics import headline_score, normalized_average
from tasks.vocab import ADDED_TOKENS_FILE, SPIECE_FILE

log = logging.getLogger(__name__)

METHODS = {"promot": ("prompt", "model"), "finetune": ("model",),
           "prompt_tuning": ("prompt",)}
STATE_FILE = "state.json"


# The stage settings are the recipe's (prompt_tuning.recipe): one implementation of the
# stages for the gin stages, this driver and the miniature.
StageSettings = recipe.StageSettings


def stage_plan(tasks: Sequence[str], method: str) -> list[tuple]:
    """[(task index, task, stage)] in execution order."""
    if method not in METHODS:
        raise ValueError(f"sequential method {method!r} unknown; choose one of {list(METHODS)}")
    if not tasks:
        raise ValueError("sequential run: the task list (SEQUENTIAL_TASKS) is empty")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"sequential run: a task appears twice in {list(tasks)}; each task "
                         "gets one prompt file prompts/<task>.npy")
    return [(i, t, s) for i, t in enumerate(tasks) for s in METHODS[method]]


def stage_name(i: int, task: str, stage: str) -> str:
    return f"{i}_{task}_{stage}"


class SequentialState:
    """MODEL_DIR/state.json: the run's identity, completed stages and measurements."""

    def __init__(self, model_dir: str, tasks: Sequence[str], method: str):
        self.path = os.path.join(model_dir, STATE_FILE)
        identity = {"tasks": list(tasks), "method": method}
        if paths.exists(self.path):
            with paths.open(self.path) as f:
                data = json.load(f)
            old = {"tasks": data.get("tasks"), "method": data.get("method")}
            if old != identity:
                raise ValueError(f"{self.path} records a run with {old}, but this command asks "
                                 f"for {identity}; use another MODEL_DIR (or delete it).")
            self.data = data
        else:
            self.data = dict(identity, completed=[], measurements=[])

    def done(self, name: str) -> bool:
        return name in self.data["completed"]

    def measured(self, name: str) -> bool:
        return any(m["after"] == name for m in self.data["measurements"])

    def add_measurement(self, row: dict) -> None:
        self.data["measurements"] = [m for m in self.data["measurements"]
                                     if m["after"] != row["after"]] + [row]
        self.save()

    def complete(self, name: str) -> None:
        if name not in self.data["completed"]:
            self.data["completed"].append(name)
        self.save()

    def save(self) -> None:
        paths.makedirs(paths.dirname(self.path))
        atomic_write_json(self.path, self.data, indent=1, sort_keys=True)


def _strip_prompt(params: Mapping[str, Any]) -> dict:
    return split_prompt(params)[0]


# The files that carry a run's vocabulary in MODEL_DIR/best (medmt5.run.loop writes them).
_VOCAB_FILES = (vocab_record.RECORD_FILE, SPIECE_FILE, ADDED_TOKENS_FILE)


def export_backbone(stage_dir: str, out_dir: str) -> None:
    """Writes the stage's final params without the prompt as a loadable checkpoint dir, with
    the stage's vocabulary record (vocab.json, spiece.model), so the next stage, which starts
    from it, checks its vocabulary as from any MODEL_DIR."""
    cfg, params = medmt5.load_checkpoint(stage_dir)
    save_params_checkpoint(cfg, _strip_prompt(params), out_dir, step=0, overwrite=True)
    for name in _VOCAB_FILES:
        src = paths.join(stage_dir, name)
        if paths.isfile(src):
            atomic_write_bytes(paths.join(out_dir, name), paths.read_bytes(src))


def export_prompt(stage_dir: str, path: str) -> np.ndarray:
    """Writes the stage's final prompt [P, H] to `path` (.npy, atomic), and the stage's
    vocabulary record beside it (`<name>.vocab.json`, where vocab_record looks for a prompt
    file's record); returns the prompt."""
    _, params = medmt5.load_checkpoint(stage_dir)
    prompt = stages.prompt_array(params)
    stages.save_prompt(prompt, path)
    record = vocab_record.read_record(stage_dir)
    if record is not None:
        atomic_write_json(os.path.splitext(path)[0] + ".vocab.json", record)
    return prompt


class Measurer:
    """Scores seen tasks (own prompt) and held-out in-context tasks (no prompt)."""

    def __init__(self, cfg, task_feature_lengths: Mapping[str, int], eval_split: str,
                 heldout_tasks: Sequence[str], heldout_split: str, batch_size: int,
                 max_examples: int | None, prompt_length: int, beam_size: int = 4):
        self.cfg, self.prompt_length, self.beam_size = cfg, prompt_length, beam_size
        self.lengths = dict(task_feature_lengths)
        self.batch_size, self.max_examples = batch_size, max_examples
        self.eval_split, self.heldout_split = eval_split, heldout_split
        self.heldout_tasks = list(heldout_tasks)
        self._heldout = None  # built on first use: a resumed, finished run loads no data
        self._task_evaluators: dict[str, Any] = {}

    @property
    def heldout(self):
        if self._heldout is None and self.heldout_tasks:
            self._heldout = evaluation.Evaluator(
                self.heldout_tasks, self.lengths, split=self.heldout_split,
                batch_size=self.batch_size, max_examples=self.max_examples,
                beam_size=self.beam_size)
        return self._heldout

    def _evaluator(self, task: str):
        if task not in self._task_evaluators:
            self._task_evaluators[task] = evaluation.Evaluator(
                [task], self.lengths, split=self.eval_split, batch_size=self.batch_size,
                max_examples=self.max_examples, beam_size=self.beam_size)
        return self._task_evaluators[task]

    def measure(self, backbone: Mapping[str, Any], prompts: Mapping[str, np.ndarray],
                seen: Sequence[str]) -> dict:
        plain = Transformer(self.cfg)
        seen_scores = {}
        for task in seen:
            if task in prompts:
                model = PromptedTransformer(self.cfg, prompt_length=self.prompt_length)
                params = dict(backbone, prompt={"embedding": prompts[task]})
            else:
                model, params = plain, backbone
            metrics = self._evaluator(task).evaluate(model, params, 0)
            seen_scores[task] = headline_score(_task_metrics(metrics, task))
        heldout_scores = {}
        if self.heldout_tasks:
            metrics = self.heldout.evaluate(plain, backbone, 0)
            for td in self.heldout.data:
                heldout_scores[td.name] = headline_score(_task_metrics(metrics, td.name))
        return {"seen": seen_scores, "heldout": heldout_scores,
                "norm_avg": normalized_average(heldout_scores) if heldout_scores else None}


def _task_metrics(metrics: Mapping[str, float], task: str) -> dict:
    """{metric: value} of one task from the Evaluator's {"<task>/<metric>": value}."""
    prefix = task + "/"
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


def write_tables(model_dir: str, measurements: Sequence[dict]) -> str:
    """metrics.jsonl and metrics.csv from the measurements; returns the printed table."""
    atomic_write_text(os.path.join(model_dir, "metrics.jsonl"),
                      "".join(json.dumps(m, sort_keys=True) + "\n" for m in measurements))
    tasks = []
    for m in measurements:
        tasks += [t for t in m["seen"] if t not in tasks]
    header = ["after"] + tasks + ["heldout_norm_avg"]
    rows = [[m["after"]] + [_fmt(m["seen"].get(t)) for t in tasks] + [_fmt(m["norm_avg"])]
            for m in measurements]
    with paths.open(os.path.join(model_dir, "metrics.csv"), "w") as f:  # csv ends rows itself
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    widths = [max(len(str(r[c])) for r in [header] + rows) for c in range(len(header))]
    return "\n".join("  ".join(str(v).rjust(w) for v, w in zip(r, widths))
                     for r in [header] + rows)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_sequential(*, model_dir: str, model_config, tasks: Sequence[str], method: str,
                   initial_checkpoint_path: str, task_feature_lengths: Mapping[str, int],
                   batch_size: int, prompt_stage: StageSettings = recipe.PROMPT_STAGE,
                   model_stage: StageSettings = recipe.MODEL_STAGE,
                   best_metric: str | None = None, beam_size: int = 4,
                   prompt_length: int = 100, prompt_init: str = "uniform",
                   heldout_tasks: Sequence[str] = (), eval_split: str = "validation",
                   heldout_split: str = "test", eval_batch_size: int = 32,
                   eval_max_examples: int | None = None, seed: int = 0,
                   stop_after: str | None = None,
                   train_fn: Callable | None = None) -> list[dict]:
    """Runs (or resumes) the sequential plan; returns the measurements (list of dicts).

    stop_after: a stage name "<i>_<task>_<stage>" after which to return (tests use it to
    simulate an interruption between stages). train_fn defaults to medmt5.run.loop.train.
    """
    train_fn = train_fn or loop.train  # looked up now: tests replace loop.train with a spy
    cfg = configs.canonical_model_config(model_config)
    plan = stage_plan(tasks, method)
    paths.makedirs(model_dir)
    state = SequentialState(model_dir, tasks, method)
    measurer = Measurer(cfg.replace(dropout_rate=0.0), task_feature_lengths, eval_split,
                        heldout_tasks, heldout_split, eval_batch_size, eval_max_examples,
                        prompt_length, beam_size=beam_size)
    prompts_dir = os.path.join(model_dir, "prompts")

    def load_prompts(seen):
        return {t: initializers.load_npy(os.path.join(prompts_dir, f"{t}.npy"))
                for t in seen if paths.exists(os.path.join(prompts_dir, f"{t}.npy"))}

    def measure(after: str, backbone_path: str, seen: Sequence[str]):
        if state.measured(after):
            return
        _, backbone = medmt5.load_checkpoint(backbone_path)
        row = {"after": after, "method": method, "backbone": os.path.relpath(
            backbone_path, model_dir) if backbone_path.startswith(model_dir) else backbone_path}
        row.update(measurer.measure(_strip_prompt(backbone), load_prompts(seen), seen))
        state.add_measurement(row)
        print(write_tables(model_dir, state.data["measurements"]), flush=True)

    backbone = initial_checkpoint_path
    measure("initial", backbone, [])
    for i, task, stage in plan:
        name = stage_name(i, task, stage)
        stage_dir = os.path.join(model_dir, "stages", name)
        backbone_out = os.path.join(model_dir, "backbones", f"{i}_{task}")
        settings = prompt_stage if stage == "prompt" else model_stage
        if not state.done(name):
            log.info("sequential %s: stage %s (%d steps)", method, name, settings.steps)
            prompt_file = os.path.join(prompts_dir, f"{task}.npy")
            common = dict(model_dir=stage_dir, model_config=cfg, task=task,
                          initial_checkpoint_path=backbone,
                          task_feature_lengths=task_feature_lengths, batch_size=batch_size,
                          settings=settings, best_metric=best_metric, eval_split=eval_split,
                          eval_batch_size=eval_batch_size, eval_max_examples=eval_max_examples,
                          seed=seed)
            if stage == "prompt":  # stage 1: new prompt, backbone frozen
                init = prompt_initializer(prompt_init, prompt_length=prompt_length,
                                          checkpoint=backbone, seed=seed + i)
                kwargs = recipe.stage_train_kwargs(stage="prompt", prompt_length=prompt_length,
                                                   prompt_init=init, **common)
            elif method == "promot":  # stage 2: backbone tuned, this task's prompt frozen
                kwargs = recipe.stage_train_kwargs(stage="model", prompt_file=prompt_file,
                                                   **common)
            else:  # plain fine-tuning
                kwargs = recipe.stage_train_kwargs(stage="model", **common)
            result = train_fn(**kwargs)
            reached = getattr(result, "step", settings.steps)
            if reached < settings.steps:  # stopped early (SIGTERM, data ran out): not done
                log.warning("sequential: stage %s stopped at step %d of %d; rerun the command "
                            "to continue it", name, reached, settings.steps)
                return state.data["measurements"]
            best_dir = os.path.join(stage_dir, "best")  # keep-best: the best step, not the last
            if stage == "prompt":
                export_prompt(best_dir, prompt_file)
            if stage == "model":
                export_backbone(best_dir, backbone_out)
            state.complete(name)
        if stage == "model":
            backbone = backbone_out
        measure(name, backbone, list(tasks[:i + 1]))
        if stop_after == name:
            return state.data["measurements"]
    return state.data["measurements"]


_GIN_REGISTERED: dict[str, Callable] = {}


def main(argv: Sequence[str]) -> int:
    if not _GIN_REGISTERED:  # once per process; a config locked by an earlier run is no bar
        with gin.unlock_config():
            _GIN_REGISTERED["run_sequential"] = gin.external_configurable(
                run_sequential, name="run_sequential")
            gin.external_configurable(recipe.prompt_stage, name="prompt_stage")
            gin.external_configurable(recipe.model_stage, name="model_stage")

    def run(flags):
        del flags
        model_dir = gin_utils.query_macro("MODEL_DIR")
        if model_dir:
            gin_utils.write_config(model_dir)
        _GIN_REGISTERED["run_sequential"]()
    return gin_utils.run_cli(run, argv, "prompt_tuning.sequential", __doc__)


if __name__ == "__main__":
    failures.exit_process(main(sys.argv[1:]))
