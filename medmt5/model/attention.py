"""T5 multi-head attention: no logit scaling, additive relative bias, optional key/value cache.

Shapes: B batch, T query length, S key length, N heads, D head dim (d_kv), H d_model.
The softmax is computed in float32 from float32-accumulated logits (T5X
`float32_attention_logits`). `attention_impl="cudnn"` calls cuDNN flash attention through
`jax.nn.dot_product_attention` on GPU with bf16/fp16 activations; everywhere else (CPU, TPU,
float32, attention dropout active, cached decoding) the exact XLA path below runs. Shapes
that cuDNN's flash attention refuses (`cudnn_refusal`, the rule of jax's
`check_is_flash_attention`: e.g. an odd sequence length with a bias, as 1024/229) also take
the XLA path, with one warning per shape.
"""
from __future__ import annotations

import logging

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from medmt5.model.config import T5Config
from medmt5.model.layers import Dense, project

BIG_NEG = -1e10  # T5X's mask value (float32 logits)
log = logging.getLogger(__name__)
_REFUSALS_LOGGED: set = set()


@flax.struct.dataclass
class AttentionInputs:
    """What one attention call needs besides q/k/v inputs (shared by all layers of a stack).

    bias: float32 [b, N, T, S] relative position bias (b is 1 unless positions were given;
      None for cross-attention). In cached decoding it is the full [b, N, L, L] table and the
      attention takes row `cache_index`.
    mask: bool [B|1, 1, T, S], True = may attend (padding, causality, segments combined).
    q_lengths, kv_lengths: int32 [B] valid lengths for cuDNN's padding mask; only set when
      inputs are right-padded and unpacked (no segment ids), else None.
    causal: whether `mask` includes a causal mask (lets cuDNN skip the masked half).
    """

    bias: jax.Array | None = None
    mask: jax.Array | None = None
    q_lengths: jax.Array | None = None
    kv_lengths: jax.Array | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)


def _use_cudnn(cfg: T5Config, dtype, dropout_active: bool) -> bool:
    return (cfg.attention_impl == "cudnn" and jax.default_backend() == "gpu"
            and dtype in (jnp.bfloat16, jnp.float16) and not dropout_active)


def cudnn_refusal(q_length: int, kv_length: int, head_dim: int, has_bias: bool,
                  hopper_or_later: bool) -> str | None:
    """Why cuDNN flash attention (bf16/fp16) would refuse these shapes, or None if it takes
    them: jax's `check_is_flash_attention` (jax/_src/cudnn/fused_attention_stablehlo.py). The
    head dim must be a multiple of 8 and <= 256 (Hopper or later) / 128; with a bias, the
    training kernels need even query and key lengths (the forward is traced before it is
    known whether it will be differentiated, so the even rule applies always)."""
    h_max = 256 if hopper_or_later else 128
    if head_dim > h_max or head_dim % 8:
        return f"head dim {head_dim} is not a multiple of 8 <= {h_max}"
    if has_bias and (q_length % 2 or kv_length % 2):
        return (f"sequence lengths Q {q_length}, KV {kv_length} with a bias "
                "(cuDNN's training kernels need both even)")
    return None


def _hopper_or_later() -> bool:
    cap = getattr(jax.devices()[0], "compute_capability", None)
    try:
        return tuple(int(x) for x in str(cap).split(".")[:2]) >= (9, 0)
    except ValueError:
        return False  # unknown: the stricter (pre-Hopper) head-dim limit


def _cudnn_takes(q, k, has_bias: bool) -> bool:
    """cudnn_refusal on q [B,T,N,D], k [B,S,N,D]; logs each refused shape once."""
    reason = cudnn_refusal(q.shape[1], k.shape[1], q.shape[3], has_bias, _hopper_or_later())
    if reason is not None and reason not in _REFUSALS_LOGGED:
        _REFUSALS_LOGGED.add(reason)
        log.warning("attention_impl='cudnn': cuDNN flash attention does not take %s; that "
                    "attention runs on the XLA path", reason)
    return reason is None


def xla_attention(q, k, v, bias, mask, dropout_fn=None):
    """q [B,T,N,D], k/v [B,S,N,D], bias f32 [b,N,T,S] | None, mask bool [B|1,1|N,T,S] | None."""
    logits = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        logits = add_bias(logits, bias.astype(jnp.float32))
    if mask is not None:
        logits = jnp.where(mask, logits, BIG_NEG)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, N, T, S] f32
    if dropout_fn is not None:
        weights = dropout_fn(weights)
    return jnp.einsum("bnts,bsnd->btnd", weights.astype(v.dtype), v,
                      preferred_element_type=jnp.float32).astype(v.dtype)


def cached_attention(q, k_t, v_t, bias, mask):
    """Decoding-step attention on the cache layout: q [B,T,N,D], k_t/v_t [B,N,D,S] (keys and
    values stored head-major with the key position last, the operand layout XLA's dots take
    without a transposing copy), bias f32 [b,N,T,S] | None, mask bool [B|1,1|N,T,S] | None.
    Same products and softmax as `xla_attention`.

    A cache of fewer rows than q (B = G * Bc: beam search's G beams of each of Bc examples,
    rows b * G + j) is the examples' shared cross-attention cache: each example's G beam
    queries attend to its one copy of the encoder keys/values as G query positions (one
    [G, D] x [D, S] product per head instead of G matrix-vector ones over G copies); the mask
    is then the examples' [Bc|1, 1, 1, S]."""
    b, t = q.shape[:2]
    rows = k_t.shape[0]
    if b != rows:
        mask_rows = None if mask is None else mask.shape[0]
        if b % rows or bias is not None or mask_rows not in (None, 1, rows):
            raise ValueError(f"cached attention: {b} query rows over a cache of {rows} rows; a "
                             "shared (cross-attention) cache needs a multiple of its rows, no "
                             f"bias and a mask of {rows} rows (got {mask_rows}).")
        q = q.reshape((rows, (b // rows) * t) + q.shape[2:])
    logits = jnp.einsum("btnd,bnds->bnts", q, k_t, preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, BIG_NEG)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, N, T, S] f32
    out = jnp.einsum("bnts,bnds->btnd", weights.astype(v_t.dtype), v_t,
                     preferred_element_type=jnp.float32).astype(v_t.dtype)
    return out.reshape((b, t) + out.shape[2:])


def to_cache_layout(x):
    """[B, S, N, D] keys or values -> the cache layout [B, N, D, S]."""
    return jnp.transpose(x, (0, 2, 3, 1))


def project_heads(cfg: T5Config, x, kernel):
    """x [B, L, H] times a key/value kernel [H, N*D] -> [B, L, N, D] (activation dtype) with
    its logical axes: the projection of MultiHeadAttention and of fill_cross_cache."""
    y = project(x, kernel, cfg.activation_dtype)
    y = y.reshape(y.shape[:2] + (cfg.num_heads, cfg.d_kv))
    return nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))


def add_bias(logits, bias):
    """logits [B, N, T, S] + bias [b, N, T, S] (b = 1: one table for the batch).

    On CPU a batch-shared bias takes its gradient, the sum of dlogits over the batch, as a
    dot with a vector of ones: XLA CPU's library fusion reduces a short leading axis into many
    outputs several times slower than the dot (mT5-small, batch 8: ~0.17 s of a 3.3 s step for
    the encoder's relative-position bias). Same value, same sums; elsewhere a plain add."""
    if bias.shape[0] == logits.shape[0] or jax.default_backend() != "cpu":
        return logits + bias
    return _add_shared_bias(logits, bias)


@jax.custom_vjp
def _add_shared_bias(logits, bias):
    return logits + bias


def _add_shared_bias_fwd(logits, bias):
    return logits + bias, None


def _add_shared_bias_bwd(_, g):
    ones = jnp.ones((g.shape[0],), g.dtype)
    return g, jnp.tensordot(ones, g, axes=(0, 0))[None]


_add_shared_bias.defvjp(_add_shared_bias_fwd, _add_shared_bias_bwd)


def cudnn_attention(q, k, v, inputs: AttentionInputs, implementation: str = "cudnn"):
    """cuDNN flash attention with T5's additive bias and scale 1 (GPU, bf16/fp16 only).

    `implementation="xla"` runs the same call through JAX's reference path (tests use it to
    check the arguments on CPU).
    """
    bias = None if inputs.bias is None else inputs.bias.astype(q.dtype)
    if inputs.kv_lengths is not None:  # right-padded: padding via lengths keeps bias batch-1
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, scale=1.0, is_causal=inputs.causal,
            query_seq_lengths=inputs.q_lengths, key_value_seq_lengths=inputs.kv_lengths,
            implementation=implementation)
    mask = None
    if inputs.mask is not None:
        b, t, s = q.shape[0], q.shape[1], k.shape[1]
        mask = jnp.broadcast_to(inputs.mask, (inputs.mask.shape[0], 1, t, s))
        mask = jnp.broadcast_to(mask, (b, 1, t, s))
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=1.0,
                                        implementation=implementation)


class MultiHeadAttention(nn.Module):
    """query/key/value/out 2-D kernels [H, N*D] / [N*D, H] (T5X layout).

    kind: "self" (encoder), "causal" (decoder self-attention; cached in decode mode) or
    "cross" (encoder-decoder; keys/values cached on the first decode step when the cache
    holds them, see `medmt5.model.transformer.init_cache`).
    """

    config: T5Config
    kind: str = "self"

    def setup(self):
        cfg = self.config
        # T5X folds 1/sqrt(d_kv) into the query initialiser instead of scaling logits.
        query_init = nn.initializers.variance_scaling(1.0 / cfg.d_kv, "fan_in", "normal")
        kv_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        self.query = Dense(cfg, cfg.d_model, cfg.inner_dim, ("embed", "joined_kv"), query_init)
        self.key = Dense(cfg, cfg.d_model, cfg.inner_dim, ("embed", "joined_kv"), kv_init)
        self.value = Dense(cfg, cfg.d_model, cfg.inner_dim, ("embed", "joined_kv"), kv_init)
        self.out = Dense(cfg, cfg.inner_dim, cfg.d_model, ("joined_kv", "embed"), kv_init)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def _heads(self, x):
        """[B, L, N*D] -> [B, L, N, D] with logical axes."""
        cfg = self.config
        x = x.reshape(x.shape[:2] + (cfg.num_heads, cfg.d_kv))
        return nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))

    def _project_kv(self, inputs_kv, key_kernel, value_kernel):
        return (project_heads(self.config, inputs_kv, key_kernel),
                project_heads(self.config, inputs_kv, value_kernel))

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, inputs: AttentionInputs, deterministic: bool = True,
                 decode: bool = False):
        """inputs_q [B, T, H], inputs_kv [B, S, H] -> [B, T, H] (activation dtype)."""
        cfg = self.config
        q = self._heads(self.query(inputs_q))  # [B, T, N, D]
        bias, mask = inputs.bias, inputs.mask
        cached = False   # k / v in the cache layout [B, N, D, S]
        if decode and self.kind == "causal":
            k, v = self._heads(self.key(inputs_kv)), self._heads(self.value(inputs_kv))
            k, v, bias, mask, cached = self._causal_cache(k, v, bias, mask)
        elif decode and self.kind == "cross" and (self.has_variable("cache", "cached_key")
                                                  or self.is_initializing()):
            k, v, cached = self._cross_cache(inputs_kv)
        else:
            k, v = self._heads(self.key(inputs_kv)), self._heads(self.value(inputs_kv))

        dropout_active = (not deterministic) and cfg.dropout_rate > 0.0
        if cached:
            out = cached_attention(q, k, v, bias, mask)
        elif (not decode and _use_cudnn(cfg, q.dtype, dropout_active)
                and _cudnn_takes(q, k, inputs.bias is not None)):
            out = cudnn_attention(q, k, v, inputs)
        else:
            dropout_fn = None
            if dropout_active:
                dropout_fn = lambda w: self.dropout(w, deterministic=False)  # noqa: E731
            out = xla_attention(q, k, v, bias, mask, dropout_fn)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        out = out.reshape(out.shape[:2] + (cfg.inner_dim,))  # [B, T, N*D]
        return self.out(out)

    def _causal_cache(self, k, v, bias, mask):
        """One decoding step: writes k/v [B,1,N,D] at `cache_index` of the cache [B,N,D,L] and
        attends to keys <= it. Returns (k, v, bias, mask, in_cache_layout)."""
        initialized = self.has_variable("cache", "cached_key")
        b, length, n, d = k.shape
        cached_key = self.variable("cache", "cached_key", jnp.zeros, (b, n, d, length), k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, (b, n, d, length),
                                     v.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:  # init_cache pass: shapes only, run the full causal attention
            return k, v, bias, mask, False
        batch, max_len = cached_key.value.shape[0], cached_key.value.shape[3]
        if length != 1:
            raise ValueError(f"decode=True expects one decoder token per call ([B, 1]), got "
                             f"length {length}; run the full forward pass (decode=False) "
                             "for teacher forcing.")
        if b != batch:
            raise ValueError(f"decode=True: batch {b} does not match the cache batch "
                             f"{batch} (init_cache(config, batch_size={batch}, ...)).")
        idx = cache_index.value
        keys = jax.lax.dynamic_update_slice(cached_key.value, to_cache_layout(k), (0, 0, 0, idx))
        values = jax.lax.dynamic_update_slice(cached_value.value, to_cache_layout(v),
                                              (0, 0, 0, idx))
        cached_key.value, cached_value.value = keys, values
        cache_index.value = idx + 1
        mask = (jnp.arange(max_len) <= idx)[None, None, None, :]  # [1, 1, 1, L]
        if bias is not None:  # full [b, N, L, L] table -> row of the current position
            if bias.shape[-1] != max_len:
                raise ValueError(f"decode=True: max_decode_length={bias.shape[-1]} differs from "
                                 f"the cache length {max_len}; pass the value given to "
                                 "init_cache.")
            bias = jax.lax.dynamic_slice_in_dim(bias, idx, 1, axis=2)  # [b, N, 1, L]
        return keys, values, bias, mask, True

    def _cross_cache(self, inputs_kv):
        """Encoder keys/values in the cache layout [B,N,D,S]: projected on the first step, then
        read from the cache. Returns (k, v, in_cache_layout)."""
        cfg = self.config
        shape = (inputs_kv.shape[0], cfg.num_heads, cfg.d_kv, inputs_kv.shape[1])
        initialized = self.has_variable("cache", "cached_key")
        if initialized and not self.has_variable("cache", "cache_index"):
            # Filled before the decoding loop (transformer.fill_cross_cache): read it, with
            # no per-step lax.cond (whose branches copy the whole cache every step).
            k = self.get_variable("cache", "cached_key")
            if k.shape != shape:
                raise ValueError(f"decode=True: encoder output {inputs_kv.shape[:2]} does not "
                                 f"match the filled cross-attention cache "
                                 f"{(k.shape[0], k.shape[3])}.")
            return k, self.get_variable("cache", "cached_value"), True
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, cfg.activation_dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape,
                                     cfg.activation_dtype)
        filled = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        key_kernel, value_kernel = self.key.kernel, self.value.kernel
        if not initialized:
            k, v = self._project_kv(inputs_kv, key_kernel, value_kernel)
            return k, v, False
        if cached_key.value.shape != shape:
            old = cached_key.value.shape
            raise ValueError(f"decode=True: encoder output {inputs_kv.shape[:2]} does not match "
                             f"the cross-attention cache {(old[0], old[3])}; pass "
                             "encoder_length=S to init_cache (or None to skip this cache).")
        old_k, old_v = cached_key.value, cached_value.value

        def project_now():
            k, v = self._project_kv(inputs_kv, key_kernel, value_kernel)
            return to_cache_layout(k), to_cache_layout(v)

        k, v = jax.lax.cond(filled.value > 0, lambda: (old_k, old_v), project_now)
        cached_key.value, cached_value.value = k, v
        filled.value = jnp.array(1, jnp.int32)
        return k, v, True
