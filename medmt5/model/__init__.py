"""The mT5 / T5 v1.1 network in Flax linen (jax/flax only; no TensorFlow, no gin).

    config       T5Config: the architecture as a frozen, self-checking dataclass
    layers       RMSNorm, 2-D dense kernels, the token embedder, gated-GELU MLP
    attention    multi-head attention (XLA or cuDNN), key/value cache
    relpos       relative position buckets and the per-stack bias
    stacks       encoder and decoder stacks (optionally scanned and remat'd)
    transformer  Transformer (T5X call signature), init_cache, fill_cross_cache,
                 scan/unscan of parameters
"""
from medmt5.model.config import T5Config
from medmt5.model.transformer import (
    Transformer,
    fill_cross_cache,
    init_cache,
    scan_params,
    unscan_params,
)

__all__ = ["T5Config", "Transformer", "fill_cross_cache", "init_cache", "scan_params",
           "unscan_params"]
