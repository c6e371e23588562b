"""Restoring and saving training checkpoints safely (on top of medmt5.checkpointing.checkpoints).

Atomicity is orbax's: a step is written under `<step>.orbax-checkpoint-tmp-*` and renamed
to `<step>` when complete, and `manager.all_steps()` lists only renamed steps, so a kill
during a save leaves a tmp folder that is never restored; older steps are deleted (keep=N)
only after the newer one is committed. This module adds:
  - `restore`: the latest step whose parameter shapes match the model (a mismatch names the
    parameter and both shapes) and that reads back; an unreadable (truncated, corrupted)
    step raises CorruptCheckpointError naming the step and path, or with fallback=True logs
    it and tries the previous step;
  - `save` / `wait`: an OSError while writing (disk full, permissions) becomes a
    CheckpointSaveError naming the step, the path and the last complete checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
from jax.experimental import multihost_utils

from medmt5.checkpointing import checkpoints
from medmt5.data import paths
from medmt5.runtime.failures import TrainingFailure
from medmt5.training.optimizers import path_str

log = logging.getLogger(__name__)


class CorruptCheckpointError(TrainingFailure):
    pass


class CheckpointSaveError(TrainingFailure):
    pass


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for another model config (a user mistake, not damage)."""


def step_dir(manager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))


def _stored_shapes(path: str) -> dict:
    # lazy: orbax loads TensorStore and asyncio machinery; only checkpoint I/O needs it
    import orbax.checkpoint as ocp
    from etils import epath  # lazy: with orbax

    meta = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
    return {path_str(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(meta)}


def check_shapes(path: str, abstract_params: Any) -> None:
    """ValueError naming the first parameter whose stored shape differs from the model's."""
    stored = _stored_shapes(path)
    want = {path_str(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
    missing = sorted(want.keys() - stored.keys())
    extra = sorted(stored.keys() - want.keys())
    if missing or extra:
        raise CheckpointMismatchError(f"{path}: the checkpoint's parameters do not match the model "
                                      "config: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}. Use the MODEL_DIR's "
                         "own model gin file, or a new MODEL_DIR.")
    for name in sorted(want):
        if stored[name] != want[name]:
            raise CheckpointMismatchError(f"{path}: parameter {name} has shape {stored[name]} in "
                                          "the "
                             f"checkpoint but {want[name]} in the model config. Use the "
                             "MODEL_DIR's own model gin file (see its config.gin), or a new "
                             "MODEL_DIR.")


def restore(manager, abstract_state, fallback: bool = False):
    """(state, train_meta, step) of the latest usable step, or None when there is none."""
    steps = sorted(manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
        path = step_dir(manager, step)
        try:
            shapes_readable = True
            try:
                stored = _stored_shapes(os.path.join(path, "params"))
            except Exception:  # noqa: BLE001 - unreadable metadata is corruption, below
                shapes_readable = False
            if shapes_readable and stored:
                check_shapes(os.path.join(path, "params"), abstract_state.params)
            state, meta = checkpoints.restore_checkpoint(manager, abstract_state, step=step)
            if int(meta["step"]) != step:
                raise ValueError(f"train_meta says step {meta['step']}")
        except CheckpointMismatchError:
            raise  # a config mistake: an older step has the same shapes
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            errors.append((step, path, e))
        else:
            if errors:
                log.warning("resumed from step %d after skipping unreadable checkpoint(s) %s",
                            step, [s for s, _, _ in errors])
            return state, meta, step
        step_, path_, err = errors[-1]
        message = (f"checkpoint step {step_} at {path_} cannot be restored "
                   f"({type(err).__name__}: {str(err)[:300]})")
        if not fallback:
            raise CorruptCheckpointError(
                f"{message}. To resume from the previous checkpoint instead, pass "
                "--gin.CheckpointConfig.checkpoint_fallback=True (or delete that step "
                "folder).") from err
        log.warning("%s; moving it to %s and trying the previous checkpoint "
                    "(checkpoint_fallback=True)", message, quarantine(manager, step_))
    if errors:
        raise CorruptCheckpointError(
            f"no checkpoint in {manager.directory} can be restored (tried steps "
            f"{[s for s, _, _ in errors]}); move MODEL_DIR away to start over")
    return None


def quarantine(manager, step: int) -> str:
    """Renames an unreadable step folder to <step>.corrupt-<time> (kept for inspection, no
    longer listed, so the step can be saved again) and returns the new path."""
    src = step_dir(manager, step)
    dst = f"{src}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
        paths.rename(src, dst)  # copy + delete on an object store
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    manager.reload()
    return dst


def _save_error(manager, step: int | None, err: OSError) -> CheckpointSaveError:
    good = [s for s in manager.all_steps() if s != step]
    last = f"step {max(good)} at {step_dir(manager, max(good))}" if good else "none yet"
    which = f"step {step}" if step is not None else "the last started"
    return CheckpointSaveError(
        f"saving checkpoint {which} under {manager.directory} failed: "
        f"{err.strerror or err} (errno {err.errno}). The last complete checkpoint is kept "
        f"({last}); free space or fix permissions and rerun the same command to resume.")


def save(manager, state, train_meta: Mapping[str, Any], step: int,
         force: bool = False) -> bool:
    """checkpoints.save_checkpoint, with write errors reported as CheckpointSaveError."""
    try:
        return checkpoints.save_checkpoint(manager, state, train_meta, force=force, step=step)
    except OSError as e:
        raise _save_error(manager, step, e) from e
    except Exception as e:  # an async save's error surfaces at the next save
        os_err = _find_os_error(e)
        if os_err is None:
            raise
        raise _save_error(manager, step, os_err) from e


def wait(manager) -> None:
    """manager.wait_until_finished(), with a failed async write as CheckpointSaveError."""
    try:
        manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
        os_err = _find_os_error(e)
        if os_err is None:
            raise
        raise _save_error(manager, None, os_err) from e


@contextlib.contextmanager
def finishing_saves(manager):
    """Waits for the async saves on exit, also when the body raised (its error wins)."""
    try:
        yield manager
    except BaseException:
        try:
            manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - the body's error is the one to report
            log.error("while stopping, a checkpoint save also failed: %s", e)
        raise
    wait(manager)


def _find_os_error(err: BaseException) -> OSError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
