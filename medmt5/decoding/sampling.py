"""Greedy decoding and temperature / top-k / top-p sampling over a `tokens_to_logits` callback.

Model-agnostic, as T5X's decoding.py: `tokens_to_logits(tokens [N, 1], cache, step) ->
(logits [N, V], cache)`; everything runs inside `jax.lax.while_loop` and is jittable. Beam
search lives in `medmt5.decoding.beam_search`. `generate` is the glue to `medmt5.Transformer`:
encode once, then cached one-token `decode` steps.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from medmt5.decoding.beam_search import TokensToLogits, beam_search, brevity_penalty  # noqa: F401
from medmt5.decoding.constraints import DecodingConstraint, mask_log_probs
from medmt5.model import cpu_kernels, transformer
from medmt5.model.layers import DECODE_WEIGHTS
from medmt5.model.transformer import fill_cross_cache, init_cache, mlp_decode_blocks


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
                 constraint: DecodingConstraint | None):
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
                  constraint: DecodingConstraint | None = None):
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
                       constraint: DecodingConstraint | None = None):
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


# ----------------------------------------------------------------------------- model glue

METHODS = ("greedy", "beam", "sample")
# Cache parts equal across the beams of one example (the projected encoder keys/values):
# beam reordering leaves them alone.
_BEAM_INVARIANT_CACHE = ("encoder_decoder_attention",)


def generate(model, params, batch: Mapping[str, Any] | None = None, *,
             method: str = "greedy", max_decode_length: int | None = None,
             beam_size: int = 4, alpha: float = 0.6, return_all_beams: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             rng: jax.Array | None = None, constraint: DecodingConstraint | None = None,
             prompt: jnp.ndarray | None = None, encoded: jnp.ndarray | None = None,
             encoder_mask: jnp.ndarray | None = None):
    """Decodes a batch with a `medmt5.Transformer`: encodes once, then cached steps.

    model: the Transformer (its config gives eos_id, pad_id, decoder_start_id);
    params: its parameter tree. Inputs, one of:
      batch["encoder_input_tokens"] [B, S] (other batch keys are ignored), optionally with
        prompt [P, H] or [B, P, H]: vectors prepended to the token embeddings (mask 1);
      encoded [B, S', H] + encoder_mask [B, S'] (1 = real): precomputed encoder outputs.
    method: "greedy" | "beam" (beam_size, alpha, return_all_beams) | "sample" (rng,
    temperature, top_k, top_p). max_decode_length defaults to the length of
    batch["decoder_target_tokens"]. constraint: a `DecodingConstraint` for the B examples
    (e.g. `medmt5.decoding.constraints.seqlabel_constraint`).
    Returns (sequences int32 [B, L], scores float32 [B]); with return_all_beams, [B, k, L]
    and [B, k], best first. Sequences hold the generated tokens (EOS included, then pad).
    Compiled once per model, method, option set and input shapes.
    """
    if method not in METHODS:
        raise ValueError(f"generate: method={method!r} is not one of {METHODS}.")
    if (encoded is None) != (encoder_mask is None):
        raise ValueError("generate: pass encoded and encoder_mask together.")
    if encoded is not None and prompt is not None:
        raise ValueError("generate: prompt is prepended while encoding; with precomputed "
                         "encoded outputs, encode with the prompt yourself (model.encode("
                         "..., input_embeddings=, input_mask=)).")
    tokens = None
    if encoded is None:
        if batch is None or "encoder_input_tokens" not in batch:
            raise ValueError("generate: needs batch['encoder_input_tokens'] [B, S] or "
                             "encoded= and encoder_mask=.")
        tokens = jnp.asarray(batch["encoder_input_tokens"], jnp.int32)
        if tokens.ndim != 2:
            raise ValueError(f"generate: encoder_input_tokens must be [B, S], got {tokens.shape}.")
    if max_decode_length is None:
        if batch is None or "decoder_target_tokens" not in batch:
            raise ValueError("generate: pass max_decode_length (or a batch with "
                             "decoder_target_tokens to take its length).")
        max_decode_length = int(np.shape(batch["decoder_target_tokens"])[1])
    if method == "sample" and rng is None and temperature != 0.0:
        raise ValueError("generate: method='sample' needs rng= (a jax.random key).")
    if method == "beam" and beam_size < 1:
        raise ValueError(f"generate: beam_size must be >= 1, got {beam_size}.")
    if method != "beam" and return_all_beams:
        raise ValueError("generate: return_all_beams only applies to method='beam'.")
    if constraint is not None:
        b = (tokens if tokens is not None else encoded).shape[0]
        state = jax.eval_shape(lambda c: c.init_state(1), constraint)
        rows = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(state)}
        if rows != {b}:
            raise ValueError(f"generate: the constraint was built for {sorted(rows)} examples "
                             f"but the batch has {b}; build it from this batch's examples "
                             "(pad with copies for padded rows).")
    if method == "sample":
        beam_size = 0
        if rng is None:
            rng = jax.random.PRNGKey(0)  # unused: temperature 0 is argmax
    else:
        temperature, top_k, top_p, rng = 1.0, 0, 1.0, None
    if method == "greedy":
        beam_size = 0
    if method != "beam":
        alpha = 0.0
    rows = (tokens if tokens is not None else encoded).shape[0] * max(beam_size, 1)
    run = jitted_generate(method, rows)
    return run(params, tokens, prompt, encoded, encoder_mask, constraint, rng,
               model=model, method=method, max_decode_length=int(max_decode_length),
               small_rows_kernel=uses_small_rows_kernel(rows, params,
                                                        model.config.activation_dtype),
               beam_size=int(beam_size), alpha=float(alpha),
               return_all_beams=bool(return_all_beams),
               temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))


_STATIC = ("model", "method", "max_decode_length", "beam_size", "alpha", "return_all_beams",
           "temperature", "top_k", "top_p", "small_rows_kernel")


# XLA CPU compiler options of the decoding jit (this jit only; training keeps the defaults).
# Without the YNNPACK library fusion the decoding step's small-row products (B or B*k rows
# against each weight matrix) and the LM head run faster on CPU; docs/performance.md has
# the protocol figures against Hugging Face.
CPU_DECODE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# Beam search on CPU over transformer.MLP_BLOCK_MIN_ROWS or more decoder rows also runs each
# Eigen product on one thread: 16 rows (beam 4 x batch 4) decoded faster so, greedy's 4 rows
# slower; docs/performance.md.
CPU_BEAM_COMPILER_OPTIONS = {**CPU_DECODE_COMPILER_OPTIONS, "xla_cpu_multi_thread_eigen": False}


def jitted_generate(method: str = "greedy", rows: int = 0):
    """The jitted decoding function for the default backend, method and number of decoder
    rows (batch x beams). CPU: compiled with CPU_DECODE_COMPILER_OPTIONS, or
    CPU_BEAM_COMPILER_OPTIONS for beam search from transformer.MLP_BLOCK_MIN_ROWS rows; the
    decoding loop reads the MLP kernels as column blocks from that many rows
    (`transformer.mlp_decode_blocks`), and beam search runs two steps per loop iteration.
    Chosen per call, so importing this module starts no backend."""
    if jax.default_backend() != "cpu":
        return _generate_jit
    if method == "beam" and rows >= transformer.MLP_BLOCK_MIN_ROWS:
        return _generate_jit_cpu_beam
    return _generate_jit_cpu


def uses_small_rows_kernel(rows: int, params, dtype=jnp.float32) -> bool:
    """Whether a decoding step over `rows` decoder rows runs its products through
    `cpu_kernels` (the hand-written CPU kernel): on the CPU backend, for
    cpu_kernels.SMALL_ROWS_MIN..SMALL_ROWS_MAX rows, float32 activations (`dtype`), every
    parameter a concrete array on one CPU device (a custom call is not partitioned, and has
    no derivative rule: under an outer transformation the parameters are tracers and XLA's
    products are used), and where the kernel builds and runs."""
    if jax.default_backend() != "cpu" or jnp.dtype(dtype) != jnp.float32:
        return False
    if not cpu_kernels.SMALL_ROWS_MIN <= rows <= cpu_kernels.SMALL_ROWS_MAX:
        return False
    for leaf in jax.tree_util.tree_leaves(params):
        if isinstance(leaf, jax.core.Tracer):
            return False
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None and (len(sharding.device_set) != 1 or any(
                d.platform != "cpu" for d in sharding.device_set)):
            return False
    return cpu_kernels.available()


def _generate_impl(params, tokens, prompt, encoded, encoder_mask, constraint, rng, *, model,
                   method, max_decode_length, beam_size, alpha, return_all_beams, temperature,
                   top_k, top_p, small_rows_kernel=False, cpu_tuned=False):
    cfg = model.config
    variables = {"params": params}
    if encoded is None:
        encoder_mask = tokens > 0  # [B, S]
        if prompt is None:
            encoded = model.apply(variables, tokens, enable_dropout=False, method=model.encode)
        else:
            embedded = model.apply(variables, tokens, method=model.embed)  # [B, S, H]
            b = tokens.shape[0]
            prompt = jnp.asarray(prompt).astype(embedded.dtype)
            if prompt.ndim == 2:
                prompt = jnp.broadcast_to(prompt[None], (b,) + prompt.shape)
            if prompt.ndim != 3 or prompt.shape[0] != b or prompt.shape[2] != embedded.shape[2]:
                raise ValueError(f"generate: prompt must be [P, H] or [B={b}, P, H="
                                 f"{embedded.shape[2]}], got {prompt.shape}.")
            embedded = jnp.concatenate([prompt, embedded], axis=1)  # [B, P+S, H]
            encoder_mask = jnp.concatenate(
                [jnp.ones(prompt.shape[:2], bool), encoder_mask], axis=1)
            encoded = model.apply(variables, tokens, enable_dropout=False,
                                  input_embeddings=embedded, input_mask=encoder_mask,
                                  method=model.encode)
    encoder_mask = jnp.asarray(encoder_mask) > 0
    b, src_len = encoder_mask.shape
    rows = beam_size if method == "beam" else 1
    # Decoder rows b * k + j (beam j of example b); the cross-attention cache keeps one copy
    # per example ([B, N, D, S]), which the k beams of that example share
    # (attention.cached_attention), so encoded / encoder_mask stay [B, ...].
    cache = fill_cross_cache(cfg, params, init_cache(cfg, b * rows, max_decode_length,
                                                     encoder_length=src_len), encoded)
    # cpu_tuned (the CPU jits): the MLP kernels read as column blocks cut once outside the
    # loop, and beam search two steps per loop iteration (no per-step copy of the
    # reordered self-attention caches); docs/performance.md.
    if cpu_tuned:
        blocks = mlp_decode_blocks(cfg, params, b * rows)
        if blocks:
            variables = {**variables, DECODE_WEIGHTS: blocks}

    def tokens_to_logits(step_tokens, cache, step):
        with cpu_kernels.small_rows_products(small_rows_kernel):
            logits, mutated = model.apply(
                {**variables, "cache": cache}, encoded, encoder_mask, step_tokens,
                enable_dropout=False, decode=True, max_decode_length=max_decode_length,
                method=model.decode, mutable=["cache"])
        return logits[:, 0, :], mutated["cache"]

    common = dict(max_decode_length=max_decode_length, eos_id=cfg.eos_id,
                  decoder_start_id=cfg.decoder_start_id, constraint=constraint)
    if method == "greedy":
        return greedy_decode(tokens_to_logits, cache, batch_size=b, pad_id=cfg.pad_id, **common)
    if method == "sample":
        return temperature_sample(tokens_to_logits, cache, rng, batch_size=b,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  pad_id=cfg.pad_id, **common)
    seqs, scores = beam_search(tokens_to_logits, cache, batch_size=b, beam_size=beam_size,
                               alpha=alpha, cache_batch_axis=1 if cfg.scan_layers else 0,
                               cache_skip_reorder=_BEAM_INVARIANT_CACHE,
                               unroll=2 if cpu_tuned else 1, **common)
    if cfg.pad_id != 0:
        seqs = jnp.where(_after_eos(seqs, cfg.eos_id), cfg.pad_id, seqs)
    if return_all_beams:
        return seqs, scores
    return seqs[:, 0], scores[:, 0]


_generate_jit = jax.jit(_generate_impl, static_argnames=_STATIC)
_generate_cpu_tuned = functools.partial(_generate_impl, cpu_tuned=True)
_generate_jit_cpu = jax.jit(_generate_cpu_tuned, static_argnames=_STATIC,
                            compiler_options=CPU_DECODE_COMPILER_OPTIONS)
_generate_jit_cpu_beam = jax.jit(_generate_cpu_tuned, static_argnames=_STATIC,
                                 compiler_options=CPU_BEAM_COMPILER_OPTIONS)


def _after_eos(seqs: jnp.ndarray, eos_id: int) -> jnp.ndarray:
    """bool, True at positions after the first EOS of each sequence [..., L]."""
    seen = jnp.cumsum(seqs == eos_id, axis=-1)
    return (seen - (seqs == eos_id)) > 0
