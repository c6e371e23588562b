"""What a non-finite (NaN/Inf) loss or gradient does to a run: stop (default) or skip.

The engine (`trainer.train_step`) never applies a non-finite update: it keeps the params and
optimizer state and reports metrics["nonfinite"] = 1. This policy is applied on the host to
the fetched per-step metrics (medmt5.run.metrics_history rows), before any checkpoint is saved:
  "raise": NonFiniteLossError naming the first bad step and which terms were not finite
           (loss, z_loss, cross_entropy, grad_norm); nothing after the last good checkpoint
           is saved, so a restart resumes from finite parameters.
  "skip":  log the skipped step and go on (T5X-style loss spikes tolerance).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

from medmt5.runtime.failures import TrainingFailure

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip")
TERMS = ("loss", "cross_entropy", "z_loss", "grad_norm")


class NonFiniteLossError(TrainingFailure):
    def __init__(self, step: int, terms: Mapping[str, float]):
        self.step, self.terms = step, dict(terms)
        named = ", ".join(f"{k}={v}" for k, v in terms.items())
        super().__init__(
            f"non-finite training value at step {step}: {named}. The update was not applied "
            "and no checkpoint after the last finite step is saved. Lower LEARNING_RATE, check "
            "the data and loss_normalizer, or bind StepSettings.nonfinite_policy='skip' to skip "
            "such steps.")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"StepSettings.nonfinite_policy={policy!r}: use one of {POLICIES}")
    return policy


def bad_terms(row: Mapping[str, float]) -> dict:
    """{term: value} of the row's non-finite terms ({} when all are finite)."""
    bad = {k: row[k] for k in TERMS if k in row and not math.isfinite(row[k])}
    if not bad and row.get("nonfinite", 0.0) > 0:
        bad = {"nonfinite": row["nonfinite"]}
    return bad


def apply_policy(rows: Iterable[Mapping[str, float]], policy: str) -> list[int]:
    """Raises NonFiniteLossError (policy "raise") or returns the skipped steps ("skip")."""
    skipped = []
    for row in rows:
        bad = bad_terms(row)
        if not bad:
            continue
        if policy == "raise":
            raise NonFiniteLossError(int(row["step"]), bad)
        log.warning("step %d: non-finite %s; update skipped", int(row["step"]), bad)
        skipped.append(int(row["step"]))
    return skipped
