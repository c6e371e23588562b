"""Run-time failures and how a CLI process ends after one (docs/errors.md).

Configuration mistakes are ValueError / FileNotFoundError (named flag, file, parameter);
a TrainingFailure is something that went wrong while running (non-finite loss, unreadable
or unwritable checkpoint, a dead peer process). Both exit non-zero without a traceback
(MEDMT5_TRACEBACK=1 shows it); the catalogue is docs/errors.md.

Ending the process after an error. A tf.data iterator (the training batches, an evaluation
split) that is still referenced when the interpreter shuts down is destroyed during
finalization, and its destructor waits for reader calls (Python generators) that can no
longer run: the process hangs, or aborts with "terminate called without an active
exception". The saved exception is what keeps it alive: its traceback holds the frames whose
locals hold the iterators. So after an error the CLIs

1. close the iterators they own (`medmt5.data.BatchIterator.close`, `Evaluator.close`);
2. `release(exc)`: clear the frames of the exception's traceback chain and collect garbage,
   so every pipeline is destroyed now, while the interpreter can still run its readers;
3. print the one-line message, flush, and `exit_process(rc)`: that arms a last-resort timer
   (faulthandler's C watchdog thread, which still runs while the interpreter finalizes and
   Python threads no longer do) that dumps the stacks and `_exit(1)`s if shutdown stalls
   for EXIT_GRACE_S seconds ($MEDMT5_EXIT_GRACE_S).
"""
from __future__ import annotations

import faulthandler
import gc
import os
import sys
import traceback
from typing import Optional

EXIT_GRACE_ENV = "MEDMT5_EXIT_GRACE_S"
EXIT_GRACE_S = 20.0


class TrainingFailure(RuntimeError):
    """A run stopped for a reason the message explains (and says what to do)."""


def _chain(exc: Optional[BaseException]):
    """exc, its __cause__ / __context__ chain, without repeats."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def release(exc: Optional[BaseException]) -> None:
    """Drops what `exc` keeps alive: clears the locals of every frame in its traceback chain
    (so the tf.data iterators they hold are destroyed now, not at interpreter shutdown) and
    collects garbage (reference cycles through the frames, e.g. `raise X from e`). Input
    pipelines still open (medmt5.data.BatchIterator) are closed first."""
    data = sys.modules.get("medmt5.data")
    if data is not None and hasattr(data, "close_all_iterators"):
        data.close_all_iterators()
    for e in list(_chain(exc)):
        traceback.clear_frames(e.__traceback__)  # skips frames that are still running
        e.__traceback__ = None
    gc.collect()


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the exit
            pass


def grace_seconds() -> float:
    value = os.environ.get(EXIT_GRACE_ENV)
    if not value:
        return EXIT_GRACE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        print(f"${EXIT_GRACE_ENV}={value!r} is not a positive number of seconds; using "
              f"{EXIT_GRACE_S:g}", file=sys.stderr)
        return EXIT_GRACE_S
    return seconds


def exit_process(rc: int) -> None:
    """sys.exit(rc); when rc != 0 a last-resort timer first ensures the process ends even if
    interpreter shutdown stalls (the timer dumps the stacks to stderr, then exits with 1)."""
    flush_std()
    if rc:
        try:
            faulthandler.dump_traceback_later(grace_seconds(), exit=True, file=sys.__stderr__)
        except (ValueError, RuntimeError, AttributeError, OSError):
            # no usable stderr (e.g. closed): nothing can be reported; end now instead
            os._exit(rc)
    sys.exit(rc)
