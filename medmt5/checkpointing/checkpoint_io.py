"""`load_checkpoint(path)`: our MODEL_DIR, a Hugging Face model dir, or a T5X checkpoint.

Our layout (docs/INTERFACES.md): MODEL_DIR/model_config.json (T5Config JSON) and an orbax
CheckpointManager directory MODEL_DIR/checkpoints/<step>/ whose item "params" holds the tree
the model uses (scanned iff scan_layers). Everything here returns host numpy arrays in the
unscanned canonical tree, with a config whose scan_layers is False so that
`Transformer(cfg).apply({"params": params}, ...)` works on the result directly.
"""
from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np

from medmt5.checkpointing.atomic_dir import atomic_directory, check_destination
from medmt5.checkpointing.hf_io import CONFIG_FILE as HF_CONFIG_FILE
from medmt5.checkpointing.hf_io import is_hf_dir, load_hf
from medmt5.checkpointing.param_tree import CheckpointError, to_numpy, unflatten, validate
from medmt5.checkpointing.t5x_io import is_t5x_path, load_t5x
from medmt5.data import paths
from medmt5.data.hub import HubError, resolve_checkpoint
from medmt5.model.config import T5Config
from medmt5.model.transformer import scan_params, unscan_params

MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINTS_SUBDIR = "checkpoints"
PARAMS_ITEM = "params"
_STEP_RE = re.compile(r"^\d+$")
COMMIT_SUCCESS_FILE = "commit_success.txt"  # orbax's finished-step marker on object stores


def _load_config(path: str):
    try:
        return T5Config.load(path)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read the model config: {e}") from None


def _our_model_dir(path: str) -> tuple[str, int | None] | None:
    """(MODEL_DIR, step or None) when `path` is MODEL_DIR or MODEL_DIR/checkpoints/<step>."""
    if paths.isfile(paths.join(path, MODEL_CONFIG_FILE)):
        return path, None
    parent = paths.dirname(path)
    base = paths.basename(path)
    if (_STEP_RE.match(base) and paths.basename(parent) == CHECKPOINTS_SUBDIR
            and paths.isfile(paths.join(paths.dirname(parent), MODEL_CONFIG_FILE))):
        return paths.dirname(parent), int(base)
    return None


def orbax_steps(model_dir: str) -> list:
    """Finished orbax steps (plain integer directory names) under MODEL_DIR/checkpoints.

    Locally orbax renames a finished step into place; on an object store (gs://) it writes
    the step folder in place and marks it finished with commit_success.txt."""
    root = paths.join(model_dir, CHECKPOINTS_SUBDIR)
    remote = paths.is_remote(root)
    steps = []
    for d in paths.listdir(root):
        if not _STEP_RE.match(d) or not paths.isdir(paths.join(root, d)):
            continue
        if remote and not paths.isfile(paths.join(root, d, COMMIT_SUCCESS_FILE)):
            continue
        steps.append(int(d))
    return sorted(steps)


def restore_params_item(item_dir: str) -> dict[str, Any]:
    """Restore one orbax PyTree item directory as a nested dict of host numpy arrays."""
    # lazy: orbax loads TensorStore and asyncio machinery; only checkpoint I/O needs it
    import orbax.checkpoint as ocp
    from etils import epath  # lazy: with orbax

    handler = ocp.PyTreeCheckpointHandler()
    try:
        tree = handler.metadata(epath.Path(item_dir))
        tree = getattr(tree, "tree", tree)
        restore_args = jax.tree_util.tree_map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return handler.restore(epath.Path(item_dir),
                               args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:
        raise CheckpointError(f"{item_dir}: cannot restore the orbax item: {e}") from None
    finally:
        handler.close()


def load_medmt5(model_dir: str, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Read our MODEL_DIR (latest step, or `step`) -> (config with scan_layers=False, params)."""
    cfg_path = paths.join(model_dir, MODEL_CONFIG_FILE)
    cfg = _load_config(cfg_path)
    steps = orbax_steps(model_dir)
    root = paths.join(model_dir, CHECKPOINTS_SUBDIR)
    if not steps:
        raise CheckpointError(f"{root}: no finished checkpoint steps (looked for "
                              f"{root}/<step>/{PARAMS_ITEM}).")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise CheckpointError(f"{root}: no checkpoint for step {step}; available steps: {steps}.")
    item_dir = paths.join(root, str(step), PARAMS_ITEM)
    if not paths.isdir(item_dir):
        raise CheckpointError(f"{item_dir}: step {step} has no {PARAMS_ITEM!r} item.")
    params = restore_params_item(item_dir)
    if cfg.scan_layers:
        try:
            params = unscan_params(params)
        except ValueError as e:
            raise CheckpointError(f"{item_dir}: {cfg_path} says scan_layers=True but: "
                                  f"{e}") from None
    flat = to_numpy(params)
    validate(cfg, flat, item_dir, extra_ok=("prompt",))
    return cfg.replace(scan_layers=False), unflatten(flat)


def load_checkpoint(path, step: int | None = None, config=None,
                    relative_attention_max_distance: int = 128) -> tuple[Any, dict[str, Any]]:
    """(T5Config, params) from our MODEL_DIR (or MODEL_DIR/checkpoints/<step>), a Hugging Face
    model dir, or a T5X checkpoint (model dir, checkpoint_<step> dir or the msgpack file).

    Params are host numpy arrays in the unscanned canonical tree; a prompt-tuning checkpoint
    keeps its params["prompt"]. `config` and `relative_attention_max_distance` apply to T5X
    checkpoints only (they carry no config).

    `path` may be local, a URL (gs://bucket/dir, see medmt5.data.paths) or a Hugging Face hub id
    (google/mt5-small, hf://google/mt5-small@<revision>, see medmt5.data.hub)."""
    try:
        path = resolve_checkpoint(path)
    except HubError as e:
        raise CheckpointError(str(e)) from None
    if not paths.exists(path):
        raise CheckpointError(f"{path}: does not exist.")
    is_dir = paths.isdir(path)
    ours = _our_model_dir(path) if is_dir else None
    if ours is not None:
        model_dir, dir_step = ours
        if dir_step is not None and step is not None and step != dir_step:
            raise CheckpointError(f"{path}: is step {dir_step} but step={step} was requested.")
        return load_medmt5(model_dir, dir_step if dir_step is not None else step)
    if is_dir and is_hf_dir(path):
        if step is not None:
            raise CheckpointError(f"{path}: a Hugging Face model directory has no steps; drop "
                                  f"step={step}.")
        return load_hf(path)
    if is_t5x_path(path):
        return load_t5x(path, step, config=config,
                        relative_attention_max_distance=relative_attention_max_distance)
    raise CheckpointError(
        f"{path}: not a checkpoint. Looked for {MODEL_CONFIG_FILE} + {CHECKPOINTS_SUBDIR}/<step>/ "
        f"(medmt5 MODEL_DIR), {HF_CONFIG_FILE} (Hugging Face model directory), and "
        "checkpoint or checkpoint_<step>/checkpoint (T5X).")


def save_params_checkpoint(cfg, params, model_dir: str, step: int = 0,
                           overwrite: bool = False) -> str:
    """Write MODEL_DIR/model_config.json + orbax step `step` with the single item "params"
    (scanned iff cfg.scan_layers), all or nothing. For converters and tests."""
    # lazy: orbax loads TensorStore and asyncio machinery; only checkpoint I/O needs it
    import orbax.checkpoint as ocp

    flat = to_numpy(params)
    validate(cfg, flat, "params passed to save_params_checkpoint", extra_ok=("prompt",))
    tree = unflatten(flat)
    if cfg.scan_layers:
        tree = to_numpy(scan_params(tree))
        tree = unflatten(tree)
    if paths.is_remote(model_dir):
        # Object stores have no rename: orbax writes the step in place and marks it finished
        # (commit_success.txt); model_config.json, which makes the folder a checkpoint for
        # load_checkpoint, is written last.
        check_destination(model_dir, overwrite)
        if overwrite:
            paths.rmtree(model_dir)
        with ocp.CheckpointManager(paths.join(model_dir, CHECKPOINTS_SUBDIR)) as manager:
            manager.save(int(step), args=ocp.args.Composite(
                **{PARAMS_ITEM: ocp.args.StandardSave(tree)}))
            manager.wait_until_finished()
        cfg.save(paths.join(model_dir, MODEL_CONFIG_FILE))
        return model_dir
    with atomic_directory(model_dir, overwrite=overwrite) as tmp:
        cfg.save(os.path.join(tmp, MODEL_CONFIG_FILE))
        with ocp.CheckpointManager(os.path.join(tmp, CHECKPOINTS_SUBDIR)) as manager:
            manager.save(int(step), args=ocp.args.Composite(
                **{PARAMS_ITEM: ocp.args.StandardSave(tree)}))
            manager.wait_until_finished()
    return model_dir
