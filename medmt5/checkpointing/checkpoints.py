"""Training checkpoints (orbax CheckpointManager) and initial-checkpoint merging.

MODEL_DIR/checkpoints/<step>/ holds three items (docs/INTERFACES.md):
  "params"      the tree the model uses (scanned iff scan_layers)
  "opt_state"   the optax state (frozen params hold none)
  "train_meta"  JSON: step, rng (base dropout key), data_position, optional prompt info, ...
Restoring takes target shardings, so a run resumes onto any mesh.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from medmt5.checkpointing.checkpoint_io import (
    CHECKPOINTS_SUBDIR,
    MODEL_CONFIG_FILE,
    load_checkpoint,
)
from medmt5.data import paths
from medmt5.model.transformer import scan_params
from medmt5.training.optimizers import path_str
from medmt5.training.train_state import TrainState

ITEMS = ("params", "opt_state", "train_meta")

log = logging.getLogger(__name__)


def make_checkpoint_manager(model_dir: str, save_period: int = 1000, keep: int | None = None,
                            async_save: bool = True, config: Any = None) -> ocp.CheckpointManager:
    """Manager on MODEL_DIR/checkpoints: saves when step % save_period == 0 (or forced),
    keeps the latest `keep` steps (None: all). `config` (a T5Config) is written to
    MODEL_DIR/model_config.json so `medmt5.load_checkpoint(MODEL_DIR)` can read the run."""
    if save_period < 1:
        raise ValueError(f"checkpoint save_period={save_period} must be >= 1")
    if keep is not None and keep < 1:
        raise ValueError(f"checkpoint keep={keep} must be >= 1 or None (keep all)")

    model_dir = os.fspath(model_dir)
    if config is not None and jax.process_index() == 0:
        paths.makedirs(model_dir)
        config.save(paths.join(model_dir, MODEL_CONFIG_FILE))
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=policies.FixedIntervalPolicy(int(save_period)),
        preservation_policy=policies.LatestN(keep),
        enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(paths.join(model_dir, CHECKPOINTS_SUBDIR), options=options,
                                 item_names=ITEMS)


def rng_to_json(key):
    """A PRNG key -> JSON for train_meta["rng"]: a list of ints for a raw uint32 key, or
    {"impl": name, "data": [...]} for a typed key (e.g. jax.random.key(0, impl="rbg"))."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.device_get(jax.random.key_data(key))).ravel()
        return {"impl": str(jax.random.key_impl(key)), "data": [int(x) for x in data]}
    return [int(x) for x in np.asarray(jax.device_get(key)).ravel()]


def rng_from_json(data) -> jax.Array:
    """Inverse of rng_to_json."""
    if isinstance(data, Mapping):
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(data["data"], np.uint32)),
                                        impl=data["impl"])
    return jnp.asarray(np.asarray(data, np.uint32))


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                    train_meta: Mapping[str, Any], force: bool = False,
                    step: int | None = None) -> bool:
    """Saves at state.step if the manager's period says so (or force). Returns whether a save
    started (async: call manager.wait_until_finished() before exiting).

    step: the caller's Python step counter (== state.step); passing it avoids reading
    state.step from the device every call, which would stall asynchronous dispatch.
    """
    if step is None:
        step = int(jax.device_get(state.step))
    if not force and not manager.should_save(step):
        return False
    meta = dict(train_meta)
    meta["step"] = step
    if "rng" not in meta:
        raise ValueError("train_meta needs 'rng' (checkpoints.rng_to_json(base_key)) so a "
                         "resumed run repeats the same dropout")
    args = ocp.args.Composite(params=ocp.args.StandardSave(state.params),
                              opt_state=ocp.args.StandardSave(state.opt_state),
                              train_meta=ocp.args.JsonSave(meta))
    return manager.save(step, args=args, force=force)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract: TrainState,
                       step: int | None = None):
    """(state, train_meta) from `step` (default: latest), or None when there is none.

    abstract: TrainState of jax.ShapeDtypeStruct with shardings (train_state.abstract_state
    for the CURRENT mesh); arrays are read straight into those shards.
    """
    if step is None:
        step = manager.latest_step()
        if step is None:
            return None
    elif step not in manager.all_steps():
        raise ValueError(f"{manager.directory}: no checkpoint for step {step}; "
                         f"available: {list(manager.all_steps())}")
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state),
        train_meta=ocp.args.JsonRestore()))
    meta = dict(restored.train_meta)
    step_arr = jax.device_put(np.asarray(meta["step"], np.int32), abstract.step.sharding)
    return TrainState(step=step_arr, params=restored.params,
                      opt_state=restored.opt_state), meta


# ---- initial checkpoint ------------------------------------------------------------------


def _flat(tree) -> dict:
    return {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def merge_params(init_params: Any, loaded: Mapping[str, Any], source: str,
                 new_params: Sequence[str] = (), unused_params: Sequence[str] = ()) -> Any:
    """init_params' tree with values from `loaded` (same layout).

    A model parameter missing from `loaded` raises unless its "/"-path fully matches a regex
    in new_params (it keeps its init value); a loaded parameter the model lacks raises unless
    it matches unused_params; shapes must agree.
    """
    have = _flat(loaded)
    want = _flat(init_params)
    missing = [k for k in want if k not in have
               and not any(re.fullmatch(p, k) for p in new_params)]
    if missing:
        raise ValueError(f"{source}: lacks model parameter(s) {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}; if they are new in this run "
                         "(e.g. a soft prompt), declare them with new_params=['prompt/.*']")
    unused = [k for k in have if k not in want
              and not any(re.fullmatch(p, k) for p in unused_params)]
    if unused:
        raise ValueError(f"{source}: has parameter(s) the model lacks {unused[:8]}; pass "
                         "unused_params=[...] to drop them on purpose")
    for k, w in want.items():
        if k in have and tuple(np.shape(have[k])) != tuple(w.shape):
            raise ValueError(f"{source}: parameter {k} has shape {tuple(np.shape(have[k]))} "
                             f"but the model expects {tuple(w.shape)}")
    fresh = [k for k in want if k not in have]
    if fresh:
        if any(isinstance(want[k], jax.ShapeDtypeStruct) for k in fresh):
            raise ValueError(f"new parameters {fresh[:8]} need values: pass initialised "
                             "(not abstract) init_params")
        log.info("%s: initialising new parameters %s", source, fresh)

    def pick(path, w):
        k = path_str(path)
        if k in have:
            return np.asarray(have[k]).astype(w.dtype)
        return w
    return jax.tree_util.tree_map_with_path(pick, init_params)


def load_initial_params(path: str, init_params: Any, new_params: Sequence[str] = (),
                        unused_params: Sequence[str] = (), scan_layers: bool = False) -> Any:
    """Params for a new run from our MODEL_DIR, a Hugging Face dir or a T5X checkpoint
    (via medmt5.load_checkpoint), merged into init_params (the model's tree; scanned iff
    scan_layers) by `merge_params`. Place the result with create_train_state(params=...)."""
    _, loaded = load_checkpoint(path)
    if scan_layers:
        loaded = scan_params(loaded)
    return merge_params(init_params, loaded, os.fspath(path), new_params, unused_params)
