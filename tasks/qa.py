"""Abstractive biomedical QA: multilingual BioASQ-6B as seqio tasks.

Rows: `body` (the question), `snippets` (list of strings or of dicts with `text`),
`ideal_answer` (string or list of strings), `exact_answer` (kept, unused): the field names
of the original BioASQ JSON. The hub release `HiTZ/Multilingual-BioASQ-6B` is laid out as
`{lang}/{split}-00000-of-00001.parquet` (configs en/es/fr/it, splits train 2,251 / test
500, https://huggingface.co/datasets/HiTZ/Multilingual-BioASQ-6B/tree/main/en); its column
names could not be checked here, so they are a mapping: gin `bioasq_fields.question`,
`.snippets`, `.answers` (the file needs `import tasks.qa`), or `field_map=` in Python.
Files: `{root}/bioasq/{lang}/{split}.jsonl` (one row per line), `{split}.json` (the
original BioASQ `{"questions": [...]}` or a list), or the hub's parquet
`{split}-*.parquet` / `{split}/*.parquet`; splits train and test; languages en/es/fr/it.

Example: inputs `question: <body> context: <snippets joined by spaces>`, targets the
first ideal answer, `answers` ([None] str) every ideal answer (references for ROUGE).
Metric: ROUGE-1/2/L F-measure with an accent-preserving tokenizer
(`tasks.metrics.rouge`). Tasks `bioasq_en`, `bioasq_es`, `bioasq_fr`, `bioasq_it`;
mixture `bioasq_multilingual`. Registered when tasks.benchmarks is imported.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gin
from medmt5.data import paths  # local and gs:// files (no model code)
from tasks import benchmark_dirs, metrics
from tasks import vocab as vocab_lib
from tasks.benchmark_readers import BenchmarkDataError, check_language, read_lines, read_parquet

QA_SPLITS = ("train", "test")
QA_TASKS = {"bioasq_en": "en", "bioasq_es": "es", "bioasq_fr": "fr", "bioasq_it": "it"}
QA_MIXTURE = "bioasq_multilingual"
# role -> column name in the files (the original BioASQ names by default)
DEFAULT_FIELDS = {"question": "body", "snippets": "snippets", "answers": "ideal_answer"}


@gin.configurable
def bioasq_fields(question: str = "body", snippets: str = "snippets",
                  answers: str = "ideal_answer") -> dict[str, str]:
    """The BioASQ column names, bindable in gin (`bioasq_fields.question = 'question'`)."""
    return {"question": question, "snippets": snippets, "answers": answers}


@dataclasses.dataclass(frozen=True)
class QAExample:
    question: str
    snippets: tuple[str, ...]
    answers: tuple[str, ...]     # ideal answers; the first is the training target
    source: str                  # "file:line" or "file:row N"


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: {field} must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def parse_row(row: Any, where: str, fields: dict[str, str] | None = None) -> QAExample:
    """Validate one BioASQ row; errors name `where` and the field."""
    f = dict(DEFAULT_FIELDS, **(fields or {}))
    if not isinstance(row, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for role in ("question", "snippets", "answers"):
        if f[role] not in row:
            raise BenchmarkDataError(
                f"{where}: missing field {f[role]!r} (has {sorted(row)}); if the release names "
                f"the {role} column differently, bind bioasq_fields.{role} in gin "
                "(docs/data.md, BioASQ)")
    question = _text(row[f["question"]], where, f["question"])
    snippets = row[f["snippets"]]
    if not isinstance(snippets, list):
        raise BenchmarkDataError(f"{where}: snippets must be a list")
    texts = []
    for i, s in enumerate(snippets):
        if isinstance(s, dict):
            if "text" not in s:
                raise BenchmarkDataError(f"{where}: snippet {i} has no 'text'")
            s = s["text"]
        texts.append(_text(s, where, f"snippet {i}"))
    ideal = row[f["answers"]]
    ideal = [ideal] if isinstance(ideal, str) else ideal
    if not isinstance(ideal, list) or not ideal:
        raise BenchmarkDataError(
            f"{where}: {f['answers']} must be a string or a non-empty list")
    answers = tuple(_text(a, where, f["answers"]) for a in ideal)
    return QAExample(question, tuple(texts), answers, where)


def read_bioasq(path: str, fields: dict[str, str] | None = None) -> list[QAExample]:
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
        if not paths.exists(path):
            raise BenchmarkDataError(f"{path}: no such file")
        try:
            rows = [(f"{path}:row {i}", r) for i, r in enumerate(read_parquet(path).to_pylist())]
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise BenchmarkDataError(f"{path}: cannot read parquet ({e})") from None
    else:
        raise BenchmarkDataError(f"{path}: unsupported extension; expected .jsonl, .json, .parquet")
    if not rows:
        raise BenchmarkDataError(f"{path}: no questions")
    return [parse_row(r, where, fields) for where, r in rows]


def bioasq_files(root: str, lang: str, split: str) -> list[str]:
    """The file(s) of one language/split under `root` (= <benchmark dir>/bioasq)."""
    check_language(lang)
    if split not in QA_SPLITS:
        raise BenchmarkDataError(f"unknown split {split!r}: expected one of {list(QA_SPLITS)}")
    folder = paths.join(root, lang)
    for name in (f"{split}.jsonl", f"{split}.json", f"{split}.parquet"):
        if paths.exists(paths.join(folder, name)):
            return [paths.join(folder, name)]
    shards = paths.glob(folder, f"{split}-*.parquet") or paths.glob(folder, f"{split}/*.parquet")
    if shards:
        return shards
    raise BenchmarkDataError(
        f"no BioASQ file for {lang}/{split} under {folder}: expected {split}.jsonl, "
        f"{split}.json or {split}-*.parquet; set MEDMT5_BENCHMARK_DIR")


def make_example(ex: QAExample) -> dict[str, str]:
    return {"inputs": f"question: {ex.question} context: {' '.join(ex.snippets)}",
            "targets": ex.answers[0]}


def read_split(root: str, lang: str, split: str,
               fields: dict[str, str] | None = None) -> list[QAExample]:
    out: list[QAExample] = []
    for path in bioasq_files(root, lang, split):
        out.extend(read_bioasq(path, fields))
    return out


def _dataset_fn(lang: str, data_dir: str, fields: dict[str, str] | None = None,
                sources: dict[str, str] | None = None):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        import tensorflow as tf  # lazy: the readers above stay usable without TensorFlow

        del shuffle_files, seed
        root = benchmark_dirs.source_dir(data_dir, "bioasq", sources)  # hub ids resolved here
        examples = read_split(root, lang, split, fields)  # bad files fail here, not inside tf.data

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


def register_qa_tasks(data_dir: str | None = None, vocabulary: str = "tiny",
                      field_map: dict[str, str] | None = None,
                      sources: dict[str, str] | None = None,
                      output_features=None) -> None:
    """(Re-)register the BioASQ tasks and mixture; data under `<data_dir>/bioasq`, or
    `sources["bioasq"]` (a folder or hub dataset id; tasks.benchmark_dirs.source_dir).

    Column names: `field_map`, else the gin binding of `bioasq_fields` (module doc).
    `output_features`: seqio features (default: inputs/targets of `vocabulary`, with EOS)."""
    import seqio  # lazy: the readers above stay usable without seqio/TensorFlow

    root = benchmark_dirs.configured_dir(data_dir)
    fields = dict(bioasq_fields(), **(field_map or {}))
    if output_features is None:
        vocab = vocab_lib.get_vocabulary(vocabulary)
        output_features = {"inputs": seqio.Feature(vocab, add_eos=True, required=True),
                           "targets": seqio.Feature(vocab, add_eos=True)}
    features = output_features
    seqio.MixtureRegistry.remove(QA_MIXTURE)
    for name, lang in QA_TASKS.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(_dataset_fn(lang, root, fields, sources),
                                            splits=list(QA_SPLITS)),
            preprocessors=[seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features=features,
            postprocess_fn=postprocess,
            metric_fns=[metrics.rouge])
    seqio.MixtureRegistry.add(QA_MIXTURE, list(QA_TASKS), default_rate=1.0)
