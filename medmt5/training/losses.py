"""Cross entropy with z-loss and label smoothing (T5X's), loss normalisation, accuracy,
and a vocabulary-chunked cross entropy that never materialises [B, T, V] logits.

Per-token loss, as T5X: with soft targets q (confidence 1-s on the target, s/(V-1) elsewhere)
    loss = -sum_v q_v * log_softmax(x)_v + z_loss * logsumexp(x)**2 - H(q)
where H(q) is the (constant) entropy of q, so a perfect prediction has loss ~0. Written in
terms of three per-token statistics, lse = logsumexp(x), x_t = x[target], sum_x = sum_v x_v:
    -sum_v q_v log_softmax_v = lse - (c - l) * x_t - l * sum_x,   c = 1-s, l = s/(V-1)
which is what lets the chunked version stream over the vocabulary.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Normalizer = None | str | float


def _smoothing_constants(label_smoothing: float, vocab_size: int):
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab_size - 1)
    entropy = -(confidence * math.log(confidence)
                + (vocab_size - 1) * low * math.log(low + 1e-20)) if label_smoothing else 0.0
    return confidence, low, entropy


def loss_from_stats(lse, x_t, sum_x, vocab_size: int, z_loss: float = 1e-4,
                    label_smoothing: float = 0.0):
    """Per-token (loss incl. z-loss, z-loss) from lse, target logit and logit sum [B, T]."""
    c, low, entropy = _smoothing_constants(label_smoothing, vocab_size)
    ce = lse - (c - low) * x_t - low * sum_x - entropy
    z = z_loss * jnp.square(lse)
    return ce + z, z


def cross_entropy_with_logits(logits, targets, z_loss: float = 1e-4,
                              label_smoothing: float = 0.0):
    """logits [B, T, V] float, targets [B, T] int -> (loss [B, T] incl. z-loss, z_loss [B, T])."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    x_t = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    sum_x = jnp.sum(logits, axis=-1) if label_smoothing else jnp.zeros_like(lse)
    return loss_from_stats(lse, x_t, sum_x, logits.shape[-1], z_loss, label_smoothing)


def normalize_weights(weights, normalizer: Normalizer = "num_tokens"):
    """Loss weights [B, T] -> (effective weights [B, T], denominator []).

    Computed once on the whole batch (before splitting microbatches) so that
    sum(loss * eff_weights) / denominator is the batch loss.
      "num_tokens":   divide by the number of non-padding target tokens (T5X's default).
      "per_sequence": mean over sequences of each sequence's mean token loss.
      float:          divide by a constant (T5X's mT5 pretraining uses 1024 * 229).
      None:           the plain sum.
    """
    weights = weights.astype(jnp.float32)
    if normalizer is None:
        return weights, jnp.float32(1.0)
    if isinstance(normalizer, str):
        if normalizer == "num_tokens":
            return weights, jnp.maximum(jnp.sum(weights), 1e-8)
        if normalizer == "per_sequence":
            per_seq = jnp.sum(weights, axis=-1, keepdims=True)
            eff = jnp.where(per_seq > 0, weights / jnp.maximum(per_seq, 1e-8), 0.0)
            return eff, jnp.maximum(jnp.sum(per_seq > 0).astype(jnp.float32), 1.0)
        raise ValueError(f"loss normalizer {normalizer!r}: use 'num_tokens', 'per_sequence', "
                         "a number, or None")
    return weights, jnp.float32(normalizer)


def token_accuracy(logits, targets, weights):
    """(num_correct, num_tokens) over positions with weight > 0."""
    mask = (weights > 0).astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(correct * mask), jnp.sum(mask)


def compute_loss(logits, targets, weights, z_loss: float = 1e-4,
                 label_smoothing: float = 0.0, normalizer: Normalizer = "num_tokens"):
    """Normalised weighted loss [] and metric sums (loss_sum, z_loss_sum, num_correct,
    num_tokens) from logits [B, T, V], targets [B, T], weights [B, T]."""
    eff, denom = normalize_weights(weights, normalizer)
    loss, z = cross_entropy_with_logits(logits, targets, z_loss, label_smoothing)
    correct, count = token_accuracy(logits, targets, weights)
    sums = dict(loss_sum=jnp.sum(loss * eff), z_loss_sum=jnp.sum(z * eff),
                num_correct=correct, num_tokens=count)
    return sums["loss_sum"] / denom, sums


# ---------------------------------------------------------------------------------------
# Vocabulary-chunked statistics: scan over chunks of the LM head [H, C].


def _chunk_starts(vocab_size: int, chunk: int):
    n = -(-vocab_size // chunk)
    # The last chunk is shifted left to stay inside the vocabulary; its columns already
    # seen by the previous chunk are masked out (no padding copy of the kernel).
    return n, jnp.minimum(jnp.arange(n) * chunk, vocab_size - chunk), jnp.arange(n) * chunk


def _chunk_logits(hidden, kernel, start, chunk):
    k = jax.lax.dynamic_slice_in_dim(kernel, start, chunk, axis=1)        # [H, C]
    return jnp.einsum("bth,hc->btc", hidden, k, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked_stats(hidden, kernel, targets, chunk):
    return _chunked_stats_fwd(hidden, kernel, targets, chunk)[0]


def _chunked_stats_fwd(hidden, kernel, targets, chunk):
    vocab = kernel.shape[1]
    n, starts, owned = _chunk_starts(vocab, chunk)
    b, t = targets.shape
    neg = jnp.full((b, t), -jnp.inf, jnp.float32)
    zero = jnp.zeros((b, t), jnp.float32)

    def body(carry, xs):
        m, s, x_t, sum_x, best, arg = carry
        start, own = xs
        x = _chunk_logits(hidden, kernel, start, chunk)                   # [B, T, C]
        cols = start + jnp.arange(chunk)                                  # [C]
        valid = cols >= own
        x = jnp.where(valid, x, -jnp.inf)
        cm = jnp.max(x, axis=-1)
        new_m = jnp.maximum(m, cm)
        s = s * jnp.exp(m - new_m) + jnp.sum(jnp.exp(x - new_m[..., None]), axis=-1)
        hit = cols[None, None, :] == targets[..., None]
        x_t = x_t + jnp.sum(jnp.where(hit & valid, x, 0.0), axis=-1)
        sum_x = sum_x + jnp.sum(jnp.where(valid, x, 0.0), axis=-1)
        carg = start + jnp.argmax(x, axis=-1)
        better = cm > best                                                # earlier wins ties
        return (new_m, s, x_t, sum_x, jnp.where(better, cm, best),
                jnp.where(better, carg, arg)), None

    init = (neg, zero, zero, zero, neg, jnp.zeros((b, t), jnp.int32))
    (m, s, x_t, sum_x, _, arg), _ = jax.lax.scan(body, init, (starts, owned))
    lse = m + jnp.log(s)
    correct = (arg == targets).astype(jnp.float32)
    return (lse, x_t, sum_x, correct), (hidden, kernel, targets, lse)


def _chunked_stats_bwd(chunk, res, cts):
    hidden, kernel, targets, lse = res
    g_lse, g_xt, g_sum, _ = cts
    vocab = kernel.shape[1]
    n, starts, owned = _chunk_starts(vocab, chunk)

    def body(carry, xs):
        d_hidden, d_kernel = carry
        start, own = xs
        x = _chunk_logits(hidden, kernel, start, chunk)
        cols = start + jnp.arange(chunk)
        valid = cols >= own
        p = jnp.where(valid, jnp.exp(x - lse[..., None]), 0.0)
        hit = (cols[None, None, :] == targets[..., None]) & valid
        d_x = (g_lse[..., None] * p + jnp.where(hit, g_xt[..., None], 0.0)
               + jnp.where(valid, g_sum[..., None], 0.0))                  # [B, T, C]
        k = jax.lax.dynamic_slice_in_dim(kernel, start, chunk, axis=1)
        d_hidden = d_hidden + jnp.einsum("btc,hc->bth", d_x, k.astype(jnp.float32))
        d_k = jnp.einsum("bth,btc->hc", hidden.astype(jnp.float32), d_x)
        old = jax.lax.dynamic_slice_in_dim(d_kernel, start, chunk, axis=1)
        d_kernel = jax.lax.dynamic_update_slice_in_dim(d_kernel, old + d_k, start, axis=1)
        return (d_hidden, d_kernel), None

    init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(kernel.shape, jnp.float32))
    (d_hidden, d_kernel), _ = jax.lax.scan(body, init, (starts, owned))
    return d_hidden.astype(hidden.dtype), d_kernel.astype(kernel.dtype), None


_chunked_stats.defvjp(_chunked_stats_fwd, _chunked_stats_bwd)


def chunked_cross_entropy(hidden, kernel, targets, chunk_size: int, z_loss: float = 1e-4,
                          label_smoothing: float = 0.0):
    """Cross entropy of logits = hidden [B, T, H] @ kernel [H, V] without building [B, T, V].

    Streams over vocabulary chunks of chunk_size columns with a running logsumexp; the
    backward pass recomputes each chunk (custom_vjp), so memory is O(B*T*chunk_size).
    Returns (loss [B, T] incl. z-loss, z_loss [B, T], correct [B, T] float 0/1), equal in
    value and gradients to cross_entropy_with_logits on the full logits.
    """
    vocab = kernel.shape[1]
    if hidden.shape[-1] != kernel.shape[0]:
        raise ValueError(f"hidden {hidden.shape} and LM head kernel {kernel.shape} disagree on H")
    chunk = int(min(chunk_size, vocab))
    if chunk < 1:
        raise ValueError(f"vocab_chunk_size={chunk_size} must be >= 1")
    lse, x_t, sum_x, correct = _chunked_stats(hidden, kernel, targets.astype(jnp.int32), chunk)
    loss, z = loss_from_stats(lse, x_t, sum_x, vocab, z_loss, label_smoothing)
    return loss, z, jax.lax.stop_gradient(correct)
