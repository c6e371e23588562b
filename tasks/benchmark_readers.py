"""Strict readers for the sequence-labelling benchmark files.

Two layouts:
  * Hugging Face token-classification rows (multilingual AbstRCT): `.jsonl` (one JSON
    object per line) or `.parquet`, each row with `tokens` (list of str) and `labels`
    (IOB strings, or class ids with the names from `label_names=` or from the parquet
    file's Hugging Face `ClassLabel` metadata). Directory layout
    `{root}/{lang}/{split}.jsonl` or `{root}/{lang}/{split}-00000-of-00001.parquet`
    (as downloaded from the hub), splits neoplasm_train, neoplasm_dev, neoplasm_test,
    glaucoma_test, mixed_test.
  * IOB TSV files `{lang}-{dataset}-{split}.tsv`: one `token<TAB>tag` per line, a blank
    line between sentences, `-DOCSTART-` lines ignored. Tags IOB1 or BIO.

Every reader returns `Sentence`s with BIO tags. Errors name the file and line (or row)
and say what is wrong: different numbers of tokens and labels, a label outside the
dataset's label set, a malformed line, an empty file, invalid UTF-8, a token with
whitespace inside. Two things are skipped, counted in `ReadStats` and logged: rows
with no tokens, and whitespace-only tokens tagged `O` (spaCy emits them for double
spaces; a whitespace token inside an entity is an error).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from typing import Iterable, List, Optional, Sequence, Tuple

from tasks import seqlabel

LANGUAGES = ("en", "es", "fr", "it")
ABSTRCT_SPLITS = ("neoplasm_train", "neoplasm_dev", "neoplasm_test", "glaucoma_test",
                  "mixed_test")
TSV_SPLITS = ("train", "dev", "test")

# Label sets (tag names in the text) and languages of each dataset, by the dataset id
# used in the file names.
DATASET_LABELS = {
    "abstrct": ("Claim", "Premise"),
    "ncbi-disease": ("Disease",),
    "bc5cdr-disease": ("Disease",),
    "bc5cdr-chemical": ("Chemical",),
    "diann": ("Disability",),
    "pharmaconer": ("NORMALIZABLES", "NO_NORMALIZABLES", "PROTEINAS", "UNCLEAR"),
    "e3c": ("CLINENTITY",),
}
DATASET_LANGUAGES = {
    "abstrct": ("en", "es", "fr", "it"),
    "ncbi-disease": ("en",),
    "bc5cdr-disease": ("en",),
    "bc5cdr-chemical": ("en",),
    "diann": ("en", "es"),
    "pharmaconer": ("es",),
    "e3c": ("en", "es", "fr", "it"),
}


class BenchmarkDataError(ValueError):
    """A benchmark file is missing or malformed; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class Sentence:
    words: Tuple[str, ...]
    tags: Tuple[str, ...]      # BIO, one per word
    source: str                # "file:line" (TSV, JSONL) or "file:row N" (parquet)


@dataclasses.dataclass
class ReadStats:
    sentences: int = 0
    skipped_empty: int = 0     # rows/sentences with no tokens
    dropped_space_tokens: int = 0


def check_language(lang: str, allowed: Sequence[str] = LANGUAGES) -> str:
    if lang not in allowed:
        raise BenchmarkDataError(f"unknown language {lang!r}: expected one of {list(allowed)}")
    return lang


def _check_split(split: str, allowed: Sequence[str]) -> str:
    if split not in allowed:
        raise BenchmarkDataError(f"unknown split {split!r}: expected one of {list(allowed)}")
    return split


def _finish(where: str, tokens: Sequence[str], tags: Sequence[str], labels: Sequence[str],
            stats: ReadStats) -> Optional[Sentence]:
    """Validate one sentence; returns None if it is skipped (and counts why)."""
    if len(tokens) != len(tags):
        raise BenchmarkDataError(
            f"{where}: {len(tokens)} tokens but {len(tags)} labels; each token needs one label")
    known = set(labels)
    words, kept = [], []
    for i, (tok, tag) in enumerate(zip(tokens, tags)):
        if not isinstance(tok, str) or not isinstance(tag, str):
            raise BenchmarkDataError(f"{where}: token {i} is {tok!r} with label {tag!r}; "
                                     "tokens and labels must be strings")
        try:
            prefix, label = seqlabel.split_tag(tag)
        except ValueError as e:
            raise BenchmarkDataError(f"{where}: token {i} ({tok!r}): {e}") from None
        if label is not None and label not in known:
            raise BenchmarkDataError(
                f"{where}: token {i} ({tok!r}) has label {tag!r}, not in this dataset's "
                f"label set {sorted(known)}; fix the file or DATASET_LABELS in "
                "tasks/benchmark_readers.py")
        if not tok.strip():
            if prefix != seqlabel.OUTSIDE:
                raise BenchmarkDataError(
                    f"{where}: token {i} is whitespace-only ({tok!r}) but tagged {tag!r}")
            stats.dropped_space_tokens += 1
            continue
        if any(ch.isspace() for ch in tok):
            raise BenchmarkDataError(
                f"{where}: token {i} ({tok!r}) contains whitespace; tokens are joined by "
                "spaces for the model, so split or join it in the file")
        words.append(tok)
        kept.append(tag)
    if not words:
        stats.skipped_empty += 1
        return None
    stats.sentences += 1
    return Sentence(tuple(words), tuple(seqlabel.to_bio(kept)), where)


def _log(path: str, stats: ReadStats) -> None:
    if stats.skipped_empty or stats.dropped_space_tokens:
        logging.warning("%s: skipped %d empty sentences, dropped %d whitespace-only O tokens",
                        path, stats.skipped_empty, stats.dropped_space_tokens)


def read_lines(path: str) -> List[str]:
    if not os.path.exists(path):
        raise BenchmarkDataError(
            f"{path}: no such file; set MEDMT5_BENCHMARK_DIR (or the data_dir argument) to "
            "the folder holding the benchmark files (see docs/data.md, Benchmarks)")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise BenchmarkDataError(f"{path}: file is empty")
    lines = raw.split(b"\n")
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise BenchmarkDataError(f"{path}:{n}: invalid UTF-8 ({e.reason} at byte "
                                     f"{e.start}); re-encode the file as UTF-8") from None
    if out and out[-1] == "":
        out.pop()
    return out


def read_iob_tsv(path: str, labels: Sequence[str],
                 stats: Optional[ReadStats] = None) -> List[Sentence]:
    """Read a `token<TAB>tag` file (blank line between sentences) -> BIO sentences."""
    stats = stats if stats is not None else ReadStats()
    sentences: List[Sentence] = []
    tokens: List[str] = []
    tags: List[str] = []
    start = 1

    def flush():
        if tokens:
            s = _finish(f"{path}:{start}", tokens, tags, labels, stats)
            if s is not None:
                sentences.append(s)
        tokens.clear()
        tags.clear()

    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip():
            raise BenchmarkDataError(
                f"{path}:{n}: malformed line {line!r}; expected 'token<TAB>tag'")
        if not tokens:
            start = n
        tag = fields[1].strip()
        try:
            _, label = seqlabel.split_tag(tag)
        except ValueError as e:
            raise BenchmarkDataError(f"{path}:{n}: {e}") from None
        if label is not None and label not in labels:
            raise BenchmarkDataError(
                f"{path}:{n}: label {tag!r} is not in this dataset's label set "
                f"{sorted(labels)}; fix the file or DATASET_LABELS in tasks/benchmark_readers.py")
        tokens.append(fields[0])
        tags.append(tag)
    flush()
    _log(path, stats)
    if not sentences:
        raise BenchmarkDataError(f"{path}: no sentences (only blank or -DOCSTART- lines)")
    return sentences


def _hf_label_names(schema) -> Optional[List[str]]:
    """ClassLabel names of the `labels` column from a parquet file's HF metadata."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        feature = json.loads(meta)["info"]["features"]["labels"]
        inner = feature.get("feature", feature)
        if isinstance(feature, list):
            inner = feature[0]
        return list(inner["names"])
    except (KeyError, TypeError, IndexError, json.JSONDecodeError):
        return None


def _rows_jsonl(path: str) -> Iterable[Tuple[str, object]]:
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkDataError(
                f"{path}:{n}: invalid JSON ({e.msg}, column {e.colno})") from None
        yield f"{path}:{n}", row


def read_token_rows(path: str, labels: Sequence[str],
                    label_names: Optional[Sequence[str]] = None,
                    stats: Optional[ReadStats] = None) -> List[Sentence]:
    """Read HF token-classification rows (`tokens`, `labels`) from .jsonl or .parquet.

    Integer labels are mapped through `label_names` (argument first, then the parquet
    file's HF ClassLabel metadata); without names they are an error.
    """
    stats = stats if stats is not None else ReadStats()
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        if not os.path.exists(path):
            raise BenchmarkDataError(f"{path}: no such file; set MEDMT5_BENCHMARK_DIR")
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise BenchmarkDataError(f"{path}: cannot read parquet ({e})") from None
        if label_names is None:
            label_names = _hf_label_names(table.schema)
        for col in ("tokens", "labels"):
            if col not in table.column_names:
                raise BenchmarkDataError(f"{path}: no column {col!r} (has {table.column_names})")
        rows = [(f"{path}:row {i}", {"tokens": t, "labels": l}) for i, (t, l) in enumerate(
            zip(table.column("tokens").to_pylist(), table.column("labels").to_pylist()))]
        if not rows:
            raise BenchmarkDataError(f"{path}: file has no rows")
    elif path.endswith(".jsonl") or path.endswith(".json"):
        rows = list(_rows_jsonl(path))
    else:
        raise BenchmarkDataError(f"{path}: unsupported extension; expected .jsonl or .parquet")
    sentences = []
    for where, row in rows:
        if not isinstance(row, dict) or "tokens" not in row or "labels" not in row:
            raise BenchmarkDataError(f"{where}: expected an object with 'tokens' and 'labels'")
        tokens, tags = row["tokens"], row["labels"]
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise BenchmarkDataError(f"{where}: 'tokens' and 'labels' must be lists")
        if any(isinstance(t, int) and not isinstance(t, bool) for t in tags):
            if label_names is None:
                raise BenchmarkDataError(
                    f"{where}: labels are class ids but no label names are known; pass "
                    "label_names=[...] or use the parquet file with its HF metadata")
            mapped = []
            for t in tags:
                if isinstance(t, int) and not isinstance(t, bool):
                    if not 0 <= t < len(label_names):
                        raise BenchmarkDataError(
                            f"{where}: label id {t} out of range for {len(label_names)} "
                            f"label names {list(label_names)}")
                    t = label_names[t]
                mapped.append(t)
            tags = mapped
        s = _finish(where, tokens, tags, labels, stats)
        if s is not None:
            sentences.append(s)
    _log(path, stats)
    if not sentences:
        raise BenchmarkDataError(f"{path}: no non-empty sentences")
    return sentences


def abstrct_file(root: str, lang: str, split: str) -> str:
    """The file of one AbstRCT language/split under `root` (jsonl or HF parquet shard)."""
    check_language(lang, DATASET_LANGUAGES["abstrct"])
    _check_split(split, ABSTRCT_SPLITS)
    folder = os.path.join(root, lang)
    candidates = [os.path.join(folder, f"{split}.jsonl"), os.path.join(folder, f"{split}.parquet")]
    candidates += sorted(glob.glob(os.path.join(folder, f"{split}-*.parquet")))
    candidates += sorted(glob.glob(os.path.join(folder, split, "*.parquet")))
    found = [c for c in candidates if os.path.exists(c)]
    if not found:
        raise BenchmarkDataError(
            f"no AbstRCT file for {lang}/{split} under {folder}: expected {split}.jsonl or "
            f"{split}-00000-of-00001.parquet; set MEDMT5_BENCHMARK_DIR to the benchmark folder")
    return found[0]


def read_abstrct(root: str, lang: str, split: str, labels: Sequence[str] = ("Claim", "Premise"),
                 label_names: Optional[Sequence[str]] = None) -> List[Sentence]:
    """All sentences of an AbstRCT language/split (sharded parquet files concatenated)."""
    first = abstrct_file(root, lang, split)
    files = [first]
    if first.endswith(".parquet"):  # every shard of the split
        folder = os.path.join(root, lang)
        files = sorted(glob.glob(os.path.join(folder, f"{split}-*.parquet"))
                       + glob.glob(os.path.join(folder, split, "*.parquet"))) or [first]
    out: List[Sentence] = []
    for f in files:
        out.extend(read_token_rows(f, labels, label_names))
    return out


def tsv_file(root: str, lang: str, dataset: str, split: str) -> str:
    if dataset not in DATASET_LANGUAGES:
        raise BenchmarkDataError(f"unknown dataset {dataset!r}: expected one of "
                                 f"{sorted(DATASET_LANGUAGES)}")
    check_language(lang, DATASET_LANGUAGES[dataset])
    _check_split(split, TSV_SPLITS)
    return os.path.join(root, f"{lang}-{dataset}-{split}.tsv")
