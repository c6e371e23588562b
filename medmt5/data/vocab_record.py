"""Vocabulary identity stored with checkpoints and prompts, and the check on load.

Every MODEL_DIR our trainer writes (and MODEL_DIR/best, and every exported prompt folder)
holds `vocab.json`: the identity of the vocabulary the run trained with
(tasks.vocab.vocabulary_identity: sha256 over the sentencepiece file, its appended sentinels
and added tokens; piece count; vocab size; source). A MODEL_DIR also keeps a copy of the
sentencepiece model (spiece.model, + added_tokens.json), so the checkpoint carries its own
vocabulary as a Hugging Face folder does.

Resuming, initialising from a checkpoint, attaching a prompt, or scoring a checkpoint with a
different vocabulary stops with both hashes and what to do; ALLOW_VOCABULARY_CHANGE=True
(gin macro) lets a deliberate change through with a warning. A checkpoint without a record
(older runs, T5X checkpoints, Hugging Face folders without spiece.model) only warns.

It reads the vocabularies through `tasks.vocab` (seqio), so it lives in the data glue
(medmt5.data), not in medmt5.checkpointing: the core never imports `tasks`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from medmt5.checkpointing.atomic_dir import atomic_write_bytes
from medmt5.data import hub, paths
from medmt5.data import pipeline as data_lib
from tasks import vocab as vocab_lib

log = logging.getLogger(__name__)

RECORD_FILE = "vocab.json"
ALLOW_FLAG = "--gin.ALLOW_VOCABULARY_CHANGE=True"


class VocabularyMismatch(ValueError):
    """The vocabulary of this run differs from the one a checkpoint or prompt was trained with."""


def run_vocabulary(mixture_or_task_name: str):
    """The seqio vocabulary of a registered task or mixture (all its tasks must share one)."""
    provider = data_lib.get_task_or_mixture(mixture_or_task_name)
    tasks = getattr(provider, "tasks", None) or [provider]
    vocabs = []
    for task in tasks:
        for key, feature in task.output_features.items():
            if key in ("inputs", "targets") and feature.vocabulary not in vocabs:
                vocabs.append(feature.vocabulary)
    ids = {vocab_lib.vocabulary_identity(v)["sha256"] for v in vocabs}
    if len(ids) > 1:
        raise ValueError(f"{mixture_or_task_name!r}: its tasks use {len(ids)} different "
                         f"vocabularies ({', '.join(str(v) for v in vocabs)}); register all of "
                         "them with one VOCABULARY.")
    return vocabs[0]


def run_identity(mixture_or_task_name: str) -> dict:
    return vocab_lib.vocabulary_identity(run_vocabulary(mixture_or_task_name))


def read_record(folder: str) -> dict | None:
    path = paths.join(folder, RECORD_FILE)
    if not paths.isfile(path):
        return None
    try:
        record = json.loads(paths.read_text(path))
    except ValueError as e:
        raise ValueError(f"{path}: unreadable vocabulary record ({e}); delete it to treat the "
                         "checkpoint as one without a record.") from None
    if not isinstance(record, dict) or "sha256" not in record:
        raise ValueError(f"{path}: not a vocabulary record (no 'sha256').")
    return record


def _write_bytes(path: str, data: bytes) -> None:
    """atomic_write_bytes, skipped when the file already holds `data`."""
    if paths.isfile(path) and paths.read_bytes(path) == data:
        return
    atomic_write_bytes(path, data)


def write_record(folder: str, identity: dict, vocabulary: Any = None) -> None:
    """Writes folder/vocab.json and, with `vocabulary`, its spiece.model (+ added_tokens.json)
    so the folder carries its own vocabulary; local or gs:// (MODEL_DIR may be remote)."""
    paths.makedirs(folder)
    if vocabulary is not None:
        for name, data in vocab_lib.vocabulary_files(vocabulary).items():
            _write_bytes(paths.join(folder, name), data)
    _write_bytes(paths.join(folder, RECORD_FILE),
                 json.dumps(identity, indent=2, sort_keys=True).encode("utf-8"))


def checkpoint_record(path: str | None) -> tuple[dict | None, str]:
    """(record or None, where it came from) for a checkpoint path: our MODEL_DIR,
    MODEL_DIR/best, MODEL_DIR/checkpoints/<step>, a Hugging Face folder with spiece.model
    (its identity is computed from the folder), or a prompt .npy / export folder."""
    if not path or not isinstance(path, str):
        return None, ""

    if hub.is_hub_id(path):
        path = hub.resolve_checkpoint(path)

    if paths.is_remote(path):  # gs://: MODEL_DIR, MODEL_DIR/best or .../checkpoints/<step>
        folder = path.rstrip("/")
        for c in (folder, paths.dirname(paths.dirname(folder))):
            record = read_record(c)
            if record is not None:
                return record, paths.join(c, RECORD_FILE)
        return None, ""
    path = os.path.abspath(os.path.expanduser(path))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidates = [folder]
    if os.path.basename(os.path.dirname(folder)) == "checkpoints":
        candidates.append(os.path.dirname(os.path.dirname(folder)))
    if path.endswith(".npy"):  # MODEL_DIR/prompts/prompt_best.npy or EXPORT_DIR/prompt.npy
        candidates = [os.path.splitext(path)[0] + ".vocab"] + candidates + \
            [os.path.dirname(folder)]
    for c in candidates:
        if c.endswith(".vocab"):
            if os.path.isfile(c + ".json"):
                with open(c + ".json", encoding="utf-8") as f:
                    return json.load(f), c + ".json"
            continue
        record = read_record(c)
        if record is not None:
            return record, os.path.join(c, RECORD_FILE)

    own = vocab_lib.checkpoint_vocabulary_dir(path if os.path.isdir(path) else None)
    if own is not None:
        return vocab_lib.vocabulary_identity(vocab_lib.load_vocabulary(own)), \
            os.path.join(own, vocab_lib.SPIECE_FILE)
    return None, ""


def describe(record: dict) -> str:
    return (f"sha256 {record['sha256'][:16]}…, {record.get('pieces', '?'):,} pieces, "
            f"{record.get('vocab_size', '?'):,} ids, {record.get('added_tokens', 0)} added "
            f"tokens, from {record.get('source', '?')}")


def check(expected: dict | None, where: str, actual: dict, what: str,
          allow_change: bool = False) -> None:
    """Raises VocabularyMismatch when `expected` (the record at `where`) differs from the run's
    `actual` identity; warns when there is no record or `allow_change` is set."""
    if expected is None:
        log.warning("%s has no vocabulary record (%s); cannot check that it was trained with "
                    "this run's vocabulary (%s).", what, RECORD_FILE, describe(actual))
        return
    if expected.get("sha256") == actual["sha256"]:
        return
    message = (f"{what} was trained with a different vocabulary than this run.\n"
               f"  {where}: {describe(expected)}\n"
               f"  this run (VOCABULARY): {describe(actual)}\n"
               "Use the checkpoint's own vocabulary (leave VOCABULARY unset or 'mt5' so its "
               "spiece.model is read, or --gin.VOCABULARY=\"'/path/to/its/folder'\"), or, if "
               f"the change is deliberate (e.g. a new tokenizer), pass {ALLOW_FLAG}.")
    if allow_change:
        log.warning("ALLOW_VOCABULARY_CHANGE: %s", message)
        return
    raise VocabularyMismatch(message)


def check_checkpoint(path: str | None, actual: dict, what: str,
                     allow_change: bool = False) -> None:
    record, where = checkpoint_record(path)
    check(record, where, actual, f"{what} {path}", allow_change)


def check_training_run(model_dir: str, mixture_or_task_name: str,
                       initial_checkpoint_path: str | None = None,
                       prompt_files: Sequence[str] = (), allow_change: bool = False,
                       write: bool = True) -> dict:
    """The train-time check: MODEL_DIR's own record (a resumed run), else the initial
    checkpoint's; each prompt file's. Then records the run's vocabulary in MODEL_DIR
    (write=True; process 0 only). Returns the run's identity."""
    vocabulary = run_vocabulary(mixture_or_task_name)

    actual = vocab_lib.vocabulary_identity(vocabulary)

    own = read_record(model_dir) if paths.isdir(model_dir) else None
    if own is not None:
        check(own, os.path.join(model_dir, RECORD_FILE), actual, f"MODEL_DIR {model_dir}",
              allow_change)
    elif initial_checkpoint_path:
        check_checkpoint(initial_checkpoint_path, actual, "INITIAL_CHECKPOINT_PATH",
                         allow_change)
    for prompt in prompt_files or ():
        if prompt:
            check_checkpoint(prompt, actual, "PROMPT_FILE", allow_change)
    if write:
        write_record(model_dir, actual, vocabulary)
    return actual


def check_scoring_run(checkpoint_path: str, task_names: Sequence[str], model_vocab_size: int,
                      allow_change: bool = False) -> None:
    """eval/infer start-up: each task's vocabulary fits the model's embedding rows and is the
    one the checkpoint was trained with (when the checkpoint records or carries one)."""
    for name in task_names:
        data_lib.check_vocabulary(name, model_vocab_size)
    identities = [run_identity(n) for n in task_names]
    for identity in {i["sha256"]: i for i in identities}.values():
        check_checkpoint(checkpoint_path, identity, "CHECKPOINT_PATH", allow_change)
