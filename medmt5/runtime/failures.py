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

1. close the iterators they own (`medmt5.data.pipeline.BatchIterator.close`, `Evaluator.close`);
2. `release(exc)`: clear the frames of the exception's traceback chain and collect garbage,
   so every pipeline is destroyed now, while the interpreter can still run its readers;
3. print the one-line message, flush, and `exit_process(rc)`: it runs the atexit handlers
   and then `os._exit(rc)`, skipping the interpreter's finalization (where the hang was, and
   which alone took over 20 s on a busy machine), under a last-resort timer (faulthandler's
   C watchdog thread, which runs even when no Python thread can) that dumps the stacks and
   `_exit(1)`s if that stalls for EXIT_GRACE_S seconds ($MEDMT5_EXIT_GRACE_S).
"""
from __future__ import annotations

import atexit
import faulthandler
import gc
import logging
import os
import sys
import traceback

EXIT_GRACE_ENV = "MEDMT5_EXIT_GRACE_S"
EXIT_GRACE_S = 20.0


class TrainingFailure(RuntimeError):
    """A run stopped for a reason the message explains (and says what to do)."""


def _chain(exc: BaseException | None):
    """exc, its __cause__ / __context__ chain, without repeats."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def release(exc: BaseException | None) -> None:
    """Drops what `exc` keeps alive: clears the locals of every frame in its traceback chain
    (so the tf.data iterators they hold are destroyed now, not at interpreter shutdown) and
    collects garbage (reference cycles through the frames, e.g. `raise X from e`). Input
    pipelines still open (medmt5.data.pipeline.BatchIterator) are closed first."""
    data = sys.modules.get("medmt5.data.pipeline")
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
    """Ends the CLI process with status rc.

    rc == 0: a normal sys.exit. rc != 0: the error is printed and the run's objects are
    released, so there is nothing left worth the interpreter's own shutdown, which is where
    the process used to hang (or took tens of seconds on a busy machine tearing down TF and
    XLA): flush, run the atexit handlers (orbax, logging) under a last-resort timer, then
    os._exit(rc). The timer (faulthandler's C thread) dumps the stacks and exits with 1 if
    an atexit handler stalls for EXIT_GRACE_S seconds."""
    flush_std()
    if not rc:
        sys.exit(0)
    try:
        faulthandler.dump_traceback_later(grace_seconds(), exit=True, file=sys.__stderr__)
    except (ValueError, RuntimeError, AttributeError, OSError):
        pass  # no usable stderr (e.g. closed): skip the timer, still exit below
    try:
        atexit._run_exitfuncs()  # pylint: disable=protected-access
    finally:
        logging.shutdown()
        flush_std()
        os._exit(rc)
