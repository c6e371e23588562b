"""Encoder and decoder stacks of mT5: pre-norm residual layers, optionally scanned and remat'd.

Dropout sits where HF T5 puts it: on the input embeddings, on each sublayer output before the
residual add, on the attention weights, inside the MLP after the gated activation, and after
the final norm. With `scan_layers` the layers are one `nn.scan` over a leading "layers" axis
(params and cache), each step optionally under `nn.remat` with `config.remat_policy`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medmt5.model.attention import AttentionInputs, MultiHeadAttention
from medmt5.model.config import REMAT_POLICIES, T5Config
from medmt5.model.layers import Dense, MlpBlock, RMSNorm, project
from medmt5.model.relpos import RelativePositionBias, default_positions

EMBED_AXES = ("batch", "length", "embed")


def _constrain(x):
    return nn.with_logical_constraint(x, EMBED_AXES)


class EncoderLayer(nn.Module):
    """x + Attn(Norm(x)), then x + MLP(Norm(x)); x [B, S, H]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.pre_attention_layer_norm = RMSNorm(cfg)
        self.attention = MultiHeadAttention(cfg, kind="self")
        self.pre_mlp_layer_norm = RMSNorm(cfg)
        self.mlp = MlpBlock(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, x, attn: AttentionInputs, deterministic: bool):
        h = self.pre_attention_layer_norm(x)
        h = self.attention(h, h, attn, deterministic)
        x = _constrain(x + self.dropout(h, deterministic=deterministic))
        h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
        x = _constrain(x + self.dropout(h, deterministic=deterministic))
        return (x, None) if self.config.scan_layers else x


class DecoderLayer(nn.Module):
    """Causal self-attention, encoder-decoder attention, MLP; each pre-normed and residual."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.pre_self_attention_layer_norm = RMSNorm(cfg)
        self.self_attention = MultiHeadAttention(cfg, kind="causal")
        self.pre_cross_attention_layer_norm = RMSNorm(cfg)
        self.encoder_decoder_attention = MultiHeadAttention(cfg, kind="cross")
        self.pre_mlp_layer_norm = RMSNorm(cfg)
        self.mlp = MlpBlock(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, x, encoded, self_attn: AttentionInputs, cross_attn: AttentionInputs,
                 deterministic: bool, decode: bool):
        """x [B, T, H], encoded [B, S, H] -> [B, T, H]."""
        h = self.pre_self_attention_layer_norm(x)
        h = self.self_attention(h, h, self_attn, deterministic, decode)
        x = _constrain(x + self.dropout(h, deterministic=deterministic))
        h = self.pre_cross_attention_layer_norm(x)
        h = self.encoder_decoder_attention(h, encoded, cross_attn, deterministic, decode)
        x = _constrain(x + self.dropout(h, deterministic=deterministic))
        h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
        x = _constrain(x + self.dropout(h, deterministic=deterministic))
        return (x, None) if self.config.scan_layers else x


def _layer_class(cls, cfg: T5Config, num_layers: int, static_argnums: tuple[int, ...]):
    """Wraps a layer class in nn.remat (policy) and, with scan_layers, nn.scan over layers."""
    if cfg.remat_policy != "none":
        cls = nn.remat(cls, policy=REMAT_POLICIES[cfg.remat_policy],
                       prevent_cse=not cfg.scan_layers, static_argnums=static_argnums)
    if cfg.scan_layers:
        num_args = max(static_argnums)  # every call argument after the carry is broadcast
        cls = nn.scan(cls, variable_axes={"params": 0, "cache": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * (num_args - 1), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return cls


def _pair_mask(q_valid, kv_valid, q_segments=None, kv_segments=None):
    """[B, T] & [B, S] (+ equal segment ids) -> bool [B, 1, T, S]."""
    mask = q_valid[:, None, :, None] & kv_valid[:, None, None, :]
    if q_segments is not None:
        mask = mask & (q_segments[:, None, :, None] == kv_segments[:, None, None, :])
    return mask


def _check_aux(name: str, value, shape) -> jax.Array | None:
    if value is None:
        return None
    value = jnp.asarray(value)
    if value.shape != tuple(shape):
        raise ValueError(f"{name} has shape {value.shape}, expected {tuple(shape)} (the shape of "
                         "the tokens/embeddings it describes).")
    return value.astype(jnp.int32)


class Encoder(nn.Module):
    """Embedded inputs [B, S, H] + validity [B, S] -> encoded [B, S, H] (normed)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBias(cfg, bidirectional=True)
        layer = _layer_class(EncoderLayer, cfg, cfg.num_encoder_layers, static_argnums=(3,))
        if cfg.scan_layers:
            self.layers = layer(cfg)
        else:
            self.layers = [layer(cfg) for _ in range(cfg.num_encoder_layers)]
        self.encoder_norm = RMSNorm(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, x, valid, segment_ids=None, positions=None, deterministic: bool = True):
        batch, length = valid.shape
        segment_ids = _check_aux("encoder_segment_ids", segment_ids, (batch, length))
        positions = _check_aux("encoder_positions", positions, (batch, length))
        pos = default_positions(length) if positions is None else positions
        lengths = None
        if segment_ids is None and self.config.attention_impl == "cudnn":
            lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)  # assumes right padding
        attn = AttentionInputs(bias=self.relpos_bias(pos, pos),
                               mask=_pair_mask(valid, valid, segment_ids, segment_ids),
                               q_lengths=lengths, kv_lengths=lengths)
        x = _constrain(self.dropout(x, deterministic=deterministic))
        if self.config.scan_layers:
            x, _ = self.layers(x, attn, deterministic)
        else:
            for layer in self.layers:
                x = layer(x, attn, deterministic)
        x = self.encoder_norm(x)
        return _constrain(self.dropout(x, deterministic=deterministic))


class Decoder(nn.Module):
    """Decoder stack plus LM head (`logits_dense`, or the tied embedding when configured)."""

    config: T5Config
    embedder: Any = None  # the shared token embedder (owned by the Transformer)

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBias(cfg, bidirectional=False)
        layer = _layer_class(DecoderLayer, cfg, cfg.num_decoder_layers, static_argnums=(5, 6))
        if cfg.scan_layers:
            self.layers = layer(cfg)
        else:
            self.layers = [layer(cfg) for _ in range(cfg.num_decoder_layers)]
        self.decoder_norm = RMSNorm(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        if not cfg.tie_word_embeddings:
            self.logits_dense = Dense(cfg, cfg.d_model, cfg.vocab_size, ("embed", "vocab"))

    def __call__(self, encoded, encoder_valid, tokens, target_valid=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, positions=None,
                 deterministic: bool = True, decode: bool = False,
                 max_decode_length: int | None = None):
        """encoded [B, S, H], encoder_valid [B, S], tokens [B, T] -> normed hidden [B, T, H]."""
        cfg = self.config
        batch, length = tokens.shape
        src_len = encoder_valid.shape[1]
        enc_seg = _check_aux("encoder_segment_ids", encoder_segment_ids, (batch, src_len))
        dec_seg = _check_aux("decoder_segment_ids", decoder_segment_ids, (batch, length))
        positions = _check_aux("decoder_positions", positions, (batch, length))
        if (enc_seg is None) != (dec_seg is None):
            raise ValueError("Packed inputs need both encoder_segment_ids and "
                             "decoder_segment_ids (or neither).")
        if target_valid is None:
            target_valid = jnp.ones((batch, length), bool)
        if decode:
            if max_decode_length is None:
                raise ValueError("decode=True needs max_decode_length (the cache length given "
                                 "to init_cache).")
            if dec_seg is not None:
                raise ValueError("decode=True does not support packed (segment id) inputs.")
            # Full [1, N, L, L] table; each attention takes the row of its cache_index.
            pos = default_positions(max_decode_length)
            self_bias = self.relpos_bias(pos, pos)
            causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
            self_attn = AttentionInputs(bias=self_bias, mask=causal, causal=True)
            cross_attn = AttentionInputs(mask=encoder_valid[:, None, None, :])
        else:
            pos = default_positions(length) if positions is None else positions
            causal = (jnp.arange(length)[:, None] >= jnp.arange(length)[None, :])[None, None]
            self_mask = _pair_mask(target_valid, target_valid, dec_seg, dec_seg) & causal
            cross_mask = _pair_mask(target_valid, encoder_valid, dec_seg, enc_seg)
            q_len = kv_len = enc_len = None
            if dec_seg is None and cfg.attention_impl == "cudnn":  # right padding assumed
                q_len = kv_len = jnp.sum(target_valid, axis=-1, dtype=jnp.int32)
                enc_len = jnp.sum(encoder_valid, axis=-1, dtype=jnp.int32)
            self_attn = AttentionInputs(bias=self.relpos_bias(pos, pos), mask=self_mask,
                                        q_lengths=q_len, kv_lengths=kv_len, causal=True)
            cross_attn = AttentionInputs(mask=cross_mask, q_lengths=q_len, kv_lengths=enc_len)

        x = _constrain(self.dropout(self.embedder(tokens), deterministic=deterministic))
        if cfg.scan_layers:
            x, _ = self.layers(x, encoded, self_attn, cross_attn, deterministic, decode)
        else:
            for layer in self.layers:
                x = layer(x, encoded, self_attn, cross_attn, deterministic, decode)
        x = self.decoder_norm(x)
        return _constrain(self.dropout(x, deterministic=deterministic))

    def logits_from_hidden(self, hidden):
        """hidden [B, T, H] -> float32 logits [B, T, V] (float32 accumulation)."""
        cfg = self.config
        if cfg.tie_word_embeddings:
            # T5 rescales before the tied head (the embedding is unit-normal, not 1/sqrt(H)).
            logits = self.embedder.attend(hidden * (cfg.d_model ** -0.5))
        else:
            # One 2-D matmul over the [B*T, H] rows (layers.project): the kernel gradient
            # needs no transposing copy of the [B, T, V] logits gradient.
            logits = project(hidden, self.logits_dense.kernel, cfg.activation_dtype,
                             jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

