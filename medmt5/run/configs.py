"""The parts of a training run, as small frozen dataclasses (t5x's `utils.DatasetConfig` and
`SaveCheckpointConfig` are the model).

`medmt5.run.loop.train(model_dir=, model_config=, train_steps=, data=, step=, checkpoint=,
eval=, freeze=, ...)` takes one of each:

  DataConfig        what is read: mixture/task, feature lengths, global batch size, packing,
                    seed, seqio cache, the task-id order of multi-task ProMoT
  StepSettings      how one step computes its loss and gradient: z-loss, label smoothing,
                    normalizer, microbatches, vocabulary chunks, what a non-finite loss does
  CheckpointConfig  where parameters come from and go: initial checkpoint, vocabulary
                    change, save period, how many kept, fallback, hooks after each save
  EvalConfig        evaluation during training and the keep-best metric
  FreezeConfig      which parameters train, and which the initial checkpoint lacks / has
                    unused, and the prompt files whose vocabulary must match the run's

Every field keeps the name the former `train()` keyword had. The gin files bind them as
`train.data = @DataConfig()` and `DataConfig.batch_size = %BATCH_SIZE` (gin/runs/*.gin), so the
T5X macros (BATCH_SIZE, EVAL_PERIOD, ...) work unchanged. Each class checks its values when
built; a message names the field as gin spells it (`DataConfig.batch_size`) and the macro
that usually feeds it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medmt5.model.config import T5Config
from medmt5.runtime import nonfinite, preflight


def canonical_model_config(cfg) -> T5Config:
    """gin hands back a subclass of T5Config; the library wants the plain dataclass."""
    if type(cfg) is T5Config:
        return cfg
    if not dataclasses.is_dataclass(cfg):
        raise ValueError(f"train.model_config must be a T5Config (MODEL_CONFIG = @T5Config() in "
                         f"a gin/models/*.gin file), got {type(cfg).__name__}")
    return T5Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(T5Config)})


def _name(obj, field: str) -> str:
    # gin wraps a registered class in a subclass of the same name; report the public name
    for cls in type(obj).__mro__:
        if cls.__module__ == __name__:
            return f"{cls.__name__}.{field}"
    return f"{type(obj).__name__}.{field}"  # pragma: no cover


def _fail(obj, field: str, value, must: str, macro: str | None = None):
    via = f" (gin macro {macro})" if macro else ""
    raise ValueError(f"{_name(obj, field)}={value!r}{via} must be {must}")


def _int(obj, field: str, low: int | None = None, optional: bool = False,
         macro: str | None = None) -> None:
    value = getattr(obj, field)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None
                                                                 and value < low):
        must = "an integer" + (f" >= {low}" if low is not None else "")
        _fail(obj, field, value, must + (" or None" if optional else ""), macro)


def _float(obj, field: str, low: float, high: float | None = None) -> None:
    value = getattr(obj, field)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or value < low or (high is not None and value >= high)):
        _fail(obj, field, value, f"a number >= {low}" + (f" and < {high}" if high else ""))


def _text(obj, field: str, optional: bool = False, macro: str | None = None) -> None:
    value = getattr(obj, field)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        _fail(obj, field, value, "a non-empty string" + (" or None" if optional else ""), macro)


def _names(obj, field: str, optional: bool = False) -> None:
    """A list of strings, stored as a tuple (the config stays hashable and immutable)."""
    value = getattr(obj, field)
    if value is None and optional:
        return
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) for v in value):
        _fail(obj, field, value, "a list of strings" + (" or None" if optional else ""))
    object.__setattr__(obj, field, tuple(value))


def _callables(obj, field: str) -> None:
    value = getattr(obj, field)
    if not isinstance(value, Sequence) or not all(callable(v) for v in value):
        _fail(obj, field, value, "a list of callables")
    object.__setattr__(obj, field, tuple(value))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data. batch_size is global (all processes together)."""
    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    pack: bool = True
    seed: int = 0
    use_cached: bool = False
    multitask_tasks: Sequence[str] = ()  # task-id order of a per-task prompt table

    def __post_init__(self):
        _text(self, "mixture_or_task_name", macro="MIXTURE_OR_TASK_NAME")
        preflight.check_feature_lengths(self.task_feature_lengths)  # TASK_FEATURE_LENGTHS
        object.__setattr__(self, "task_feature_lengths", dict(self.task_feature_lengths))
        _int(self, "batch_size", 1, macro="BATCH_SIZE")
        _int(self, "seed")
        _names(self, "multitask_tasks")
        for field in ("pack", "use_cached"):
            if not isinstance(getattr(self, field), bool):
                _fail(self, field, getattr(self, field), "True or False")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The loss of one step and what a non-finite one does (medmt5.training.trainer)."""
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizer: Any = "num_tokens"  # "num_tokens", "num_examples" or a constant
    num_microbatches: int = 1
    vocab_chunk_size: int | None = None
    nonfinite_policy: str = "raise"  # "raise" or "skip" (medmt5.runtime.nonfinite)

    def __post_init__(self):
        _float(self, "z_loss", 0.0)
        _float(self, "label_smoothing", 0.0, 1.0)
        _int(self, "num_microbatches", 1)
        _int(self, "vocab_chunk_size", 1, optional=True)
        nonfinite.check_policy(self.nonfinite_policy)  # names StepSettings.nonfinite_policy


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where the parameters come from and how they are saved.

    save_period None: every eval period (EvalConfig.eval_period), else every 1000 steps.
    checkpoint_hooks: hook(model_dir, step, params, best) after each save (best=False) and
    each new best (best=True); prompt tuning writes its .npy there.
    checkpoint_fallback: resume from the previous checkpoint when the latest is unreadable.
    allow_vocabulary_change: a resumed MODEL_DIR, the initial checkpoint or a prompt file
    recorded with another vocabulary does not stop the run (medmt5.data.vocab_record).
    """
    initial_checkpoint_path: str | None = None
    save_period: int | None = None
    keep_checkpoints: int | None = None
    checkpoint_fallback: bool = False
    allow_vocabulary_change: bool = False
    checkpoint_hooks: Sequence[Callable] = ()

    def __post_init__(self):
        _text(self, "initial_checkpoint_path", optional=True, macro="INITIAL_CHECKPOINT_PATH")
        _int(self, "save_period", 0, optional=True)
        _int(self, "keep_checkpoints", 1, optional=True)
        _callables(self, "checkpoint_hooks")
        for field in ("checkpoint_fallback", "allow_vocabulary_change"):
            if not isinstance(getattr(self, field), bool):
                _fail(self, field, getattr(self, field), "True or False")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation every eval_period steps (0: none) on eval_tasks (None: every task of the
    mixture with split eval_split). best_metric names an eval metric (e.g. "f1": the mean of
    "<task>/f1") whose best step is kept in MODEL_DIR/best. eval_batch_size None: the
    training batch size."""
    eval_period: int = 0
    eval_tasks: Sequence[str] | None = None
    eval_split: str = "validation"
    eval_max_examples: int | None = None
    eval_batch_size: int | None = None
    eval_beam_size: int = 1
    best_metric: str | None = None

    def __post_init__(self):
        _int(self, "eval_period", 0, macro="EVAL_PERIOD")
        _names(self, "eval_tasks", optional=True)
        _text(self, "eval_split")
        _int(self, "eval_max_examples", 1, optional=True)
        _int(self, "eval_batch_size", 1, optional=True)
        _int(self, "eval_beam_size", 1)
        _text(self, "best_metric", optional=True)


@dataclasses.dataclass(frozen=True)
class FreezeConfig:
    """Which parameters train. trainable / frozen: regexes over "/"-joined parameter paths
    (trainable None: all). new_params: parameters the initial checkpoint lacks (they keep
    their initial values, e.g. a prompt); unused_params: checkpoint parameters the model has
    no use for. prompt_files: prompts attached to the model, whose vocabulary record must
    match the run's (None entries are dropped)."""
    trainable: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    new_params: Sequence[str] = ()
    unused_params: Sequence[str] = ()
    prompt_files: Sequence[str] = ()

    def __post_init__(self):
        _names(self, "trainable", optional=True)
        # [%PROMPT_FILE] with PROMPT_FILE unset is [None]: no prompt file to check (the
        # stage's checkpoint function names the missing macro)
        if isinstance(self.prompt_files, (list, tuple)):
            object.__setattr__(self, "prompt_files", [p for p in self.prompt_files if p])
        for field in ("frozen", "new_params", "unused_params", "prompt_files"):
            _names(self, field)

    @property
    def masked(self) -> bool:
        """Whether some parameters are left out of the optimizer."""
        return self.trainable is not None or bool(self.frozen)
