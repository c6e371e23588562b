"""Optimizers: T5X's Adafactor (as an optax transformation), AdamW, schedules, freezing.

Freezing is explicit composition: `trainable_mask` builds a tree of bools from path
patterns and `masked` wraps an optimizer in `optax.multi_transform`, so frozen parameters get
`optax.set_to_zero()` updates and hold no optimizer state at all.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import PartitionSpec

from medmt5.model import protocols
from medmt5.training.partitioning import is_box

Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = float | Schedule

# ---------------------------------------------------------------------------------------
# Schedules (step = number of updates already applied, i.e. TrainState.step)


def make_schedule(name: str, learning_rate: float, warmup_steps: int = 0,
                  decay_steps: int | None = None, end_learning_rate: float = 0.0) -> Schedule:
    """Learning-rate schedule by name.

    constant: linear warmup from 0 over warmup_steps (if any), then learning_rate.
    rsqrt:    T5's: learning_rate for warmup_steps, then learning_rate*sqrt(warmup/step)
              (T5's 1/sqrt(max(step, 1e4)) is learning_rate=0.01, warmup_steps=10000).
    cosine:   linear warmup to learning_rate, cosine to end_learning_rate at decay_steps.
    linear:   linear warmup to learning_rate, linear to end_learning_rate at decay_steps.
    """
    lr, warmup, end = float(learning_rate), int(warmup_steps), float(end_learning_rate)
    if warmup < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")

    def warm(step):
        return jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0

    if name == "constant":
        return lambda step: lr * warm(jnp.asarray(step, jnp.float32))
    if name == "rsqrt":
        if warmup < 1:
            raise ValueError("schedule 'rsqrt' needs warmup_steps >= 1 (T5 uses 10000)")
        return lambda step: lr * jnp.sqrt(warmup / jnp.maximum(jnp.asarray(step, jnp.float32),
                                                               warmup))
    if name in ("cosine", "linear"):
        if decay_steps is None or decay_steps <= warmup:
            raise ValueError(f"schedule {name!r} needs decay_steps > warmup_steps ({warmup}); "
                             f"got decay_steps={decay_steps}")

        def sched(step):
            step = jnp.asarray(step, jnp.float32)
            frac = jnp.clip((step - warmup) / (decay_steps - warmup), 0.0, 1.0)
            if name == "cosine":
                decayed = end + (lr - end) * 0.5 * (1.0 + jnp.cos(math.pi * frac))
            else:
                decayed = lr + (end - lr) * frac
            return jnp.where(step < warmup, lr * warm(step), decayed)
        return sched
    raise ValueError(f"unknown schedule {name!r}; use constant, rsqrt, cosine or linear")


# ---------------------------------------------------------------------------------------
# Adafactor (T5X defaults)

ROW, COLUMN, BATCH, NONE = "row", "column", "batch", None
# Logical axis name -> role in the factored second moment (t5x's standard factor rules) for
# the core model; a package adding parameter axes adds their roles (standard_factor_rules).
FACTOR_RULES = {
    "embed": ROW, "vocab": COLUMN, "mlp": COLUMN, "heads": COLUMN, "kv": COLUMN,
    "joined_kv": COLUMN, "layers": BATCH, "relpos_buckets": NONE,
}
_ROLES = (ROW, COLUMN, BATCH, NONE)


def standard_factor_rules(additional_rules: Mapping[str, str | None] | None = None
                          ) -> dict:
    """FACTOR_RULES plus a package's additions (new logical names, roles ROW / COLUMN /
    BATCH / NONE), like t5x's `standard_logical_factor_rules(rules=...)`."""
    rules = dict(FACTOR_RULES)
    for name, role in (additional_rules or {}).items():
        if role not in _ROLES:
            raise ValueError(f"factor rule {name!r}: role {role!r} is not one of {_ROLES}")
        if name in FACTOR_RULES:
            raise ValueError(f"factor rule {name!r} already in FACTOR_RULES "
                             f"({FACTOR_RULES[name]!r})")
        rules[name] = role
    return rules


def model_factor_rules(model: Any) -> dict:
    """The factor rules for this model: core + its own additions (AddsLogicalAxes)."""
    own = (model.additional_factor_rules
           if isinstance(model, protocols.AddsLogicalAxes) else None)
    return standard_factor_rules(own)


def _roles(names: Sequence[str | None], rules: Mapping[str, str | None], where: str):
    unknown = [n for n in names if n is not None and n not in rules]
    if unknown:
        raise ValueError(
            f"Adafactor: logical axis {unknown[0]!r} of {where} has no factor rule; pass the "
            "rules of the package that adds it: create_optimizer(factor_rules="
            "optimizers.model_factor_rules(model)) or standard_factor_rules({...})")
    return [rules.get(n) for n in names]


class FactoredMoment(struct.PyTreeNode):
    """Second moment of one parameter, factored: v_row (col dims removed), v_col (row dims
    removed). The dims are static so the update needs no side tables."""
    v_row: jax.Array
    v_col: jax.Array
    row_dims: tuple = struct.field(pytree_node=False, default=())
    col_dims: tuple = struct.field(pytree_node=False, default=())
    batch_dims: tuple = struct.field(pytree_node=False, default=())


class FullMoment(struct.PyTreeNode):
    """Unfactored second moment, same shape as the parameter."""
    v: jax.Array
    batch_dims: tuple = struct.field(pytree_node=False, default=())


class AdafactorState(NamedTuple):
    count: jax.Array   # int32 [], updates applied
    moments: Any       # params-shaped tree of FactoredMoment / FullMoment


def factor_dims(shape: Sequence[int], names: Sequence[str | None] | None,
                min_dim_size_to_factor: int = 128,
                rules: Mapping[str, str | None] | None = None, where: str = "a parameter"):
    """(row_dims, col_dims, batch_dims) for a parameter; row/col empty = not factored.

    "layers" dims are batch dims (scanned layers keep per-layer statistics). Of the other
    dims, two dims use T5X's heuristic (smaller one is the row, both >= the minimum size);
    more dims use the logical names (embed = row; vocab/mlp/heads/kv = column). The size
    minimum applies in both cases, so scanned and unscanned parameters train identically.
    rules: logical name -> role (default FACTOR_RULES); a name without a rule raises.
    """
    ndim = len(shape)
    rules = FACTOR_RULES if rules is None else rules
    roles = _roles(names, rules, where) if names is not None else [NONE] * ndim
    batch = tuple(i for i, r in enumerate(roles) if r == BATCH)
    rest = [i for i in range(ndim) if i not in batch]
    if len(rest) < 2:
        return (), (), batch
    if len(rest) == 2 or names is None:
        order = sorted(rest, key=lambda i: shape[i])  # stable: ties keep the original order
        row, col = order[-2], order[-1]
        if shape[row] < min_dim_size_to_factor:
            return (), (), batch
        return (row,), (col,), batch
    rows = tuple(i for i in rest if roles[i] == ROW)
    cols = tuple(i for i in rest if roles[i] == COLUMN)
    if not rows or not cols or len(rows) + len(cols) != len(rest):
        return (), (), batch
    if (math.prod(shape[i] for i in rows) < min_dim_size_to_factor
            or math.prod(shape[i] for i in cols) < min_dim_size_to_factor):
        return (), (), batch
    return rows, cols, batch


def _drop(seq, dims):
    return tuple(s for i, s in enumerate(seq) if i not in dims)


def _mean(x, axes: tuple):
    """jnp.mean over `axes`; on CPU a mean over the leading axis alone is a dot with a vector
    of ones: XLA CPU's library fusion reduces a leading axis into many outputs (the column
    statistic of a [512, 32128] head kernel) several times slower than the dot."""
    if axes == (0,) and x.ndim > 1 and jax.default_backend() == "cpu":
        return jnp.tensordot(jnp.ones((x.shape[0],), x.dtype), x, axes=(0, 0)) / x.shape[0]
    return jnp.mean(x, axis=axes)


def adafactor(learning_rate: ScalarOrSchedule, logical_axes: Any = None, *,
              decay_rate: float = 0.8, step_offset: int = 0,
              clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True, epsilon1: float = 1e-30,
              epsilon2: float = 1e-3, min_dim_size_to_factor: int = 128,
              factored: bool = True,
              weight_decay_rate: float | None = None,
              factor_rules: Mapping[str, str | None] | None = None
              ) -> optax.GradientTransformation:
    """T5X's Adafactor (no momentum) as an optax transformation.

    logical_axes: tree of PartitionSpec of logical names, like params (optional; boxed
    params passed to `init` also carry their names). Second moments decay with
    1 - (count - step_offset + 1) ** -decay_rate; updates are clipped to RMS
    clipping_threshold, scaled by max(RMS(param), epsilon2) and the learning rate.
    factor_rules: logical name -> factoring role (default FACTOR_RULES; a model adding axes
    supplies its own: model_factor_rules(model)); a parameter axis without one raises.
    """
    rules = FACTOR_RULES if factor_rules is None else dict(factor_rules)
    lr_fn = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
    names_by_path = {}
    if logical_axes is not None:
        for path, spec in jax.tree_util.tree_flatten_with_path(
                logical_axes, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]:
            names_by_path[jax.tree_util.keystr(path)] = tuple(spec) if spec is not None else None

    def init_moment(path, p):
        box = p if is_box(p) else None
        value = box.value if box is not None else p
        names = tuple(box.names) if box is not None else names_by_path.get(
            jax.tree_util.keystr(path))
        if names is not None and len(names) != value.ndim:
            names = None
        where = jax.tree_util.keystr(path)
        rows, cols, batch = ((), (), ()) if not factored else factor_dims(
            value.shape, names, min_dim_size_to_factor, rules, where)
        if not factored and names is not None:
            batch = tuple(i for i, r in enumerate(_roles(names, rules, where)) if r == BATCH)

        def zeros(dropped):
            arr = jnp.zeros(_drop(value.shape, dropped), jnp.float32)
            if box is not None:  # keep logical names so the state can be sharded
                return box.replace_boxed(arr).replace(names=_drop(box.names, dropped))
            return arr
        if rows:
            return FactoredMoment(zeros(cols), zeros(rows), rows, cols, batch)
        return FullMoment(zeros(()), batch)

    def init_fn(params):
        moments = jax.tree_util.tree_map_with_path(init_moment, params, is_leaf=is_box)
        return AdafactorState(jnp.zeros([], jnp.int32), moments)

    def update_one(g, m, p, lr, decay):
        g = g.astype(jnp.float32)
        avg_dims = tuple(i for i in range(g.ndim) if i not in m.batch_dims)
        grad_sqr = g * g + epsilon1
        if isinstance(m, FactoredMoment):
            rows, cols = m.row_dims, m.col_dims
            v_row = decay * m.v_row + (1 - decay) * jnp.mean(grad_sqr, axis=cols)
            v_col = decay * m.v_col + (1 - decay) * _mean(grad_sqr, rows)
            # row dims' positions inside v_row (cols removed)
            rows_in_vrow = tuple(d - sum(c < d for c in cols) for d in rows)
            row_factor = (v_row / jnp.mean(v_row, axis=rows_in_vrow, keepdims=True)) ** -0.5
            y = g * jnp.expand_dims(row_factor, cols) * jnp.expand_dims(v_col ** -0.5, rows)
            new_m = m.replace(v_row=v_row, v_col=v_col)
        else:
            v = decay * m.v + (1 - decay) * grad_sqr
            y = g * v ** -0.5
            new_m = m.replace(v=v)
        if clipping_threshold is not None:
            rms = jnp.sqrt(jnp.mean(y * y, axis=avg_dims, keepdims=True))
            y = y / jnp.maximum(1.0, rms / clipping_threshold)
        scale = lr
        if multiply_by_parameter_scale:
            pf = p.astype(jnp.float32)
            scale = lr * jnp.maximum(jnp.sqrt(jnp.mean(pf * pf, axis=avg_dims, keepdims=True)),
                                     epsilon2)
        update = -scale * y
        if weight_decay_rate is not None:
            update = update - weight_decay_rate * p.astype(jnp.float32)
        return update.astype(p.dtype), new_m

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("adafactor needs params in update (parameter scaling)")
        count = state.count
        t = (count - step_offset).astype(jnp.float32) + 1.0
        decay = 1.0 - t ** (-decay_rate)
        lr = lr_fn(count)
        def is_moment(x):
            return isinstance(x, (FactoredMoment, FullMoment))

        flat_m, treedef = jax.tree_util.tree_flatten(state.moments, is_leaf=is_moment)
        flat_g = treedef.flatten_up_to(updates)
        flat_p = treedef.flatten_up_to(params)
        out = [update_one(g, m, p, lr, decay) for g, m, p in zip(flat_g, flat_m, flat_p)]
        new_updates = treedef.unflatten([u for u, _ in out])
        new_moments = treedef.unflatten([m for _, m in out])
        return new_updates, AdafactorState(count + 1, new_moments)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------
# AdamW, masks, composition


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Plain AdamW (optax); weight_decay=0 is Adam."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def path_str(path) -> str:
    """jax key path -> "encoder/layers_0/mlp/wo/kernel"."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def trainable_mask(params: Any, trainable: Sequence[str] | None = None,
                   frozen: Sequence[str] = ()) -> Any:
    """Tree of bools (True = trained) from regexes fully matched against "/"-joined paths.

    trainable=None means every parameter; a path matching `frozen` is never trained. A
    pattern that matches no parameter raises (a typo would otherwise freeze nothing).
    """
    trainable = None if trainable is None else list(trainable)
    frozen = list(frozen)
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_box)[0]
    paths = [path_str(p) for p, _ in leaves]
    for pat in (trainable or []) + frozen:
        if not any(re.fullmatch(pat, s) for s in paths):
            raise ValueError(f"trainable/frozen pattern {pat!r} matches no parameter; "
                             f"parameters look like {paths[:3]}")

    def is_trained(path, _):
        s = path_str(path)
        if any(re.fullmatch(pat, s) for pat in frozen):
            return False
        return trainable is None or any(re.fullmatch(pat, s) for pat in trainable)
    return jax.tree_util.tree_map_with_path(is_trained, params, is_leaf=is_box)


def masked(tx: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
    """Trains params where mask is True with tx; the rest get zero updates and no state."""
    labels = jax.tree.map(lambda m: "train" if m else "freeze", mask)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


class Optimizer(NamedTuple):
    tx: optax.GradientTransformation
    learning_rate_fn: Schedule


def create_optimizer(name: str = "adafactor", schedule: ScalarOrSchedule = 1e-3,
                     logical_axes: Any = None, mask: Any = None,
                     multiply_by_parameter_scale: bool = True,
                     weight_decay_rate: float | None = None,
                     factor_rules: Mapping[str, str | None] | None = None,
                     **kwargs) -> Optimizer:
    """"adafactor" (T5X defaults; kwargs go to `adafactor`) or "adamw" (kwargs to `adamw`),
    optionally restricted to the params where `mask` is True.

    multiply_by_parameter_scale / weight_decay_rate are Adafactor's (explicit so that gin
    files bind them by name): prompt tuning turns the scaling off and decays weights by 1e-5
    (google-research/prompt-tuning, prompt_tuning/configs/models/t5_1_1_prompt.gin), so the
    prompt's step does not depend on its initialiser's scale (gin/promot/stage1_prompt.gin).
    factor_rules: Adafactor's logical name -> role table for a model whose parameters add
    axes (model_factor_rules(model)); None: FACTOR_RULES.
    """
    lr_fn = schedule if callable(schedule) else (lambda _, v=float(schedule): jnp.asarray(v))
    if name == "adafactor":
        tx = adafactor(lr_fn, logical_axes,
                       multiply_by_parameter_scale=multiply_by_parameter_scale,
                       weight_decay_rate=weight_decay_rate, factor_rules=factor_rules,
                       **kwargs)
    elif name in ("adamw", "adam"):
        if not multiply_by_parameter_scale or weight_decay_rate is not None:
            raise ValueError(f"create_optimizer(name={name!r}): multiply_by_parameter_scale and "
                             "weight_decay_rate are Adafactor settings; for AdamW set "
                             "create_optimizer.weight_decay instead.")
        tx = adamw(lr_fn, **kwargs)
    else:
        raise ValueError(f"unknown optimizer {name!r}; use 'adafactor' or 'adamw'")
    if mask is not None:
        tx = masked(tx, mask)
    return Optimizer(tx, lr_fn)
