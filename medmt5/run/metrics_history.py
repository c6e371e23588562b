"""Per-step training metrics as JSON lines, kept consistent with the checkpoints.

MODEL_DIR/train/metrics.jsonl holds one line per optimizer step:
  {"step": 7, "loss": 6.28..., "z_loss": ..., "grad_norm": ..., "nonfinite": 0.0, ...}
Values are the float32 metrics written with Python's repr (they round-trip exactly), so two
runs can be compared bitwise. `record` keeps the device arrays (no host sync per step);
`flush` fetches and appends them (fsync'd) and is called before every checkpoint save, so the
file always covers the latest checkpoint. On resume the file is cut back to the restored step
(lines of steps the crashed run did after its last checkpoint, and a half-written last line,
are dropped) and training appends from there: the history equals an uninterrupted run's.
Only process 0 writes.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax

from medmt5.checkpointing.atomic_dir import atomic_write_text
from medmt5.data import paths

log = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"


def read_history(path: str) -> list[dict]:
    """The complete lines of a metrics.jsonl (a torn last line is ignored)."""
    rows = []
    if not paths.exists(path):
        return rows
    data = paths.read_bytes(path)
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:  # torn write at a crash: only possible for the last line
            break
    return rows


class MetricsHistory:
    """Append-only per-step metrics, truncated to `resume_step` when opened."""

    def __init__(self, directory: str, resume_step: int = 0, enabled: bool | None = None):
        self.path = paths.join(directory, FILENAME)
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._pending: list[tuple[int, Mapping[str, Any]]] = []
        if self.enabled:
            paths.makedirs(directory)
            self._truncate(int(resume_step))

    def _truncate(self, resume_step: int) -> None:
        rows = [r for r in read_history(self.path) if int(r["step"]) <= resume_step]
        missing = resume_step - len(rows)
        if missing > 0 and resume_step > 0:
            log.warning("%s: covers %d of the %d restored steps (written by an older "
                        "version, or deleted?); appending from step %d", self.path,
                        len(rows), resume_step, resume_step + 1)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def record(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Keeps step `step`'s metrics (device arrays are fine: fetched at flush)."""
        self._pending.append((int(step), metrics))

    def flush(self) -> list[dict]:
        """Fetches the pending metrics, appends them (fsync'd) and returns them as rows."""
        if not self._pending:
            return []
        fetched = jax.device_get([m for _, m in self._pending])
        rows = [{"step": step, **{k: float(v) for k, v in sorted(m.items())}}
                for (step, _), m in zip(self._pending, fetched)]
        self._pending = []

        if self.enabled and paths.is_remote(self.path):
            paths.append_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        elif self.enabled:
            with open(self.path, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
        return rows
