"""Strict reader for BioASQ task B questions, in the layouts of the real releases.

The official release (BioASQ task B training and golden files, e.g.
`BioASQ-training6b/BioASQ-trainingDataset6b.json`, `Task6BGoldenEnriched/6B1_golden.json`) is
one JSON object `{"questions": [...]}`. Each question, with its types as in the files:
`id` (str), `type` ("yesno" | "factoid" | "list" | "summary"), `body` (str, the question),
`documents` (list of PubMed URLs), `concepts`, `triples`, `ideal_answer` (list of str; a
bare str in some older files), `exact_answer` (yesno: str; factoid, list: list of lists of
synonyms; absent for summary) and `snippets`: a list of objects `{"text", "document",
"beginSection", "endSection", "offsetInBeginSection", "offsetInEndSection"}`.
Checked against a copy of the real 5B golden file (github.com/Neelectric/BioLlama,
benchmarks/BioASQ/Task5BGoldenEnriched/5B1_golden.json) and against BigBio's loader
(github.com/bigscience-workshop/biomedical,
bigbio/hub/hub_repos/bioasq_task_b/bioasq_task_b.py: its source schema, str-or-list
`ideal_answer`, questions without `snippets` in some training files).

The hub release `HiTZ/Multilingual-BioASQ-6B` (configs en/es/fr/it, splits train 2,251 and
test 500; file tree https://huggingface.co/datasets/HiTZ/Multilingual-BioASQ-6B/tree/main)
is `{lang}/{split}-00000-of-00001.parquet`, one row per question. Its rows are read with
the same BioASQ field names (`body`, `type`, `snippets`, `exact_answer`, `ideal_answer`, as
used by a public loader of that dataset, github.com/Neelectric/BioLlamaV2,
src/load_benchmark.py); the parquet column types could not be checked here (no network), so
snippets may be objects with `text` or plain strings, and a release whose columns are named
otherwise is read through a field mapping (`fields=`, gin `bioasq_fields` in tasks/qa.py).

Read per question: `body` and `ideal_answer` (required), `snippets` (required as a field of
the file: a question without it, as in some older training files, gets an empty context,
counted and logged), `id` and `type` (optional strings, kept in `QAExample`). `exact_answer`
is not used (its shape depends on the type). Errors name the file, the question (index, or line /
row, and the id when there is one) and the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from medmt5.data import paths  # local and gs:// files (no model code)
from tasks.benchmark_files import (
    BenchmarkDataError,
    check_language,
    check_split,
    read_lines,
    read_parquet_strict,
)

QA_SPLITS = ("train", "test")
QUESTION_TYPES = ("yesno", "factoid", "list", "summary")  # the values of `type` in the releases
# role -> field name in the files (the original BioASQ names by default)
DEFAULT_FIELDS = {"question": "body", "snippets": "snippets", "answers": "ideal_answer"}
# The official English release of BioASQ 6B under a language folder: the training file
# and the five golden test batches (their names in the BioASQ downloads).
OFFICIAL_FILES = {
    "train": ("BioASQ-trainingDataset6b.json", "BioASQ-training6b/BioASQ-trainingDataset6b.json"),
    "test": ("6B*_golden.json", "Task6BGoldenEnriched/6B*_golden.json"),
}


@dataclasses.dataclass(frozen=True)
class QAExample:
    question: str
    snippets: tuple[str, ...]
    answers: tuple[str, ...]     # ideal answers; the first is the training target
    source: str                  # "file: question N", "file:line" or "file:row N"
    qid: str = ""                # the BioASQ `id`, when the file has one
    qtype: str = ""              # the BioASQ `type`, when the file has one


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: {field} must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def _missing(where: str, row: dict, field: str, role: str) -> BenchmarkDataError:
    return BenchmarkDataError(
        f"{where}: missing field {field!r} (has {sorted(row)}); if the release names the "
        f"{role} field differently, bind bioasq_fields.{role} in gin (docs/data.md, BioASQ)")


def _snippet_texts(value: Any, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BenchmarkDataError(
            f"{where}: {field} must be a list, got {type(value).__name__}")
    texts = []
    for i, s in enumerate(value):
        if isinstance(s, dict):
            if s.get("text") is None:
                raise BenchmarkDataError(
                    f"{where}: {field}[{i}] has no 'text' (has {sorted(s)})")
            s = s["text"]
        texts.append(_text(s, where, f"{field}[{i}]"))
    return tuple(texts)


def parse_row(row: Any, where: str, fields: dict[str, str] | None = None,
              snippets_optional: bool = False) -> QAExample:
    """Validate one question; errors name `where`, the question's id and the field.

    `snippets_optional`: a question without the snippets field gets an empty context (the
    file has the field on other questions); otherwise its absence is an error."""
    f = dict(DEFAULT_FIELDS, **(fields or {}))
    if not isinstance(row, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    qid = row.get("id")
    if qid is not None and not isinstance(qid, str):
        raise BenchmarkDataError(f"{where}: 'id' must be a string, got {qid!r}")
    at = f"{where} (id {qid})" if qid else where
    for role in ("question", "answers"):
        if row.get(f[role]) is None:
            raise _missing(at, row, f[role], role)
    qtype = row.get("type")  # not checked against QUESTION_TYPES: unused here
    if qtype is not None and not isinstance(qtype, str):
        raise BenchmarkDataError(f"{at}: 'type' must be a string such as 'summary', got "
                                 f"{qtype!r}")
    question = _text(row[f["question"]], at, f["question"])
    if row.get(f["snippets"]) is None:
        if not snippets_optional:
            raise _missing(at, row, f["snippets"], "snippets")
        snippets: tuple[str, ...] = ()
    else:
        snippets = _snippet_texts(row[f["snippets"]], at, f["snippets"])
    ideal = row[f["answers"]]
    ideal = [ideal] if isinstance(ideal, str) else ideal
    if not isinstance(ideal, list) or not ideal:
        raise BenchmarkDataError(
            f"{at}: {f['answers']} must be a non-empty list of strings (or a string)")
    answers = tuple(_text(a, at, f"{f['answers']}[{i}]") for i, a in enumerate(ideal))
    return QAExample(question, snippets, answers, where, qid or "", qtype or "")


def _jsonl_rows(path: str, lines: list[str]) -> list[tuple[str, Any]]:
    rows = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise BenchmarkDataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
    return rows


def _json_rows(path: str) -> list[tuple[str, Any]]:
    """The questions of an official `{"questions": [...]}` file (or of a JSON list). A
    `.json` holding one object per line (what `datasets`' to_json writes) is read as JSONL."""
    lines = read_lines(path)
    try:
        data = json.loads("\n".join(lines))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            return _jsonl_rows(path, lines)
        raise BenchmarkDataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        if not isinstance(data.get("questions"), list):
            raise BenchmarkDataError(
                f"{path}: expected the BioASQ layout {{\"questions\": [...]}}, got an object "
                f"with keys {sorted(data)}")
        data = data["questions"]
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{path}: expected {{\"questions\": [...]}} or a list")
    return [(f"{path}: question {i}", r) for i, r in enumerate(data)]


def read_bioasq(path: str, fields: dict[str, str] | None = None) -> list[QAExample]:
    """Read a BioASQ file (.json, .jsonl or .parquet) strictly (module doc)."""
    if path.endswith(".jsonl"):
        rows = _jsonl_rows(path, read_lines(path))
    elif path.endswith(".json"):
        rows = _json_rows(path)
    elif path.endswith(".parquet"):
        rows = [(f"{path}:row {i}", r)
                for i, r in enumerate(read_parquet_strict(path).to_pylist())]
    else:
        raise BenchmarkDataError(f"{path}: unsupported extension; expected .json, .jsonl, .parquet")
    if not rows:
        raise BenchmarkDataError(f"{path}: no questions")
    field = dict(DEFAULT_FIELDS, **(fields or {}))["snippets"]
    # The field must be in the file; single questions without it (older releases) are kept.
    anywhere = any(isinstance(r, dict) and r.get(field) is not None for _, r in rows)
    examples = [parse_row(r, where, fields, snippets_optional=anywhere) for where, r in rows]
    bare = sum(not e.snippets for e in examples)
    if bare:
        logging.warning("%s: %d of %d questions have no snippets; their input has an empty "
                        "context", path, bare, len(examples))
    return examples


def bioasq_files(root: str, lang: str, split: str) -> list[str]:
    """The file(s) of one language/split under `root` (= <benchmark dir>/bioasq), the first
    layout found in `root/{lang}/`: `{split}.jsonl`, `{split}.json`, `{split}.parquet`, the
    hub shards `{split}-*.parquet` (or `{split}/*.parquet`), the official 6B files."""
    check_language(lang)
    check_split(split, QA_SPLITS)
    folder = paths.join(root, lang)
    for name in (f"{split}.jsonl", f"{split}.json", f"{split}.parquet"):
        if paths.exists(paths.join(folder, name)):
            return [paths.join(folder, name)]
    for pattern in (f"{split}-*.parquet", f"{split}/*.parquet", *OFFICIAL_FILES[split]):
        found = paths.glob(folder, pattern)
        if found:
            return found
    raise BenchmarkDataError(
        f"no BioASQ file for {lang}/{split} under {folder}: expected the hub download "
        f"{split}-00000-of-00001.parquet, {split}.json / {split}.jsonl, or the official "
        f"{' or '.join(OFFICIAL_FILES[split])}; set MEDMT5_BENCHMARK_DIR")


def read_split(root: str, lang: str, split: str,
               fields: dict[str, str] | None = None) -> list[QAExample]:
    out: list[QAExample] = []
    for path in bioasq_files(root, lang, split):
        out.extend(read_bioasq(path, fields))
    return out


def make_example(ex: QAExample) -> dict[str, str]:
    """inputs `question: <body> context: <snippets joined by spaces>`, targets the first
    ideal answer (this project's text-to-text format)."""
    return {"inputs": f"question: {ex.question} context: {' '.join(ex.snippets)}",
            "targets": ex.answers[0]}
