"""Step watchdog: ends a process that stopped making progress (e.g. a peer process died).

When one JAX process of a multi-process run dies, the others block inside a collective (or
the next device sync) and may wait a long time: gloo/NCCL have no short timeout and JAX's
coordination service notices a missing heartbeat only after its own timeout. The watchdog
is a daemon thread; the training loop calls `beat(step)` after every step. If no beat comes
within `timeout_s`, it writes one clear line to stderr (which step, which process, what to
do) and ends the process with exit code 3 (os._exit: the main thread is stuck in C++, so a
Python exception could not be delivered). Checkpoints are untouched: the last complete step
remains the resume point.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

EXIT_CODE = 3


class Watchdog:
    """with Watchdog(600) as dog: loop: ...; dog.beat(step).  timeout_s=None: disabled."""

    def __init__(self, timeout_s: float | None, process: str = "",
                 poll_s: float | None = None):
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"watchdog timeout_s={timeout_s} must be > 0 (or None: off)")
        self.enabled = timeout_s is not None
        self.timeout_s = float(timeout_s or 0.0)
        self.process = process
        self.poll_s = poll_s or min(5.0, max(self.timeout_s / 10, 0.01))
        self._last = time.monotonic()
        self._step: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="medmt5-watchdog",
                                        daemon=True)

    def __enter__(self) -> Watchdog:
        self._last = time.monotonic()
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def beat(self, step: int) -> None:
        self._step, self._last = int(step), time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                where = "since start" if self._step is None else f"after step {self._step}"
                msg = (f"medmt5: error: no training progress for {idle:.0f} s {where}"
                       f"{' on ' + self.process if self.process else ''} (watchdog "
                       f"timeout {self.timeout_s:.0f} s): another JAX process probably died "
                       "or hung. Stop every process and rerun the same command on all hosts; "
                       "training resumes from the last complete checkpoint.")
                log.error(msg)
                print(msg, file=sys.stderr, flush=True)
                os._exit(EXIT_CODE)
