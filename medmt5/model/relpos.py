"""T5 relative position buckets and the per-stack relative attention bias.

T5 gives every attention head a learned scalar per bucket of (key position - query position).
Only layer 0 owns the table in HF/T5X; here each stack has one `relpos_bias` module whose bias
is computed once and shared by all its layers (the same numbers, computed once).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from medmt5.model.config import T5Config


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int,
                             max_distance: int):
    """Maps key_pos - query_pos (int array, any shape) to bucket ids in [0, num_buckets).

    Same arithmetic as HF `T5Attention._relative_position_bucket` (float32 log) and T5X:
    half of the buckets are exact small distances, the rest are log-spaced up to
    `max_distance`; beyond it everything falls into the last bucket. Bidirectional (encoder)
    uses separate halves for keys after / before the query; causal (decoder) clamps future
    keys to distance 0 (they are masked anyway).
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # Only used where distance >= max_exact >= 1, so the log never sees 0.
    scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    if_large = max_exact + scaled.astype(jnp.int32)
    if_large = jnp.minimum(if_large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, if_large)


class RelativePositionBias(nn.Module):
    """Learned bias table `rel_embedding` [num_heads, num_buckets] -> bias [b, N, T, S]."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions, key_positions):
        """query_positions [b, T], key_positions [b, S] (int; b may be 1) -> f32 [b, N, T, S]."""
        cfg = self.config
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                ("heads", "relpos_buckets")),
            (cfg.num_heads, cfg.relative_attention_num_buckets), cfg.parameter_dtype)
        relative = key_positions[:, None, :] - query_positions[:, :, None]  # [b, T, S]
        buckets = relative_position_bucket(relative, self.bidirectional,
                                           cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance)
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=1)  # [N, b, T, S]
        return jnp.transpose(bias, (1, 0, 2, 3))


def default_positions(length: int):
    """arange positions shaped [1, length] (shared by the whole batch)."""
    return jnp.arange(length, dtype=jnp.int32)[None, :]
