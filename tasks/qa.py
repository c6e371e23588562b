"""Abstractive biomedical QA: multilingual BioASQ-6B as seqio tasks.

Rows (`HiTZ/Multilingual-BioASQ-6B` layout): `body` (the question), `snippets` (list of
strings or of dicts with `text`), `ideal_answer` (string or list of strings),
`exact_answer` (kept, unused). Files: `{root}/bioasq/{lang}/{split}.jsonl` (one row per
line), `{split}.json` (the original BioASQ `{"questions": [...]}` or a list), or HF parquet
`{split}-*.parquet`; splits train and test; languages en/es/fr/it.

Example: inputs `question: <body> context: <snippets joined by spaces>`, targets the
first ideal answer, `answers` ([None] str) every ideal answer (references for ROUGE). Metric: ROUGE-1/2/L F-measure with an accent-preserving tokenizer
(`tasks.metrics.rouge`). Tasks `bioasq_en`, `bioasq_es`, `bioasq_fr`, `bioasq_it`;
mixture `bioasq_multilingual`. Registered when tasks.benchmarks is imported.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from tasks.benchmark_readers import BenchmarkDataError, read_lines, check_language

QA_SPLITS = ("train", "test")
QA_TASKS = {"bioasq_en": "en", "bioasq_es": "es", "bioasq_fr": "fr", "bioasq_it": "it"}
QA_MIXTURE = "bioasq_multilingual"


@dataclasses.dataclass(frozen=True)
class QAExample:
    question: str
    snippets: Tuple[str, ...]
    answers: Tuple[str, ...]     # ideal answers; the first is the training target
    source: str                  # "file:line" or "file:row N"


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: {field} must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def parse_row(row: Any, where: str) -> QAExample:
    """Validate one BioASQ row; errors name `where` and the field."""
    if not isinstance(row, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in ("body", "snippets", "ideal_answer"):
        if field not in row:
            raise BenchmarkDataError(f"{where}: missing field {field!r} (has {sorted(row)})")
    question = _text(row["body"], where, "body")
    snippets = row["snippets"]
    if not isinstance(snippets, list):
        raise BenchmarkDataError(f"{where}: snippets must be a list")
    texts = []
    for i, s in enumerate(snippets):
        if isinstance(s, dict):
            if "text" not in s:
                raise BenchmarkDataError(f"{where}: snippet {i} has no 'text'")
            s = s["text"]
        texts.append(_text(s, where, f"snippet {i}"))
    ideal = row["ideal_answer"]
    ideal = [ideal] if isinstance(ideal, str) else ideal
    if not isinstance(ideal, list) or not ideal:
        raise BenchmarkDataError(f"{where}: ideal_answer must be a string or a non-empty list")
    answers = tuple(_text(a, where, "ideal_answer") for a in ideal)
    return QAExample(question, tuple(texts), answers, where)


def read_bioasq(path: str) -> List[QAExample]:
    """Read a BioASQ file (.jsonl, .json or .parquet) strictly."""
    if path.endswith(".jsonl"):
        rows = []
        for n, line in enumerate(read_lines(path), start=1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise BenchmarkDataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
    elif path.endswith(".json"):
        text = "\n".join(read_lines(path))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkDataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if isinstance(data, dict):
            if "questions" not in data:
                raise BenchmarkDataError(f"{path}: expected a list or {{\"questions\": [...]}}")
            data = data["questions"]
        if not isinstance(data, list):
            raise BenchmarkDataError(f"{path}: expected a list of questions")
        rows = [(f"{path}: question {i}", r) for i, r in enumerate(data)]
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq
        try:
            rows = [(f"{path}:row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise BenchmarkDataError(f"{path}: cannot read parquet ({e})") from None
    else:
        raise BenchmarkDataError(f"{path}: unsupported extension; expected .jsonl, .json, .parquet")
    if not rows:
        raise BenchmarkDataError(f"{path}: no questions")
    return [parse_row(r, where) for where, r in rows]


def bioasq_files(root: str, lang: str, split: str) -> List[str]:
    """The file(s) of one language/split under `root` (= <benchmark dir>/bioasq)."""
    check_language(lang)
    if split not in QA_SPLITS:
        raise BenchmarkDataError(f"unknown split {split!r}: expected one of {list(QA_SPLITS)}")
    folder = os.path.join(root, lang)
    for name in (f"{split}.jsonl", f"{split}.json", f"{split}.parquet"):
        if os.path.exists(os.path.join(folder, name)):
            return [os.path.join(folder, name)]
    shards = sorted(glob.glob(os.path.join(folder, f"{split}-*.parquet")))
    if shards:
        return shards
    raise BenchmarkDataError(
        f"no BioASQ file for {lang}/{split} under {folder}: expected {split}.jsonl, "
        f"{split}.json or {split}-*.parquet; set MEDMT5_BENCHMARK_DIR")


def make_example(ex: QAExample) -> Dict[str, str]:
    return {"inputs": f"question: {ex.question} context: {' '.join(ex.snippets)}",
            "targets": ex.answers[0]}


def read_split(root: str, lang: str, split: str) -> List[QAExample]:
    out: List[QAExample] = []
    for path in bioasq_files(root, lang, split):
        out.extend(read_bioasq(path))
    return out


def _dataset_fn(lang: str, root: str):
    def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
        import tensorflow as tf
        del shuffle_files, seed
        examples = read_split(root, lang, split)  # bad files fail here, not inside tf.data

        def generate():
            for e in examples:
                yield dict(make_example(e), answers=list(e.answers))

        return tf.data.Dataset.from_generator(generate, output_signature={
            "inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
            "answers": tf.TensorSpec([None], tf.string)})
    return dataset_fn


def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def postprocess(output, example=None, is_target=False):
    """seqio postprocess: predictions -> str; targets -> every ideal answer (the
    example's `answers` feature) so ROUGE takes the best-matching reference."""
    if is_target and example is not None and "answers" in example:
        return [_str(a) for a in example["answers"]]
    return _str(output)


def register_qa_tasks(data_dir: Optional[str] = None, vocabulary: str = "tiny") -> None:
    """(Re-)register the BioASQ tasks and mixture; data under `<data_dir>/bioasq`."""
    import seqio
    from tasks import benchmarks  # lazy: benchmarks imports this module
    from tasks import metrics

    root = os.path.join(benchmarks.benchmark_dir(data_dir), "bioasq")
    features = benchmarks.output_features(vocabulary)
    seqio.MixtureRegistry.remove(QA_MIXTURE)
    for name, lang in QA_TASKS.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(_dataset_fn(lang, root), splits=list(QA_SPLITS)),
            preprocessors=[seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features=features,
            postprocess_fn=postprocess,
            metric_fns=[metrics.rouge])
    seqio.MixtureRegistry.add(QA_MIXTURE, list(QA_TASKS), default_rate=1.0)
