"""The Hugging Face MT5/T5 layout: weight names (and which are transposed) and config.json
fields <-> T5Config. Pure data mapping, no file access; medmt5.checkpointing.hf_io reads and
writes the files and re-exports these names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medmt5.checkpointing.param_tree import CheckpointError
from medmt5.model.config import T5Config

# ----------------------------------------------------------------------------- names


def name_map(cfg) -> dict[str, tuple[str, bool]]:
    """{hf_name: (our_name, transpose)} for every weight of `cfg` (tied: no lm_head)."""
    m: dict[str, tuple[str, bool]] = {"shared.weight": ("token_embedder/embedding", False)}
    attn = {"q": "query", "k": "key", "v": "value", "o": "out"}

    def attention(hf: str, ours: str) -> None:
        for a, b in attn.items():
            m[f"{hf}.{a}.weight"] = (f"{ours}/{b}/kernel", True)

    def mlp(hf: str, ours: str) -> None:
        for w in ("wi_0", "wi_1", "wo"):
            m[f"{hf}.DenseReluDense.{w}.weight"] = (f"{ours}/mlp/{w}/kernel", True)

    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        m[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            f"{stack}/relpos_bias/rel_embedding", True)
        for i in range(n):
            hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
            if stack == "encoder":
                m[f"{hf}.0.layer_norm.weight"] = (f"{ours}/pre_attention_layer_norm/scale", False)
                attention(f"{hf}.0.SelfAttention", f"{ours}/attention")
                m[f"{hf}.1.layer_norm.weight"] = (f"{ours}/pre_mlp_layer_norm/scale", False)
                mlp(f"{hf}.1", ours)
            else:
                m[f"{hf}.0.layer_norm.weight"] = (
                    f"{ours}/pre_self_attention_layer_norm/scale", False)
                attention(f"{hf}.0.SelfAttention", f"{ours}/self_attention")
                m[f"{hf}.1.layer_norm.weight"] = (
                    f"{ours}/pre_cross_attention_layer_norm/scale", False)
                attention(f"{hf}.1.EncDecAttention", f"{ours}/encoder_decoder_attention")
                m[f"{hf}.2.layer_norm.weight"] = (f"{ours}/pre_mlp_layer_norm/scale", False)
                mlp(f"{hf}.2", ours)
    m["encoder.final_layer_norm.weight"] = ("encoder/encoder_norm/scale", False)
    m["decoder.final_layer_norm.weight"] = ("decoder/decoder_norm/scale", False)
    if not cfg.tie_word_embeddings:
        m["lm_head.weight"] = ("decoder/logits_dense/kernel", True)
    return m


# ----------------------------------------------------------------------------- config


def _hf_field(hf: Mapping[str, Any], key: str, path: str, default: Any = None) -> Any:
    if key in hf:
        return hf[key]
    if default is None:
        raise CheckpointError(f"{path}: required field {key!r} is missing.")
    return default


def config_from_hf(hf: Mapping[str, Any], path: str, tie_word_embeddings: bool):
    """HF config dict -> T5Config. Rejects anything but mT5 / T5 v1.1 (gated-gelu)."""
    model_type = hf.get("model_type")
    if model_type not in ("mt5", "t5"):
        raise CheckpointError(
            f"{path}: field 'model_type' is {model_type!r}; medmt5 reads only 'mt5' and 't5' "
            "(gated-gelu, i.e. mT5 / T5 v1.1) models."
        )
    ffp = hf.get("feed_forward_proj", "gated-gelu" if model_type == "mt5" else "relu")
    if ffp != "gated-gelu":
        raise CheckpointError(
            f"{path}: field 'feed_forward_proj' is {ffp!r}; medmt5 implements the gated-gelu "
            "feed-forward of mT5 / T5 v1.1 only (T5 v1.0 'relu' models are not supported)."
        )
    eos = hf.get("eos_token_id", 1)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    num_layers = _hf_field(hf, "num_layers", path)
    try:
        return T5Config(
            vocab_size=int(_hf_field(hf, "vocab_size", path)),
            d_model=int(_hf_field(hf, "d_model", path)),
            d_kv=int(_hf_field(hf, "d_kv", path)),
            d_ff=int(_hf_field(hf, "d_ff", path)),
            num_heads=int(_hf_field(hf, "num_heads", path)),
            num_encoder_layers=int(num_layers),
            num_decoder_layers=int(hf.get("num_decoder_layers") or num_layers),
            relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
            dropout_rate=float(hf.get("dropout_rate", 0.1)),
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
            tie_word_embeddings=bool(tie_word_embeddings),
            pad_id=int(hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0),
            eos_id=int(eos if eos is not None else 1),
            decoder_start_id=int(hf.get("decoder_start_token_id") or 0),
        )
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable model config: {e}") from None


def config_to_hf(cfg) -> dict[str, Any]:
    """T5Config -> config.json dict (mt5 when untied, t5 with gated-gelu when tied)."""
    tied = bool(cfg.tie_word_embeddings)
    return {
        "architectures": ["T5ForConditionalGeneration" if tied else "MT5ForConditionalGeneration"],
        "model_type": "t5" if tied else "mt5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "is_encoder_decoder": True,
        "tie_word_embeddings": tied,
        "pad_token_id": cfg.pad_id,
        "eos_token_id": cfg.eos_id,
        "decoder_start_token_id": cfg.decoder_start_id,
        "use_cache": True,
    }
