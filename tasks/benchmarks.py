"""SeqIO tasks and mixtures for the Medical mT5 sequence-labelling benchmarks.

Text-to-text in the authors' format (see tasks/seqlabel.py): inputs are the sentence,
targets the sentence with `<Label> ... </Label>` around spans. The `multitask_*` tasks
prefix the input with the dataset's label set (`<Claim> <Premise> ...`) and are the
members of the multitask mixtures. Every task's postprocess turns decoded text into one
BIO tag per input word (`SeqLabelPostprocessor`) and its metric is seqeval span F1
(`tasks.metrics.span_f1`: "f1", "precision", "recall", "f1_<Label>").

Importing this module registers everything with the shipped samples and the tiny
vocabulary; call `register_benchmark_tasks(data_dir=..., vocabulary="mt5")` to point
the same names at real data. The data folder is the argument, else
$MEDMT5_BENCHMARK_DIR, else tasks/data/benchmarks. Layout under it (the releases' own layouts,
see tasks/benchmark_readers.py):
  abstrct/{lang}/{split}-00000-of-00001.parquet   HiTZ/multilingual-abstrct from the hub
  ner/{lang}/{lang}-{dataset}-{train,dev,test}.tsv   the authors' IOB TSV release (AbstRCT
      may come from there too: ner/{lang}/{lang}-neoplasm-train.tsv, ...)
  bioasq/{lang}/{train,test}.jsonl (see tasks/qa.py)
The folder may be local, `gs://bucket/...`, or a Hugging Face dataset id (`OWNER/NAME`,
`hf://datasets/OWNER/NAME[@rev][/folder]`) resolved from the hub cache. Each of abstrct /
ner / bioasq may come from elsewhere (`sources=` or gin `benchmark_sources.abstrct =
'HiTZ/multilingual-abstrct'`, which needs `import tasks.benchmarks` in the gin file).
Task splits: train / validation / test (AbstRCT neoplasm dev = validation); the
glaucoma and mixed AbstRCT sets are test-only tasks.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import seqio
import tensorflow as tf

from medmt5.data import paths  # local and gs:// files (no model code)
from tasks import benchmark_dirs, metrics, qa, seqlabel
from tasks import benchmark_readers as readers
from tasks import vocab as vocab_lib

# Where the data lives (tasks/benchmark_dirs.py), re-exported under their usual names.
BENCHMARK_DIR_ENV = benchmark_dirs.BENCHMARK_DIR_ENV
DEFAULT_BENCHMARK_DIR = benchmark_dirs.DEFAULT_BENCHMARK_DIR
SOURCES = benchmark_dirs.SOURCES
benchmark_sources = benchmark_dirs.benchmark_sources
registered_dir = benchmark_dirs.registered_dir
configured_dir = benchmark_dirs.configured_dir
benchmark_dir = benchmark_dirs.benchmark_dir
source_dir = benchmark_dirs.source_dir

DATASET_LABELS = readers.DATASET_LABELS
DATASET_LANGUAGES = readers.DATASET_LANGUAGES

# seqio split -> file split
NEOPLASM = {"train": "neoplasm_train", "validation": "neoplasm_dev", "test": "neoplasm_test"}
GLAUCOMA = {"test": "glaucoma_test"}
MIXED = {"test": "mixed_test"}
TSV = {"train": "train", "validation": "dev", "test": "test"}


@dataclasses.dataclass(frozen=True)
class SeqLabelTask:
    name: str
    dataset: str
    lang: str
    splits: dict[str, str]
    prefixed: bool  # label-set prefix on the input (multitask format)


def _t(name, dataset, lang, splits, prefixed=False):
    return SeqLabelTask(name, dataset, lang, splits, prefixed)


# Every sequence-labelling task, by its full name.
SEQLABEL_TASKS: tuple[SeqLabelTask, ...] = (
    _t("abstrct_neoplasm_en", "abstrct", "en", NEOPLASM),
    _t("abstrct_neoplasm_es", "abstrct", "es", NEOPLASM),
    _t("abstrct_neoplasm_fr", "abstrct", "fr", NEOPLASM),
    _t("abstrct_neoplasm_it", "abstrct", "it", NEOPLASM),
    _t("abstrct_glaucoma_en", "abstrct", "en", GLAUCOMA),
    _t("abstrct_glaucoma_es", "abstrct", "es", GLAUCOMA),
    _t("abstrct_glaucoma_fr", "abstrct", "fr", GLAUCOMA),
    _t("abstrct_glaucoma_it", "abstrct", "it", GLAUCOMA),
    _t("abstrct_mixed_en", "abstrct", "en", MIXED),
    _t("abstrct_mixed_es", "abstrct", "es", MIXED),
    _t("abstrct_mixed_fr", "abstrct", "fr", MIXED),
    _t("abstrct_mixed_it", "abstrct", "it", MIXED),
    _t("ncbi_disease_en", "ncbi-disease", "en", TSV),
    _t("bc5cdr_disease_en", "bc5cdr-disease", "en", TSV),
    _t("bc5cdr_chemical_en", "bc5cdr-chemical", "en", TSV),
    _t("diann_en", "diann", "en", TSV),
    _t("diann_es", "diann", "es", TSV),
    _t("pharmaconer_es", "pharmaconer", "es", TSV),
    _t("e3c_en", "e3c", "en", TSV),
    _t("e3c_es", "e3c", "es", TSV),
    _t("e3c_fr", "e3c", "fr", TSV),
    _t("e3c_it", "e3c", "it", TSV),
    # multitask format: same data, label-set prefix on the input
    _t("multitask_abstrct_neoplasm_en", "abstrct", "en", NEOPLASM, True),
    _t("multitask_abstrct_neoplasm_es", "abstrct", "es", NEOPLASM, True),
    _t("multitask_abstrct_neoplasm_fr", "abstrct", "fr", NEOPLASM, True),
    _t("multitask_abstrct_neoplasm_it", "abstrct", "it", NEOPLASM, True),
    _t("multitask_abstrct_glaucoma_en", "abstrct", "en", GLAUCOMA, True),
    _t("multitask_abstrct_glaucoma_es", "abstrct", "es", GLAUCOMA, True),
    _t("multitask_abstrct_glaucoma_fr", "abstrct", "fr", GLAUCOMA, True),
    _t("multitask_abstrct_glaucoma_it", "abstrct", "it", GLAUCOMA, True),
    _t("multitask_abstrct_mixed_en", "abstrct", "en", MIXED, True),
    _t("multitask_abstrct_mixed_es", "abstrct", "es", MIXED, True),
    _t("multitask_abstrct_mixed_fr", "abstrct", "fr", MIXED, True),
    _t("multitask_abstrct_mixed_it", "abstrct", "it", MIXED, True),
    _t("multitask_ncbi_disease_en", "ncbi-disease", "en", TSV, True),
    _t("multitask_bc5cdr_disease_en", "bc5cdr-disease", "en", TSV, True),
    _t("multitask_bc5cdr_chemical_en", "bc5cdr-chemical", "en", TSV, True),
    _t("multitask_diann_en", "diann", "en", TSV, True),
    _t("multitask_diann_es", "diann", "es", TSV, True),
    _t("multitask_pharmaconer_es", "pharmaconer", "es", TSV, True),
    _t("multitask_e3c_en", "e3c", "en", TSV, True),
    _t("multitask_e3c_es", "e3c", "es", TSV, True),
    _t("multitask_e3c_fr", "e3c", "fr", TSV, True),
    _t("multitask_e3c_it", "e3c", "it", TSV, True),
)
TASKS_BY_NAME = {t.name: t for t in SEQLABEL_TASKS}

# Mixtures: name -> member tasks. Training mixtures are rated by number of training
# sentences; evaluation mixtures are evaluated on their members' "test" split.
MIXTURES: dict[str, tuple[str, ...]] = {
    # all datasets and languages, multitask format (paper Table 8)
    "seqlabel_multitask": (
        "multitask_abstrct_neoplasm_en", "multitask_abstrct_neoplasm_es",
        "multitask_abstrct_neoplasm_fr", "multitask_abstrct_neoplasm_it",
        "multitask_ncbi_disease_en", "multitask_bc5cdr_disease_en",
        "multitask_bc5cdr_chemical_en", "multitask_diann_en", "multitask_diann_es",
        "multitask_pharmaconer_es", "multitask_e3c_en", "multitask_e3c_es",
        "multitask_e3c_fr", "multitask_e3c_it"),
    # zero-shot cross-lingual: train on English only ...
    "seqlabel_multitask_en": (
        "multitask_abstrct_neoplasm_en", "multitask_ncbi_disease_en",
        "multitask_bc5cdr_disease_en", "multitask_bc5cdr_chemical_en", "multitask_diann_en",
        "multitask_e3c_en"),
    # ... and evaluate on Spanish, French and Italian
    "seqlabel_multitask_crosslingual_eval": (
        "multitask_abstrct_neoplasm_es", "multitask_abstrct_neoplasm_fr",
        "multitask_abstrct_neoplasm_it", "multitask_abstrct_glaucoma_es",
        "multitask_abstrct_glaucoma_fr", "multitask_abstrct_glaucoma_it",
        "multitask_abstrct_mixed_es", "multitask_abstrct_mixed_fr",
        "multitask_abstrct_mixed_it", "multitask_diann_es", "multitask_e3c_es",
        "multitask_e3c_fr", "multitask_e3c_it"),
    # single-dataset zero-shot: train abstrct_neoplasm_en / e3c_en, evaluate these
    "abstrct_crosslingual_eval": (
        "abstrct_neoplasm_es", "abstrct_neoplasm_fr", "abstrct_neoplasm_it",
        "abstrct_glaucoma_es", "abstrct_glaucoma_fr", "abstrct_glaucoma_it",
        "abstrct_mixed_es", "abstrct_mixed_fr", "abstrct_mixed_it"),
    "e3c_crosslingual_eval": ("e3c_es", "e3c_fr", "e3c_it"),
    # every AbstRCT test set of one language (in-language evaluation)
    "abstrct_en_eval": ("abstrct_neoplasm_en", "abstrct_glaucoma_en", "abstrct_mixed_en"),
    "abstrct_es_eval": ("abstrct_neoplasm_es", "abstrct_glaucoma_es", "abstrct_mixed_es"),
    "abstrct_fr_eval": ("abstrct_neoplasm_fr", "abstrct_glaucoma_fr", "abstrct_mixed_fr"),
    "abstrct_it_eval": ("abstrct_neoplasm_it", "abstrct_glaucoma_it", "abstrct_mixed_it"),
}
TRAIN_MIXTURES = ("seqlabel_multitask", "seqlabel_multitask_en")
# zero-shot cross-lingual settings: (train task or mixture, evaluation mixture)
CROSSLINGUAL_ZERO_SHOT = {
    "abstrct": ("abstrct_neoplasm_en", "abstrct_crosslingual_eval"),
    "e3c": ("e3c_en", "e3c_crosslingual_eval"),
    "multitask": ("seqlabel_multitask_en", "seqlabel_multitask_crosslingual_eval"),
}


def task_files(name: str, split: str) -> list[str]:
    """The files seqio task `name` reads for its `split` (sequence labelling and BioASQ).

    Raises BenchmarkDataError naming the expected file when it is missing."""
    root = registered_dir()
    if name in qa.QA_TASKS:
        return qa.bioasq_files(source_dir(root, "bioasq"), qa.QA_TASKS[name], split)
    task = TASKS_BY_NAME[name]
    if split not in task.splits:
        raise ValueError(f"task {name} has no split {split!r}; it has {list(task.splits)}")
    if task.dataset == "abstrct":
        return readers.abstrct_files(source_dir(root, "abstrct"), task.lang,
                                     task.splits[split], tsv_root=source_dir(root, "ner"))
    path = readers.tsv_file(source_dir(root, "ner"), task.lang, task.dataset,
                            task.splits[split])
    if not paths.exists(path):
        raise readers.BenchmarkDataError(
            f"{path}: no such file; the authors' release is laid out as "
            f"ner/{{lang}}/{{lang}}-{{dataset}}-{{split}}.tsv under the benchmark folder {root} "
            "(set MEDMT5_BENCHMARK_DIR; docs/data.md, Benchmarks)")
    return [path]


def read_sentences(task: SeqLabelTask, split: str, data_dir: str,
                   sources: dict[str, str] | None = None) -> list[readers.Sentence]:
    """The sentences of `task`'s seqio `split` (e.g. "validation") under `data_dir`
    (per-source overrides: `sources`, else the registered ones; see `source_dir`)."""
    if split not in task.splits:
        raise ValueError(f"task {task.name} has no split {split!r}; it has {list(task.splits)}")
    labels = DATASET_LABELS[task.dataset]
    if task.dataset == "abstrct":
        return readers.read_abstrct(source_dir(data_dir, "abstrct", sources), task.lang,
                                    task.splits[split], labels,
                                    tsv_root=source_dir(data_dir, "ner", sources))
    path = readers.tsv_file(source_dir(data_dir, "ner", sources), task.lang, task.dataset,
                            task.splits[split])
    return readers.read_iob_tsv(path, labels)


def make_example(sentence: readers.Sentence, labels: Sequence[str],
                 prefixed: bool) -> dict[str, str]:
    """{"inputs", "targets"} text of one sentence."""
    try:
        return {"inputs": seqlabel.make_input(sentence.words, labels if prefixed else None),
                "targets": seqlabel.iob_to_tagged(sentence.words, sentence.tags, labels)}
    except ValueError as e:
        raise readers.BenchmarkDataError(f"{sentence.source}: {e}") from None


class SeqLabelPostprocessor:
    """seqio postprocess_fn: decoded text -> one BIO tag per input word.

    The input words come from the example's `inputs_pretokenized` (label prefix
    removed). Without an example the output's own words are used. Never raises on
    malformed model output (see tasks/seqlabel.py for the repair rules).
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = seqlabel.canonical_labels(labels)

    def __call__(self, output: str, example=None, is_target: bool = False) -> list[str]:
        if isinstance(output, bytes):
            output = output.decode("utf-8")
        words = None
        if example is not None and "inputs_pretokenized" in example:
            text = example["inputs_pretokenized"]
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            elif hasattr(text, "numpy"):
                text = text.numpy().decode("utf-8")
            words = seqlabel.input_words(text, self.labels)
        return seqlabel.tagged_to_iob(output, words, self.labels)


def _dataset_fn(task: SeqLabelTask, data_dir: str, sources: dict[str, str]):
    labels = DATASET_LABELS[task.dataset]

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        del shuffle_files, seed  # one file per split; seqio shuffles examples
        rows = [make_example(s, labels, task.prefixed)
                for s in read_sentences(task, split, data_dir, sources)]
        return tf.data.Dataset.from_tensor_slices(
            {"inputs": [r["inputs"] for r in rows], "targets": [r["targets"] for r in rows]})

    return dataset_fn


@functools.cache
def _num_train_sentences(task_name: str, data_dir: str, sources: tuple) -> int:
    return len(read_sentences(TASKS_BY_NAME[task_name], "train", data_dir, dict(sources)))


def _rate_by_train_sentences(data_dir: str, sources: dict[str, str]):
    key = tuple(sorted(sources.items()))
    return lambda task: float(_num_train_sentences(task.name, data_dir, key))


def output_features(vocabulary: str = "tiny") -> dict[str, seqio.Feature]:
    vocab = vocab_lib.get_vocabulary(vocabulary)
    return {"inputs": seqio.Feature(vocab, add_eos=True, required=True),
            "targets": seqio.Feature(vocab, add_eos=True)}


def register_benchmark_tasks(data_dir: str | None = None, vocabulary: str = "tiny",
                             sources: dict[str, str] | None = None) -> str:
    """(Re-)register every benchmark task and mixture (sequence labelling and BioASQ).

    `sources` (else gin `benchmark_sources`) replace `<data_dir>/{abstrct,ner,bioasq}`.
    Returns the data folder used. Files are read (and hub ids resolved) only when a dataset
    is requested.
    """
    root = configured_dir(data_dir)
    sources = dict(benchmark_sources(), **(sources or {}))
    benchmark_dirs.set_registered(root, sources)  # raises on an unknown source name
    features = output_features(vocabulary)
    for name in MIXTURES:
        seqio.MixtureRegistry.remove(name)
    for task in SEQLABEL_TASKS:
        seqio.TaskRegistry.remove(task.name)
        seqio.TaskRegistry.add(
            task.name,
            source=seqio.FunctionDataSource(_dataset_fn(task, root, sources),
                                            splits=list(task.splits)),
            preprocessors=[seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features=features,
            postprocess_fn=SeqLabelPostprocessor(DATASET_LABELS[task.dataset]),
            metric_fns=[metrics.span_f1])
    rate = _rate_by_train_sentences(root, sources)
    for name, members in MIXTURES.items():
        if name in TRAIN_MIXTURES:
            seqio.MixtureRegistry.add(name, [(m, rate) for m in members])
        else:
            seqio.MixtureRegistry.add(name, list(members), default_rate=1.0)
    qa.register_qa_tasks(data_dir=root, vocabulary=vocabulary, sources=sources,
                         output_features=features)
    return root


register_benchmark_tasks()
