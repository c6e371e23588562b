"""Evaluation on seqio tasks: decode, postprocess, score with the tasks' metric functions.

`Evaluator` loads each task's eval split once (in order, unshuffled), then on every call
  * teacher-forced scoring: eval loss / token accuracy, and per-example log-likelihoods for
    score metric functions `(targets, scores)`;
  * inference with `medmt5.decoding.generate` (beam search or greedy), constrained for
    sequence-labelling tasks to copying the input words and valid tags;
  * the task's postprocessor on predictions (and targets, `is_target=True`) and its predict
    metric functions `(targets, predictions)`.
Metrics come back as {"<task>/<metric>": float}, are printed and written to TensorBoard
(<summary_dir>/<task>). `BestCheckpointKeeper` keeps the best step by a named metric.

Multi-host: every process loads every example and feeds its own rows of each padded global
batch (`partitioning.make_global_batch`); outputs are gathered back to every process.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from medmt5.checkpointing.checkpoint_io import orbax_steps
from medmt5.data import paths
from medmt5.data import pipeline as data_lib
from medmt5.decoding import constraints
from medmt5.decoding import sampling as decoding
from medmt5.model import protocols
from medmt5.run import progress
from medmt5.run.best_checkpoint import (  # noqa: F401 (re-exported)
    BestCheckpointKeeper,
    aggregate,
    host_params,
)
from medmt5.training import partitioning
from tasks import seqlabel

log = logging.getLogger(__name__)


def default_eval_tasks(mixture_or_task_name: str, split: str) -> list[str]:
    """The task itself, or the mixture's sub-tasks, that have split `split`."""
    provider = data_lib.get_task_or_mixture(mixture_or_task_name)
    tasks = getattr(provider, "tasks", None) or [provider]
    return [t.name for t in tasks if split in t.splits]


def _metric_value(value: Any) -> float | None:
    """A float from a metric output (number, numpy scalar, seqio Scalar); None otherwise."""
    value = getattr(value, "value", value)
    try:
        arr = np.asarray(value)
    except Exception:
        return None
    if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number):
        return float(arr)
    return None


def format_metrics(step: int, metrics: Mapping[str, float]) -> str:
    """One line per task: "eval @ step N" then "  task: f1=.. loss=..", sorted."""
    by_task: dict[str, list[str]] = {}
    for key in sorted(metrics):
        task, _, name = key.rpartition("/")
        by_task.setdefault(task or "-", []).append(f"{name}={metrics[key]:.4f}")
    lines = [f"eval @ step {step}:"] + [f"  {t}: {' '.join(v)}" for t, v in by_task.items()]
    return "\n".join(lines)


def seqlabel_labels(task) -> tuple[str, ...] | None:
    """The label set of a sequence-labelling task, or None.

    A task is sequence labelling when its postprocessor carries a `labels` attribute
    (tasks.benchmarks.SeqLabelPostprocessor); it is then decoded under the tagging
    constraint (copy the next input word, open or close a known tag, or end)."""
    labels = getattr(getattr(task, "_postprocess_fn", None), "labels", None)
    return tuple(labels) if labels else None


@functools.partial(jax.jit, static_argnames=("model",))
def _score(model, params, batch):
    """Teacher-forced per-token log p(target) [B, T] and argmax hits [B, T]."""
    logits = model.apply({"params": params}, batch["encoder_input_tokens"],
                         batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                         enable_dropout=False)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok = jnp.take_along_axis(logp, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
    hits = jnp.argmax(logits, axis=-1) == batch["decoder_target_tokens"]
    return tok, hits


class TaskData:
    """One task's eval examples, their model features and what postprocessing needs."""

    def __init__(self, name: str, lengths: Mapping[str, int], split: str,
                 max_examples: int | None = None, examples: list | None = None):
        self.name = name
        self.task = data_lib.get_task_or_mixture(name)
        if examples is None:
            examples = data_lib.load_examples(name, lengths, split, max_examples)
        if not examples:
            raise ValueError(f"eval task {name!r} split {split!r} has no examples")
        self.examples = examples
        self.features = data_lib.examples_to_batch(examples, lengths)
        self.vocab = self.task.output_features["targets"].vocabulary
        self.labels = seqlabel_labels(self.task)
        self.inputs_text = [self._text(e, "inputs") for e in examples]
        self.targets_text = [self._text(e, "targets") for e in examples]

    def _text(self, example, key) -> str:
        if f"{key}_pretokenized" in example:
            return data_lib.as_text(example[f"{key}_pretokenized"])
        return self.vocab.decode([int(t) for t in example[key] if t > 1])

    @classmethod
    def from_texts(cls, name: str, texts: Sequence[str], lengths: Mapping[str, int]):
        """Raw model inputs (already formatted) tokenized with task `name`'s vocabulary;
        targets are empty."""
        task = data_lib.get_task_or_mixture(name)
        vocab = task.output_features["inputs"].vocabulary
        eos = [vocab.eos_id] if task.output_features["inputs"].add_eos else []
        examples = [{"inputs": np.asarray(vocab.encode(t)[:lengths["inputs"] - len(eos)] + eos,
                                          np.int32),
                     "targets": np.zeros((0,), np.int32), "inputs_pretokenized": t,
                     "targets_pretokenized": ""} for t in texts]
        return cls(name, lengths, "inputs", examples=examples)


class Evaluator:
    """Scores a model's params on several tasks' eval splits (see module docstring)."""

    def __init__(self, tasks: Sequence[str], task_feature_lengths: Mapping[str, int], *,
                 split: str = "validation", mesh=None, batch_size: int = 8,
                 max_examples: int | None = None, beam_size: int = 1,
                 max_decode_length: int | None = None, summary_dir: str | None = None,
                 decode_fn: Callable | None = None, lazy: bool = False):
        if not tasks and not lazy:
            raise ValueError(f"no eval tasks: none has split {split!r}; set EvalConfig.eval_tasks")
        self.lengths = dict(task_feature_lengths)
        self.mesh = mesh if mesh is not None else partitioning.create_mesh()
        data_size = self.mesh.shape["data"]
        self.batch_size = max(data_size, -(-batch_size // data_size) * data_size)
        self.beam_size = beam_size
        self.max_decode_length = max_decode_length or self.lengths["targets"]
        self.decode_fn = decode_fn or generate_tokens
        self.data = [TaskData(t, self.lengths, split, max_examples) for t in tasks]
        self.summary_dir = summary_dir
        self._writers = {}

    def _mesh_context(self):
        """The mesh and logical-axis rules the model's activation constraints need."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES))
        return stack

    # -- batching over processes ---------------------------------------------------------
    def _batches(self, features: Mapping[str, np.ndarray]):
        """Yields (global batch of jax arrays, number of real rows) over padded batches."""
        n = len(next(iter(features.values())))
        shard = partitioning.data_shard_info(self.mesh)
        rows = self.batch_size // shard.num_shards
        for start in range(0, n, self.batch_size):
            chunk = {k: v[start:start + self.batch_size] for k, v in features.items()}
            real = len(next(iter(chunk.values())))
            chunk = {k: np.pad(v, [(0, self.batch_size - real)] + [(0, 0)] * (v.ndim - 1))
                     for k, v in chunk.items()}
            mine = {k: v[shard.index * rows:(shard.index + 1) * rows] for k, v in chunk.items()}
            yield partitioning.make_global_batch(mine, self.mesh), real, start

    @staticmethod
    def _to_host(x) -> np.ndarray:
        if getattr(x, "is_fully_addressable", True):
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    # -- the three passes ----------------------------------------------------------------
    def score(self, model, params, td: TaskData) -> dict:
        """Teacher-forced loss, accuracy and per-example log-likelihood."""
        loss_sum = correct = tokens = 0.0
        per_example = []
        for batch, real, _ in self._batches(td.features):
            with self._mesh_context():
                tok, hits = _score(model, params, batch)
            tok, hits = self._to_host(tok)[:real], self._to_host(hits)[:real]
            w = self._to_host(batch["decoder_loss_weights"])[:real] > 0
            loss_sum -= float((tok * w).sum())
            correct += float((hits * w).sum())
            tokens += float(w.sum())
            per_example.extend((tok * w).sum(axis=-1).tolist())
        return {"loss": loss_sum / max(tokens, 1.0), "accuracy": correct / max(tokens, 1.0),
                "scores": per_example}

    def predict(self, model, params, td: TaskData) -> list[str]:
        """Decoded prediction text per example (constrained when the task has labels)."""
        out: list[str] = []
        inputs_only = {"encoder_input_tokens": td.features["encoder_input_tokens"]}
        for batch, real, start in self._batches(inputs_only):
            constraint = None
            if td.labels:
                texts = td.inputs_text[start:start + self.batch_size]
                texts = texts + [texts[-1]] * (self.batch_size - len(texts))  # padded rows
                words = [seqlabel.input_words(t, td.labels) for t in texts]
                constraint = constraints.seqlabel_constraint(
                    words, list(td.labels), td.vocab, automaton=seqlabel.TaggingAutomaton)
            with self._mesh_context():
                tokens = self.decode_fn(model, params, batch["encoder_input_tokens"],
                                        max_decode_length=self.max_decode_length,
                                        beam_size=self.beam_size, constraint=constraint)
            for row in self._to_host(tokens)[:real]:
                out.append(td.vocab.decode(_strip(row, model.config.eos_id)))
        return out

    def evaluate_task(self, model, params, td: TaskData) -> tuple[dict, list[dict]]:
        """({metric: value}, [{inputs, prediction, target}]) for one task."""
        metrics: dict[str, float] = {}
        need_scores = bool(td.task.score_metric_fns)
        scored = self.score(model, params, td)
        metrics["loss"], metrics["accuracy"] = scored["loss"], scored["accuracy"]
        if need_scores:
            targets = [td.task.postprocess_fn(t, example=e, is_target=True)
                       for t, e in zip(td.targets_text, td.examples)]
            for fn in td.task.score_metric_fns:
                metrics.update(_float_metrics(fn(targets, scored["scores"])))
        records = []
        if td.task.predict_metric_fns or td.labels:
            texts = self.predict(model, params, td)
            preds = [td.task.postprocess_fn(p, example=e, is_target=False)
                     for p, e in zip(texts, td.examples)]
            targets = [td.task.postprocess_fn(t, example=e, is_target=True)
                       for t, e in zip(td.targets_text, td.examples)]
            for fn in td.task.predict_metric_fns:
                metrics.update(_float_metrics(fn(targets, preds)))
            records = [{"inputs": i, "prediction": p, "target": t}
                       for i, p, t in zip(td.inputs_text, texts, td.targets_text)]
        return metrics, records

    def evaluate(self, model, params, step: int, **unused) -> dict[str, float]:
        """All tasks: {"<task>/<metric>": value}; also written to TensorBoard at `step`."""
        del unused

        out = {}
        for td in self.data:
            metrics, _ = self.evaluate_task(model, params, td)
            if self.summary_dir:
                if td.name not in self._writers:
                    self._writers[td.name] = progress.SummaryLogger(
                        paths.join(self.summary_dir, td.name))
                self._writers[td.name].scalars(step, metrics)
            out.update({f"{td.name}/{k}": v for k, v in metrics.items()})
        return out

    def close(self):
        for w in self._writers.values():
            w.close()


def write_predictions(output_dir: str, task_name: str, records) -> str:
    """Writes one task's prediction records (dicts) to OUTPUT_DIR/<task>-predictions.jsonl
    on process 0; returns the path."""
    path = paths.join(output_dir, f"{task_name}-predictions.jsonl")
    if jax.process_index() == 0:
        paths.makedirs(output_dir)
        paths.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def _float_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in dict(result).items():
        v = _metric_value(value)
        if v is not None:
            out[name] = v
    return out


def _strip(tokens: np.ndarray, eos_id: int) -> list[int]:
    """Tokens up to (not including) the first EOS, without padding."""
    tokens = [int(t) for t in tokens]
    if eos_id in tokens:
        tokens = tokens[:tokens.index(eos_id)]
    return [t for t in tokens if t > 0]


def generate_tokens(model, params, encoder_input_tokens, *, max_decode_length: int,
                    beam_size: int = 1, constraint=None):
    """Decoded tokens [B, L] via medmt5.decoding.sampling.generate (greedy when beam_size == 1)."""
    method = "beam" if beam_size > 1 else "greedy"
    # A PromptedModel (prompt_tuning.prompts.PromptedTransformer) decodes with its soft
    # prompt attached: `decoding_prompt(params)` gives the [P, H] array.
    prompt = model.decoding_prompt(params) if isinstance(model, protocols.PromptedModel) else None
    sequences, _ = decoding.generate(
        model, params, {"encoder_input_tokens": encoder_input_tokens}, method=method,
        max_decode_length=max_decode_length, beam_size=max(beam_size, 1),
        constraint=constraint, prompt=prompt)
    return sequences


def place_params(model, params: Any, mesh, task_feature_lengths: Mapping[str, int]) -> Any:
    """Host params -> device arrays sharded by the model's logical axes on `mesh`.

    Falls back to replication when the tree differs from the model's (e.g. extra keys).
    """
    s, t = task_feature_lengths["inputs"], task_feature_lengths["targets"]

    def init():
        ones = functools.partial(jnp.ones, dtype=jnp.int32)
        return model.init(jax.random.key(0), ones((1, s)), ones((1, t)), ones((1, t)),
                          enable_dropout=False)

    specs = nn.get_partition_spec(jax.eval_shape(init))["params"]
    try:
        shardings = partitioning.logical_to_shardings(specs, mesh,
                                                      partitioning.model_axis_rules(model))
        return jax.device_put(params, shardings)
    except (ValueError, TypeError) as e:
        log.info("params tree differs from the model's (%s); replicating", e)
        return jax.device_put(params, partitioning.replicated(mesh))


def latest_step(path: str) -> int:
    """The step of a checkpoint path (MODEL_DIR's latest, or .../checkpoints/<step>); else 0."""
    base = paths.basename(path)
    if base.isdigit():
        return int(base)
    steps = orbax_steps(path) if paths.is_remote(path) or os.path.isdir(path) else []
    return steps[-1] if steps else 0
