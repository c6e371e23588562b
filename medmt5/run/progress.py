"""Observability for training runs: a tqdm progress bar and TensorBoard scalar summaries.

Only process 0 draws the bar and writes summaries (every host computes the same metrics).
The summary writer is TensorBoard's numpy-only `tensorboard.summary.Writer`, so a machine
without TensorFlow can still log. Layout as in T5X: MODEL_DIR/train and MODEL_DIR/<eval name>.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping

import jax
import numpy as np
from tqdm import tqdm

from medmt5.data import paths

log = logging.getLogger(__name__)


def _is_chief() -> bool:
    """True on JAX process 0 (or when JAX is not initialised yet)."""
    try:
        return jax.process_index() == 0
    except Exception:  # pragma: no cover - jax always imports in this project
        return True


def to_float_dict(metrics: Mapping[str, object]) -> dict[str, float]:
    """Converts a dict of scalar arrays/numbers to Python floats (skips non-scalars)."""
    out = {}
    for name, value in metrics.items():
        arr = np.asarray(value)
        if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number):
            out[name] = float(arr)
    return out


class SummaryLogger:
    """Writes scalar summaries to `logdir` as TensorBoard event files (process 0 only)."""

    def __init__(self, logdir: str, enabled: bool | None = None):
        self.logdir = logdir
        self.enabled = _is_chief() if enabled is None else enabled
        self._writer = None
        self._remote = None
        if self.enabled:
            from tensorboard.summary import Writer  # lazy: only the chief writes summaries

            if paths.is_remote(logdir):
                # Event files are written locally and copied to the object store at each
                # flush, through medmt5.data.paths (tensorboard would use TensorFlow's own GCS
                # client when TF is installed, or need fsspec otherwise).
                self._remote, logdir = logdir, tempfile.mkdtemp(prefix="medmt5-tb-")
            os.makedirs(logdir, exist_ok=True)
            self._writer = Writer(logdir)
            self._local = logdir

    def scalars(self, step: int, metrics: Mapping[str, object], prefix: str = "") -> None:
        """Writes every finite scalar in `metrics` at `step` under tag `prefix + name`."""
        if self._writer is None:
            return
        for name, value in to_float_dict(metrics).items():
            if math.isfinite(value):
                self._writer.add_scalar(prefix + name, value, int(step))
        self._writer.flush()
        self._upload()

    def _upload(self) -> None:
        if self._remote is not None:
            paths.copy_tree(self._local, self._remote)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._upload()
            if self._remote is not None:
                shutil.rmtree(self._local, ignore_errors=True)


def count_tokens(batch: Mapping[str, np.ndarray]) -> int:
    """Non-padding input + target tokens in a feature-converted batch [B, S] / [B, T]."""
    n = 0
    for key in ("encoder_input_tokens", "decoder_target_tokens"):
        if key in batch:
            n += int(np.count_nonzero(np.asarray(batch[key])))
    return n


class ThroughputMeter:
    """Tokens per second over the steps since the last `rate()` call."""

    def __init__(self):
        self._tokens = 0
        self._t0 = time.perf_counter()

    def add(self, num_tokens: int) -> None:
        self._tokens += int(num_tokens)

    def rate(self) -> float:
        now = time.perf_counter()
        dt = max(now - self._t0, 1e-9)
        rate = self._tokens / dt
        self._tokens, self._t0 = 0, now
        return rate


class ProgressBar:
    """tqdm bar over training steps showing loss, tokens/s, lr and (via tqdm) time left.

    Disabled on processes other than 0. When stderr is not a terminal (logs, CI) it also
    prints one plain line per `update` so a run's progress stays readable in a log file.
    """

    def __init__(self, total_steps: int, start_step: int = 0, desc: str = "train",
                 enabled: bool | None = None, stream=None):
        self.enabled = _is_chief() if enabled is None else enabled
        self.total = int(total_steps)
        self.step = int(start_step)
        self.desc = desc
        self._stream = stream or sys.stderr
        self._bar = None
        self._t0 = time.perf_counter()
        self._start_step = int(start_step)
        self._plain = not getattr(self._stream, "isatty", lambda: False)()
        if self.enabled and not self._plain:
            self._bar = tqdm(total=self.total, initial=self.step, desc=desc, unit="step",
                             file=self._stream, dynamic_ncols=True)

    def time_left(self) -> float:
        """Seconds left at the average pace since the bar started."""
        done = self.step - self._start_step
        if done <= 0:
            return float("nan")
        pace = (time.perf_counter() - self._t0) / done
        return pace * (self.total - self.step)

    def update(self, step: int, metrics: Mapping[str, object]) -> None:
        """Moves the bar to `step` and shows the main scalars from `metrics`."""
        if not self.enabled:
            self.step = int(step)
            return
        values = to_float_dict(metrics)
        shown = {}
        for key, fmt in (("loss", "{:.4f}"), ("tokens_per_sec", "{:.0f}"),
                         ("learning_rate", "{:.2e}"), ("accuracy", "{:.3f}")):
            if key in values:
                shown[key.replace("tokens_per_sec", "tok/s").replace("learning_rate", "lr")
                      .replace("accuracy", "acc")] = fmt.format(values[key])
        advance = int(step) - self.step
        self.step = int(step)
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(advance)
        else:
            left = self.time_left()
            left_s = "?" if not math.isfinite(left) else f"{left:.0f}s"
            body = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"[{self.desc}] step {self.step}/{self.total} {body} left={left_s}",
                  file=self._stream, flush=True)

    def write(self, message: str) -> None:
        """Prints a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self._stream)
        else:
            print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
