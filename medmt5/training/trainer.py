"""Pure train/eval steps: `train_step(config, state, batch, rng) -> (state, metrics)`.

Built from small pieces: `loss_fn` (forward + loss sums), `grads` (value_and_grad, with
gradient accumulation over microbatches by lax.scan), `apply` (optimizer update, skipped when
the loss or gradient is not finite). `jit_train_step` jits it once with explicit shardings
and donates the state.

Freezing: `StepConfig.trainable` (the same tree of bools as the optimizer's mask,
`optimizers.trainable_mask`) makes `grads` differentiate only the trained leaves (frozen
ones are closed over), so frozen weights' gradients and their weight-gradient matmuls are
never computed (ProMoT stage 1: the prompt alone). The gradient norm is over the trained
leaves; the optimizer sees zeros for frozen leaves, and frozen params are passed through
untouched (bit-identical).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from medmt5.model import protocols
from medmt5.training import losses, partitioning
from medmt5.training.optimizers import Optimizer
from medmt5.training.train_state import TrainState

MODEL_INPUTS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                "encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
                "decoder_positions",
                "task_ids")  # [B], multi-task ProMoT batches only (a per-task prompt table)
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything a step needs besides (state, batch, rng)."""

    model: nn.Module
    optimizer: Optimizer
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizer: losses.Normalizer = "num_tokens"
    num_microbatches: int = 1
    vocab_chunk_size: int | None = None   # None: plain [B, T, V] logits
    rules: tuple = partitioning.LOGICAL_AXIS_RULES
    # tree of bools like params (True = trained), the optimizer's mask; None: all trained
    trainable: Any = None


# ---- forward + loss --------------------------------------------------------------------


def _hidden_states(module, enable_dropout: bool = True, **inputs):
    """Final normed decoder hidden [B, T, H] (a PromptedModel attaches its prompt)."""
    if isinstance(module, protocols.PromptedModel):
        return module.hidden_states(**inputs, enable_dropout=enable_dropout)
    enc = inputs["encoder_input_tokens"]
    encoded = module.encode(enc, inputs.get("encoder_segment_ids"),
                            inputs.get("encoder_positions"), enable_dropout=enable_dropout)
    return module.decode(encoded, enc > 0, inputs["decoder_input_tokens"],
                         inputs.get("decoder_target_tokens"), inputs.get("encoder_segment_ids"),
                         inputs.get("decoder_segment_ids"), inputs.get("decoder_positions"),
                         enable_dropout=enable_dropout, return_hidden=True)


def lm_head(model: nn.Module, params: Any, hidden):
    """(hidden [B, T, H] as the head sees it, kernel [H, V]) from the canonical param tree."""
    cfg = model.config
    dtype = cfg.activation_dtype
    if cfg.tie_word_embeddings:
        return ((hidden * (cfg.d_model ** -0.5)).astype(dtype),
                params["token_embedder"]["embedding"].T.astype(dtype))
    return hidden.astype(dtype), params["decoder"]["logits_dense"]["kernel"].astype(dtype)


def token_losses(config: StepConfig, params, batch: Batch, dropout_rng, train: bool):
    """Per-token (loss incl. z-loss, z-loss, correct) [B, T] for one (micro)batch."""
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    variables = {"params": params}
    rngs = {"dropout": dropout_rng} if train else {}
    targets = batch["decoder_target_tokens"]
    if config.vocab_chunk_size:
        hidden = config.model.apply(variables, **inputs, enable_dropout=train, rngs=rngs,
                                    method=_hidden_states)
        hidden, kernel = lm_head(config.model, params, hidden)
        return losses.chunked_cross_entropy(hidden, kernel, targets, config.vocab_chunk_size,
                                            config.z_loss, config.label_smoothing)
    logits = config.model.apply(variables, **inputs, enable_dropout=train, rngs=rngs)
    loss, z = losses.cross_entropy_with_logits(logits, targets, config.z_loss,
                                               config.label_smoothing)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return loss, z, correct


def loss_fn(params, config: StepConfig, batch: Batch, eff_weights, denom, dropout_rng):
    """Normalised loss [] (what is differentiated) and metric sums for one microbatch."""
    loss, z, correct = token_losses(config, params, batch, dropout_rng, train=True)
    real = (batch["decoder_loss_weights"] > 0).astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(loss * eff_weights), "z_loss_sum": jnp.sum(z * eff_weights),
            "num_correct": jnp.sum(correct * real), "num_tokens": jnp.sum(real)}
    return sums["loss_sum"] / denom, sums


# ---- gradients -------------------------------------------------------------------------


def _split_microbatches(tree, num: int):
    """[B, ...] -> [num, B/num, ...]; microbatch i takes rows i, i+num, ... so every data
    shard contributes equally to each microbatch (kept sharded over "data")."""
    mesh = jax.sharding.get_abstract_mesh()
    data = 0 if mesh.empty else dict(mesh.shape).get(partitioning.DATA, 0)

    def split(x):
        b = x.shape[0]
        if b % num:
            raise ValueError(f"batch size {b} is not divisible by num_microbatches={num}")
        y = jnp.swapaxes(x.reshape((b // num, num) + x.shape[1:]), 0, 1)
        if data > 1 and (b // num) % data == 0:
            y = jax.lax.with_sharding_constraint(y, P(None, partitioning.DATA))
        return y
    return jax.tree.map(split, tree)


class Split:
    """params <-> (trained leaves, frozen leaves) by a mask of bools with params' paths."""

    def __init__(self, mask: Any, params: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        flags = jax.tree_util.tree_flatten_with_path(mask)[0]
        ours = [jax.tree_util.keystr(p) for p, _ in leaves]
        theirs = [jax.tree_util.keystr(p) for p, _ in flags]
        if ours != theirs:
            missing = sorted(set(ours) - set(theirs)) or sorted(set(theirs) - set(ours))
            raise ValueError(
                "StepConfig.trainable does not match the params tree (build it with "
                "optimizers.trainable_mask(params, ...) on the same params): first "
                f"differing path {missing[:1] or ours[:1]}")
        self.flags = [bool(m) for _, m in flags]

    def split(self, tree):
        leaves = self.treedef.flatten_up_to(tree)
        return ([x for x, m in zip(leaves, self.flags) if m],
                [x for x, m in zip(leaves, self.flags) if not m])

    def merge(self, trained, frozen):
        it_t, it_f = iter(trained), iter(frozen)
        return self.treedef.unflatten([next(it_t) if m else next(it_f) for m in self.flags])


def _trained_loss(trained, frozen, split: Split, *args):
    return loss_fn(split.merge(trained, frozen), *args)


def grads(config: StepConfig, params, batch: Batch, dropout_rng):
    """(grads, metric sums, denominator) over the batch, accumulated over microbatches.

    With config.trainable, grads is the list of the trained leaves' gradients only (in the
    order of Split(config.trainable, params).split); otherwise a tree like params."""
    eff, denom = losses.normalize_weights(batch["decoder_loss_weights"], config.loss_normalizer)
    if config.trainable is None:
        grad_fn = jax.grad(loss_fn, has_aux=True)
        diff = params
    else:
        split = Split(config.trainable, params)
        diff, frozen = split.split(params)
        _grad = jax.grad(_trained_loss, has_aux=True)
        grad_fn = lambda p, *a: _grad(p, frozen, split, *a)  # noqa: E731
    if config.num_microbatches <= 1:
        g, sums = grad_fn(diff, config, batch, eff, denom, dropout_rng)
        return g, sums, denom
    micro = _split_microbatches((dict(batch), eff), config.num_microbatches)

    def body(carry, xs):
        g_acc, s_acc, i = carry
        (mb, mb_eff) = xs
        g, sums = grad_fn(diff, config, mb, mb_eff, denom, jax.random.fold_in(dropout_rng, i))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, sums), i + 1), None

    zeros_g = jax.tree.map(jnp.zeros_like, diff)
    zeros_s = {k: jnp.zeros([], jnp.float32)
               for k in ("loss_sum", "z_loss_sum", "num_correct", "num_tokens")}
    (g, sums, _), _ = jax.lax.scan(body, (zeros_g, zeros_s, jnp.int32(0)), micro)
    return g, sums, denom


# ---- update ----------------------------------------------------------------------------


def apply(config: StepConfig, state: TrainState, g):
    """Optimizer update (new params, new optimizer state). With config.trainable, g holds
    the trained leaves only: the optimizer gets zeros for frozen leaves, whose params are
    returned untouched (the optimizer's mask should freeze them too: no state, no work)."""
    if config.trainable is None:
        updates, new_opt = config.optimizer.tx.update(g, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), new_opt
    split = Split(config.trainable, state.params)
    trained, frozen = split.split(state.params)
    full_g = split.merge(g, [jnp.zeros_like(x) for x in frozen])
    updates, new_opt = config.optimizer.tx.update(full_g, state.opt_state, state.params)
    new_trained = optax.apply_updates(trained, split.split(updates)[0])
    return split.merge(new_trained, frozen), new_opt


def train_step(config: StepConfig, state: TrainState, batch: Batch, rng):
    """One optimizer step. rng is the run's base key; dropout uses fold_in(rng, step)."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    g, sums, denom = grads(config, state.params, batch, dropout_rng)
    grad_norm = optax.global_norm(g)  # over the trained leaves only, with config.trainable
    loss = sums["loss_sum"] / denom
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params, new_opt = apply(config, state, g)
    def keep(new, old):  # the update where finite, else the old values
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    if config.trainable is None:
        kept_params = keep(new_params, state.params)
    else:  # frozen leaves are the old arrays themselves: no select over them
        split = Split(config.trainable, state.params)
        old_t, frozen = split.split(state.params)
        kept_params = split.merge(keep(split.split(new_params)[0], old_t), frozen)
    new_state = state.replace(step=state.step + 1, params=kept_params,
                              opt_state=keep(new_opt, state.opt_state))
    z = sums["z_loss_sum"] / denom
    metrics = {
        "loss": loss, "z_loss": z, "cross_entropy": loss - z,
        "accuracy": sums["num_correct"] / jnp.maximum(sums["num_tokens"], 1.0),
        "learning_rate": jnp.asarray(config.optimizer.learning_rate_fn(state.step), jnp.float32),
        "grad_norm": grad_norm, "num_tokens": sums["num_tokens"],
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, metrics


def eval_step(config: StepConfig, state: TrainState, batch: Batch):
    """Summable metrics (no dropout, no update): eval loss = loss_sum / num_tokens."""
    loss, z, correct = token_losses(config, state.params, batch, None, train=False)
    w = batch["decoder_loss_weights"].astype(jnp.float32)
    real = (w > 0).astype(jnp.float32)
    return {"loss_sum": jnp.sum(loss * w), "z_loss_sum": jnp.sum(z * w),
            "num_correct": jnp.sum(correct * real), "num_tokens": jnp.sum(real),
            "num_sequences": jnp.sum(jnp.any(real > 0, axis=-1)).astype(jnp.float32)}


# ---- jit once --------------------------------------------------------------------------


def _in_mesh(fn: Callable, mesh: Mesh, rules) -> Callable:
    """Calls fn with the mesh and logical rules in context (activation constraints)."""
    @functools.wraps(fn)
    def wrapped(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)
    wrapped.jitted = fn
    return wrapped


def jit_train_step(config: StepConfig, mesh: Mesh, state_shardings: TrainState):
    """fn(state, batch, rng) -> (state, metrics), jitted once; the state is donated."""
    rep = partitioning.replicated(mesh)
    fn = jax.jit(functools.partial(train_step, config),
                 in_shardings=(state_shardings, partitioning.batch_sharding(mesh), rep),
                 out_shardings=(state_shardings, rep), donate_argnums=(0,))
    return _in_mesh(fn, mesh, config.rules)


def jit_eval_step(config: StepConfig, mesh: Mesh, state_shardings: TrainState):
    """fn(state, batch) -> summable metrics, jitted once."""
    rep = partitioning.replicated(mesh)
    fn = jax.jit(functools.partial(eval_step, config),
                 in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
                 out_shardings=rep)
    return _in_mesh(fn, mesh, config.rules)


def summarize_eval(total: Mapping[str, Any]) -> dict:
    """Summed eval metrics -> {"loss", "z_loss", "accuracy", "num_tokens"} floats."""
    n = max(float(total["num_tokens"]), 1.0)
    return {"loss": float(total["loss_sum"]) / n, "z_loss": float(total["z_loss_sum"]) / n,
            "accuracy": float(total["num_correct"]) / n, "num_tokens": float(total["num_tokens"])}
