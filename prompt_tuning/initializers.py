"""Prompt initialisers: flax initializers `(rng, shape [P, H], dtype) -> array`.

  uniform(scale=0.5)                       U(-scale, scale) (the prompt-tuning default)
  from_array(values)                       a given [P, H] array (shape checked at init)
  from_file(path)                          a `.npy` file [P, H] (e.g. a stage-1 prompt)
  Lazy(make)                               values computed on first use by make() -> [P, H]
Values computed from the backbone's token embedding [V, H] (pure numpy):
  sampled_vocab(embedding, length, seed, vocab_limit=5000)  rows of random token ids
  class_labels(embedding, label_token_ids, length)          mean of each label's tokens,
                                                            repeated to fill P
  text_tokens(embedding, token_ids, length)                 a text's token embeddings,
                                                            tiled / truncated to P
A table of N prompts ([N, P, H], multi-task) gets the same [P, H] values in every row.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medmt5.data import paths

# sentencepiece ids 0..2 are pad, eos, unk: never sampled.
FIRST_REAL_ID = 3


def uniform(scale: float = 0.5) -> Callable:
    """U(-scale, scale) per entry."""
    if not scale > 0:
        raise ValueError(f"uniform prompt initialiser: scale must be > 0, got {scale}.")

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, jnp.float32, -scale, scale).astype(dtype)
    return init


def _fit(values: np.ndarray, shape, source: str) -> jnp.ndarray:
    """[P, H] values for a [P, H] or [N, P, H] parameter, or a clear shape error."""
    values = np.asarray(values)
    if tuple(values.shape) != tuple(shape[-2:]):
        raise ValueError(f"{source}: prompt values have shape {tuple(values.shape)} but the "
                         f"model's prompt is [P, H] = {tuple(shape[-2:])}; set PROMPT_LENGTH "
                         "to the prompt's length, or use a prompt of this model's d_model.")
    return jnp.broadcast_to(jnp.asarray(values), tuple(shape))


class Lazy:
    """Initializer whose [P, H] values are computed once, on first use, by make()."""

    def __init__(self, make: Callable[[], np.ndarray], source: str):
        self._make, self.source, self._values = make, source, None

    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.asarray(self._make(), np.float32)
        return self._values

    def __call__(self, rng, shape, dtype=jnp.float32):
        del rng
        return _fit(self.values(), shape, self.source).astype(dtype)

    def __repr__(self):
        return f"Lazy({self.source})"


def from_array(values, source: str = "prompt array") -> Lazy:
    """A fixed [P, H] array."""
    arr = np.asarray(values, np.float32)
    return Lazy(lambda: arr, source)


def load_npy(path: str) -> np.ndarray:
    """A prompt file: float [P, H] `.npy` (clear errors for a missing or mis-shaped file)."""
    path = os.fspath(path)
    if not paths.isfile(path):
        raise FileNotFoundError(f"prompt file {path} does not exist (PROMPT_FILE); stage 1 "
                                "writes MODEL_DIR/prompts/prompt_best.npy and prompt_<step>.npy.")
    try:
        if paths.is_remote(path):
            values = np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False)
        else:
            values = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"prompt file {path} is not a numpy .npy array: {e}") from None
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"prompt file {path}: expected a float [P, H] array, got "
                         f"{values.dtype} {values.shape}.")
    return values.astype(np.float32)


def from_file(path: str) -> Lazy:
    """The [P, H] prompt stored in `path` (.npy), read on first use."""
    return Lazy(lambda: load_npy(path), f"prompt file {path}")


def sampled_vocab(embedding: np.ndarray, length: int, seed: int = 0,
                  vocab_limit: int | None = 5000) -> np.ndarray:
    """[P, H]: embeddings of P distinct token ids drawn (seeded) from ids 3..vocab_limit-1
    (sentencepiece orders pieces by frequency, so the first ids are common tokens)."""
    embedding = np.asarray(embedding)
    high = embedding.shape[0] if vocab_limit is None else min(vocab_limit, embedding.shape[0])
    pool = np.arange(FIRST_REAL_ID, high)
    if len(pool) == 0:
        raise ValueError(f"sampled_vocab: no token ids between {FIRST_REAL_ID} and {high}.")
    ids = np.random.RandomState(seed).choice(pool, size=length, replace=len(pool) < length)
    return embedding[ids].astype(np.float32)


def _check_ids(ids: Sequence[int], vocab_size: int, what: str) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"{what}: token ids {bad[:5]} are outside the checkpoint's "
                         f"{vocab_size}-row embedding; the tokenizer (VOCABULARY) does not "
                         "match the backbone.")


def class_labels(embedding: np.ndarray, label_token_ids: Sequence[Sequence[int]],
                 length: int) -> np.ndarray:
    """[P, H]: row i is the mean embedding of label i % L's sub-tokens (labels repeated)."""
    embedding = np.asarray(embedding)
    if not label_token_ids:
        raise ValueError("class_labels prompt initialiser needs at least one label.")
    means = []
    for i, ids in enumerate(label_token_ids):
        ids = [int(t) for t in ids]
        if not ids:
            raise ValueError(f"class_labels: label {i} has no tokens (empty string?).")
        _check_ids(ids, embedding.shape[0], f"class_labels label {i}")
        means.append(embedding[ids].astype(np.float32).mean(axis=0))
    return np.stack([means[i % len(means)] for i in range(length)])


def text_tokens(embedding: np.ndarray, token_ids: Sequence[int], length: int) -> np.ndarray:
    """[P, H]: the text's token embeddings, repeated until P rows, then truncated to P."""
    ids = [int(t) for t in token_ids]
    if not ids:
        raise ValueError("text prompt initialiser: the text has no tokens.")
    _check_ids(ids, np.shape(embedding)[0], "text prompt initialiser")
    reps = -(-length // len(ids))
    return np.asarray(embedding)[(ids * reps)[:length]].astype(np.float32)
