"""`prompt_initializer`: a stage's prompt initialiser by name (what gin/promot/*.gin bind as
`prompted_model.prompt_init = @prompt_initializer()`), read from the backbone checkpoint and
tokenized with the run's vocabulary (tasks.vocab, hence seqio). Kept apart from
prompt_tuning.stages so that module stays importable without seqio / TensorFlow.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmt5.checkpointing.checkpoint_io import load_checkpoint
from prompt_tuning import initializers
from prompt_tuning.stages import required_checkpoint
from tasks.vocab import get_vocabulary

INIT_KINDS = ("uniform", "vocab", "class_labels", "text", "file")


def backbone_embedding(checkpoint_path: str) -> np.ndarray:
    """The checkpoint's token embedding [V, H] (host numpy)."""
    _, params = load_checkpoint(required_checkpoint(checkpoint_path))
    return np.asarray(params["token_embedder"]["embedding"], np.float32)


def _token_ids(texts: Sequence[str], vocabulary: str) -> list[list[int]]:
    vocab = get_vocabulary(vocabulary)
    return [list(vocab.encode(t)) for t in texts]


def prompt_initializer(kind: str = "uniform", prompt_length: int | None = None,
                       scale: float = 0.5, checkpoint: str | None = None,
                       labels: Sequence[str] = (), text: str = "",
                       path: str | None = None, vocabulary: str = "tiny", seed: int = 0,
                       vocab_limit: int | None = 5000):
    """A prompt initializer by name (gin: `prompted_model.prompt_init = @prompt_initializer()`).

    kind: "uniform" (U(-scale, scale)); "vocab" (embeddings of sampled token ids of
    `checkpoint`); "class_labels" (mean embedding of each label's tokens, repeated);
    "text" (the tokens of `text`, tiled/truncated); "file" (a [P, H] .npy at `path`).
    Embedding-based kinds read `checkpoint` (the backbone) and tokenize with `vocabulary`
    on first use; prompt_length is P.
    """
    if kind not in INIT_KINDS:
        raise ValueError(f"prompt_initializer.kind={kind!r}; use one of {INIT_KINDS}.")
    if kind == "uniform":
        return initializers.uniform(scale)
    if kind == "file":
        if not path:
            raise ValueError("prompt_initializer(kind='file') needs path (PROMPT_FILE).")
        return initializers.from_file(path)
    if not prompt_length:
        raise ValueError(f"prompt_initializer(kind={kind!r}) needs prompt_length "
                         "(PROMPT_LENGTH).")
    if kind == "class_labels" and not labels:
        raise ValueError("prompt_initializer(kind='class_labels') needs labels, e.g. "
                         "['true', 'false'].")
    if kind == "text" and not text.strip():
        raise ValueError("prompt_initializer(kind='text') needs a non-empty text.")

    def make():
        embedding = backbone_embedding(checkpoint)
        if kind == "vocab":
            return initializers.sampled_vocab(embedding, prompt_length, seed, vocab_limit)
        if kind == "class_labels":
            return initializers.class_labels(embedding, _token_ids(labels, vocabulary),
                                             prompt_length)
        return initializers.text_tokens(embedding, _token_ids([text], vocabulary)[0],
                                        prompt_length)
    return initializers.Lazy(make, f"{kind} prompt from {checkpoint}")
