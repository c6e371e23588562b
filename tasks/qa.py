"""Abstractive biomedical QA: multilingual BioASQ-6B as seqio tasks.

Files are read by tasks/qa_readers.py (its doc says which layouts and where each is
documented): the hub release `HiTZ/Multilingual-BioASQ-6B` as downloaded
(`{root}/bioasq/{lang}/{split}-00000-of-00001.parquet`), the official BioASQ JSON
`{"questions": [...]}` (`{split}.json`, or the 6B file names), or JSONL; splits train and
test; languages en/es/fr/it. Field names are the BioASQ ones (`body`, `snippets`,
`ideal_answer`); a release naming them otherwise is read through gin `bioasq_fields.question`,
`.snippets`, `.answers` (the gin file needs `import tasks.qa`), or `field_map=` in Python.

Example: inputs `question: <body> context: <snippet texts joined by spaces>`, targets the
first ideal answer, `answers` ([None] str) every ideal answer (references for ROUGE). This
input format is this project's; the Medical mT5 authors' exact QA prompt is not published
in a form that could be checked here. Metric: ROUGE-1/2/L F-measure with an
accent-preserving tokenizer (`tasks.metrics.rouge`). Tasks `bioasq_en`, `bioasq_es`,
`bioasq_fr`, `bioasq_it`; mixture `bioasq_multilingual`. Registered when tasks.benchmarks
is imported.
"""

from __future__ import annotations

import gin
from tasks import benchmark_dirs, metrics
from tasks import vocab as vocab_lib
from tasks.qa_readers import (  # re-exported: the BioASQ reader's names under tasks.qa
    DEFAULT_FIELDS,
    QA_SPLITS,
    QAExample,
    bioasq_files,
    make_example,
    parse_row,
    read_bioasq,
    read_split,
)

__all__ = ["DEFAULT_FIELDS", "QA_MIXTURE", "QA_SPLITS", "QA_TASKS", "QAExample",
           "bioasq_fields", "bioasq_files", "make_example", "parse_row", "postprocess",
           "read_bioasq", "read_split", "register_qa_tasks"]

QA_TASKS = {"bioasq_en": "en", "bioasq_es": "es", "bioasq_fr": "fr", "bioasq_it": "it"}
QA_MIXTURE = "bioasq_multilingual"


@gin.configurable
def bioasq_fields(question: str = "body", snippets: str = "snippets",
                  answers: str = "ideal_answer") -> dict[str, str]:
    """The BioASQ column names, bindable in gin (`bioasq_fields.question = 'question'`)."""
    return {"question": question, "snippets": snippets, "answers": answers}


def _dataset_fn(lang: str, data_dir: str, fields: dict[str, str] | None = None,
                sources: dict[str, str] | None = None):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        import tensorflow as tf  # lazy: tasks.qa_readers stays usable without TensorFlow

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
    import seqio  # lazy: tasks.qa_readers stays usable without seqio/TensorFlow

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
