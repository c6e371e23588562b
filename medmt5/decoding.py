"""Greedy decoding and temperature / top-k / top-p sampling over a `tokens_to_logits` callback.

Model-agnostic, as T5X's decoding.py: `tokens_to_logits(tokens [N, 1], cache, step) ->
(logits [N, V], cache)`; everything runs inside `jax.lax.while_loop` and is jittable. Beam
search lives in `medmt5.beam_search`; the model glue (`generate`) in `medmt5.generation`.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from medmt5.beam_search import TokensToLogits, beam_search, brevity_penalty  # noqa: F401
from medmt5.constraints import DecodingConstraint, mask_log_probs


class SampleState(NamedTuple):
    step: jnp.ndarray  # int32 scalar
    last_tokens: jnp.ndarray  # [B]
    sequences: jnp.ndarray  # [B, L]
    scores: jnp.ndarray  # [B] summed log-probs of the emitted tokens
    finished: jnp.ndarray  # [B] bool
    cache: Any
    constraint_state: Any


def filter_logits(logits: jnp.ndarray, *, top_k: int = 0, top_p: float = 1.0) -> jnp.ndarray:
    """logits [N, V] with everything outside the top_k (0: all) and outside the smallest set
    of tokens whose probability reaches top_p (1.0: all) set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p < 1.0:
        sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)  # descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
        keep = before < top_p  # always keeps the first
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= threshold, logits, -jnp.inf)
    return logits


def _decode_loop(tokens_to_logits: TokensToLogits, cache: Any, select, *, batch_size: int,
                 max_decode_length: int, eos_id: int, pad_id: int, decoder_start_id: int,
                 constraint: Optional[DecodingConstraint]):
    """One token per row per step; select(log_probs [B, V], step) -> tokens [B]."""
    b, length = batch_size, max_decode_length
    if length < 1:
        raise ValueError(f"max_decode_length must be >= 1, got {length}.")
    init = SampleState(
        step=jnp.int32(0),
        last_tokens=jnp.full((b,), decoder_start_id, jnp.int32),
        sequences=jnp.full((b, length), pad_id, jnp.int32),
        scores=jnp.zeros((b,), jnp.float32),
        finished=jnp.zeros((b,), bool),
        cache=cache,
        constraint_state=constraint.init_state(1) if constraint is not None else (),
    )

    def cond(s: SampleState):
        return (s.step < length) & ~jnp.all(s.finished)

    def body(s: SampleState) -> SampleState:
        logits, cache = tokens_to_logits(s.last_tokens[:, None], s.cache, s.step)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, V]
        cstate = s.constraint_state
        if constraint is not None:
            allowed = constraint.allowed_tokens(cstate, log_probs.shape[-1])
            log_probs = mask_log_probs(log_probs, allowed, eos_id)
        tokens = select(log_probs, s.step).astype(jnp.int32)
        tokens = jnp.where(s.finished, pad_id, tokens)
        chosen = jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]
        scores = s.scores + jnp.where(s.finished, 0.0, chosen)
        sequences = s.sequences.at[:, s.step].set(tokens)
        if constraint is not None:
            cstate = constraint.advance(cstate, tokens)
        return SampleState(step=s.step + 1, last_tokens=tokens, sequences=sequences,
                           scores=scores, finished=s.finished | (tokens == eos_id),
                           cache=cache, constraint_state=cstate)

    final = jax.lax.while_loop(cond, body, init)
    return final.sequences, final.scores


def greedy_decode(tokens_to_logits: TokensToLogits, cache: Any, *, batch_size: int,
                  max_decode_length: int, eos_id: int = 1, pad_id: int = 0,
                  decoder_start_id: int = 0,
                  constraint: Optional[DecodingConstraint] = None):
    """Argmax decoding; jittable. Returns (sequences [B, L] int32: generated tokens, EOS
    included, then pad_id; scores [B]: their summed log-probabilities)."""
    return _decode_loop(tokens_to_logits, cache, lambda lp, step: jnp.argmax(lp, axis=-1),
                        batch_size=batch_size, max_decode_length=max_decode_length,
                        eos_id=eos_id, pad_id=pad_id, decoder_start_id=decoder_start_id,
                        constraint=constraint)


def temperature_sample(tokens_to_logits: TokensToLogits, cache: Any, rng: jax.Array, *,
                       batch_size: int, max_decode_length: int, temperature: float = 1.0,
                       top_k: int = 0, top_p: float = 1.0, eos_id: int = 1, pad_id: int = 0,
                       decoder_start_id: int = 0,
                       constraint: Optional[DecodingConstraint] = None):
    """Sampling from softmax(logits / temperature) restricted to top_k / top_p; jittable.

    temperature 0 is argmax. Step t uses jax.random.fold_in(rng, t), so the same rng gives
    the same samples. Returns (sequences [B, L], scores [B]); scores are the model's
    log-probabilities of the sampled tokens (before temperature and filtering).
    """
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"temperature_sample: need temperature >= 0 (got {temperature}), "
                         f"top_k >= 0 (got {top_k}), 0 < top_p <= 1 (got {top_p}).")

    def select(log_probs, step):
        if temperature == 0.0:
            return jnp.argmax(log_probs, axis=-1)
        logits = filter_logits(log_probs / temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)

    return _decode_loop(tokens_to_logits, cache, select, batch_size=batch_size,
                        max_decode_length=max_decode_length, eos_id=eos_id, pad_id=pad_id,
                        decoder_start_id=decoder_start_id, constraint=constraint)
