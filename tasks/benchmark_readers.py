"""The benchmark readers under one import path (`from tasks import benchmark_readers`).

The code lives in two modules; this one re-exports their public names:

  * tasks/benchmark_files.py: what every reader shares (`BenchmarkDataError`, `LANGUAGES`,
    `check_language`, `check_split`, `read_lines`, `read_parquet`, `read_parquet_strict`);
  * tasks/seqlabel_readers.py: AbstRCT (hub parquet / JSONL, the authors' TSV) and the
    authors' NER TSV tree -> `Sentence`s, with the label tables (`DATASET_LABELS`,
    `LABEL_VERBALISATION`, `FILE_IDS`, ...).

The BioASQ reader is tasks/qa.py. Nothing here imports TensorFlow or seqio.
"""

from __future__ import annotations

from tasks.benchmark_files import (
    LANGUAGES,
    BenchmarkDataError,
    check_language,
    check_split,
    missing_file,
    read_lines,
    read_parquet,
    read_parquet_strict,
)
from tasks.seqlabel_readers import (
    ABSTRCT_ID_ORDER,
    ABSTRCT_SPLITS,
    ABSTRCT_TSV_NAMES,
    DATASET_LABELS,
    DATASET_LANGUAGES,
    FILE_IDS,
    LABEL_COLUMNS,
    LABEL_VERBALISATION,
    TOKEN_COLUMNS,
    TSV_SPLITS,
    ReadStats,
    Sentence,
    abstrct_file,
    abstrct_files,
    read_abstrct,
    read_iob_tsv,
    read_token_rows,
    tsv_file,
    verbalise,
)

__all__ = [
    "ABSTRCT_ID_ORDER", "ABSTRCT_SPLITS", "ABSTRCT_TSV_NAMES", "DATASET_LABELS",
    "DATASET_LANGUAGES", "FILE_IDS", "LABEL_COLUMNS", "LABEL_VERBALISATION", "LANGUAGES",
    "TOKEN_COLUMNS", "TSV_SPLITS", "BenchmarkDataError", "ReadStats", "Sentence",
    "abstrct_file", "abstrct_files", "check_language", "check_split", "missing_file",
    "read_abstrct", "read_iob_tsv", "read_lines", "read_parquet", "read_parquet_strict",
    "read_token_rows", "tsv_file", "verbalise",
]
