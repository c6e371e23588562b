"""What every benchmark reader shares: the error type, languages, and strict file access.

Used by the sequence-labelling readers (tasks/seqlabel_readers.py) and the BioASQ reader
(tasks/qa.py); `tasks.benchmark_readers` re-exports all of it. Paths may be local or any URL
the path layer reads (`gs://bucket/...`; medmt5/data/paths.py, no model code).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from medmt5.data import paths  # local, gs:// and other etils.epath URLs (no model code)

LANGUAGES = ("en", "es", "fr", "it")


class BenchmarkDataError(ValueError):
    """A benchmark file is missing or malformed; the message names file and line."""


def check_language(lang: str, allowed: Sequence[str] = LANGUAGES) -> str:
    if lang not in allowed:
        raise BenchmarkDataError(f"unknown language {lang!r}: expected one of {list(allowed)}")
    return lang


def check_split(split: str, allowed: Sequence[str]) -> str:
    if split not in allowed:
        raise BenchmarkDataError(f"unknown split {split!r}: expected one of {list(allowed)}")
    return split


def missing_file(path: str) -> BenchmarkDataError:
    return BenchmarkDataError(
        f"{path}: no such file; set MEDMT5_BENCHMARK_DIR (or the data_dir argument) to "
        "the folder holding the benchmark files (see docs/data.md, Benchmarks)")


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (no trailing empty line); errors name file and line."""
    if not paths.exists(path):
        raise missing_file(path)
    raw = paths.read_bytes(path)
    if not raw.strip():
        raise BenchmarkDataError(f"{path}: file is empty")
    out = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise BenchmarkDataError(f"{path}:{n}: invalid UTF-8 ({e.reason} at byte "
                                     f"{e.start}); re-encode the file as UTF-8") from None
    if out and out[-1] == "":
        out.pop()
    return out


def read_parquet(path: str):
    """A pyarrow Table of a local or remote parquet file (remote: through the path layer,
    so gs:// works wherever gcsfs / tf.io.gfile do, emulators included)."""
    import pyarrow.parquet as pq  # lazy: only parquet inputs need pyarrow
    if not paths.is_remote(path):
        return pq.read_table(path)
    with paths.open(path, "rb") as f:
        return pq.read_table(f)


def read_parquet_strict(path: str):
    """`read_parquet`, with a missing or unreadable file reported as a BenchmarkDataError."""
    if not paths.exists(path):
        raise missing_file(path)
    try:
        return read_parquet(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise BenchmarkDataError(f"{path}: cannot read parquet ({e})") from None


def json_lines(lines: Iterable[str], path: str,
               error: type[Exception]) -> Iterator[tuple[str, object]]:
    """("file:line", value) for every non-blank line of a JSONL file; invalid JSON raises
    `error` naming the file, the line and the column."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: invalid JSON ({e.msg}, column {e.colno})") from None
        yield f"{path}:{n}", value
