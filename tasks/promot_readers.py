"""Strict readers for the ProMoT fine-tuning and in-context evaluation datasets.

Files are JSON Lines (one example per line: SuperGLUE's JSONL release, `datasets` exports)
or parquet as downloaded from the Hugging Face hub, with the public datasets' fields:

  rte, cb        {"premise", "hypothesis", "label", "idx"}; label "entailment" |
                 "not_entailment" (RTE) or "entailment" | "contradiction" | "neutral" (CB),
                 or the Hugging Face `super_glue` class ids (RTE 0/1, CB 0/1/2, same order);
                 RTE also in GLUE's layout {"sentence1", "sentence2", "label": 0|1}.
  wic            {"word", "sentence1", "sentence2", "label", ...}; label true/false or 0/1.
  trivia_qa      {"question", "answer": {"value", "aliases", "normalized_aliases", ...}}.
  web_questions  {"question", "answers": [...]}.
  wmt14/16       {"translation": {"en": ..., "fr"|"de"|"ro": ...}}.
  xsum           {"document", "summary", "id"}.
  wiki_lingua    GEM `wiki_lingua` (English): {"source" (article), "target" (summary), ...}.

Directory layout, per `{data_dir}/{dataset}/` (first found wins, see `split_files`):
  {split}.jsonl                      e.g. promot/rte/train.jsonl
  {split}-*.parquet                  the hub's shards, e.g. `huggingface-cli download
                                     aps/super_glue --repo-type dataset --include "rte/*"
                                     --local-dir promot` -> promot/rte/train-00000-of-00001.parquet
  {split}/*.parquet                  the hub's auto-converted branch (refs/convert/parquet)
  <one folder>/{split}-*.parquet     a repository with one config folder or `data/`, e.g.
                                     wmt16_ro_en/ro-en/train-00000-of-00001.parquet
  <one folder>/{split}/*.parquet     the same on the auto-converted branch
                                     (default/train/0000.parquet)
Parquet columns are the same fields (structs read as objects, class ids as ints).
Each parser returns plain dicts with the fields the templates in `tasks/icl.py` use.
Where: `data_dir` (argument, $MEDMT5_PROMOT_DIR, the samples) may be local, `gs://...`, or a
Hugging Face dataset id / `hf://datasets/OWNER/NAME[@rev][/folder]` resolved from the hub
cache (medmt5.data.hub). One dataset's folder may come from elsewhere: gin
`promot_sources.sources = {'rte': 'hf://datasets/aps/super_glue@refs%2Fconvert%2Fparquet/rte'}`.
Errors name the file and line (parquet: row) and say what to fix. Pure Python (no TensorFlow).
"""
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gin
from medmt5.data import hub, paths  # local and gs:// files, hub dataset ids (no model code)
from tasks.benchmark_files import json_lines

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "promot")
DATA_DIR_ENV = "MEDMT5_PROMOT_DIR"

LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "ro": "Romanian"}


class PromotDataError(ValueError):
    """A ProMoT data file is missing or malformed; the message names file and line."""


def _resolve(path: str, what: str) -> str:
    try:
        return hub.resolve_data_dir(path)
    except hub.HubError as e:
        raise PromotDataError(f"{what}: {e}") from None


def data_dir(explicit: str = None) -> str:
    """`explicit`, else $MEDMT5_PROMOT_DIR, else the shipped samples (tasks/data/promot);
    a hub dataset id is resolved to its snapshot folder in the hub cache."""
    return _resolve(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR,
                    "ProMoT data folder")


@gin.configurable
def promot_sources(sources: dict[str, str] | None = None) -> dict[str, str]:
    """dataset folder name -> the folder that replaces `{data_dir}/{dataset}` (local, gs://
    or a hub dataset id), bindable in gin (`promot_sources.sources = {...}`)."""
    unknown = sorted(set(sources or {}) - set(PARSERS))
    if unknown:
        raise PromotDataError(f"promot_sources.sources: unknown dataset(s) {unknown}; "
                              f"known: {sorted(PARSERS)}")
    return dict(sources or {})


def dataset_folder(root: str, dataset: str) -> str:
    """`{root}/{dataset}`, or the dataset's `promot_sources` folder (hub ids resolved)."""
    override = promot_sources().get(dataset)
    if override:
        return _resolve(override, f"promot_sources.sources[{dataset!r}]")
    return paths.join(root, dataset)


def split_files(root: str, dataset: str, split: str) -> list[str]:
    """The file(s) of one dataset split: JSONL, or the hub's parquet shards (module doc)."""
    folder = dataset_folder(root, dataset)
    jsonl = paths.join(folder, f"{split}.jsonl")
    if paths.isfile(jsonl):
        return [jsonl]
    for pattern in (f"{split}-*.parquet", f"{split}.parquet", f"{split}/*.parquet"):
        found = paths.glob(folder, pattern)
        if found:
            return found
    nested = (paths.glob(folder, f"*/{split}-*.parquet")
              or paths.glob(folder, f"*/{split}/*.parquet"))
    configs = sorted({paths.dirname(f) for f in nested})
    if len(configs) > 1:
        raise PromotDataError(
            f"{folder}: {split} shards in several folders {configs}; keep only the "
            f"configuration this task needs under {folder}/")
    if nested:
        return nested
    raise PromotDataError(
        f"{jsonl}: no such file (nor {split}-*.parquet shards from the hub). ProMoT data is "
        f"read from {{data_dir}}/{dataset}/{split}.jsonl or {{data_dir}}/{dataset}/"
        f"{split}-00000-of-00001.parquet; set ${DATA_DIR_ENV} to the folder holding "
        f"'{dataset}/' (now {root!r}); docs/data.md lists the download commands.")


def split_file(root: str, dataset: str, split: str) -> str:
    """The first file of a split (see `split_files`); raises if there is none."""
    return split_files(root, dataset, split)[0]


def iter_parquet(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("file:row N", row dict) batch by batch (large WMT shards stay streamed)."""
    import pyarrow.parquet as pq  # lazy: only parquet inputs need pyarrow
    try:
        with paths.open(path, "rb") as f:  # a local or remote (gs://) file object
            n = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield f"{path}:row {n}", row
                    n += 1
    except PromotDataError:
        raise
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise PromotDataError(f"{path}: cannot read parquet ({e})") from None


def iter_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    return iter_parquet(path) if path.endswith(".parquet") else iter_jsonl(path)


def iter_jsonl(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("file:line", object) for every non-blank line; raises on invalid JSON."""
    try:
        handle = paths.open(path, "r", encoding="utf-8")
    except OSError as e:
        raise PromotDataError(f"{path}: cannot open ({e.strerror or e})") from None
    with handle:
        for where, row in json_lines(handle, path, PromotDataError):
            if not isinstance(row, dict):
                raise PromotDataError(
                    f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PromotDataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return " ".join(value.split())  # one line: newlines would read as example separators


def _label(row: Mapping[str, Any], where: str, names: tuple[str, ...]) -> str:
    value = row.get("label")
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    hint = (" (the unlabelled test split has label -1; evaluate on validation)"
            if value == -1 else "")
    raise PromotDataError(f"{where}: label {value!r} is not one of {list(names)} or their "
                          f"class ids 0..{len(names) - 1}{hint}")


def parse_rte(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    """SuperGLUE fields premise/hypothesis, or GLUE's sentence1/sentence2 (same label ids)."""
    first, second = ("sentence1", "sentence2") if "premise" not in r and "sentence1" in r \
        else ("premise", "hypothesis")
    return {"premise": _text(r, first, w), "hypothesis": _text(r, second, w),
            "label": _label(r, w, ("entailment", "not_entailment"))}


def parse_cb(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"premise": _text(r, "premise", w), "hypothesis": _text(r, "hypothesis", w),
            "label": _label(r, w, ("entailment", "contradiction", "neutral"))}


def parse_wic(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    label = r.get("label")
    if label not in (True, False, 0, 1):
        raise PromotDataError(f"{w}: label {label!r} must be true/false or 0/1")
    return {"word": _text(r, "word", w), "sentence1": _text(r, "sentence1", w),
            "sentence2": _text(r, "sentence2", w), "label": bool(label)}


def _answer_list(values: Any, where: str, key: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PromotDataError(f"{where}: {key!r} must be a list of strings, got {values!r}")
    seen, out = set(), []
    for v in (" ".join(v.split()) for v in values):
        if v and v not in seen:
            seen.add(v)
            out.append(v)
    return out


def parse_trivia_qa(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    """answers[0] = answer.value (the demonstration answer), then aliases, normalized_aliases."""
    answer = r.get("answer")
    if not isinstance(answer, dict):
        raise PromotDataError(f"{w}: 'answer' must be an object with 'value' and 'aliases'")
    answers = _answer_list([_text(answer, "value", w + " answer")]
                           + list(answer.get("aliases", []))
                           + list(answer.get("normalized_aliases", [])), w, "answer.aliases")
    return {"question": _text(r, "question", w), "answers": answers}


def parse_web_questions(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    answers = _answer_list(r.get("answers"), w, "answers")
    if not answers:
        raise PromotDataError(f"{w}: 'answers' is empty")
    return {"question": _text(r, "question", w), "answers": answers}


def translation_parser(source: str, target: str) -> Callable[[Mapping[str, Any], str], dict]:
    """{"translation": {source: ..., target: ...}} -> source/target text and language names."""
    def parse(r: Mapping[str, Any], w: str) -> dict[str, Any]:
        pair = r.get("translation")
        if not isinstance(pair, dict):
            raise PromotDataError(f"{w}: expected {{\"translation\": {{\"{source}\": ..., "
                                  f"\"{target}\": ...}}}}")
        return {"source": _text(pair, source, w), "target": _text(pair, target, w),
                "source_language": LANGUAGE_NAMES[source],
                "target_language": LANGUAGE_NAMES[target]}
    return parse


def parse_xsum(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"document": _text(r, "document", w), "summary": _text(r, "summary", w)}


def parse_wiki_lingua(r: Mapping[str, Any], w: str) -> dict[str, Any]:
    """GEM wiki_lingua layout: "source" is the article, "target" the summary."""
    return {"document": _text(r, "source", w), "summary": _text(r, "target", w)}


# dataset folder -> row parser. The registrations in tasks/promot_tasks.py name these folders.
PARSERS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "rte": parse_rte,
    "cb": parse_cb,
    "wic": parse_wic,
    "trivia_qa": parse_trivia_qa,
    "web_questions": parse_web_questions,
    "wmt14_fr_en": translation_parser("en", "fr"),
    "wmt16_de_en": translation_parser("en", "de"),
    "wmt16_ro_en": translation_parser("en", "ro"),
    "xsum": parse_xsum,
    "wiki_lingua_en": parse_wiki_lingua,
}


def iter_split(dataset: str, split: str, root: str = None,
               limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Streams the records of one split (JSONL or parquet shards in order; the first `limit`
    if given); raises if there are none. Large train files (WMT) are never held in memory."""
    if dataset not in PARSERS:
        raise KeyError(f"Unknown ProMoT dataset {dataset!r}; known: {sorted(PARSERS)}.")
    paths = split_files(data_dir(root), dataset, split)
    parse, count = PARSERS[dataset], 0
    for path in paths:
        for where, row in iter_rows(path):
            if limit is not None and count >= limit:
                return
            yield parse(row, where)
            count += 1
    if count == 0:
        raise PromotDataError(f"{paths[0]}: file has no examples")


def read_split(dataset: str, split: str, root: str = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """The records of one split as a list (see `iter_split`)."""
    return list(iter_split(dataset, split, root, limit))
