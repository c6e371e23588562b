"""Base class of run-time training failures the CLIs report as one `error:` line.

Configuration mistakes are ValueError / FileNotFoundError (named flag, file, parameter);
a TrainingFailure is something that went wrong while running (non-finite loss, unreadable
or unwritable checkpoint, a dead peer process). Both exit non-zero without a traceback
(MEDMT5_TRACEBACK=1 shows it); the catalogue is docs/errors.md.
"""
from __future__ import annotations


class TrainingFailure(RuntimeError):
    """A run stopped for a reason the message explains (and says what to do)."""
