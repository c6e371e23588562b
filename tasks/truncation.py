"""Examples that seqio cuts to TASK_FEATURE_LENGTHS, counted so that a run says so.

seqio trims every feature to its length without a word (`append_eos_after_trim` keeps the
first length - 1 tokens and the EOS), so a target longer than TASK_FEATURE_LENGTHS['targets']
is learnt, and scored, cut. `count_cut(task_name)` is a seqio preprocessor placed after
`tokenize` (before the trim): it leaves the example's tokens as they are, adds
`<feature>_full_length` (the length with EOS, before any cut) and records every example that
will be cut in COUNTS[(task, feature)] (count, longest, limit). medmt5.data.pipeline reads
both: training batches log one warning per task and feature with the counts and the flag to
raise; evaluation examples (load_examples) of a task whose metric needs the whole target
(STRICT_EVAL: accuracy, exact match) stop with an error, other tasks (BLEU, ROUGE) warn.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

FLAG = "--gin.TASK_FEATURE_LENGTHS"
# Tasks whose metric compares whole targets: a cut evaluation target can never be matched.
STRICT_EVAL: set[str] = set()
STRICT_METRICS = ("accuracy", "exact_match")


@dataclasses.dataclass
class Cut:
    count: int = 0    # examples read so far whose feature is longer than the limit
    longest: int = 0  # the longest such feature, EOS included
    limit: int = 0    # the feature length it is cut to


_LOCK = threading.Lock()
COUNTS: dict[tuple[str, str], Cut] = {}


def full_length_key(feature: str) -> str:
    return f"{feature}_full_length"


def record(task: str, feature: str, length: int, limit: int) -> None:
    with _LOCK:
        cut = COUNTS.setdefault((task, feature), Cut())
        cut.count += 1
        cut.longest = max(cut.longest, int(length))
        cut.limit = int(limit)


def snapshot() -> dict[tuple[str, str], Cut]:
    """A copy of COUNTS (safe to read while tf.data threads record)."""
    with _LOCK:
        return {k: dataclasses.replace(v) for k, v in COUNTS.items()}


def mark_strict(task_name: str, metric_fn: Callable) -> None:
    """Registers whether `task_name`'s evaluation needs whole targets (by metric name)."""
    STRICT_EVAL.discard(task_name)
    if getattr(metric_fn, "__name__", "") in STRICT_METRICS:
        STRICT_EVAL.add(task_name)


def count_cut(task_name: str, features: Sequence[str] = ("targets",)) -> Callable:
    """The counting preprocessor of `task_name` (see the module docstring)."""

    def preprocess(dataset: tf.data.Dataset, sequence_length=None,
                   output_features=None) -> tf.data.Dataset:
        limits = {f: int(sequence_length[f]) for f in features
                  if sequence_length and sequence_length.get(f) is not None}
        if not limits:
            return dataset
        eos = {f: int(bool(output_features and output_features[f].add_eos)) for f in limits}

        def note(feature: str, limit: int):
            def py(n):
                record(task_name, feature, int(n), limit)
                return np.int32(0)
            return py

        def fn(ex):
            out, deps = dict(ex), []
            for f, limit in limits.items():
                n = tf.size(ex[f], out_type=tf.int32) + eos[f]
                out[full_length_key(f)] = n
                deps.append(tf.cond(
                    n > limit,
                    lambda n=n, f=f, limit=limit: tf.numpy_function(
                        note(f, limit), [n], tf.int32, stateful=True),
                    lambda: tf.constant(0, tf.int32)))
            with tf.control_dependencies(deps):
                return {k: tf.identity(v) for k, v in out.items()}
        return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return preprocess


def training_warning(task: str, feature: str, cut: Cut) -> str:
    return (f"task {task!r}: {cut.count} example(s) read so far have {feature} longer than "
            f"TASK_FEATURE_LENGTHS[{feature!r}]={cut.limit} (the longest: {cut.longest} tokens, "
            f"EOS included); seqio cuts them to {cut.limit} tokens, so the model learns cut "
            f"{feature}. Raise it with {FLAG} (e.g. {{'{feature}': {cut.longest}, ...}}).")


def eval_message(task: str, split: str, feature: str, count: int, total: int, longest: int,
                 limit: int, strict: bool) -> str:
    effect = ("can never be matched, so the task's accuracy / exact match would be understated"
              if strict else "cannot be generated in full (decoding stops at "
              f"{limit} tokens), which lowers the score")
    return (f"eval task {task!r} split {split!r}: {count} of {total} example(s) have {feature} "
            f"longer than TASK_FEATURE_LENGTHS[{feature!r}]={limit} (the longest: {longest} "
            f"tokens, EOS included); a cut {feature[:-1]} {effect}. Raise it with {FLAG} "
            f"(e.g. {{'{feature}': {longest}, ...}}).")
