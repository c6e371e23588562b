"""`T5Config`: the mT5 / T5 v1.1 architecture as a frozen dataclass (no gin inside).

The CLI registers this class with gin; gin/models/mt5_*.gin bind its fields. Library code and
tests build it directly, or from JSON (`MODEL_DIR/model_config.json`) with `from_dict`.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from medmt5.data import paths

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# remat_policy -> what nn.remat keeps for the backward pass ("none", below: no remat at all).
# "full": save nothing, recompute the whole layer; "minimal": save matmul outputs without
# batch dims (T5X's "minimal"); "dots": save every matmul output.
REMAT_POLICIES = {
    "full": None,
    "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "dots": jax.checkpoint_policies.checkpoint_dots,
}
REMAT_POLICY_NAMES = ("none", *REMAT_POLICIES)
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """mT5 architecture. Sizes are the T5X `examples/t5/mt5/*.gin` ones (see gin/models)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    tie_word_embeddings: bool = False
    dtype: str = "float32"  # activations
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "xla"
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0

    def __post_init__(self):
        positive = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers",
                    "num_decoder_layers", "relative_attention_num_buckets",
                    "relative_attention_max_distance")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}.")
        nb = self.relative_attention_num_buckets
        if nb < 4 or nb % 2:
            raise ValueError(f"T5Config.relative_attention_num_buckets must be even and >= 4 "
                             f"(bidirectional buckets are halved, then half are exact); got {nb}.")
        if self.relative_attention_max_distance <= nb // 2:
            raise ValueError("T5Config.relative_attention_max_distance must exceed "
                             "relative_attention_num_buckets // 2 (the decoder's exact-bucket "
                             f"range); got {self.relative_attention_max_distance} with {nb} "
                             "buckets.")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}.")
        if not float(self.layer_norm_epsilon) > 0.0:
            raise ValueError("T5Config.layer_norm_epsilon must be > 0, got "
                             f"{self.layer_norm_epsilon!r}.")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"T5Config.{name}={getattr(self, name)!r} is not one of "
                                 f"{sorted(DTYPES)}.")
        if self.remat_policy not in REMAT_POLICY_NAMES:
            raise ValueError(f"T5Config.remat_policy={self.remat_policy!r} is not one of "
                             f"{REMAT_POLICY_NAMES}.")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"T5Config.attention_impl={self.attention_impl!r} is not one of "
                             f"{ATTENTION_IMPLS}.")
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if not is_int or not 0 <= value < self.vocab_size:
                raise ValueError(f"T5Config.{name} must be an int in [0, vocab_size="
                                 f"{self.vocab_size}), got {value!r}.")
        for name in ("tie_word_embeddings", "scan_layers"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"T5Config.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}.")

    # ---- derived -------------------------------------------------------------------------
    @property
    def activation_dtype(self):
        return DTYPES[self.dtype]

    @property
    def parameter_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def inner_dim(self) -> int:
        """num_heads * d_kv: the joined query/key/value width."""
        return self.num_heads * self.d_kv

    def replace(self, **changes) -> T5Config:
        return dataclasses.replace(self, **changes)

    # ---- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "T5Config dict") -> T5Config:
        """Builds a config; unknown or missing keys raise an error naming `source`."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown T5Config field(s) {unknown}; valid fields are "
                             f"{sorted(fields)}.")
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and n not in data]
        if required:
            raise ValueError(f"{source}: missing required T5Config field(s) {required}.")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "T5Config JSON") -> T5Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e}).") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data, source=source)

    def save(self, path: str) -> None:
        """Local path or URL (gs://..., through medmt5.data.paths)."""
        paths.write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> T5Config:
        return cls.from_json(paths.read_text(path), source=path)
