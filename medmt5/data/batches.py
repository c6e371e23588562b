"""Preprocessed examples -> the model's numpy features (no TensorFlow): padding, the unpacked
encoder-decoder batch of medmt5.data.pipeline.MODEL_FEATURES, and text of bytes features.
Re-exported by medmt5.data.pipeline.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def pad_tokens(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Stacks 1-D token arrays into int32 [N, length], zero-padded (truncated if longer)."""
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        row = np.asarray(row, np.int32)[:length]
        out[i, :len(row)] = row
    return out


def examples_to_batch(examples: Sequence[Mapping[str, Any]],
                      task_feature_lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Unpacked EncDecFeatureConverter features of `examples`, built in numpy.

    encoder_input_tokens [N, S]; decoder_target_tokens [N, T]; decoder_input_tokens [N, T]
    (targets shifted right, start id 0); decoder_loss_weights [N, T] (1 on real targets).
    """
    inputs = pad_tokens([e["inputs"] for e in examples], task_feature_lengths["inputs"])
    targets = pad_tokens([e["targets"] for e in examples], task_feature_lengths["targets"])
    dec_inputs = np.zeros_like(targets)
    dec_inputs[:, 1:] = targets[:, :-1]
    return {"encoder_input_tokens": inputs, "decoder_input_tokens": dec_inputs,
            "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets > 0).astype(np.int32)}


def as_text(value: Any) -> str:
    """bytes / numpy bytes / str -> str."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return as_text(value.item())
    return str(value)
