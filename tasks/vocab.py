"""Vocabularies: the shipped tiny sentencepiece model and mT5's mc4.250000.100extra.

Both follow mT5's conventions: pad=0, eos=1, unk=2, no bos, and 100 sentinel ids appended at the
top of the vocabulary (seqio numbers them downwards: vocab_size-1 is <extra_id_0>).

  get_vocabulary("tiny")  -> tasks/data/vocab/medmt5_tiny.model, 2,000 pieces + 100 = 2,100 ids
  get_vocabulary("mt5")   -> $MEDMT5_MT5_VOCAB or MT5_VOCAB_DEFAULT, 250,000 + 100 ids
"""
import functools
import os

import seqio

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
EXTRA_IDS = 100
TINY_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "vocab",
                               "medmt5_tiny.model")
MT5_VOCAB_ENV = "MEDMT5_MT5_VOCAB"
MT5_VOCAB_DEFAULT = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
VOCAB_NAMES = ("tiny", "mt5")


def vocabulary_path(name):
    """Path of the sentencepiece model behind vocabulary `name` ("tiny" or "mt5")."""
    if name == "tiny":
        return TINY_VOCAB_PATH
    if name == "mt5":
        return os.environ.get(MT5_VOCAB_ENV) or MT5_VOCAB_DEFAULT
    raise ValueError(f"Unknown vocabulary name {name!r}; valid names: {', '.join(VOCAB_NAMES)}.")


def get_vocabulary(name="tiny"):
    """seqio.SentencePieceVocabulary with 100 extra ids for `name` ("tiny" or "mt5").

    The mT5 model path is read from $MEDMT5_MT5_VOCAB at each call (default: the public
    gs://t5-data copy); the same path returns the same (cached) vocabulary object.
    """
    return _load(vocabulary_path(name))


@functools.lru_cache(maxsize=None)
def _load(path):
    if "://" not in path and not os.path.exists(path):
        hint = (f"set ${MT5_VOCAB_ENV} to a local copy of mc4.250000.100extra/sentencepiece.model"
                if path != TINY_VOCAB_PATH else "run scripts/train_tiny_vocab.py")
        raise FileNotFoundError(f"Sentencepiece model {path} does not exist; {hint}.")
    return seqio.SentencePieceVocabulary(path, extra_ids=EXTRA_IDS)
