"""Beam search over a `tokens_to_logits` callback, T5X-style, inside `jax.lax.while_loop`.

Scores are summed log-probabilities divided by the T5X/GNMT brevity penalty
((5 + length) / 6) ** alpha, length counting the generated tokens including EOS. A beam
ends when it emits EOS or reaches max_decode_length (then it is scored at that length).
The loop stops early once no alive beam can beat the worst of the k finished ones.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from medmt5.decoding.constraints import DecodingConstraint, gather_rows, mask_log_probs

# tokens [N, 1] int32, cache, step (int32 scalar) -> (logits [N, V], cache)
TokensToLogits = Callable[[jnp.ndarray, Any, jnp.ndarray], tuple[jnp.ndarray, Any]]


def brevity_penalty(alpha: float, length) -> jnp.ndarray:
    """T5X's length penalty ((5 + length) / 6) ** alpha."""
    return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


class BeamState(NamedTuple):
    step: jnp.ndarray  # int32 scalar: position being written
    last_tokens: jnp.ndarray  # [B, k] token fed at this step
    live_seqs: jnp.ndarray  # [B, k, L]
    live_logprobs: jnp.ndarray  # [B, k] (-inf: no such beam)
    finished_seqs: jnp.ndarray  # [B, k, L]
    finished_scores: jnp.ndarray  # [B, k] length-penalized (-inf: empty slot)
    cache: Any  # leaves [B*k, ...] on cache_batch_axis
    constraint_state: Any  # leaves [B*k, ...]


def _take(x: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    """x [B, M, ...] gathered along axis 1 by idx [B, k] -> [B, k, ...]."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def top_k_by_chunks(x: jnp.ndarray, k: int, chunk: int = 128) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`jax.lax.top_k(x, k)` over the last axis of x [B, M], same values and indices (ties
    too: the lower index first), found through chunk maxima: cut each row into chunks of
    `chunk`, keep the k chunks with the largest maxima (every top-k element lies in one of
    them: at most k - 1 chunks hold a value above the k-th largest, and among chunks tied at
    it the lowest-indexed ones hold its lowest-indexed copies), then take the top k of those
    k * chunk values in index order. Beam search's candidates (M = beams x vocabulary) cost
    one max-reduction pass instead of XLA CPU's sort-based top-k over all of them.
    Rows of at most k * chunk values use lax.top_k directly."""
    b, m = x.shape
    if m <= k * chunk:
        return jax.lax.top_k(x, k)
    pad = (-m) % chunk
    if pad:  # -inf padding sorts after every real value (real -inf too: higher index)
        x = jnp.pad(x, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    chunks = x.reshape(b, -1, chunk)
    _, best = jax.lax.top_k(chunks.max(axis=-1), k)  # [B, k] chunk ids
    best = jnp.sort(best, axis=-1)  # index order, so ties resolve as in lax.top_k
    values = jnp.take_along_axis(chunks, best[:, :, None], axis=1).reshape(b, k * chunk)
    top, pos = jax.lax.top_k(values, k)
    return top, jnp.take_along_axis(best, pos // chunk, axis=1) * chunk + pos % chunk


def beam_search(tokens_to_logits: TokensToLogits, cache: Any, *, batch_size: int,
                beam_size: int, max_decode_length: int, alpha: float = 0.6, eos_id: int = 1,
                decoder_start_id: int = 0, constraint: DecodingConstraint | None = None,
                cache_batch_axis: int = 0,
                cache_skip_reorder: Sequence[str] = (),
                unroll: int = 1) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Beam search; jittable.

    cache: the decoding cache for batch_size * beam_size rows (row b * k + j = beam j of
    example b), with the batch on cache_batch_axis (1 for layer-scanned caches).
    unroll=2 runs two steps per `while_loop` iteration (same result): the reordered cache
    of the second step is written into the buffer the first step read, so XLA copies no
    cache back into the loop state (with one step per iteration it copies every reordered
    cache on every step); when the search stops after the first of the two, the second's
    state is discarded. Costs one step's compile time more.
    Returns (sequences [B, k, L] int32, scores [B, k] float32), best first. Sequences hold
    the generated tokens (no start token), EOS included, then 0. A slot with score -inf has
    no valid hypothesis (only when a constraint admits fewer than k) and is all 0.
    """
    b, k, length = batch_size, beam_size, max_decode_length
    if k < 1 or length < 1:
        raise ValueError(f"beam_search: beam_size ({k}) and max_decode_length ({length}) must "
                         "be >= 1.")
    if unroll not in (1, 2):
        raise ValueError(f"beam_search: unroll must be 1 or 2, got {unroll}.")
    neg_inf = jnp.float32(-jnp.inf)
    cstate = constraint.init_state(k) if constraint is not None else ()
    init = BeamState(
        step=jnp.int32(0),
        last_tokens=jnp.full((b, k), decoder_start_id, jnp.int32),
        live_seqs=jnp.zeros((b, k, length), jnp.int32),
        # Only beam 0 is real at first; the copies would duplicate it.
        live_logprobs=jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, neg_inf)[None], (b, 1)),
        finished_seqs=jnp.zeros((b, k, length), jnp.int32),
        finished_scores=jnp.full((b, k), neg_inf),
        cache=cache,
        constraint_state=cstate,
    )
    max_penalty = jnp.maximum(brevity_penalty(alpha, 1), brevity_penalty(alpha, length))

    def cond(s: BeamState):
        # The best an alive beam can still reach: log-probs only fall, so its score is at most
        # its current log-prob (<= 0) over the largest penalty still possible.
        best_alive = s.live_logprobs[:, 0] / jnp.maximum(brevity_penalty(alpha, s.step + 1),
                                                          max_penalty)
        worst_finished = jnp.min(s.finished_scores, axis=1)
        done = jnp.all(worst_finished >= best_alive)
        return (s.step < length) & ~done

    def step(s: BeamState) -> BeamState:
        i = s.step
        logits, cache = tokens_to_logits(s.last_tokens.reshape(b * k, 1), s.cache, i)
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B*k, V]
        if constraint is not None:
            allowed = constraint.allowed_tokens(s.constraint_state, vocab)
            log_probs = mask_log_probs(log_probs, allowed, eos_id)
        cand = s.live_logprobs[:, :, None] + log_probs.reshape(b, k, vocab)  # [B, k, V]
        # 2k candidates: enough for k alive ones even if k of them end with EOS.
        top_lp, top_idx = top_k_by_chunks(cand.reshape(b, k * vocab), min(2 * k, k * vocab))
        top_beam, top_tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)  # [B, 2k]
        top_seqs = _take(s.live_seqs, top_beam)  # [B, 2k, L]
        top_seqs = jnp.where(jnp.arange(length) == i, top_tok[:, :, None], top_seqs)
        is_eos = top_tok == eos_id

        # Finished: EOS now, or any beam at the last position.
        ends = is_eos | (i == length - 1)
        new_scores = jnp.where(ends, top_lp / brevity_penalty(alpha, i + 1), neg_inf)
        all_scores = jnp.concatenate([s.finished_scores, new_scores], axis=1)
        all_seqs = jnp.concatenate([s.finished_seqs, top_seqs], axis=1)
        fin_scores, fin_idx = jax.lax.top_k(all_scores, k)
        fin_seqs = _take(all_seqs, fin_idx)

        # Alive: the best k candidates that did not emit EOS.
        alive_lp, alive_idx = jax.lax.top_k(jnp.where(is_eos, neg_inf, top_lp), k)
        beam_idx = jnp.take_along_axis(top_beam, alive_idx, axis=1)  # [B, k] old beam
        new_tok = jnp.take_along_axis(top_tok, alive_idx, axis=1)
        rows = (jnp.arange(b)[:, None] * k + beam_idx).reshape(b * k)
        cache = gather_rows(cache, rows, cache_batch_axis, cache_skip_reorder)
        cstate = s.constraint_state
        if constraint is not None:
            cstate = constraint.advance(gather_rows(cstate, rows), new_tok.reshape(b * k))
        return BeamState(step=i + 1, last_tokens=new_tok, live_seqs=_take(top_seqs, alive_idx),
                         live_logprobs=alive_lp, finished_seqs=fin_seqs,
                         finished_scores=fin_scores, cache=cache, constraint_state=cstate)

    def two_steps(s: BeamState) -> BeamState:
        # The second step's cache reorder writes the buffer the first one read, so XLA needs
        # no copy back into the loop's cache buffer. The second step only counts while the
        # search is still running (its cache is then unused garbage).
        s1 = step(s)
        s2 = step(s1)
        go = cond(s1)
        keep = jax.tree.map(lambda a, b: jnp.where(go, a, b),
                            s2._replace(cache=()), s1._replace(cache=()))
        return keep._replace(cache=s2.cache)

    final = jax.lax.while_loop(cond, step if unroll == 1 else two_steps, init)
    valid = final.finished_scores > neg_inf
    return jnp.where(valid[:, :, None], final.finished_seqs, 0), final.finished_scores
