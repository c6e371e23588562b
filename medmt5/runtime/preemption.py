"""Preemption: SIGTERM asks the training loop to save at the current step and exit 0.

`PreemptionGuard` is a context manager around the loop; call `should_stop(step)` once per
step, after the step. One process: a Python SIGTERM handler sets a flag, and the loop stops
after the step in flight (bounded time: one step plus one save). Several JAX processes
must stop at the SAME step (they save one checkpoint together), so the flag is agreed on:
  - with JAX's preemption service (on by default with jax.distributed), its background
    protocol picks the first step every process can reach
    (`multihost_utils.reached_preemption_sync_point`); its own SIGTERM notifier is kept
    (a Python handler would replace it);
  - otherwise the local flags are all-gathered every `sync_period` steps and any set flag
    stops everyone at that step.
"""
from __future__ import annotations

import logging
import signal

import jax
import numpy as np
from jax._src import distributed  # the preemption manager has no public accessor in jax 0.10
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _preemption_sync_manager():
    state = distributed.global_state
    return state.preemption_sync_manager if state.client is not None else None


class PreemptionGuard:
    """with PreemptionGuard() as guard: ... if guard.should_stop(step): save; break."""

    def __init__(self, sync_period: int = 1, signals=(signal.SIGTERM,)):
        if sync_period < 1:
            raise ValueError(f"preemption sync_period={sync_period} must be >= 1")
        self.sync_period = int(sync_period)
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._old = {}
        self._manager = None

    def __enter__(self) -> PreemptionGuard:
        if jax.process_count() > 1:
            self._manager = _preemption_sync_manager()
        if self._manager is None:
            for sig in self.signals:
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread: the caller cannot be signalled
                    log.warning("not in the main thread: %s will not stop training cleanly",
                                signal.Signals(sig).name)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        del frame
        if self.signum is None:
            log.warning("received %s: stopping after the current step",
                        signal.Signals(signum).name)
        self.signum = signum

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What the signal handler does; for callers with their own notice (and tests)."""
        self._handle(signum, None)

    def should_stop(self, step: int) -> bool:
        """True at the step where every process stops (call exactly once per step)."""
        if self._manager is not None:
            if self._manager.reached_sync_point(int(step)):
                self.signum = self.signum or signal.SIGTERM
                return True
            return False
        if jax.process_count() == 1:
            return self.signum is not None
        if step % self.sync_period:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
        if np.any(flags) and self.signum is None:
            self.signum = signal.SIGTERM
            log.warning("another process was asked to stop: stopping at step %d", step)
        return bool(np.any(flags))
