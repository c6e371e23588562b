"""The canonical (unscanned) parameter tree: names, expected shapes, validation.

Every checkpoint reader (ours, Hugging Face, T5X) produces this tree; every writer consumes
it. Names are "/"-joined paths as in docs/INTERFACES.md, e.g.
"encoder/layers_0/attention/query/kernel" [H, N*D].
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

Flat = dict[str, np.ndarray]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message names the file and parameter."""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf} (flax's traverse_util.flatten_dict, sep="/"). Empty
    dicts are dropped."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} -> nested dict (plain dicts, sorted keys)."""
    tree: dict[str, Any] = {}
    for name in sorted(flat):
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = flat[name]
    return tree


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every parameter of the unscanned model for `cfg` (a T5Config)."""
    h, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    nd = cfg.num_heads * cfg.d_kv
    rel = (cfg.num_heads, cfg.relative_attention_num_buckets)
    shapes: dict[str, tuple[int, ...]] = {"token_embedder/embedding": (v, h)}

    def attention(prefix: str) -> None:
        for proj in ("query", "key", "value"):
            shapes[f"{prefix}/{proj}/kernel"] = (h, nd)
        shapes[f"{prefix}/out/kernel"] = (nd, h)

    def mlp(prefix: str) -> None:
        shapes[f"{prefix}/wi_0/kernel"] = (h, f)
        shapes[f"{prefix}/wi_1/kernel"] = (h, f)
        shapes[f"{prefix}/wo/kernel"] = (f, h)

    # stack -> (layers, its attention blocks as (pre-norm, attention) names)
    stacks = {"encoder": (cfg.num_encoder_layers, (("pre_attention_layer_norm", "attention"),)),
              "decoder": (cfg.num_decoder_layers,
                          (("pre_self_attention_layer_norm", "self_attention"),
                           ("pre_cross_attention_layer_norm", "encoder_decoder_attention")))}
    for stack, (num_layers, blocks) in stacks.items():
        shapes[f"{stack}/relpos_bias/rel_embedding"] = rel
        for i in range(num_layers):
            p = f"{stack}/layers_{i}"
            for norm, attn in blocks:
                shapes[f"{p}/{norm}/scale"] = (h,)
                attention(f"{p}/{attn}")
            shapes[f"{p}/pre_mlp_layer_norm/scale"] = (h,)
            mlp(f"{p}/mlp")
        shapes[f"{stack}/{stack}_norm/scale"] = (h,)
    if not cfg.tie_word_embeddings:
        shapes["decoder/logits_dense/kernel"] = (h, v)
    return shapes


def validate(cfg, flat: Mapping[str, Any], source: str, extra_ok: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError naming `source` and the parameter on any missing, unexpected or
    mis-shaped entry. Names in `extra_ok` (top-level prefixes such as "prompt") may be extra."""
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(flat))
    extra = sorted(n for n in set(flat) - set(want) if n.split("/")[0] not in extra_ok)
    if missing:
        raise CheckpointError(
            f"{source}: missing parameter {missing[0]!r} (expected shape {want[missing[0]]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; the checkpoint does not match its config (layers, tie_word_embeddings?)."
        )
    if extra:
        raise CheckpointError(
            f"{source}: unexpected parameter {extra[0]!r}"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            + "; the checkpoint has weights its config does not describe."
        )
    for name, shape in want.items():
        got = tuple(np.shape(flat[name]))
        if got != shape:
            raise CheckpointError(
                f"{source}: parameter {name!r} has shape {got}, expected {shape} from the config."
            )


def _count_layers(flat: Mapping[str, Any], stack: str) -> int:
    ids = set()
    for name in flat:
        parts = name.split("/")
        if len(parts) > 2 and parts[0] == stack and parts[1].startswith("layers_"):
            ids.add(int(parts[1][len("layers_"):]))
    if ids != set(range(len(ids))):
        raise CheckpointError(f"{stack} layers are not numbered 0..n-1: found {sorted(ids)}")
    return len(ids)


def infer_config_fields(flat: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Architecture fields that shapes determine (T5X checkpoints carry no config).

    relative_attention_max_distance, dropout and epsilon are not recoverable from shapes."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in flat:
            raise CheckpointError(f"{source}: missing parameter {name!r}; cannot infer the model "
                                  "config.")
        return tuple(np.shape(flat[name]))

    vocab, d_model = shape("token_embedder/embedding")
    heads, buckets = shape("encoder/relpos_bias/rel_embedding")
    joined_kv = shape("encoder/layers_0/attention/query/kernel")[1]
    d_ff = shape("encoder/layers_0/mlp/wi_0/kernel")[1]
    if joined_kv % heads:
        raise CheckpointError(
            f"{source}: query kernel width {joined_kv} is not a multiple of the {heads} heads of "
            "encoder/relpos_bias/rel_embedding."
        )
    return dict(
        vocab_size=vocab, d_model=d_model, d_kv=joined_kv // heads, d_ff=d_ff, num_heads=heads,
        num_encoder_layers=_count_layers(flat, "encoder"),
        num_decoder_layers=_count_layers(flat, "decoder"),
        relative_attention_num_buckets=buckets,
        tie_word_embeddings="decoder/logits_dense/kernel" not in flat,
    )


def to_numpy(params: Mapping[str, Any], dtype: Any | None = None) -> Flat:
    """Flatten a (possibly jax, possibly flax-boxed) tree to host numpy arrays, optionally cast."""
    out = {}
    for name, leaf in flatten(params).items():
        if hasattr(leaf, "unbox"):  # flax nn.LogicallyPartitioned
            leaf = leaf.unbox()
        arr = np.asarray(leaf)
        out[name] = arr.astype(dtype) if dtype is not None else arr
    return out
