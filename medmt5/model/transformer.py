"""`Transformer`: mT5 / T5 v1.1 encoder-decoder in Flax linen, T5X call signature.

    model = Transformer(cfg)
    logits = model.apply({"params": params}, enc_tokens, dec_inputs, dec_targets,
                         enable_dropout=False)                     # f32 [B, T, V]

Also: `encode` (with the prompt-tuning hook `input_embeddings`), `decode`, `embed`,
`logits_from_hidden`, cached one-token decoding (`init_cache`), and `scan_params` /
`unscan_params` between the canonical per-layer tree and the `scan_layers=True` tree.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medmt5.model.attention import project_heads, to_cache_layout
from medmt5.model.config import T5Config
from medmt5.model.layers import Embed
from medmt5.model.stacks import Decoder, Encoder


class Transformer(nn.Module):
    """mT5. Params: token_embedder, encoder, decoder (see docs/INTERFACES.md)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, embedder=self.token_embedder)

    def embed(self, tokens):
        """tokens [B, S] -> embeddings [B, S, H] (activation dtype)."""
        return self.token_embedder(jnp.asarray(tokens))

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               enable_dropout: bool = True, input_embeddings=None, input_mask=None):
        """tokens [B, S] -> encoded [B, S', H].

        input_embeddings [B, S', H] replaces embed(tokens) (prompt tuning prepends its prompt
        there); input_mask [B, S'] (nonzero = real) replaces `tokens > 0`. Segment ids and
        positions, when given, must have length S'.
        """
        cfg = self.config
        if input_embeddings is None:
            tokens = jnp.asarray(encoder_input_tokens)
            x = self.embed(tokens)
        else:
            x = jnp.asarray(input_embeddings).astype(cfg.activation_dtype)
            if x.ndim != 3 or x.shape[-1] != cfg.d_model:
                raise ValueError(f"input_embeddings must be [B, S', d_model={cfg.d_model}], "
                                 f"got {x.shape}.")
        if input_mask is not None:
            valid = jnp.asarray(input_mask) > 0
        elif input_embeddings is None:
            valid = tokens > 0
        else:
            if encoder_input_tokens is None:
                raise ValueError("encode: with input_embeddings and no tokens, pass input_mask "
                                 "[B, S'] (1 = real position).")
            tokens = jnp.asarray(encoder_input_tokens)
            if tokens.shape != x.shape[:2]:
                raise ValueError(f"encode: input_embeddings {x.shape[:2]} and tokens "
                                 f"{tokens.shape} differ in length; pass input_mask [B, S'].")
            valid = tokens > 0
        if valid.shape != x.shape[:2]:
            raise ValueError(f"encode: mask {valid.shape} does not match inputs {x.shape[:2]}.")
        return self.encoder(x, valid, encoder_segment_ids, encoder_positions,
                            deterministic=not enable_dropout)

    def decode(self, encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens=None,
               encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None,
               enable_dropout: bool = True, decode: bool = False,
               max_decode_length: int | None = None, return_hidden: bool = False):
        """encoded [B, S, H], encoder_mask [B, S], decoder_input_tokens [B, T] -> f32 [B, T, V].

        Decoder padding comes from `decoder_target_tokens > 0` (T5X); with
        `return_hidden` the final normed hidden [B, T, H] is returned instead of logits.
        """
        tokens = jnp.asarray(decoder_input_tokens)
        target_valid = None
        if decoder_target_tokens is not None and not decode:
            target_valid = jnp.asarray(decoder_target_tokens) > 0
            if target_valid.shape != tokens.shape:
                raise ValueError(f"decoder_target_tokens {target_valid.shape} and "
                                 f"decoder_input_tokens {tokens.shape} differ in shape.")
        hidden = self.decoder(jnp.asarray(encoded), jnp.asarray(encoder_mask) > 0, tokens,
                              target_valid, encoder_segment_ids, decoder_segment_ids,
                              decoder_positions, deterministic=not enable_dropout,
                              decode=decode, max_decode_length=max_decode_length)
        if return_hidden:
            return hidden
        return self.decoder.logits_from_hidden(hidden)

    def logits_from_hidden(self, hidden):
        """Final normed hidden [B, T, H] -> float32 logits [B, T, V] (the LM head)."""
        return self.decoder.logits_from_hidden(hidden)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, enable_dropout: bool = True, decode: bool = False,
                 max_decode_length: int | None = None):
        """Teacher-forced (or, with decode=True, one cached step) float32 logits [B, T, V]."""
        enc_tokens = jnp.asarray(encoder_input_tokens)
        encoded = self.encode(enc_tokens, encoder_segment_ids, encoder_positions,
                              enable_dropout=enable_dropout)
        return self.decode(encoded, enc_tokens > 0, decoder_input_tokens, decoder_target_tokens,
                           encoder_segment_ids, decoder_segment_ids, decoder_positions,
                           enable_dropout=enable_dropout, decode=decode,
                           max_decode_length=max_decode_length)


# ---- cache ---------------------------------------------------------------------------------

CROSS_ATTENTION = "encoder_decoder_attention"


def init_cache(config: T5Config, batch_size: int, max_decode_length: int,
               encoder_length: int | None = None):
    """Zeroed "cache" collection for `decode=True` steps (no parameters are materialised).

    Per decoder layer (stacked on a leading "layers" axis when scan_layers):
      self_attention/{cached_key,cached_value} [B, N, D, L], cache_index int32 scalar;
      with encoder_length S: encoder_decoder_attention/{cached_key,cached_value} [B, N, D, S]
      and cache_index (0 until the first step projects the encoder keys/values, then 1).
    Without encoder_length the cross-attention keys/values are recomputed every step.
    Keys and values are stored head-major with the position last ([B, N, D, L], not the
    activations' [B, L, N, D]): the layout the decoding step's dots read directly; in the
    other one XLA CPU copied every layer's keys and values transposed on every step.
    """
    for name, value in (("batch_size", batch_size), ("max_decode_length", max_decode_length)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"init_cache: {name} must be a positive int, got {value!r}.")
    if encoder_length is not None and (not isinstance(encoder_length, int) or encoder_length <= 0):
        raise ValueError(f"init_cache: encoder_length must be a positive int or None, got "
                         f"{encoder_length!r}.")
    model = Transformer(config)
    enc = jnp.ones((batch_size, encoder_length or 1), jnp.int32)
    dec = jnp.ones((batch_size, max_decode_length), jnp.int32)

    def init():
        return model.init(jax.random.PRNGKey(0), enc, dec, enable_dropout=False, decode=True,
                          max_decode_length=max_decode_length)

    shapes = jax.eval_shape(init)["cache"]
    cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    if encoder_length is None:
        cache = _drop_key(cache, CROSS_ATTENTION)
    return cache


def fill_cross_cache(config: T5Config, params: Mapping[str, Any], cache: Mapping[str, Any],
                     encoded: jax.Array) -> dict:
    """`cache` (from init_cache with encoder_length) with every decoder layer's
    encoder-decoder keys/values projected from `encoded` [B, S, H] now, once, and their
    `cache_index` removed, which tells the attention that the cache is final: the decoding
    steps read it without the first-step `lax.cond`, whose branches make XLA copy the
    keys and values of every layer on every step. Same projections
    (`attention.project_heads`), so the keys/values and the decoded outputs are unchanged."""
    def kv(attn_params):
        k = project_heads(config, encoded, attn_params["key"]["kernel"])
        v = project_heads(config, encoded, attn_params["value"]["kernel"])
        return {"cached_key": to_cache_layout(k), "cached_value": to_cache_layout(v)}

    dec_params, dec_cache = params["decoder"], dict(cache["decoder"])
    for name, layer_cache in cache["decoder"].items():
        if not isinstance(layer_cache, Mapping) or CROSS_ATTENTION not in layer_cache:
            continue
        attn = dec_params[name][CROSS_ATTENTION]
        filled = jax.vmap(kv)(attn) if name == "layers" else kv(attn)  # "layers": scanned
        dec_cache[name] = {**layer_cache, CROSS_ATTENTION: filled}
    return {**cache, "decoder": dec_cache}


# Decoding on CPU (`decoding.sampling.generate`): XLA hands each decoding-step product,
# a few rows against a whole kernel, to an Eigen matmul, which streams a float32 [512, 1024]
# kernel at about 8 GB/s and a [512, 256] slice of it at about 12 GB/s on the 2-core
# AMD EPYC VM we measure on (1 MiB of L2 per core; docs/performance.md). The gated MLP's
# wi_0 / wi_1 / wo are the widest kernels of a layer, so the decoding loop reads them as
# column blocks of MLP_BLOCK_COLUMNS, cut once per generate call. Measured a gain from 16
# decoder rows up (beam 4 x batch 4, greedy x batch 16) and a loss at 4 rows (greedy x
# batch 4), hence MLP_BLOCK_MIN_ROWS. The blocks are a copy: MLP_BLOCK_MAX_BYTES bounds
# the extra memory (mT5-small 48 MiB, base 216 MiB; large and up decode unblocked).
MLP_BLOCK_COLUMNS = 256
MLP_BLOCK_MIN_ROWS = 16
MLP_BLOCK_MAX_BYTES = 256 * 2**20


def mlp_decode_blocks(config: T5Config, params: Mapping[str, Any], rows: int) -> dict:
    """The `layers.DECODE_WEIGHTS` collection for a CPU decoding loop over `rows` decoder
    rows: each decoder layer's [wi_0 | wi_1] and wo kernels cut into column blocks of
    MLP_BLOCK_COLUMNS (MlpBlock then computes the same products block by block). {} (the
    plain kernels) below MLP_BLOCK_MIN_ROWS rows, above MLP_BLOCK_MAX_BYTES of blocks, or
    for layer-scanned parameters."""
    dec = params["decoder"]
    layers = [k for k in dec if _LAYER_RE.match(k)]
    if rows < MLP_BLOCK_MIN_ROWS or not layers or "layers" in dec:
        return {}
    kernels = [dec[k]["mlp"][w]["kernel"] for k in layers for w in ("wi_0", "wi_1", "wo")]
    if sum(w.size * jnp.dtype(w.dtype).itemsize for w in kernels) > MLP_BLOCK_MAX_BYTES:
        return {}

    def blocks(w):
        return [w[:, i:i + MLP_BLOCK_COLUMNS] for i in range(0, w.shape[1], MLP_BLOCK_COLUMNS)]

    out = {}
    for k in layers:
        mlp = dec[k]["mlp"]
        wi = jnp.concatenate([mlp["wi_0"]["kernel"], mlp["wi_1"]["kernel"]], axis=1)
        out[k] = {"mlp": {"wi_blocks": blocks(wi), "wo_blocks": blocks(mlp["wo"]["kernel"])}}
    return {"decoder": out}


def _drop_key(tree, key):
    if isinstance(tree, Mapping):
        return {k: _drop_key(v, key) for k, v in tree.items() if k != key}
    return tree


# ---- scanned <-> unscanned parameter trees -----------------------------------------------

_LAYER_RE = re.compile(r"^layers_(\d+)$")


def scan_params(params: Mapping[str, Any]) -> dict:
    """Canonical tree (encoder/layers_{i}/...) -> scanned tree (encoder/layers/... [L, ...])."""
    out = dict(params)
    for stack in ("encoder", "decoder"):
        if stack not in params:
            continue
        sub = dict(params[stack])
        idx = sorted(int(m.group(1)) for k in sub if (m := _LAYER_RE.match(k)))
        if "layers" in sub:
            raise ValueError(f"scan_params: params[{stack!r}] already has 'layers' (scanned).")
        if idx != list(range(len(idx))) or not idx:
            raise ValueError(f"scan_params: params[{stack!r}] layers {idx} are not 0..L-1.")
        layers = [sub.pop(f"layers_{i}") for i in idx]
        sub["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
        out[stack] = sub
    return out


def unscan_params(params: Mapping[str, Any]) -> dict:
    """Scanned tree (encoder/layers/... [L, ...]) -> canonical encoder/layers_{i}/... tree."""
    out = dict(params)
    for stack in ("encoder", "decoder"):
        if stack not in params:
            continue
        sub = dict(params[stack])
        if "layers" not in sub:
            raise ValueError(f"unscan_params: params[{stack!r}] has no scanned 'layers'.")
        stacked = sub.pop("layers")
        num = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        for i in range(num):
            sub[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
        out[stack] = sub
    return out
