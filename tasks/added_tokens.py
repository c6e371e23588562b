"""A Hugging Face tokenizer's added tokens on top of a sentencepiece model.

A tokenizer folder may add tokens after the sentencepiece pieces (`added_tokens.json`
{content: id}, or tokenizer.json's "added_tokens" list, e.g. a fine-tuned Medical mT5 whose
tag tokens take ids 250100..250121, `vocab_size` 250122). `read_added_tokens` reads both
layouts; `AddedTokensVocabulary` (a seqio SentencePieceVocabulary) encodes those strings to
their ids and decodes them back. tasks/vocab.py loads vocabularies through it. The file
helpers here read local paths and gs:// URLs alike.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

# transformers' tokenization_utils_base ADDED_TOKENS_FILE and FULL_TOKENIZER_FILE
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_FILE = "tokenizer.json"


# Remote paths (gs://...) go through etils.epath, like medmt5.data.paths: TensorFlow's gfile when
# TensorFlow is installed, fsspec/gcsfs otherwise or with EPATH_USE_TF=false (the GCS emulator
# in tests/test_remote.py).
def _epath(path: str):
    from etils import epath  # lazy: only remote paths need etils (and gcsfs / TensorFlow)

    return epath.Path(path)


def path_exists(path: str) -> bool:
    return _epath(path).exists() if "://" in path else os.path.exists(path)


def path_is_dir(path: str) -> bool:
    return _epath(path).is_dir() if "://" in path else os.path.isdir(path)


def read_path_bytes(path: str) -> bytes:
    if "://" in path:
        return _epath(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_added_tokens(folder: str) -> dict[str, int]:
    """{content: id} from a Hugging Face tokenizer folder's added_tokens.json and/or
    tokenizer.json "added_tokens" (both layouts as transformers saves them); {} if neither.
    Conflicting ids between the two files are an error naming both."""
    out: dict[str, int] = {}
    origin: dict[str, str] = {}

    def add(content, token_id, path):
        if not isinstance(content, str) or not isinstance(token_id, int):
            raise ValueError(f"{path}: added token {content!r}: {token_id!r} must be a string "
                             "with an integer id.")
        if content in out and out[content] != token_id:
            raise ValueError(f"{content!r} has id {out[content]} in {origin[content]} but "
                             f"{token_id} in {path}; the tokenizer folder is inconsistent.")
        out[content], origin[content] = token_id, path

    def read_json(path):
        try:
            return json.loads(read_path_bytes(path).decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from None

    path = os.path.join(folder, ADDED_TOKENS_FILE)
    if path_exists(path):
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must be a JSON object {{token: id}}.")
        for content, token_id in data.items():
            add(content, token_id, path)
    path = os.path.join(folder, TOKENIZER_FILE)
    if path_exists(path):
        for entry in read_json(path).get("added_tokens") or []:
            add(entry.get("content"), entry.get("id"), path)
    return out


class AddedTokensVocabulary(seqio.SentencePieceVocabulary):
    """A sentencepiece vocabulary plus a Hugging Face tokenizer's added tokens.

    added_tokens: {content: id}. Tokens whose id is inside the sentencepiece model (e.g.
    "<pad>", "</s>", "<unk>" in tokenizer.json) are the model's own pieces and left to it;
    the others must take the ids right after the model's pieces, without gaps (as
    transformers assigns them). Encoding splits the text at the added tokens (longest
    first) and encodes the pieces between them with sentencepiece; decoding joins
    sentencepiece text and added tokens with single spaces, as transformers' slow tokenizers
    do (spaces_between_special_tokens).
    """

    def __init__(self, sentencepiece_model_file: str, added_tokens: Mapping[str, int],
                 extra_ids: int = 0):
        super().__init__(sentencepiece_model_file, extra_ids=extra_ids)
        self._added_tokens_all = dict(added_tokens)
        self._added = None  # {content: id} beyond the sentencepiece pieces, filled lazily

    def __getstate__(self):
        state = super().__getstate__()
        for lazy in ("_added", "_by_id", "_pattern"):  # derived from _added_tokens_all
            state.pop(lazy, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._added = None

    def _added_map(self) -> dict[str, int]:
        if self._added is None:
            base = self.tokenizer.GetPieceSize()
            added = {c: i for c, i in self._added_tokens_all.items() if i >= base}
            ids = sorted(added.values())
            if ids != list(range(base, base + len(ids))):
                raise ValueError(
                    f"{self.sentencepiece_model_file}: added token ids {ids[:5]}... must "
                    f"follow the {base:,} sentencepiece pieces without gaps ({base}, "
                    f"{base + 1}, ...); check {ADDED_TOKENS_FILE} / {TOKENIZER_FILE}.")
            self._added = added
            self._by_id = {i: c for c, i in added.items()}
            self._pattern = re.compile("|".join(
                re.escape(c) for c in sorted(added, key=len, reverse=True))) if added else None
        return self._added

    @property
    def added_tokens(self) -> dict[str, int]:
        """{content: id} of the tokens beyond the sentencepiece model."""
        return dict(self._added_map())

    @property
    def _base_vocab_size(self):
        return self.tokenizer.GetPieceSize() + len(self._added_map())

    def _encode(self, s: str) -> Sequence[int]:
        self._added_map()
        if self._pattern is None:
            return self.tokenizer.EncodeAsIds(s)
        ids, pos = [], 0
        for m in self._pattern.finditer(s):
            ids += self.tokenizer.EncodeAsIds(s[pos:m.start()]) if s[pos:m.start()].strip() else []
            ids.append(self._added[m.group(0)])
            pos = m.end()
        if s[pos:].strip():
            ids += self.tokenizer.EncodeAsIds(s[pos:])
        return ids

    def _decode(self, ids) -> str:
        self._added_map()
        base = self.tokenizer.GetPieceSize()
        parts, run = [], []
        for i in (int(x) for x in ids):
            if i in self._by_id:
                if run:
                    parts.append(self.tokenizer.DecodeIds(run))
                    run = []
                parts.append(self._by_id[i])
            else:
                run.append(self.tokenizer.unk_id() if i >= base else i)
        if run:
            parts.append(self.tokenizer.DecodeIds(run))
        return " ".join(p for p in parts if p)

    def _encode_tf(self, s):
        # Added tokens have no TF tokenizer op: tokenize in Python inside the graph.
        def encode(text):
            return tf.constant(self._encode(text.numpy().decode("utf-8")), tf.int32)

        s = tf.convert_to_tensor(s)
        if s.shape.rank == 0:
            out = tf.py_function(encode, [s], tf.int32)
            out.set_shape([None])
            return out
        return tf.map_fn(lambda x: tf.py_function(encode, [x], tf.int32), s,
                         fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))

    def _decode_tf(self, ids):
        def decode(row):
            return tf.constant(self._decode([i for i in row.numpy().tolist() if i != self.pad_id]))

        ids = tf.convert_to_tensor(ids)
        if ids.shape.rank == 1:
            return tf.py_function(decode, [ids], tf.string)
        return tf.map_fn(lambda r: tf.py_function(decode, [r], tf.string), ids,
                         fn_output_signature=tf.TensorSpec([], tf.string))

    def __str__(self) -> str:
        return (f"AddedTokensVocabulary(file={self.sentencepiece_model_file}, "
                f"extra_ids={self.extra_ids}, added_tokens={len(self._added_map())})")
