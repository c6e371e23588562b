"""`TrainState` and its sharded creation.

The state holds only arrays: step, params, optimizer state. The dropout base rng and the
data position live in the checkpoint's train_meta (see medmt5/checkpoints.py); the model,
optimizer and loss options live in `trainer.StepConfig`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct
from jax.sharding import Mesh

from medmt5.training import partitioning
from medmt5.training.optimizers import Optimizer

INIT_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")


@struct.dataclass
class TrainState:
    step: jax.Array      # int32 [], optimizer updates attempted so far
    params: Any          # model params (unboxed)
    opt_state: Any       # optax state; frozen params hold none


def _init_inputs(example_batch: Mapping[str, Any]) -> dict:
    """One-row int32 zeros with the example batch's lengths: params do not depend on B."""
    missing = [k for k in INIT_FEATURES if k not in example_batch]
    if missing:
        raise ValueError(f"example batch lacks {missing}; it needs {INIT_FEATURES} "
                         "(EncDecFeatureConverter outputs)")
    return {k: jnp.zeros((1, example_batch[k].shape[1]), jnp.int32) for k in INIT_FEATURES}


def init_boxed_params(model: nn.Module, example_batch: Mapping[str, Any], rng) -> Any:
    """Model params with their flax LogicallyPartitioned boxes (logical axis names)."""
    variables = model.init({"params": rng, "dropout": rng}, **_init_inputs(example_batch),
                           enable_dropout=False)
    return variables["params"]


def _boxed_state(model, optimizer: Optimizer, example_batch, rng, params=None,
                 boxed_abstract=None) -> TrainState:
    if params is None:
        boxed = init_boxed_params(model, example_batch, rng)
    else:  # the abstract boxes (logical names) around the given values: no random init
        boxed = jax.tree.map(
            lambda box, v: (box.replace_boxed(jnp.asarray(v, box.value.dtype))
                            if partitioning.is_box(box) else jnp.asarray(v, box.dtype)),
            boxed_abstract, params, is_leaf=partitioning.is_box)
    return TrainState(step=jnp.zeros([], jnp.int32), params=boxed,
                      opt_state=optimizer.tx.init(boxed))


def abstract_boxed_state(model, optimizer: Optimizer, example_batch) -> TrainState:
    """Shapes/dtypes of the state, still boxed with logical names (nothing allocated)."""
    return jax.eval_shape(lambda r: _boxed_state(model, optimizer, example_batch, r),
                          jax.random.PRNGKey(0))


def state_logical_specs(boxed_state: TrainState) -> TrainState:
    """TrainState of logical PartitionSpecs (unboxed leaves -> replicated)."""
    return nn.get_partition_spec(boxed_state)


def state_shardings(model, optimizer: Optimizer, example_batch, mesh: Mesh,
                    rules=None) -> TrainState:
    """TrainState of NamedShardings for this model/optimizer on this mesh (rules: default
    the core's plus the model's own additions, partitioning.model_axis_rules)."""
    specs = state_logical_specs(abstract_boxed_state(model, optimizer, example_batch))
    rules = partitioning.model_axis_rules(model) if rules is None else rules
    return partitioning.logical_to_shardings(specs, mesh, rules)


def abstract_state(model, optimizer: Optimizer, example_batch, mesh: Mesh,
                   rules=None) -> TrainState:
    """TrainState of jax.ShapeDtypeStruct with shardings (restore targets)."""
    boxed = abstract_boxed_state(model, optimizer, example_batch)
    rules = partitioning.model_axis_rules(model) if rules is None else rules
    shardings = partitioning.logical_to_shardings(state_logical_specs(boxed), mesh, rules)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        partitioning.unbox(boxed), shardings)


def create_train_state(model: nn.Module, optimizer: Optimizer, mesh: Mesh,
                       example_batch: Mapping[str, Any], rng, params: Any | None = None,
                       rules=None):
    """(state, state_shardings): params initialised from rng (or placed, if given, e.g. from
    checkpoints.load_initial_params) directly in their shards; optimizer state zeroed."""
    rules = partitioning.model_axis_rules(model) if rules is None else rules
    boxed_params = jax.eval_shape(lambda r: init_boxed_params(model, example_batch, r),
                                  jax.random.PRNGKey(0))
    shardings = state_shardings(model, optimizer, example_batch, mesh, rules)

    def init(r, given):
        return partitioning.unbox(_boxed_state(model, optimizer, example_batch, r, given,
                                               boxed_params))

    if params is not None:
        _check_params(params, partitioning.unbox(boxed_params))
        params = jax.tree.map(
            lambda x, s: jax.device_put(x if isinstance(x, jax.Array) else np.asarray(x), s),
            params, shardings.params)
    params_in = None if params is None else shardings.params
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(init, in_shardings=(partitioning.replicated(mesh), params_in),
                        out_shardings=shardings)(rng, params)
    return state, shardings


def _check_params(params, expected) -> None:
    """Given params must have the model's tree, shapes and dtypes (names the first misfit)."""
    got = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(p): x
            for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    if got.keys() != want.keys():
        raise ValueError("params do not match the model: missing "
                         f"{sorted(want.keys() - got.keys())[:5]}, "
                         f"unexpected {sorted(got.keys() - want.keys())[:5]} "
                         "(use checkpoints.load_initial_params to merge a checkpoint)")
    for k, w in want.items():
        if tuple(got[k].shape) != tuple(w.shape):
            raise ValueError(f"param {k}: shape {tuple(got[k].shape)}, model expects "
                             f"{tuple(w.shape)}")


def param_count(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))

