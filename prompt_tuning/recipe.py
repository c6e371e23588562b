"""The ProMoT recipe as plain Python: stage settings, the two stages, keep-best metric, scoring.

This is the one implementation of the stages. gin/promot/stage1_prompt.gin and
stage2_model.gin bind the same values (tests/test_promot_recipe.py parses both and compares
them with PROMPT_STAGE / MODEL_STAGE), prompt_tuning/sequential.py and the miniature
(experiments/promot_mini) call the functions below.

    from prompt_tuning import recipe
    s1 = recipe.train_prompt(model_dir="/runs/rte_s1", model_config=cfg, task="promot_rte",
                             initial_checkpoint_path="/models/mt5_large",
                             task_feature_lengths={"inputs": 512, "targets": 8}, batch_size=64)
    s1.prompt_file   # MODEL_DIR/prompts/prompt_best.npy: the best prompt on the target metric
    s2 = recipe.train_model(model_dir="/runs/rte_s2", model_config=cfg, task="promot_rte",
                            initial_checkpoint_path="/models/mt5_large",
                            prompt_file=s1.prompt_file,
                            task_feature_lengths={"inputs": 512, "targets": 8}, batch_size=64)
    s2.checkpoint    # MODEL_DIR/best: backbone + the frozen prompt, best on the target metric
    ft = recipe.train_model(..., prompt_file=None)      # the fine-tuning baseline
    scorer = recipe.Scorer(["icl_cb_1shot", "icl_wic_1shot"], {"inputs": 1024, "targets": 128},
                           format_pattern=recipe.label_pattern(["true", "false"]))
    result = scorer.score_checkpoint(s2.checkpoint, prompt="removed")   # -> ScoreResult
    result.scores, result.format_rate, result.norm_avg

Settings (the ProMoT paper, docs/promot.md; optimizer settings of google-research/prompt-tuning,
prompt_tuning/configs/models/t5_1_1_prompt.gin: `adafactor.Adafactor.decay_rate = 0.8,
step_offset = 0, multiply_by_parameter_scale = False, weight_decay_rate = 0.00001`):
  PROMPT_STAGE  Adafactor without parameter scaling, weight decay 1e-5, LR 0.2 constant,
                5,000 steps, dropout 0.1, evaluation every 500 steps, best kept.
  MODEL_STAGE   Adafactor as T5X fine-tunes (parameter scaling on, no weight decay), LR 1e-3
                constant, 1,000 steps, dropout 0.1, label smoothing 0.1, evaluation every 100
                steps, best kept. The fine-tuning baseline uses it too, without a prompt.
Change a setting with dataclasses.replace(recipe.PROMPT_STAGE, steps=300, eval_period=50).
Keep-best evaluates the task's validation split with beam 4 and keeps the best step by
`best_metric` (default: the task kind's, see `default_best_metric`); a metric that the task's
metric functions do not produce is an error before training starts.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import medmt5
from medmt5.data import pipeline as data_lib
from medmt5.model.transformer import Transformer
from medmt5.run import configs, evaluation, loop
from medmt5.training import optimizers
from prompt_tuning import inference, prompts, stages
from prompt_tuning.best_metric import (  # noqa: F401 (re-exported: recipe's public names)
    KIND_METRICS,
    TEACHER_FORCED,
    best_metric_for,
    default_best_metric,
    eval_task_names,
    task_metric_names,
)
from prompt_tuning.initializers import load_npy
from prompt_tuning.prompt_init import prompt_initializer
from prompt_tuning.prompts import PROMPT_PATTERN, PromptedTransformer
from tasks import promot_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """Optimisation and keep-best settings of one kind of stage."""
    steps: int
    learning_rate: float
    schedule: str = "constant"
    warmup_steps: int = 0
    dropout_rate: float = 0.1
    label_smoothing: float = 0.0
    multiply_by_parameter_scale: bool = True
    weight_decay_rate: float | None = None
    eval_period: int = 0          # evaluate (and keep the best) every N steps; > 0 required
    eval_beam_size: int = 4       # the paper decodes with beam 4

    def schedule_fn(self) -> Callable:
        return optimizers.make_schedule(self.schedule, self.learning_rate,
                                        warmup_steps=self.warmup_steps,
                                        decay_steps=max(self.steps, 1))

    def optimizer_fn(self) -> Callable:
        """optimizer_fn(schedule=, logical_axes=, mask=, factor_rules=) for
        medmt5.cli.train.train; factor_rules default: the core's plus the prompt's."""
        def make(schedule, logical_axes=None, mask=None, factor_rules=None):
            if factor_rules is None:
                factor_rules = optimizers.standard_factor_rules(prompts.FACTOR_RULES)
            return optimizers.create_optimizer(
                "adafactor", schedule, logical_axes=logical_axes, mask=mask,
                multiply_by_parameter_scale=self.multiply_by_parameter_scale,
                weight_decay_rate=self.weight_decay_rate, factor_rules=factor_rules)
        return make


PROMPT_STAGE = StageSettings(steps=5000, learning_rate=0.2, dropout_rate=0.1,
                             multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                             eval_period=500)
MODEL_STAGE = StageSettings(steps=1000, learning_rate=1e-3, dropout_rate=0.1,
                            label_smoothing=0.1, eval_period=100)


def prompt_stage(steps: int | None = None, eval_period: int | None = None,
                 learning_rate: float | None = None) -> StageSettings:
    """PROMPT_STAGE with the run-size settings replaced (gin: @prompt_stage())."""
    return _replace(PROMPT_STAGE, steps=steps, eval_period=eval_period,
                    learning_rate=learning_rate)


def model_stage(steps: int | None = None, eval_period: int | None = None,
                learning_rate: float | None = None) -> StageSettings:
    """MODEL_STAGE with the run-size settings replaced (gin: @model_stage())."""
    return _replace(MODEL_STAGE, steps=steps, eval_period=eval_period,
                    learning_rate=learning_rate)


def _replace(settings: StageSettings, **changes) -> StageSettings:
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------------------------------
# The two stages


@dataclasses.dataclass
class StageResult:
    model_dir: str
    step: int                      # steps reached (< settings.steps: stopped early)
    best: dict | None           # {"step", "metric", "value"} of the kept best
    checkpoint: str                # the best checkpoint dir (MODEL_DIR/best)
    prompt_file: str | None     # stage 1: the best prompt; stage 2: the attached prompt
    eval_metrics: dict             # the last evaluation, {"task/metric": value}


def stage_train_kwargs(*, stage: str, model_dir: str, model_config, task: str,
                       initial_checkpoint_path: str, task_feature_lengths: Mapping[str, int],
                       batch_size: int, settings: StageSettings,
                       prompt_file: str | None = None, prompt_length: int = 100,
                       prompt_init: Any = "uniform", best_metric: str | None = None,
                       eval_split: str = "validation", eval_batch_size: int | None = None,
                       eval_max_examples: int | None = None, seed: int = 0,
                       keep_checkpoints: int | None = 1) -> dict:
    """The keyword arguments of medmt5.run.loop.train for one stage: model_dir, model_config,
    train_steps, schedule, optimizer_fn, the parts data / step / checkpoint / eval / freeze
    (medmt5.run.configs) and, with a prompt, model_factory.

    stage: "prompt" (stage 1: a new prompt, backbone frozen), "model" with prompt_file
    (stage 2: backbone tuned, the prompt attached and frozen) or "model" without (plain
    fine-tuning). prompt_init: an initializer kind ("uniform", "vocab", ...) or a flax
    initializer.
    """
    if stage not in ("prompt", "model"):
        raise ValueError(f"stage={stage!r}; use 'prompt' (stage 1) or 'model' (stage 2 / "
                         "fine-tuning).")
    if settings.eval_period <= 0:
        raise ValueError(f"the {stage} stage keeps the best checkpoint: its StageSettings."
                         f"eval_period must be > 0 (got {settings.eval_period}).")
    eval_tasks = [t for t in eval_task_names(task) if eval_split in _splits(t)]
    if not eval_tasks:
        raise ValueError(f"task {task!r} has no {eval_split!r} split to keep the best "
                         "checkpoint on; register one or set eval_split.")
    metric = best_metric_for(task, best_metric, eval_tasks)
    cfg = configs.canonical_model_config(model_config).replace(
        dropout_rate=settings.dropout_rate)
    factory, hooks = None, ()
    freeze = stage_freeze(stage, prompt_attached=bool(prompt_file))
    if stage == "prompt":
        init = (prompt_initializer(prompt_init, prompt_length=prompt_length,
                                   checkpoint=initial_checkpoint_path, seed=seed)
                if isinstance(prompt_init, str) else prompt_init)
        initial = stages.required_checkpoint(initial_checkpoint_path)
        hooks, factory = [stages.PromptWriter()], _PromptedFactory(prompt_length, init)
    elif prompt_file:
        initial = stages.stage2_checkpoint(initial_checkpoint_path, prompt_file)
        hooks = [stages.PromptWriter()]
        factory = _PromptedFactory(stages.prompt_length_of(prompt_file),
                                   prompt_initializer("file", path=prompt_file))
    else:
        initial = stages.required_checkpoint(initial_checkpoint_path)
    kwargs = dict(
        model_dir=model_dir, model_config=cfg, train_steps=settings.steps,
        schedule=settings.schedule_fn(), optimizer_fn=settings.optimizer_fn(),
        data=configs.DataConfig(mixture_or_task_name=task,
                                task_feature_lengths=dict(task_feature_lengths),
                                batch_size=batch_size, pack=False, seed=seed),
        step=configs.StepSettings(label_smoothing=settings.label_smoothing),
        checkpoint=configs.CheckpointConfig(
            initial_checkpoint_path=initial, save_period=settings.eval_period,
            keep_checkpoints=keep_checkpoints, checkpoint_hooks=hooks),
        eval=configs.EvalConfig(
            eval_period=settings.eval_period, eval_tasks=eval_tasks, eval_split=eval_split,
            eval_batch_size=eval_batch_size, eval_max_examples=eval_max_examples,
            eval_beam_size=settings.eval_beam_size, best_metric=metric),
        freeze=freeze)
    if factory is not None:
        kwargs["model_factory"] = factory
    return kwargs


def stage_freeze(stage: str, prompt_attached: bool = False) -> configs.FreezeConfig:
    """What trains in a stage: "prompt" (stage 1) only the new prompt; "model" with the prompt
    attached (stage 2) everything but the prompt; "model" without (fine-tuning) everything.
    stage_train_kwargs and the miniature (experiments/promot_mini/core.py) both use it."""
    if stage == "prompt":
        return configs.FreezeConfig(trainable=[PROMPT_PATTERN], new_params=[PROMPT_PATTERN])
    if prompt_attached:
        return configs.FreezeConfig(frozen=[PROMPT_PATTERN], new_params=[PROMPT_PATTERN])
    return configs.FreezeConfig()


class _PromptedFactory:
    """model_factory(config) -> PromptedTransformer (a picklable, printable closure)."""

    def __init__(self, prompt_length: int, init):
        self.prompt_length, self.init = prompt_length, init

    def __call__(self, config):
        return stages.prompted_model(config, self.prompt_length, self.init)

    def __repr__(self):
        return f"prompted_model(prompt_length={self.prompt_length}, init={self.init!r})"


def _splits(task: str) -> Sequence[str]:
    return list(data_lib.get_task_or_mixture(task).splits)


def _run(kwargs: dict, train_fn: Callable | None, prompt_file: str | None,
         stage: str) -> StageResult:
    result = (train_fn or loop.train)(**kwargs)
    model_dir = kwargs["model_dir"]
    best = getattr(result, "best", None)
    if stage == "prompt":
        best_prompt = stages.prompt_path(model_dir)
        prompt_file = best_prompt if os.path.exists(best_prompt) else None
    return StageResult(model_dir=model_dir, step=int(getattr(result, "step", 0)), best=best,
                       checkpoint=os.path.join(model_dir, "best"), prompt_file=prompt_file,
                       eval_metrics=dict(getattr(result, "eval_metrics", {}) or {}))


def train_prompt(*, model_dir: str, model_config, task: str, initial_checkpoint_path: str,
                 task_feature_lengths: Mapping[str, int], batch_size: int,
                 settings: StageSettings = PROMPT_STAGE, prompt_length: int = 100,
                 prompt_init: Any = "uniform", best_metric: str | None = None,
                 eval_split: str = "validation", eval_batch_size: int | None = None,
                 eval_max_examples: int | None = None, seed: int = 0,
                 train_fn: Callable | None = None) -> StageResult:
    """Stage 1 (also the prompt-tuning baseline): trains a new prompt on the frozen backbone
    `initial_checkpoint_path`; the best prompt on the target metric is result.prompt_file
    (MODEL_DIR/prompts/prompt_best.npy). Rerunning with the same model_dir resumes."""
    kwargs = stage_train_kwargs(
        stage="prompt", model_dir=model_dir, model_config=model_config, task=task,
        initial_checkpoint_path=initial_checkpoint_path,
        task_feature_lengths=task_feature_lengths, batch_size=batch_size, settings=settings,
        prompt_length=prompt_length, prompt_init=prompt_init, best_metric=best_metric,
        eval_split=eval_split, eval_batch_size=eval_batch_size,
        eval_max_examples=eval_max_examples, seed=seed)
    return _run(kwargs, train_fn, None, "prompt")


def train_model(*, model_dir: str, model_config, task: str, initial_checkpoint_path: str,
                task_feature_lengths: Mapping[str, int], batch_size: int,
                prompt_file: str | None = None, settings: StageSettings = MODEL_STAGE,
                best_metric: str | None = None, eval_split: str = "validation",
                eval_batch_size: int | None = None, eval_max_examples: int | None = None,
                seed: int = 0, train_fn: Callable | None = None) -> StageResult:
    """Stage 2 with `prompt_file` (the stage-1 prompt attached and frozen), or the
    fine-tuning baseline without it. The best checkpoint on the target metric is
    result.checkpoint (MODEL_DIR/best; it holds the prompt too in stage 2)."""
    kwargs = stage_train_kwargs(
        stage="model", model_dir=model_dir, model_config=model_config, task=task,
        initial_checkpoint_path=initial_checkpoint_path,
        task_feature_lengths=task_feature_lengths, batch_size=batch_size, settings=settings,
        prompt_file=prompt_file, best_metric=best_metric, eval_split=eval_split,
        eval_batch_size=eval_batch_size, eval_max_examples=eval_max_examples, seed=seed)
    return _run(kwargs, train_fn, prompt_file, "model")


# ---------------------------------------------------------------------------------------
# Scoring: prompt attached or removed, headline scores, Norm. Avg., format rate


def label_pattern(labels: Sequence[str]) -> str:
    """A FORMAT_PATTERN matching exactly one of `labels` (e.g. the target's true / false)."""
    if not labels:
        raise ValueError("label_pattern needs at least one label")
    return "(?:" + "|".join(re.escape(str(label).strip()) for label in labels) + ")"


@dataclasses.dataclass
class ScoreResult:
    metrics: dict[str, dict[str, float]]   # task -> {metric: value}
    scores: dict[str, float]               # task -> headline score (0-100)
    format_rate: dict[str, float]          # task -> % of outputs in the target format
    norm_avg: float | None              # the paper's Norm. Avg. over the tasks
    records: dict[str, list[dict]]         # task -> [{inputs, prediction, target}]

    def as_dict(self) -> dict:
        return {"metrics": self.metrics, "scores": self.scores,
                "format_rate": self.format_rate, "norm_avg": self.norm_avg}


class Scorer:
    """Scores params on fixed tasks (data loaded once): decoded predictions with beam 4,
    the tasks' metrics, the headline score per task, Norm. Avg., and with format_pattern
    the format rate (share of outputs that fully match it, in %)."""

    def __init__(self, tasks: Sequence[str], task_feature_lengths: Mapping[str, int], *,
                 split: str = "test", batch_size: int = 8, beam_size: int = 4,
                 max_examples: int | None = None, format_pattern: str | None = None,
                 mesh=None, max_decode_length: int | None = None):
        self.lengths = dict(task_feature_lengths)
        self.format_pattern = format_pattern
        self._format = re.compile(format_pattern) if format_pattern else None
        self.evaluator = evaluation.Evaluator(
            list(tasks), self.lengths, split=split, mesh=mesh, batch_size=batch_size,
            max_examples=max_examples, beam_size=beam_size,
            max_decode_length=max_decode_length)

    def score(self, model_config, params: Mapping[str, Any],
              prompt: str | np.ndarray | None = "removed") -> ScoreResult:
        """prompt: "removed" (the bare backbone), "attached" (params' own prompt), or a
        [P, H] array / .npy path put in front of every input."""
        backbone, stored = inference.split_prompt(params)
        if isinstance(prompt, str) and prompt == "removed":
            model, run_params = Transformer(model_config), backbone
        else:
            value = stored if isinstance(prompt, str) and prompt == "attached" else (
                load_npy(prompt) if isinstance(prompt, str) else prompt)
            if value is None:
                raise ValueError("prompt='attached' but the params have no prompt; pass a "
                                 "prompt array/file or prompt='removed'.")
            value = np.asarray(value, np.float32)
            if value.ndim != 2:
                raise ValueError(f"the prompt to attach must be [P, H]; got {value.shape} (a "
                                 "multi-task table [N, P, H]: pick the task's row).")
            model = PromptedTransformer(model_config, prompt_length=int(value.shape[0]))
            run_params = dict(backbone, prompt={"embedding": value})
        metrics, scores, rates, records = {}, {}, {}, {}
        for td in self.evaluator.data:
            m, recs = self.evaluator.evaluate_task(model, run_params, td)
            metrics[td.name], records[td.name] = m, recs
            try:
                scores[td.name] = promot_metrics.headline_score(m)
            except KeyError:
                pass
            if self._format is not None:
                rates[td.name] = promot_metrics.format_rate(
                    [r["prediction"] for r in recs], self.format_pattern)
        norm = promot_metrics.normalized_average(scores) if scores and len(scores) == len(
            metrics) else None
        return ScoreResult(metrics, scores, rates, norm, records)

    def score_checkpoint(self, checkpoint: str,
                         prompt: str | np.ndarray | None = "removed") -> ScoreResult:
        cfg, params = medmt5.load_checkpoint(checkpoint)
        return self.score(cfg.replace(dropout_rate=0.0), params, prompt)


MAX_FORMAT_LABELS = 20


def target_format_pattern(task_name: str, split: str = "train",
                          max_examples: int = 2000) -> str:
    """The FORMAT_PATTERN of a classification target task: its distinct target strings (e.g.
    RTE's "true" / "false") read from the first `max_examples` of `split`. A task with more
    than MAX_FORMAT_LABELS distinct targets has no label format: pass FORMAT_PATTERN."""
    task = data_lib.get_task_or_mixture(task_name)
    if split not in task.splits:
        raise ValueError(f"TARGET_TASK={task_name!r} has no {split!r} split to read its labels "
                         "from; pass --gin.FORMAT_PATTERN=\"'<regex>'\" instead.")
    labels = set()
    for ex in task.source.get_dataset(split=split, shuffle=False).take(max_examples):
        if "targets" not in ex:
            raise ValueError(f"TARGET_TASK={task_name!r}: its source has no 'targets' text; "
                             "pass --gin.FORMAT_PATTERN=\"'<regex>'\" instead.")
        value = ex["targets"].numpy()
        labels.add((value.decode("utf-8") if isinstance(value, bytes) else str(value)).strip())
        if len(labels) > MAX_FORMAT_LABELS:
            raise ValueError(f"TARGET_TASK={task_name!r} has more than {MAX_FORMAT_LABELS} "
                             "distinct targets: it has no label format. Pass "
                             "--gin.FORMAT_PATTERN=\"'<regex>'\" (a full-match regular "
                             "expression of the target's format) instead.")
    if not labels:
        raise ValueError(f"TARGET_TASK={task_name!r} split {split!r} is empty.")
    return label_pattern(sorted(labels))
