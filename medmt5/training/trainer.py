"""Pure train/eval steps: `train_step(config, state, batch, rng) -> (state, metrics)`.

Built from small pieces: `loss_fn` (forward + loss sums), `grads` (value_and_grad, with
gradient accumulation over microbatches by lax.scan), `apply` (optimizer update, skipped when
the loss or gradient is not finite). `jit_train_step` jits it once with explicit shardings
and donates the state.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, PartitionSpec as P

from medmt5.model import protocols
from medmt5.training import losses
from medmt5.training import partitioning
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
    vocab_chunk_size: Optional[int] = None   # None: plain [B, T, V] logits
    rules: tuple = partitioning.LOGICAL_AXIS_RULES


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


def grads(config: StepConfig, params, batch: Batch, dropout_rng):
    """(grads, metric sums, denominator) over the batch, accumulated over microbatches."""
    eff, denom = losses.normalize_weights(batch["decoder_loss_weights"], config.loss_normalizer)
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if config.num_microbatches <= 1:
        g, sums = grad_fn(params, config, batch, eff, denom, dropout_rng)
        return g, sums, denom
    micro = _split_microbatches((dict(batch), eff), config.num_microbatches)

    def body(carry, xs):
        g_acc, s_acc, i = carry
        (mb, mb_eff) = xs
        g, sums = grad_fn(params, config, mb, mb_eff, denom, jax.random.fold_in(dropout_rng, i))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, sums), i + 1), None

    zeros_g = jax.tree.map(jnp.zeros_like, params)
    zeros_s = {k: jnp.zeros([], jnp.float32)
               for k in ("loss_sum", "z_loss_sum", "num_correct", "num_tokens")}
    (g, sums, _), _ = jax.lax.scan(body, (zeros_g, zeros_s, jnp.int32(0)), micro)
    return g, sums, denom


# ---- update ----------------------------------------------------------------------------


def apply(config: StepConfig, state: TrainState, g):
    """Optimizer update; skipped (params and optimizer state kept) when not finite."""
    updates, new_opt = config.optimizer.tx.update(g, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    return new_params, new_opt


def train_step(config: StepConfig, state: TrainState, batch: Batch, rng):
    """One optimizer step. rng is the run's base key; dropout uses fold_in(rng, step)."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    g, sums, denom = grads(config, state.params, batch, dropout_rng)
    grad_norm = optax.global_norm(g)
    loss = sums["loss_sum"] / denom
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params, new_opt = apply(config, state, g)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(step=state.step + 1, params=keep(new_params, state.params),
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
