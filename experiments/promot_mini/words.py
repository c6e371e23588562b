"""The miniature's fixed word-level vocabulary, defined here in code (one id per word).

Every answer is one or two whole words, so a token id is a word and nothing depends on a
trained tokenizer. The vocabulary's identity is a content hash of the ordered word list
(`vocab_hash`); run.py stores it with the pretrained checkpoint and `check_vocab` refuses a
checkpoint trained with another list (the mix-up that voided the earlier miniature).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

SPECIAL = ("<pad>", "</s>", "<unk>")          # ids 0, 1, 2 (mT5's pad / eos / unk)
# Content words: four semantic classes of 12; a word's class is fixed across episodes.
CLASSES = {
    "animal": ("cat", "dog", "cow", "fox", "owl", "bee", "ant", "elk", "yak", "hen", "rat",
               "bat"),
    "food": ("rice", "bread", "apple", "pear", "soup", "cake", "milk", "egg", "corn", "bean",
             "plum", "fig"),
    "color": ("red", "blue", "green", "pink", "gray", "black", "white", "gold", "brown",
              "teal", "navy", "lime"),
    "tool": ("saw", "axe", "drill", "knife", "rope", "nail", "glue", "pen", "brush", "hook",
             "key", "lamp"),
}
# Label words: drawn per episode (label mapping, copy-with-format); never content words.
LABELS = ("north", "south", "east", "west", "alpha", "beta", "gamma", "delta", "one", "two",
          "three", "four")
# Episode markers, varied per episode in pretraining.
PAIR_MARKERS = ("=", ":", "->", "is")
SEP_MARKERS = (",", ";", "|", "and")
QUERY_MARKERS = ("?", "Q", "ask", "then")
# The target tasks' output formats (never an answer of an in-context family).
TARGET_FORMATS = {"verify": ("true", "false"), "isfood": ("yes", "no")}
# Fixed words of the target tasks' templates.
TEMPLATE_WORDS = ("check", "classify")

CONTENT: tuple = tuple(w for ws in CLASSES.values() for w in ws)
WORDS: tuple = (SPECIAL + CONTENT + LABELS + PAIR_MARKERS + SEP_MARKERS + QUERY_MARKERS
                + tuple(w for f in TARGET_FORMATS.values() for w in f) + TEMPLATE_WORDS)
PAD, EOS, UNK = 0, 1, 2
ID: dict[str, int] = {w: i for i, w in enumerate(WORDS)}
CLASS_OF: dict[str, str] = {w: c for c, ws in CLASSES.items() for w in ws}
VOCAB_FILE = "vocabulary.json"

if len(ID) != len(WORDS):
    raise AssertionError("promot_mini.words: a word appears twice in WORDS")


def vocab_size(multiple: int = 8) -> int:
    """Rows of the embedding: the word count rounded up to `multiple`."""
    return -(-len(WORDS) // multiple) * multiple


def vocab_hash(words: Sequence[str] = WORDS) -> str:
    """sha256 of the ordered word list (ids are positions, so order is identity)."""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def encode(text: str) -> list[int]:
    """Space-separated words -> ids (an unknown word is an error, not <unk>)."""
    out = []
    for w in text.split():
        if w not in ID:
            raise ValueError(f"promot_mini: word {w!r} is not in the fixed vocabulary "
                             f"(experiments/promot_mini/words.py WORDS).")
        out.append(ID[w])
    return out


def decode(ids: Sequence[int]) -> str:
    """ids -> words, stopping at EOS and skipping pad."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i != PAD:
            out.append(WORDS[i] if i < len(WORDS) else "<unk>")
    return " ".join(out)


def write_vocab(model_dir: str) -> str:
    """MODEL_DIR/vocabulary.json: {"hash", "size", "words"}."""
    path = os.path.join(model_dir, VOCAB_FILE)
    with open(path, "w") as f:
        json.dump({"hash": vocab_hash(), "size": len(WORDS), "words": list(WORDS)}, f)
    return path


def check_vocab(model_dir: str) -> None:
    """Stops unless MODEL_DIR was trained with this vocabulary (both hashes named)."""
    path = os.path.join(model_dir, VOCAB_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing: the checkpoint in {model_dir} does not record its "
                         "vocabulary, so its token ids cannot be trusted; pretrain again "
                         "(run.py --fresh_pretrain).")
    with open(path) as f:
        stored = json.load(f)
    if stored.get("hash") != vocab_hash():
        raise ValueError(f"vocabulary mismatch: the checkpoint in {model_dir} was trained with "
                         f"vocabulary {stored.get('hash')} ({stored.get('size')} words) but "
                         f"experiments/promot_mini/words.py is {vocab_hash()} ({len(WORDS)} "
                         "words); pretrain again (run.py --fresh_pretrain).")
