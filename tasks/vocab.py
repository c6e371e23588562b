"""Vocabularies: the shipped tiny model, mT5's mc4.250000.100extra, a checkpoint's own.

All follow mT5's conventions: pad=0, eos=1, unk=2, no bos, 100 sentinels counted down from
the top (<extra_id_0> is the highest sentinel id). Where the sentinels come from is read from
the sentencepiece model file itself, never guessed from a name:

  built-in   the model already holds the pieces `▁<extra_id_99>` .. `▁<extra_id_0>` as its
             last 100 pieces. This is mc4.250000.100extra/sentencepiece.model, the same file
             as spiece.model in google/mt5-* and HiTZ/Medical-mT5-*: 250,100 pieces,
             `▁<extra_id_99>` = 250000 .. `▁<extra_id_0>` = 250099. T5X and mT5 load it with
             extra_ids=0 (google-research/multilingual-t5 multilingual_t5/tasks.py:
             `t5.data.SentencePieceVocabulary(DEFAULT_SPM_PATH)` with the default extra_ids=0;
             huggingface/transformers PR #22626 shows `IdToPiece(250099) == '▁<extra_id_0>'`
             and `IdToPiece(250000) == '▁<extra_id_99>'`), so sentinel i = 250099 - i. The
             model's 250,112 embedding rows (t5x examples/t5/mt5/small.gin: "vocab size
             rounded to a multiple of 128") leave 12 padding rows above them.
  appended   the model has no sentinel pieces (the tiny model): seqio appends 100 with
             extra_ids=100 (seqio 0.0.20 `_load_model_internal` adds USER_DEFINED pieces
             `▁<extra_id_{i}>`, i = 99..0), so sentinel i = vocab_size - 1 - i.

In both cases `sentinel_id(vocab, i)` looks up the piece `▁<extra_id_{i}>`, so span
corruption (tasks/span_corruption.py) uses the right ids whatever the layout.

A Hugging Face tokenizer folder may add tokens after the sentencepiece pieces
(`added_tokens.json` {content: id}, or tokenizer.json's "added_tokens" list, e.g. a fine-tuned
Medical mT5 whose tag tokens take ids 250100..250121, `vocab_size` 250122).
`AddedTokensVocabulary` (tasks/added_tokens.py) encodes those strings to their ids and
decodes them back.

Names the VOCABULARY gin macro (medmt5.data.pipeline.setup_tasks) accepts, see `get_vocabulary`:
  "tiny"                 tasks/data/vocab/medmt5_tiny.model (2,000 pieces + 100 appended)
  "mt5"                  $MEDMT5_MT5_VOCAB or MT5_VOCAB_DEFAULT (a .model file or a folder)
  /path/spiece.model     that sentencepiece model
  /path/checkpoint_dir   the folder's spiece.model (+ added_tokens.json / tokenizer.json)

`vocabulary_identity(vocab)` is the record stored with checkpoints and prompts
(medmt5/data/vocab_record.py): a sha256 over the sentencepiece file's bytes, the appended extra ids
and the added tokens, and the counts.
"""
import functools
import hashlib
import json
import os
import tempfile

import seqio
from sentencepiece import sentencepiece_model_pb2

from medmt5.checkpointing.atomic_dir import atomic_write_bytes
from medmt5.data import hub
from tasks.added_tokens import (
    ADDED_TOKENS_FILE,
    TOKENIZER_FILE,  # noqa: F401 - tasks.vocab names all three files (tests use it)
    AddedTokensVocabulary,
    path_exists,
    path_is_dir,
    read_added_tokens,
    read_path_bytes,
)

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
EXTRA_IDS = 100          # sentinels every vocabulary has (built-in or appended)
NUM_SENTINELS = EXTRA_IDS
TINY_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "vocab",
                               "medmt5_tiny.model")
MT5_VOCAB_ENV = "MEDMT5_MT5_VOCAB"
MT5_VOCAB_DEFAULT = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
VOCAB_NAMES = ("tiny", "mt5")
# Hugging Face tokenizer files (transformers' tokenization_utils_base: ADDED_TOKENS_FILE,
# FULL_TOKENIZER_FILE, both in tasks/added_tokens.py; T5Tokenizer's vocab file is spiece.model).
SPIECE_FILE = "spiece.model"
SENTINEL_PIECE = "▁<extra_id_{}>"


def vocabulary_path(name):
    """Path of the sentencepiece model (or tokenizer folder) behind `name`: "tiny", "mt5",
    or a path that exists (a .model file or a folder with spiece.model)."""
    if name == "tiny":
        return TINY_VOCAB_PATH
    if name == "mt5":
        return os.environ.get(MT5_VOCAB_ENV) or MT5_VOCAB_DEFAULT
    if isinstance(name, str) and (os.sep in name or "://" in name or name.endswith(".model")):
        return name
    raise ValueError(f"Unknown vocabulary name {name!r}; valid names: {', '.join(VOCAB_NAMES)}, "
                     "a sentencepiece .model file, or a checkpoint folder holding "
                     f"{SPIECE_FILE} (VOCABULARY gin macro).")


# ---- sentinels --------------------------------------------------------------------------


def builtin_sentinels(model_bytes: bytes, source: str = "sentencepiece model") -> bool:
    """True when the model holds the 100 sentinel pieces itself (mc4.250000.100extra), False
    when it has none (seqio must append them). Any other layout is an error naming `source`.

    Built-in sentinels must be `▁<extra_id_99>` .. `▁<extra_id_0>` as the LAST 100 pieces, in
    that order (<extra_id_0> last), as in mc4.250000.100extra.
    """
    proto = sentencepiece_model_pb2.ModelProto.FromString(model_bytes)
    pieces = [p.piece for p in proto.pieces]
    index = {p: i for i, p in enumerate(pieces)}
    found = [i for i in range(NUM_SENTINELS) if SENTINEL_PIECE.format(i) in index
             or f"<extra_id_{i}>" in index]
    if not found:
        return False
    n = len(pieces)
    expected = {SENTINEL_PIECE.format(i): n - 1 - i for i in range(NUM_SENTINELS)}
    wrong = [p for p, want in expected.items() if index.get(p) != want]
    if len(found) != NUM_SENTINELS or wrong:
        raise ValueError(
            f"{source}: has {len(found)} of the 100 sentinel pieces, not in mT5's layout "
            f"(the last 100 pieces `▁<extra_id_99>`..`▁<extra_id_0>`; first mismatch: "
            f"{wrong[:1] or 'missing pieces'}). Use a model with all 100 sentinels at the end "
            "(like mc4.250000.100extra) or with none (seqio appends them).")
    return True


def sentinel_id(vocabulary: seqio.Vocabulary, index: int = 0) -> int:
    """Id of <extra_id_{index}> in `vocabulary`, looked up by its piece (built-in or appended)."""
    if not 0 <= index < NUM_SENTINELS:
        raise ValueError(f"sentinel index {index} must be in [0, {NUM_SENTINELS})")
    tokenizer = getattr(vocabulary, "tokenizer", None)
    if tokenizer is None:
        return vocabulary.vocab_size - 1 - index  # seqio's convention for other vocabularies
    piece_id = tokenizer.PieceToId(SENTINEL_PIECE.format(index))
    if piece_id == tokenizer.unk_id():
        raise ValueError(f"{vocabulary}: has no sentinel piece {SENTINEL_PIECE.format(index)} "
                         "(load it with tasks.vocab.load_vocabulary, which appends them when "
                         "the model lacks them).")
    return int(piece_id)


# ---- loading ----------------------------------------------------------------------------


def checkpoint_vocabulary_dir(checkpoint_path: str | None) -> str | None:
    """The folder holding a checkpoint's own vocabulary (its spiece.model), or None.

    Looks in the checkpoint folder itself (a Hugging Face model folder, our MODEL_DIR, which
    keeps a copy of its vocabulary, or MODEL_DIR/best) and, for MODEL_DIR/checkpoints/<step>,
    in MODEL_DIR.
    """
    if not checkpoint_path or not isinstance(checkpoint_path, str):
        return None
    path = checkpoint_path.rstrip("/")
    candidates = [path]
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints":
        candidates.append(os.path.dirname(parent))
    for folder in candidates:
        if path_is_dir(folder) and path_exists(os.path.join(folder, SPIECE_FILE)):
            return folder
    return None


def load_vocabulary(path: str) -> seqio.SentencePieceVocabulary:
    """The vocabulary of a sentencepiece .model file or a tokenizer folder (spiece.model and
    any added tokens). Sentinels: built-in when the file holds them (extra_ids=0), else 100
    appended by seqio (extra_ids=100); see the module docstring."""
    return _load(path)


def _local_model_copy(model_bytes: bytes) -> str:
    """A local file with these sentencepiece model bytes: <tmp>/medmt5-spm-<sha256>.model."""
    target = os.path.join(tempfile.gettempdir(),
                          f"medmt5-spm-{hashlib.sha256(model_bytes).hexdigest()}.model")
    if not (os.path.isfile(target) and os.path.getsize(target) == len(model_bytes)):
        atomic_write_bytes(target, model_bytes)
    return target


# id(vocabulary) -> (vocabulary, original model file, tokenizer folder or None) for the
# vocabularies _load made; and id(vocabulary) -> (vocabulary, identity) once computed.
_SOURCES: dict[int, tuple] = {}
_IDENTITIES: dict[int, tuple] = {}


def _source(vocabulary) -> tuple:
    """(model file, folder) of a vocabulary: what _load recorded, else its own file."""
    entry = _SOURCES.get(id(vocabulary))
    if entry is not None and entry[0] is vocabulary:
        return entry[1], entry[2]
    return getattr(vocabulary, "sentencepiece_model_file", None), None


@functools.cache
def _load(path):
    folder = None
    if path_is_dir(path):
        folder, model_file = path, os.path.join(path, SPIECE_FILE)
        if not path_exists(model_file):
            raise FileNotFoundError(f"{path}: is a folder without {SPIECE_FILE}; point the "
                                    "vocabulary at a sentencepiece .model file or a Hugging "
                                    f"Face tokenizer folder that has {SPIECE_FILE}.")
    else:
        model_file = path
    if not path_exists(model_file):
        hint = (f"set ${MT5_VOCAB_ENV} to a local copy of mc4.250000.100extra/sentencepiece.model "
                "(or the spiece.model of a google/mt5-* checkpoint)"
                if path != TINY_VOCAB_PATH else "run scripts/train_tiny_vocab.py")
        raise FileNotFoundError(f"Sentencepiece model {model_file} does not exist; {hint}.")
    model_bytes = read_path_bytes(model_file)
    try:
        builtin = builtin_sentinels(model_bytes, model_file)
    except Exception as e:  # protobuf DecodeError
        if isinstance(e, ValueError) and "sentinel" in str(e):
            raise
        raise ValueError(f"{model_file}: not a sentencepiece model ({e}).") from None
    extra_ids = 0 if builtin else EXTRA_IDS
    added = read_added_tokens(folder) if folder else {}
    # seqio re-reads the file with tf.io.gfile; a remote one (gs://) is handed over as a local
    # copy of the bytes already read (through etils.epath), named by their hash.
    spm_file = _local_model_copy(model_bytes) if "://" in model_file else model_file
    if added:
        vocab = AddedTokensVocabulary(spm_file, added, extra_ids=extra_ids)
        if builtin or not any(i >= vocab.tokenizer.GetPieceSize() for i in added.values()):
            pass
        else:
            # seqio's appended sentinels would take the ids the added tokens claim.
            raise ValueError(f"{folder}: added tokens need a sentencepiece model with built-in "
                             "sentinels (like mT5's spiece.model); this one has none.")
        _ = vocab.vocab_size  # validates the added ids now, with the file names in the message
    else:
        vocab = seqio.SentencePieceVocabulary(spm_file, extra_ids=extra_ids)
    # Kept beside the object, not on it: seqio compares vocabularies by their __dict__, so an
    # extra attribute would make ours unequal to a user's identical SentencePieceVocabulary.
    _SOURCES[id(vocab)] = (vocab, model_file, folder)
    return vocab


# What None / "mt5" resolved to at the last resolve_vocabulary (setup_tasks) call, so that
# code given the same VOCABULARY macro (e.g. prompt_initializer.vocabulary) gets the
# vocabulary the tasks were registered with.
_ACTIVE: dict[str | None, str] = {}


def get_vocabulary(name="tiny"):
    """The seqio vocabulary `name` names ("tiny", "mt5", a .model file, a tokenizer folder;
    None: what the last setup_tasks resolved it to, else "tiny").

    The mT5 path is read from $MEDMT5_MT5_VOCAB at each call (default: the public gs://t5-data
    copy); the same path returns the same (cached) vocabulary object.
    """
    name = _ACTIVE.get(name, "tiny" if name is None else name)
    return _load(vocabulary_path(name))


# ---- identity ---------------------------------------------------------------------------


def vocabulary_identity(vocabulary: seqio.Vocabulary) -> dict:
    """The record stored with checkpoints and prompts: {"sha256", "pieces", "vocab_size",
    "extra_ids", "added_tokens", "sentinels", "source"}.

    sha256 covers the sentencepiece file's bytes, the number of appended sentinels and the
    added tokens (content and id), so two vocabularies with the same record tokenize alike.
    """
    cached = _IDENTITIES.get(id(vocabulary))
    if cached is not None and cached[0] is vocabulary:
        return dict(cached[1])
    identity = _identity(vocabulary)
    _IDENTITIES[id(vocabulary)] = (vocabulary, dict(identity))
    return identity


def _identity(vocabulary: seqio.Vocabulary) -> dict:
    model_file, folder = _source(vocabulary)
    if model_file is None:
        return _generic_identity(vocabulary)
    added = dict(getattr(vocabulary, "added_tokens", {}) or {})
    digest = hashlib.sha256(read_path_bytes(model_file))
    digest.update(json.dumps({"extra_ids": int(vocabulary.extra_ids),
                              "added_tokens": sorted(added.items(), key=lambda kv: kv[1])},
                             sort_keys=True).encode("utf-8"))
    pieces = vocabulary.tokenizer.GetPieceSize() - int(vocabulary.extra_ids)
    return {"sha256": digest.hexdigest(), "pieces": int(pieces),
            "vocab_size": int(vocabulary.vocab_size), "extra_ids": int(vocabulary.extra_ids),
            "added_tokens": len(added),
            "sentinels": "appended" if vocabulary.extra_ids else "built-in",
            "source": folder or model_file}


PROBE_TEXT = "Patient with dilated cardiomyopathy. Paciente con fiebre; patient fébrile; " \
    "paziente stabile. 0123456789 <extra_id_0>"


def _generic_identity(vocabulary: seqio.Vocabulary) -> dict:
    """Identity of a vocabulary without a sentencepiece file (a user's seqio.ByteVocabulary,
    a word-level vocabulary, ...): its class, size, extra ids and the ids of a probe text."""
    try:
        probe = [int(i) for i in vocabulary.encode(PROBE_TEXT)]
    except Exception:  # pylint: disable=broad-except - e.g. PassThroughVocabulary takes ids
        probe = None
    kind = f"{type(vocabulary).__module__}.{type(vocabulary).__qualname__}"
    digest = hashlib.sha256(json.dumps(
        {"class": kind, "vocab_size": int(vocabulary.vocab_size),
         "extra_ids": int(vocabulary.extra_ids), "probe": probe}, sort_keys=True).encode())
    return {"sha256": digest.hexdigest(), "pieces": int(vocabulary.vocab_size),
            "vocab_size": int(vocabulary.vocab_size), "extra_ids": int(vocabulary.extra_ids),
            "added_tokens": 0, "sentinels": "n/a", "source": str(vocabulary)}


def vocabulary_files(vocabulary: seqio.Vocabulary) -> dict[str, bytes]:
    """{file name: bytes} that reproduce the vocabulary in a checkpoint folder: spiece.model
    (+ added_tokens.json), the layout checkpoint_vocabulary_dir / load_vocabulary read."""
    model_file, _ = _source(vocabulary)
    if model_file is None:
        return {}  # nothing to copy: the record alone identifies it
    files = {SPIECE_FILE: read_path_bytes(model_file)}
    added = dict(getattr(vocabulary, "added_tokens", {}) or {})
    if added:
        files[ADDED_TOKENS_FILE] = json.dumps(added, indent=2, ensure_ascii=False).encode()
    return files


def resolve_vocabulary(name: str | None, checkpoint_path: str | None = None) -> str:
    """The VOCABULARY value the tasks are registered with, for a run on `checkpoint_path`.

    A checkpoint that carries its own vocabulary (a Hugging Face folder's spiece.model with
    its added tokens, our MODEL_DIR's copy, a hub id's snapshot) supplies it by default:
    when `name` is None or "mt5" that folder is returned. "tiny" or an explicit file/folder
    path always wins. Without a checkpoint vocabulary, None means "tiny".
    """
    if name not in (None, "mt5"):
        vocabulary_path(name)  # validates the name now, with the list of valid names
        return name
    _ACTIVE.pop(name, None)
    folder = None
    if checkpoint_path:
        path = checkpoint_path
        if hub.is_hub_id(path):
            path = hub.resolve_checkpoint(path)
        folder = checkpoint_vocabulary_dir(path)
    fallback = "tiny" if name is None else name
    resolved = fallback
    if folder is not None:
        resolved = folder
        # The same vocabulary as the named one (our tiny MODEL_DIR's copy): keep the name, so
        # tasks registered elsewhere with that name mix with these (seqio compares features).
        path = vocabulary_path(fallback)
        if "://" not in path and os.path.exists(path):
            try:
                if (vocabulary_identity(_load(path))["sha256"]
                        == vocabulary_identity(_load(folder))["sha256"]):
                    resolved = fallback
            except (OSError, ValueError):
                pass  # the checkpoint's own vocabulary it is; loading it reports any problem
    _ACTIVE[name] = resolved
    return resolved
