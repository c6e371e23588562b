"""The medical in-context suite: few-shot versions of the Medical mT5 benchmarks in en/es/fr/it,
so that ProMoT can be run on Medical mT5 and its in-context retention measured per language.

Tasks (1-shot and 4-shot; demonstrations from the same language's train split):
  icl_med_abstrct_{en,es,fr,it}_{1,4}shot   AbstRCT neoplasm (Claim/Premise), span F1
  icl_med_e3c_{en,es,fr,it}_{1,4}shot       E3C clinical entities, span F1
  icl_med_bioasq_{en,es,fr,it}_{1,4}shot    BioASQ abstractive QA, ROUGE (accent-preserving)
Splits: validation and test for AbstRCT and E3C, test for BioASQ. Mixtures
icl_med_{en,es,fr,it}_1shot (one language's three tasks), icl_med_1shot, icl_med_4shot.

Templates (ours, in the paper's style; instructions in English for every language):
  tagging  `Sentence: [words] Tags: <Claim> <Premise> Tagged sentence:` -> the sentence with
           HTML-style tags (the Medical mT5 target format, tasks/seqlabel.py)
  bioasq   `Context: [snippets] Q: [question] A:` -> the ideal answer
Data, readers, tag conversion and metrics are the benchmark modules' (tasks/benchmarks.py,
tasks/qa.py, tasks/seqlabel.py, tasks/metrics.py); the folder is the argument, else
$MEDMT5_BENCHMARK_DIR, else the shipped samples.
"""
import dataclasses
from typing import Any

import seqio

from tasks import benchmarks, icl, metrics, promot_tasks, qa, seqlabel, vocab


@dataclasses.dataclass(frozen=True)
class MedicalIclTask:
    """kind: "tagging" (benchmark task `source`) or "bioasq" (language `source`)."""

    kind: str
    source: str
    splits: tuple[str, ...]
    num_shots: int


_SL = ("validation", "test")
TASKS: dict[str, MedicalIclTask] = {
    "icl_med_abstrct_en_1shot": MedicalIclTask("tagging", "abstrct_neoplasm_en", _SL, 1),
    "icl_med_abstrct_es_1shot": MedicalIclTask("tagging", "abstrct_neoplasm_es", _SL, 1),
    "icl_med_abstrct_fr_1shot": MedicalIclTask("tagging", "abstrct_neoplasm_fr", _SL, 1),
    "icl_med_abstrct_it_1shot": MedicalIclTask("tagging", "abstrct_neoplasm_it", _SL, 1),
    "icl_med_abstrct_en_4shot": MedicalIclTask("tagging", "abstrct_neoplasm_en", _SL, 4),
    "icl_med_abstrct_es_4shot": MedicalIclTask("tagging", "abstrct_neoplasm_es", _SL, 4),
    "icl_med_abstrct_fr_4shot": MedicalIclTask("tagging", "abstrct_neoplasm_fr", _SL, 4),
    "icl_med_abstrct_it_4shot": MedicalIclTask("tagging", "abstrct_neoplasm_it", _SL, 4),
    "icl_med_e3c_en_1shot": MedicalIclTask("tagging", "e3c_en", _SL, 1),
    "icl_med_e3c_es_1shot": MedicalIclTask("tagging", "e3c_es", _SL, 1),
    "icl_med_e3c_fr_1shot": MedicalIclTask("tagging", "e3c_fr", _SL, 1),
    "icl_med_e3c_it_1shot": MedicalIclTask("tagging", "e3c_it", _SL, 1),
    "icl_med_e3c_en_4shot": MedicalIclTask("tagging", "e3c_en", _SL, 4),
    "icl_med_e3c_es_4shot": MedicalIclTask("tagging", "e3c_es", _SL, 4),
    "icl_med_e3c_fr_4shot": MedicalIclTask("tagging", "e3c_fr", _SL, 4),
    "icl_med_e3c_it_4shot": MedicalIclTask("tagging", "e3c_it", _SL, 4),
    "icl_med_bioasq_en_1shot": MedicalIclTask("bioasq", "en", ("test",), 1),
    "icl_med_bioasq_es_1shot": MedicalIclTask("bioasq", "es", ("test",), 1),
    "icl_med_bioasq_fr_1shot": MedicalIclTask("bioasq", "fr", ("test",), 1),
    "icl_med_bioasq_it_1shot": MedicalIclTask("bioasq", "it", ("test",), 1),
    "icl_med_bioasq_en_4shot": MedicalIclTask("bioasq", "en", ("test",), 4),
    "icl_med_bioasq_es_4shot": MedicalIclTask("bioasq", "es", ("test",), 4),
    "icl_med_bioasq_fr_4shot": MedicalIclTask("bioasq", "fr", ("test",), 4),
    "icl_med_bioasq_it_4shot": MedicalIclTask("bioasq", "it", ("test",), 4),
}

MIXTURES: dict[str, tuple[str, ...]] = {
    "icl_med_en_1shot": ("icl_med_abstrct_en_1shot", "icl_med_e3c_en_1shot",
                         "icl_med_bioasq_en_1shot"),
    "icl_med_es_1shot": ("icl_med_abstrct_es_1shot", "icl_med_e3c_es_1shot",
                         "icl_med_bioasq_es_1shot"),
    "icl_med_fr_1shot": ("icl_med_abstrct_fr_1shot", "icl_med_e3c_fr_1shot",
                         "icl_med_bioasq_fr_1shot"),
    "icl_med_it_1shot": ("icl_med_abstrct_it_1shot", "icl_med_e3c_it_1shot",
                         "icl_med_bioasq_it_1shot"),
    "icl_med_1shot": tuple(n for n in TASKS if n.endswith("_1shot")),
    "icl_med_4shot": tuple(n for n in TASKS if n.endswith("_4shot")),
}


def _tagging_records(task_name: str, split: str, root: str) -> list[dict[str, Any]]:
    task = benchmarks.TASKS_BY_NAME[task_name]
    labels = benchmarks.DATASET_LABELS[task.dataset]
    tags = seqlabel.label_prefix(labels)
    out = []
    for sentence in benchmarks.read_sentences(task, split, root):
        ex = benchmarks.make_example(sentence, labels, prefixed=False)
        out.append({"sentence": ex["inputs"], "tagged": ex["targets"], "tags": tags})
    return out


def _bioasq_records(lang: str, split: str, root: str) -> list[dict[str, Any]]:
    return [{"context": " ".join(e.snippets), "question": e.question, "answers": list(e.answers)}
            for e in qa.read_split(benchmarks.source_dir(root, "bioasq"), lang, split)]


def read_records(spec: MedicalIclTask, split: str, data_dir: str | None = None):
    root = benchmarks.benchmark_dir(data_dir)
    if spec.kind == "tagging":
        return _tagging_records(spec.source, split, root)
    return _bioasq_records(spec.source, split, root)


def format_split(spec: MedicalIclTask, split: str, data_dir: str | None = None,
                 vocabulary: str = "tiny") -> list[dict[str, Any]]:
    """Formatted rows (see `tasks.icl.format_examples`) plus "sentence" (the query's words,
    for tagging tasks) of one split, within the $MEDMT5_ICL_INPUT_TOKENS token budget."""
    if split not in spec.splits:
        raise ValueError(f"Split {split!r} is not registered for {spec.source}; "
                         f"available: {list(spec.splits)}.")
    queries = read_records(spec, split, data_dir)
    pool = read_records(spec, "train", data_dir)
    rows = icl.format_examples(
        icl.get_template(spec.kind), queries, pool, spec.num_shots,
        seed=promot_tasks.SELECTION_SEED, max_length=promot_tasks.icl_input_tokens(),
        length_fn=promot_tasks.token_length_fn(vocab.get_vocabulary(vocabulary)))
    for row, query in zip(rows, queries):
        row["sentence"] = query.get("sentence", "")
    return rows


class TaggingPostprocessor:
    """seqio postprocess_fn for few-shot tagging: decoded text -> one BIO tag per query word.

    The prediction is first cut at the next example ("Sentence:", a blank line); the query's
    words come from the example's "sentence" feature (the few-shot inputs hold more text).
    The label set is `label_set`, deliberately not `labels`: medmt5.run.evaluation constrains
    decoding to copy the input words for postprocessors with `labels`, which would be wrong
    for a few-shot prompt; in-context evaluation decodes freely, as in the paper.
    """

    def __init__(self, labels):
        self.label_set = seqlabel.canonical_labels(labels)
        self.template = icl.get_template("tagging")

    def __call__(self, output, example=None, is_target=False) -> list[str]:
        text = output.decode("utf-8") if isinstance(output, bytes) else str(output)
        if not is_target:
            text = icl.clean_prediction(text, self.template)
        words = None
        if example is not None and "sentence" in example:
            sentence = example["sentence"]
            words = (sentence.decode("utf-8") if isinstance(sentence, bytes) else sentence).split()
        return seqlabel.tagged_to_iob(text, words, self.label_set)


def _dataset_fn(spec: MedicalIclTask, data_dir: str | None, vocabulary: str):
    # lazy: TensorFlow loads only when data is read
    import tensorflow as tf

    def dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None):
        del shuffle_files, seed
        rows = format_split(spec, split, data_dir, vocabulary)  # small: read eagerly
        return promot_tasks.rows_to_dataset(lambda: rows,
                                            extra={"sentence": tf.TensorSpec([], tf.string)})
    return dataset_fn


def register_medical_icl_tasks(data_dir: str | None = None, vocabulary: str = "tiny") -> None:
    """(Re-)registers every task and mixture of the medical in-context suite."""
    for name, spec in TASKS.items():
        if spec.kind == "tagging":
            task = benchmarks.TASKS_BY_NAME[spec.source]
            postprocess = TaggingPostprocessor(benchmarks.DATASET_LABELS[task.dataset])
            metric_fn = metrics.span_f1
        else:
            postprocess = icl.make_postprocess_fn(icl.get_template("bioasq"))
            metric_fn = metrics.rouge
        source = seqio.FunctionDataSource(_dataset_fn(spec, data_dir, vocabulary),
                                          splits=spec.splits)
        promot_tasks.register_task(name, source, postprocess, metric_fn, vocabulary)
    for name, members in MIXTURES.items():
        promot_tasks.register_mixture(name, members)


register_medical_icl_tasks()
