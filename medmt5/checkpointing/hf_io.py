"""Hugging Face MT5/T5 model directories <-> medmt5 (T5Config, canonical parameter tree).

Reads config.json plus model.safetensors, sharded safetensors (model.safetensors.index.json)
or pytorch_model.bin (only when torch is importable). Safetensors are read with numpy only.
HF Linear weights are [out, in]; our kernels are [in, out] (T5X layout): every kernel is
transposed, and relative_attention_bias [buckets, heads] becomes rel_embedding [heads, buckets].

Tied embeddings: medmt5's tied model (tie_word_embeddings=True) multiplies the decoder output
by d_model**-0.5 before the shared embedding, as T5 does. transformers >= 5 only does that for
model_type "t5", so save_hf writes tied models as model_type "t5" (T5ForConditionalGeneration,
feed_forward_proj "gated-gelu") and untied ones as "mt5" (MT5ForConditionalGeneration).
Reading a tied "mt5" saved by transformers >= 5 (no rescale) gives an untied model whose head
is a copy of the embedding (exact); one saved by transformers 4.x (which rescaled) stays tied.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from medmt5.checkpointing.atomic_dir import atomic_directory, check_destination
from medmt5.checkpointing.hf_layout import (  # noqa: F401 (re-exported)
    config_from_hf,
    config_to_hf,
    name_map,
)
from medmt5.checkpointing.param_tree import (
    CheckpointError,
    expected_shapes,
    to_numpy,
    unflatten,
    validate,
)
from medmt5.data import paths
from medmt5.model.transformer import unscan_params

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"

# Weights HF writes that carry no information of their own (tied copies / unused tables).
_EMBED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def is_hf_dir(path: str) -> bool:
    return paths.isfile(paths.join(path, CONFIG_FILE))


# ----------------------------------------------------------------------------- weights


def _check_safetensors_file(path: str) -> None:
    """Parse the header and name the first tensor whose bytes lie past the end of the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file is truncated ({size} bytes); not a safetensors "
                                  "file.")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise CheckpointError(
                f"{path}: safetensors header says {n} bytes but the file has {size}; the file is "
                "truncated or not safetensors (re-download or re-save it).")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e}).") from None
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        end = int(info.get("data_offsets", [0, 0])[1])
        if end > data_len:
            raise CheckpointError(
                f"{path}: parameter {name!r} is truncated (needs data bytes up to {end}, the file "
                f"holds {data_len}); the file is incomplete, re-download or re-save it.")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    # lazy: optional: only Hugging Face checkpoints need safetensors
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: weights file not found.")
    _check_safetensors_file(path)
    out = {}
    try:
        with safe_open(path, framework="np") as f:
            for name in f.keys():
                try:
                    out[name] = f.get_tensor(name)
                except Exception as e:  # safetensors raises its own error types
                    raise CheckpointError(f"{path}: cannot read parameter {name!r}: {e}") from None
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    return out


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        # lazy: optional: only PyTorch .bin weights need torch
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: PyTorch weights need torch, which is not installed; install torch or "
            "re-save the model as safetensors "
            "(save_pretrained(safe_serialization=True)).") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: weights file not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load PyTorch weights: {e}") from None
    out = {}
    for name, t in state.items():
        if t.dtype == torch.bfloat16:
            out[name] = t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[name] = t.detach().contiguous().numpy()
    return out


def _read_index(model_dir: str, index_file: str,
                reader) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    index_path = os.path.join(model_dir, index_file)
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a valid shard index (needs 'weight_map'): "
                              f"{e}") from None
    state, origin = {}, {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(model_dir, shard)
        tensors = reader(shard_path)
        for name, arr in tensors.items():
            state[name] = arr
            origin[name] = shard_path
    for name, shard in weight_map.items():
        if origin.get(name) != os.path.join(model_dir, shard):
            raise CheckpointError(
                f"{index_path}: parameter {name!r} is listed in shard {shard!r} but "
                f"{os.path.join(model_dir, shard)} does not contain it.")
    return state, origin


def read_hf_state(model_dir: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(state {hf_name: array}, origin {hf_name: file it came from})."""
    single = os.path.join(model_dir, SAFETENSORS_FILE)
    if os.path.isfile(os.path.join(model_dir, SAFETENSORS_INDEX)):
        return _read_index(model_dir, SAFETENSORS_INDEX, _read_safetensors)
    if os.path.exists(single):
        state = _read_safetensors(single)
        return state, {k: single for k in state}
    if os.path.isfile(os.path.join(model_dir, TORCH_INDEX)):
        return _read_index(model_dir, TORCH_INDEX, _read_torch)
    torch_file = os.path.join(model_dir, TORCH_FILE)
    if os.path.isfile(torch_file):
        state = _read_torch(torch_file)
        return state, {k: torch_file for k in state}
    raise CheckpointError(
        f"{model_dir}: no weights found; looked for {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, "
        f"{TORCH_INDEX} and {TORCH_FILE}.")


def params_from_hf_state(cfg, state: Mapping[str, np.ndarray], origin: Mapping[str, str],
                         consume: bool = False) -> dict[str, Any]:
    """HF state dict -> nested canonical params (numpy). Errors name the file and weight.

    consume=True pops each weight from `state` (a dict) as it is converted, so a large model
    is not held twice (HF layout + transposed copies) in host memory."""
    names = name_map(cfg)
    ours_shapes = expected_shapes(cfg)
    files = ", ".join(sorted(set(origin.values()))) or "<no weight files>"
    where = lambda n: origin.get(n, files)  # noqa: E731
    shared = state.get("shared.weight")
    for name, (ours, transpose) in names.items():
        if name not in state:
            raise CheckpointError(
                f"{files}: missing weight {name!r} (medmt5 "
                f"{ours}); the weights do not match config.json.")
        want = ours_shapes[ours][::-1] if transpose else ours_shapes[ours]
        if tuple(state[name].shape) != tuple(want):
            raise CheckpointError(
                f"{where(name)}: weight {name!r} has shape {tuple(state[name].shape)}, config.json "
                f"implies {tuple(want)}.")
    for name in sorted(set(state) - set(names)):
        redundant_copy = name in _EMBED_COPIES or (name == "lm_head.weight"
                                                   and cfg.tie_word_embeddings)
        if redundant_copy and shared is not None and np.array_equal(state[name], shared):
            continue
        if name in _IGNORED:
            continue
        raise CheckpointError(
            f"{where(name)}: unexpected weight {name!r} (shape {tuple(state[name].shape)}) that "
            "config.json does not describe; the weights and config.json disagree.")
    flat = {}
    for n, (ours, t) in names.items():
        arr = state.pop(n) if consume else state[n]
        flat[ours] = np.ascontiguousarray(arr.T) if t else arr
    return unflatten(flat)


def _decide_tied(hf: Mapping[str, Any], state: Mapping[str, np.ndarray], path: str, origin) -> bool:
    """Untied iff the config says so or lm_head differs from shared (transformers >= 5 saves
    tie_word_embeddings=true even for untied mT5). A distinct head in a tied 't5' config would
    be an untied head with T5's output rescaling, which medmt5 cannot represent."""
    flag = hf.get("tie_word_embeddings", True)
    lm, shared = state.get("lm_head.weight"), state.get("shared.weight")
    distinct = lm is not None and (shared is None or lm.shape != shared.shape
                                   or not np.array_equal(lm, shared))
    if hf.get("model_type") == "t5" and flag and distinct:
        raise CheckpointError(
            f"{path}: model_type 't5' with tie_word_embeddings true rescales the decoder output, "
            "but "
            f"{origin.get('lm_head.weight')} has an lm_head.weight distinct from shared.weight; "
            "medmt5 cannot represent that combination (set tie_word_embeddings false if the head "
            "is untied and unscaled).")
    tied = bool(flag) and not distinct
    if not tied and lm is None:
        raise CheckpointError(
            f"{path}: tie_word_embeddings is false but the weights have no 'lm_head.weight'.")
    return tied


def _major_version(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def load_hf(model_dir: str) -> tuple[Any, dict[str, Any]]:
    """Read a HF MT5/T5 directory -> (T5Config, nested numpy params). A remote directory
    (gs://...) is downloaded to a temporary folder first (config + weight files only)."""
    if paths.is_remote(model_dir):
        names = [n for n in paths.listdir(model_dir) if n == CONFIG_FILE
                 or n.endswith((".safetensors", ".bin", ".index.json"))]
        with paths.local_copy(model_dir, names) as local:
            try:
                return load_hf(local)
            except CheckpointError as e:
                raise CheckpointError(str(e).replace(local, model_dir)) from None
    cfg_path = os.path.join(model_dir, CONFIG_FILE)
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path}: not found; not a Hugging Face model "
                              "directory.") from None
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON: {e}") from None
    config_from_hf(hf, cfg_path, tie_word_embeddings=False)  # reject wrong architectures first
    state, origin = read_hf_state(model_dir)
    tied = _decide_tied(hf, state, cfg_path, origin)
    new_transformers = _major_version(hf.get("transformers_version")) >= 5
    if tied and hf.get("model_type") == "mt5" and new_transformers:
        # transformers >= 5 computes a tied mT5's logits WITHOUT the d_model**-0.5 rescale our
        # tied model applies; an untied head holding a copy of the embedding is exact.
        state = dict(state, **{"lm_head.weight": state["shared.weight"]})
        origin = dict(origin, **{"lm_head.weight": origin.get("shared.weight", cfg_path)})
        tied = False
    cfg = config_from_hf(hf, cfg_path, tie_word_embeddings=tied)
    return cfg, params_from_hf_state(cfg, state, origin, consume=True)


def hf_state_from_params(cfg, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Canonical params (numpy or jax) -> HF state dict of contiguous numpy arrays."""
    flat = to_numpy(params)
    if cfg.scan_layers and any(n.startswith(("encoder/layers/", "decoder/layers/")) for n in flat):
        flat = to_numpy(unscan_params(unflatten(flat)))
    if any(n.startswith("prompt/") for n in flat):
        raise CheckpointError(
            "params contain a soft prompt (params['prompt']); Hugging Face models have no place "
            "for it. Drop it (export it with prompt_tuning's export) before save_hf.")
    validate(cfg, flat, "params passed to save_hf")
    return {hf: np.ascontiguousarray(flat[ours].T if t else flat[ours])
            for hf, (ours, t) in name_map(cfg).items()}


def save_hf(cfg, params: Mapping[str, Any], out_dir: str, overwrite: bool = False) -> str:
    """Write config.json + model.safetensors that transformers loads; all or nothing.
    A remote out_dir (gs://...) is built locally and uploaded with config.json last."""
    # lazy: optional: only Hugging Face checkpoints need safetensors
    from safetensors.numpy import save_file

    if paths.is_remote(out_dir):
        check_destination(out_dir, overwrite)
        with tempfile.TemporaryDirectory(prefix="medmt5-hf-") as tmp:
            local = save_hf(cfg, params, os.path.join(tmp, "hf"))
            if overwrite:
                paths.rmtree(out_dir)
            paths.copy_tree(local, out_dir, last=(CONFIG_FILE,))
        return out_dir
    state = hf_state_from_params(cfg, params)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        hf_config = dict(config_to_hf(cfg), dtype=str(state["shared.weight"].dtype))
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(hf_config, f, indent=2, sort_keys=True)
        save_file(state, os.path.join(tmp, SAFETENSORS_FILE), metadata={"format": "pt"})
    return out_dir


