"""Data glue between SeqIO and the trainer: numpy batches with a resumable position.

With tasks/, this is the only module that touches TensorFlow. Training batches come from
`seqio.get_dataset` with `EncDecFeatureConverter` (packed or not), this process's shard,
shuffling seeded by `seed` (seqio also seeds its stochastic preprocessors, e.g. span
corruption, from it), batched and converted to numpy int32 `[B_process, L]`.

Resuming: the pipeline is a deterministic function of (task, lengths, split, seed, shard,
batch size), so resuming at position N (batches consumed) rebuilds it and skips exactly N
batches (`tf.data.Dataset.skip`). Skipping re-runs the preprocessing of the skipped
examples, so it costs time proportional to N, but it is exact, needs no extra files and
works across restarts on a different number of hosts as long as the shard layout matches.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import tasks
from medmt5.data.batches import as_text, examples_to_batch, pad_tokens  # noqa: F401 (re-exported)
from tasks import vocab as vocab_lib

log = logging.getLogger(__name__)

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                  "decoder_loss_weights")


def _tf():
    # lazy: TensorFlow loads only when data is read
    import tensorflow as tf

    # Keep TensorFlow off accelerators: JAX owns them; tf.data runs on the host.
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # already initialised or no such device type
    return tf


def get_task_or_mixture(name: str):
    """The registered seqio Task or Mixture `name`; ValueError lists similar names."""
    # lazy: seqio (and TensorFlow) load only when data is read
    import seqio

    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = sorted(seqio.TaskRegistry.names()) + sorted(seqio.MixtureRegistry.names())
        close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
        close += [k for k in known if name.split("_")[0] in k and k not in close][:20 - len(close)]
        raise ValueError(f"MIXTURE_OR_TASK_NAME={name!r} is not a registered seqio task or "
                         f"mixture (did you import its module, e.g. `import tasks.benchmarks` "
                         f"in the gin file?). Similar: {close or known[:20]}") from None


def setup_tasks(vocabulary: str = "tiny", corpus_dir: str | None = None,
                benchmark_dir: str | None = None, promot_dir: str | None = None,
                corpus_exponent: float = 1.0,
                corpus_validation_fraction: float | None = None,
                checkpoint_path: str | None = None) -> None:
    """(Re-)registers every seqio task of the project with one vocabulary and data folders.

    vocabulary: "tiny" (the shipped 2,100-id model, for the tiny model) or "mt5" (for
    google/mt5-* and Medical mT5). Folders default to the tasks' environment variables or the
    shipped samples; corpus_validation_fraction: documents held out as the pretraining
    "validation" split. The CLIs call this (gin: setup_tasks.vocabulary = %VOCABULARY) before
    anything reads data; it is `tasks.register`. checkpoint_path (gin: the run's
    INITIAL_CHECKPOINT_PATH / CHECKPOINT_PATH): a checkpoint with its own spiece.model
    supplies the vocabulary when VOCABULARY is None or 'mt5' (tasks.vocab.resolve_vocabulary).
    """
    vocabulary = vocab_lib.resolve_vocabulary(vocabulary, checkpoint_path)
    if vocabulary not in ("tiny", "mt5"):
        log.info("vocabulary: %s", vocabulary)

    tasks.register(vocabulary=vocabulary, corpus_dir=corpus_dir, benchmark_dir=benchmark_dir,
                   promot_dir=promot_dir, corpus_exponent=corpus_exponent,
                   corpus_validation_fraction=corpus_validation_fraction)


ABSTRCT_MULTILINGUAL = "abstrct_neoplasm_multilingual"


def register_abstrct_multilingual() -> str:
    """The four AbstRCT neoplasm languages as one mixture (tasks.register_abstrct_multilingual)."""
    return tasks.register_abstrct_multilingual()


def check_vocabulary(mixture_or_task_name: str, model_vocab_size: int) -> None:
    """Raises ValueError when the task's vocabulary does not fit the model's embedding rows.

    The vocabulary's size counts its sentinels (built-in or appended) and any added tokens
    (tasks.vocab); it must be <= the model's vocab_size, which is the vocabulary padded up
    (2,100 -> 2,176; mT5's 250,100 -> 250,112; a fine-tuned release with 22 added tokens:
    250,122 -> its own config). A model more than twice the vocabulary is the wrong
    VOCABULARY too (the tiny vocabulary on an mT5 model).
    """
    provider = get_task_or_mixture(mixture_or_task_name)
    tasks = getattr(provider, "tasks", None) or [provider]
    for task in tasks:
        vocab = task.output_features["targets"].vocabulary
        size = vocab.vocab_size
        if size > model_vocab_size or model_vocab_size > 2 * size:
            what = ("does not fit: ids >= the model's rows would have no embedding"
                    if size > model_vocab_size else "is far smaller than the model's")
            raise ValueError(
                f"task {task.name!r} uses a vocabulary of {size:,} ids (sentinels and added "
                f"tokens included; {vocab}) but the model has vocab_size={model_vocab_size:,} "
                f"embedding rows: the vocabulary {what}. Register the tasks with the "
                "checkpoint's own vocabulary (VOCABULARY unset or 'mt5' reads its "
                "spiece.model; --gin.VOCABULARY=\"'/path/to/spiece.model_or_folder'\"), e.g. "
                "--gin.VOCABULARY=\"'mt5'\" for mT5-sized models or \"'tiny'\" for "
                "mt5_tiny.gin, or use a model whose T5Config.vocab_size >= "
                f"{size:,}.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that determines a training batch stream (and so its resume position)."""

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int  # rows this process feeds per step
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    pack: bool = True
    num_epochs: int | None = None  # None: repeat forever
    shard_index: int = 0
    num_shards: int = 1
    use_cached: bool = False
    # Multi-task (ProMoT stage 2): the mixture's tasks in task-id order; each example then
    # carries int32 "task_ids" (its task's index here) and the batch gets task_ids [B].
    task_id_tasks: tuple = ()


_OPEN_ITERATORS: weakref.WeakSet[BatchIterator] = weakref.WeakSet()


def close_all_iterators() -> None:
    """Closes every BatchIterator still alive (the CLIs call this after an error)."""
    for it in list(_OPEN_ITERATORS):
        it.close()


class BatchIterator:
    """Iterator of numpy batch dicts; `position` counts the batches handed out so far."""

    def __init__(self, dataset, position: int = 0):
        self._iter = dataset.as_numpy_iterator()
        self._peeked = None
        self.position = int(position)
        _OPEN_ITERATORS.add(self)

    def __iter__(self) -> BatchIterator:
        return self

    def close(self) -> None:
        """Destroys the tf.data iterator now (idempotent). One left for interpreter shutdown
        can hang the process (medmt5.runtime.failures explains why)."""
        it, self._iter, self._peeked = getattr(self, "_iter", None), iter(()), None
        del it

    def peek(self) -> None:
        """Reads the next batch now (so a data error is raised here) and keeps it for the next
        __next__; `position` counts it only when it is handed out."""
        if self._peeked is None:
            try:
                self._peeked = self._fetch()
            except StopIteration:
                pass

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __next__(self) -> dict[str, np.ndarray]:
        if self._peeked is not None:
            batch, self._peeked = self._peeked, None
        else:
            batch = self._fetch()
        self.position += 1
        return batch

    def _fetch(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._iter)
        except StopIteration:
            raise
        except Exception as e:  # noqa: BLE001 - tf.data wraps a reader's error in an OpError
            converted = input_error(e)
            if converted is e:
                raise
            raise converted from e
        warn_cut_training_examples()
        return {k: np.asarray(v) for k, v in batch.items()}


_WARNED_CUTS: set = set()


def warn_cut_training_examples() -> None:
    """Logs once per (task, feature) that seqio cut examples to TASK_FEATURE_LENGTHS, with
    the count so far, the longest length and the flag (tasks.truncation counts them; read
    from sys.modules so that this module imports nothing from tasks/)."""
    truncation = sys.modules.get("tasks.truncation")
    if truncation is None:
        return
    for (task, feature), cut in truncation.snapshot().items():
        if (task, feature) not in _WARNED_CUTS:
            _WARNED_CUTS.add((task, feature))
            log.warning(truncation.training_warning(task, feature, cut))


def check_cut_eval_examples(name: str, split: str, examples: Sequence[Mapping[str, Any]],
                            task_feature_lengths: Mapping[str, int]) -> None:
    """Evaluation examples whose targets seqio cut (`targets_full_length`, recorded by
    tasks.truncation.count_cut): ValueError for a task scored on whole targets (accuracy,
    exact match), else a warning. Names the task, the feature, the longest length and
    --gin.TASK_FEATURE_LENGTHS."""
    truncation = sys.modules.get("tasks.truncation")
    if truncation is None or not examples:
        return
    for feature in ("inputs", "targets"):
        key, limit = truncation.full_length_key(feature), task_feature_lengths.get(feature)
        lengths = [int(e[key]) for e in examples if key in e]
        cut = [n for n in lengths if limit is not None and n > int(limit)]
        if not cut:
            continue
        strict = name in truncation.STRICT_EVAL
        message = truncation.eval_message(name, split, feature, len(cut), len(lengths),
                                          max(cut), int(limit), strict)
        if strict:
            raise ValueError(message)
        log.warning(message)


_TF_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*\[\[\{\{node", re.DOTALL)


def input_error(err: Exception) -> Exception:
    """A reader's error raised inside tf.data (e.g. `en.jsonl:2: malformed JSON`) as a
    ValueError with that message (the CLI prints it), instead of TensorFlow's OpError. A
    preprocessor's tf.debugging.Assert (e.g. tasks.promot_tasks.inputs_fit, the encoder
    budget) becomes a ValueError with its own message alone, without TensorFlow's wrapping
    (the iterator, the op, the node)."""
    if not type(err).__module__.startswith("tensorflow"):
        return err
    text = getattr(err, "message", str(err))
    assertion = _TF_ASSERTION.search(text)
    if assertion:
        return ValueError(assertion.group(1).strip())
    m = re.search(r"\b(?:ValueError|FileNotFoundError|UnicodeDecodeError|KeyError|TypeError)"
                  r": (.+)", text)
    return ValueError(f"reading the training data failed: {m.group(1) if m else text}")


def build_dataset(config: DataConfig):
    """The unbatched-then-batched tf.data pipeline of model features for `config`."""
    # lazy: seqio (and TensorFlow) load only when data is read
    import seqio

    _tf()
    if config.batch_size <= 0:
        raise ValueError(f"batch size per process must be positive, got {config.batch_size}")
    missing = {"inputs", "targets"} - set(config.task_feature_lengths)
    if missing:
        raise ValueError(f"TASK_FEATURE_LENGTHS={dict(config.task_feature_lengths)} lacks "
                         f"{sorted(missing)}; e.g. {{'inputs': 512, 'targets': 114}}")
    get_task_or_mixture(config.mixture_or_task_name)
    converter = seqio.EncDecFeatureConverter(pack=config.pack)
    if config.task_id_tasks:
        return task_id_mixture(config, converter).batch(config.batch_size, drop_remainder=True)
    ds = seqio.get_dataset(
        config.mixture_or_task_name,
        task_feature_lengths=dict(config.task_feature_lengths),
        feature_converter=converter,
        dataset_split=config.split,
        use_cached=config.use_cached,
        shuffle=config.shuffle,
        num_epochs=config.num_epochs,
        shard_info=seqio.ShardInfo(config.shard_index, config.num_shards),
        verbose=False,
        seed=config.seed,
        batch_size=None,
    )
    return ds.batch(config.batch_size, drop_remainder=True)


def mixture_rates(mixture_name: str, tasks: Sequence[str]) -> list[float]:
    """The mixing rates of `tasks` in seqio mixture `mixture_name`, in the order given; the
    tasks must be exactly the mixture's (clear error naming MULTITASK_TASKS otherwise)."""
    mixture = get_task_or_mixture(mixture_name)
    members = {t.name: t for t in getattr(mixture, "tasks", None) or []}
    if not members or set(tasks) != set(members) or len(set(tasks)) != len(tasks):
        raise ValueError(f"MULTITASK_TASKS={list(tasks)} must list each task of the mixture "
                         f"MIXTURE_OR_TASK_NAME={mixture_name!r} exactly once (in task-id "
                         f"order); the mixture has {sorted(members) or 'no tasks (a task)'}.")
    return [float(mixture.get_rate(members[t])) for t in tasks]


def task_id_mixture(config: DataConfig, converter):
    """Unbatched model features of the mixture with "task_ids" (int32 []) on every example.

    seqio's converters drop unknown features, so each task is converted on its own, tagged
    with its index in config.task_id_tasks, and the tasks are mixed with
    `tf.data.Dataset.sample_from_datasets` at the mixture's rates (seeded by config.seed, so
    the stream is deterministic and resumes exactly).
    """
    # lazy: seqio (and TensorFlow) load only when data is read
    import seqio

    tf = _tf()
    rates = mixture_rates(config.mixture_or_task_name, config.task_id_tasks)
    datasets = []
    for task_id, name in enumerate(config.task_id_tasks):
        ds = seqio.get_dataset(
            name, task_feature_lengths=dict(config.task_feature_lengths),
            feature_converter=converter, dataset_split=config.split,
            use_cached=config.use_cached, shuffle=config.shuffle,
            num_epochs=config.num_epochs,
            shard_info=seqio.ShardInfo(config.shard_index, config.num_shards),
            verbose=False, seed=None if config.seed is None else config.seed + task_id,
            batch_size=None)
        datasets.append(ds.map(lambda ex, i=task_id: {**ex, "task_ids": tf.constant(i, tf.int32)},
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    total = sum(rates)
    return tf.data.Dataset.sample_from_datasets(datasets, weights=[r / total for r in rates],
                                                seed=config.seed)


def get_batches(config: DataConfig, start_position: int = 0) -> BatchIterator:
    """Numpy batches of `config`, starting after `start_position` batches (exact resume).

    Each batch: encoder_input_tokens [B, S], decoder_input_tokens / decoder_target_tokens /
    decoder_loss_weights [B, T] (+ *_segment_ids, *_positions when packed), int32;
    with config.task_id_tasks also task_ids [B].
    """
    ds = build_dataset(config)
    if start_position:
        log.info("data: skipping %d batches to resume at the saved position", start_position)
        ds = ds.skip(int(start_position))
    return BatchIterator(ds.prefetch(2), position=start_position)


def load_examples(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
                  split: str, max_examples: int | None = None,
                  shard_index: int = 0, num_shards: int = 1) -> list[dict[str, Any]]:
    """The preprocessed examples of a task split, in order, as numpy dicts.

    Keeps every feature the task emits (inputs, targets, *_pretokenized and any extra
    fields the postprocessor or constraint needs); token features trimmed to the lengths.
    """
    # lazy: seqio (and TensorFlow) load only when data is read
    import seqio

    _tf()
    task = get_task_or_mixture(mixture_or_task_name)
    if split not in task.splits:
        raise ValueError(f"{mixture_or_task_name!r} has no split {split!r}; "
                         f"it has {list(task.splits)}")
    ds = task.get_dataset(sequence_length=dict(task_feature_lengths), split=split,
                          shuffle=False, num_epochs=1, use_cached=False,
                          shard_info=seqio.ShardInfo(shard_index, num_shards),
                          trim_output_features=True)
    if max_examples is not None:
        ds = ds.take(int(max_examples))
    try:
        examples = list(ds.as_numpy_iterator())
    except Exception as e:  # noqa: BLE001 - tf.data wraps a reader's error in an OpError
        converted = input_error(e)
        if converted is e:
            raise
        raise converted from e
    check_cut_eval_examples(mixture_or_task_name, split, examples, task_feature_lengths)
    return examples
