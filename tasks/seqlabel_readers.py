"""Strict readers for the sequence-labelling benchmarks (AbstRCT and the medical NER sets),
in the releases' own layouts; each returns `Sentence`s with BIO tags and verbalised labels.

  * Hugging Face `HiTZ/multilingual-abstrct` as downloaded from the hub (file tree:
    https://huggingface.co/datasets/HiTZ/multilingual-abstrct, configs en/es/fr/it, splits
    neoplasm_train, neoplasm_dev, neoplasm_test, glaucoma_test, mixed_test):
    `{root}/{lang}/{split}-00000-of-00001.parquet` (also the auto-converted
    `{lang}/{split}/0000.parquet` and a JSONL export `{lang}/{split}.jsonl`). Current schema:
    `id`, `tokens` (list of str), `labels_txt` (IOB strings such as "B-Claim") and `labels`
    (plain integers without ClassLabel names, order O, B-Claim, I-Claim, B-Premise,
    I-Premise: `ABSTRCT_ID_ORDER`). Older revisions: `words` / `ner_tags`. String labels
    are preferred; integer labels are named by, in order, the `label_names=` argument, the
    parquet file's HF ClassLabel metadata, the documented order.
  * The authors' IOB TSV release (github.com/ikergarcia1996/Sequence-Labeling-LLMs,
    Medical-MT5/multitask.sh and get_results.py): a folder per language,
    `{root}/{lang}/{lang}-{dataset}-{split}.tsv` with dataset ids ncbi-disease,
    bc5cdr_disease, bc5cdr_chemical, diann, e3c, pharmaconer-bsc and, for AbstRCT,
    `{lang}-neoplasm-{train,dev,test}.tsv`, `{lang}-glaucoma-test.tsv`,
    `{lang}-mixed-test.tsv`. As the authors' `dataset.read_tsv` reads them: each line is
    stripped and split on whitespace into `token tag` or `token tag extra` (a third column
    is ignored); a blank line or a `-DOCSTART-` line ends a sentence; tags IOB1 or BIO.
    Raw tags are verbalised as the authors' `label_names.py` `_label2name` does (`ety` ->
    ClinicalEntity for E3C, `dis` -> Disability for DIANN), so the targets carry the tag
    names the released fine-tuned models produce. A flat `{root}/{lang}-{dataset}-{split}.tsv`
    is accepted too.

Paths may be local or `gs://...` (tasks/benchmark_files.py). Errors name the file and line
(or row): different numbers of tokens and labels, a label outside the dataset's label set,
a malformed line, an empty file, invalid UTF-8, a token with whitespace inside, a missing
column. Skipped, counted in `ReadStats` and logged: rows with no tokens, and
whitespace-only tokens tagged `O` (spaCy emits them; inside an entity they are an error).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence

from medmt5.data import paths  # local, gs:// and other etils.epath URLs (no model code)
from tasks import seqlabel
from tasks.benchmark_files import (
    LANGUAGES,
    BenchmarkDataError,
    check_language,
    check_split,
    json_lines,
    read_lines,
    read_parquet_strict,
)

ABSTRCT_SPLITS = ("neoplasm_train", "neoplasm_dev", "neoplasm_test", "glaucoma_test",
                  "mixed_test")
TSV_SPLITS = ("train", "dev", "test")

# Integer `labels` of HiTZ/multilingual-abstrct carry no ClassLabel names; this is their
# documented order (the dataset card's label list).
ABSTRCT_ID_ORDER = ("O", "B-Claim", "I-Claim", "B-Premise", "I-Premise")
# The authors' TSV file name of each AbstRCT split: {lang}-{name}.tsv
ABSTRCT_TSV_NAMES = {"neoplasm_train": "neoplasm-train", "neoplasm_dev": "neoplasm-dev",
                     "neoplasm_test": "neoplasm-test", "glaucoma_test": "glaucoma-test",
                     "mixed_test": "mixed-test"}

# Raw tag -> tag name in the targets, as the authors' Sequence-Labeling-LLMs
# `label_names.py` (`_label2name`, used by `dataset.format_target_sentence`) verbalises the
# medical datasets' tags. Tags not in the table are kept as they are.
LABEL_VERBALISATION: dict[str, str] = {"ety": "ClinicalEntity", "dis": "Disability"}

# Label sets (verbalised tag names, as in the targets) and languages of each dataset, by
# this project's dataset key (the seqio task names use it).
DATASET_LABELS = {
    "abstrct": ("Claim", "Premise"),
    "ncbi-disease": ("Disease",),
    "bc5cdr-disease": ("Disease",),
    "bc5cdr-chemical": ("Chemical",),
    "diann": ("Disability",),
    "pharmaconer": ("NORMALIZABLES", "NO_NORMALIZABLES", "PROTEINAS", "UNCLEAR"),
    "e3c": ("ClinicalEntity",),
}
DATASET_LANGUAGES = {
    "abstrct": LANGUAGES, "ncbi-disease": ("en",), "bc5cdr-disease": ("en",),
    "bc5cdr-chemical": ("en",), "diann": ("en", "es"), "pharmaconer": ("es",), "e3c": LANGUAGES,
}
# Dataset key -> the dataset id in the authors' file names (Medical-MT5/multitask.sh).
FILE_IDS = {
    "ncbi-disease": "ncbi-disease", "bc5cdr-disease": "bc5cdr_disease",
    "bc5cdr-chemical": "bc5cdr_chemical", "diann": "diann", "pharmaconer": "pharmaconer-bsc",
    "e3c": "e3c",
}


@dataclasses.dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]      # BIO, one per word, verbalised labels
    source: str                # "file:line" (TSV, JSONL) or "file:row N" (parquet)


@dataclasses.dataclass
class ReadStats:
    sentences: int = 0
    skipped_empty: int = 0     # rows/sentences with no tokens
    dropped_space_tokens: int = 0


def verbalise(tag: str) -> str:
    """'B-ety' -> 'B-ClinicalEntity' (LABEL_VERBALISATION); 'O' and other tags unchanged.

    Raises ValueError on a string that is not an IOB tag."""
    prefix, label = seqlabel.split_tag(tag)
    if label is None:
        return tag
    return f"{prefix}-{LABEL_VERBALISATION.get(label, label)}"


def _finish(where: str, tokens: Sequence[str], tags: Sequence[str], labels: Sequence[str],
            stats: ReadStats) -> Sentence | None:
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
            tag = verbalise(tag)
            prefix, label = seqlabel.split_tag(tag)
        except ValueError as e:
            raise BenchmarkDataError(f"{where}: token {i} ({tok!r}): {e}") from None
        if label is not None and label not in known:
            raise BenchmarkDataError(
                f"{where}: token {i} ({tok!r}) has label {tag!r}, not in this dataset's "
                f"label set {sorted(known)}; fix the file, or DATASET_LABELS / "
                "LABEL_VERBALISATION in tasks/seqlabel_readers.py")
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


def _tsv_fields(line: str) -> tuple[str, str] | None:
    """(token, tag) of a TSV line as the authors' read_tsv splits it, None if malformed.

    `line.split()` gives 2 fields, or 3 (the third is ignored). A whitespace-only token
    before a TAB (spaCy's space tokens) is kept as the token so it can be dropped."""
    fields = line.split()
    if len(fields) in (2, 3):
        return fields[0], fields[1]
    if len(fields) == 1 and "\t" in line and not line.split("\t")[0].strip():
        return line.split("\t")[0], fields[0]
    return None


def read_iob_tsv(path: str, labels: Sequence[str],
                 stats: ReadStats | None = None) -> list[Sentence]:
    """Read an IOB TSV file (blank line between sentences) -> BIO sentences."""
    stats = stats if stats is not None else ReadStats()
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 1

    def flush():
        if tokens:
            s = _finish(f"{path}:{start}", tokens, tags, labels, stats)
            if s is not None:
                sentences.append(s)
        tokens.clear()
        tags.clear()

    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.strip().startswith("-DOCSTART-"):
            flush()
            continue
        fields = _tsv_fields(line)
        if fields is None:
            raise BenchmarkDataError(
                f"{path}:{n}: malformed line {line!r}; expected 'token tag' separated by "
                "whitespace (an optional third column is ignored)")
        if not tokens:
            start = n
        try:
            tag = verbalise(fields[1])
            _, label = seqlabel.split_tag(tag)
        except ValueError as e:
            hint = (" (this line has 3 columns; the tag is read from the second)"
                    if len(line.split()) == 3 else "")
            raise BenchmarkDataError(f"{path}:{n}: {e}{hint}") from None
        if label is not None and label not in labels:
            raise BenchmarkDataError(
                f"{path}:{n}: label {fields[1]!r} is not in this dataset's label set "
                f"{sorted(labels)}; fix the file, or DATASET_LABELS / LABEL_VERBALISATION "
                "in tasks/seqlabel_readers.py")
        tokens.append(fields[0])
        tags.append(tag)
    flush()
    _log(path, stats)
    if not sentences:
        raise BenchmarkDataError(f"{path}: no sentences (only blank or -DOCSTART- lines)")
    return sentences


def _hf_label_names(schema, column: str) -> list[str] | None:
    """ClassLabel names of `column` from a parquet file's HF metadata (None if absent)."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        feature = json.loads(meta)["info"]["features"][column]
        if isinstance(feature, list):
            feature = feature[0]
        inner = feature.get("feature", feature)
        return list(inner["names"])
    except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError):
        return None


def _rows_jsonl(path: str) -> Iterable[tuple[str, object]]:
    yield from json_lines(read_lines(path), path, BenchmarkDataError)


TOKEN_COLUMNS = ("tokens", "words")
LABEL_COLUMNS = ("labels_txt", "labels", "ner_tags")   # first present wins


def _pick(columns: Iterable[str], wanted: Sequence[str]) -> str | None:
    cols = set(columns)
    return next((c for c in wanted if c in cols), None)


def _is_id(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def read_token_rows(path: str, labels: Sequence[str],
                    label_names: Sequence[str] | None = None,
                    stats: ReadStats | None = None,
                    default_label_names: Sequence[str] | None = None) -> list[Sentence]:
    """Read HF token-classification rows from .jsonl or .parquet.

    Tokens from `tokens` (or `words`); labels from `labels_txt`, else `labels`, else
    `ner_tags`. Integer labels are named by `label_names`, else the parquet file's HF
    ClassLabel metadata of that column, else `default_label_names`; without any, an error.
    """
    stats = stats if stats is not None else ReadStats()
    if path.endswith(".parquet"):
        table = read_parquet_strict(path)
        tok_col = _pick(table.column_names, TOKEN_COLUMNS)
        lab_col = _pick(table.column_names, LABEL_COLUMNS)
        if tok_col is None or lab_col is None:
            raise BenchmarkDataError(
                f"{path}: needs a token column {list(TOKEN_COLUMNS)} and a label column "
                f"{list(LABEL_COLUMNS)}; it has {table.column_names}")
        if label_names is None:
            label_names = _hf_label_names(table.schema, lab_col)
        rows = [(f"{path}:row {i}", {tok_col: toks, lab_col: labs}) for i, (toks, labs) in
                enumerate(zip(table.column(tok_col).to_pylist(),
                              table.column(lab_col).to_pylist()))]
        if not rows:
            raise BenchmarkDataError(f"{path}: file has no rows")
    elif path.endswith(".jsonl") or path.endswith(".json"):
        rows = list(_rows_jsonl(path))
    else:
        raise BenchmarkDataError(f"{path}: unsupported extension; expected .jsonl or .parquet")
    names = label_names if label_names is not None else default_label_names
    sentences = []
    for where, row in rows:
        tok_col = _pick(row, TOKEN_COLUMNS) if isinstance(row, dict) else None
        lab_col = _pick(row, LABEL_COLUMNS) if isinstance(row, dict) else None
        if tok_col is None or lab_col is None:
            raise BenchmarkDataError(
                f"{where}: expected an object with 'tokens' (or 'words') and 'labels_txt', "
                "'labels' or 'ner_tags'")
        tokens, tags = row[tok_col], row[lab_col]
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise BenchmarkDataError(f"{where}: '{tok_col}' and '{lab_col}' must be lists")
        if any(_is_id(t) for t in tags):
            if names is None:
                raise BenchmarkDataError(
                    f"{where}: '{lab_col}' holds class ids but no label names are known; "
                    "pass label_names=[...], add a 'labels_txt' column, or use the parquet "
                    "file with its HF ClassLabel metadata")
            mapped = []
            for t in tags:
                if _is_id(t):
                    if not 0 <= t < len(names):
                        raise BenchmarkDataError(
                            f"{where}: label id {t} out of range for {len(names)} "
                            f"label names {list(names)}")
                    t = names[t]
                mapped.append(t)
            tags = mapped
        s = _finish(where, tokens, tags, labels, stats)
        if s is not None:
            sentences.append(s)
    _log(path, stats)
    if not sentences:
        raise BenchmarkDataError(f"{path}: no non-empty sentences")
    return sentences


def abstrct_files(root: str, lang: str, split: str,
                  tsv_root: str | None = None) -> list[str]:
    """Every file of one AbstRCT language/split, the first layout found.

    Under `root/{lang}/`: `{split}-*.parquet` shards (the hub download), `{split}/*.parquet`
    (the hub's auto-converted branch), `{split}.parquet`, `{split}.jsonl`. Then the
    authors' TSV `{lang}-{neoplasm-train,...}.tsv` under `root/{lang}/`, or under
    `tsv_root/{lang}/` (their folder holds AbstRCT next to the NER sets).
    """
    check_language(lang, DATASET_LANGUAGES["abstrct"])
    check_split(split, ABSTRCT_SPLITS)
    folder = paths.join(root, lang)
    tsv_name = f"{lang}-{ABSTRCT_TSV_NAMES[split]}.tsv"
    layouts = [lambda: paths.glob(folder, f"{split}-*.parquet"),
               lambda: paths.glob(folder, f"{split}/*.parquet"),
               lambda: [paths.join(folder, f"{split}.parquet")],
               lambda: [paths.join(folder, f"{split}.jsonl")],
               lambda: [paths.join(folder, tsv_name)]]
    if tsv_root:
        layouts.append(lambda: [paths.join(tsv_root, lang, tsv_name)])
    for layout in layouts:  # listed lazily: each is a request on an object store
        files = layout()
        if files and all(paths.exists(f) for f in files):
            return files
    where = folder + (f" or {paths.join(tsv_root, lang)}" if tsv_root else "")
    raise BenchmarkDataError(
        f"no AbstRCT file for {lang}/{split} under {where}: expected the hub download "
        f"{lang}/{split}-00000-of-00001.parquet (or {split}.jsonl), or the authors' TSV "
        f"{lang}/{tsv_name}; set MEDMT5_BENCHMARK_DIR to the benchmark folder "
        "(docs/data.md, Benchmarks)")


def abstrct_file(root: str, lang: str, split: str, tsv_root: str | None = None) -> str:
    """The first file of one AbstRCT language/split (see `abstrct_files`)."""
    return abstrct_files(root, lang, split, tsv_root)[0]


def read_abstrct(root: str, lang: str, split: str, labels: Sequence[str] = ("Claim", "Premise"),
                 label_names: Sequence[str] | None = None,
                 tsv_root: str | None = None) -> list[Sentence]:
    """All sentences of an AbstRCT language/split (parquet shards concatenated)."""
    out: list[Sentence] = []
    for f in abstrct_files(root, lang, split, tsv_root):
        if f.endswith(".tsv"):
            out.extend(read_iob_tsv(f, labels))
        else:
            out.extend(read_token_rows(f, labels, label_names,
                                       default_label_names=ABSTRCT_ID_ORDER))
    return out


def tsv_file(root: str, lang: str, dataset: str, split: str) -> str:
    """The authors' `{root}/{lang}/{lang}-{id}-{split}.tsv` (else a flat `{root}/{lang}-...`).

    `dataset` is this project's key (DATASET_LANGUAGES) or the authors' file id."""
    by_id = {v: k for k, v in FILE_IDS.items()}
    dataset = by_id.get(dataset, dataset)
    if dataset not in FILE_IDS:
        raise BenchmarkDataError(f"unknown dataset {dataset!r}: expected one of "
                                 f"{sorted(FILE_IDS)} (file ids {sorted(by_id)})")
    check_language(lang, DATASET_LANGUAGES[dataset])
    check_split(split, TSV_SPLITS)
    name = f"{lang}-{FILE_IDS[dataset]}-{split}.tsv"
    nested = paths.join(root, lang, name)
    flat = paths.join(root, name)
    return flat if not paths.exists(nested) and paths.exists(flat) else nested
