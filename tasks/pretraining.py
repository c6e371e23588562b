"""Continued-pretraining tasks: span corruption on the multilingual medical corpus.

Tasks medmt5_pretrain_en, medmt5_pretrain_es, medmt5_pretrain_fr, medmt5_pretrain_it and the
mixture medmt5_pretrain (rates proportional to language rows ** exponent). Each task has a
'train' split and a held-out 'validation' split (a stable hash of the document text picks
validation_fraction of the documents; corpus_readers.in_validation_split), which EVAL_PERIOD
evaluates during pretraining (validation loss and token accuracy). Importing this
module registers them on the shipped sample with the tiny vocabulary;
register_pretraining_tasks(data_dir, vocabulary, exponent) re-registers them, e.g. for the
real corpus with the mT5 vocabulary. The CLIs do so through medmt5.data.pipeline.setup_tasks,
bound in gin (setup_tasks.corpus_dir, setup_tasks.vocabulary, setup_tasks.corpus_exponent);
see docs/data.md.
"""
import logging

import seqio
import tensorflow as tf

from tasks import corpus_readers, span_corruption
from tasks import vocab as vocab_lib

# Task name -> corpus language (explicit, greppable).
PRETRAIN_TASKS = {
    "medmt5_pretrain_en": "en",
    "medmt5_pretrain_es": "es",
    "medmt5_pretrain_fr": "fr",
    "medmt5_pretrain_it": "it",
}
PRETRAIN_MIXTURE = "medmt5_pretrain"
# Rows per split of HiTZ/Multilingual-Medical-Corpus (its dataset card; docs/data.md).
REAL_CORPUS_ROWS = {"en": 21_200_000, "es": 35_400_000, "fr": 7_200_000, "it": 3_500_000}


def mixture_rates(sizes, exponent=1.0):
    """{lang: size ** exponent / sum}; exponent 1.0 = proportional, 0.3 = mT5's sampling."""
    if exponent < 0:
        raise ValueError(f"mixture exponent must be >= 0, got {exponent}.")
    bad = {k: v for k, v in sizes.items() if v <= 0}
    if bad:
        raise ValueError(f"language sizes must be positive, got {bad}.")
    weights = {lang: float(n) ** exponent for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def language_sizes(data_dir, sizes=None):
    """Rows per language for the mixture rates.

    sizes: a {lang: rows} dict, "count" (read every file), "reference" (REAL_CORPUS_ROWS), or
    None: count for the shipped sample, the reference rows for any other directory.
    """
    data_dir = corpus_readers.resolve_data_dir(data_dir)
    if sizes is None:
        sizes = "count" if data_dir == corpus_readers.SAMPLE_DATA_DIR else "reference"
    if sizes == "count":
        return {lang: corpus_readers.count_documents(data_dir, lang)
                for lang in PRETRAIN_TASKS.values()}
    if sizes == "reference":
        return dict(REAL_CORPUS_ROWS)
    if isinstance(sizes, dict):
        missing = set(PRETRAIN_TASKS.values()) - set(sizes)
        if missing:
            raise ValueError(f"language sizes lack {sorted(missing)}; give rows for "
                             f"{', '.join(corpus_readers.LANGUAGES)}.")
        return {lang: sizes[lang] for lang in PRETRAIN_TASKS.values()}
    raise ValueError(f'sizes must be None, "count", "reference" or a dict, got {sizes!r}.')


def tokenize_text(dataset, output_features):
    """{"text": str} -> {"targets": int32 [n]} with the targets vocabulary (no EOS)."""
    vocab = output_features["targets"].vocabulary

    @tf.autograph.experimental.do_not_convert
    def encode(features):
        return {"targets": vocab.encode_tf(features["text"])}

    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)


def _pretrain_task(name, lang, data_dir, vocabulary, validation_fraction):
    vocab = vocab_lib.get_vocabulary(vocabulary)
    return seqio.Task(
        name,
        source=corpus_readers.CorpusDataSource(data_dir, lang, validation_fraction),
        preprocessors=[
            tokenize_text,
            seqio.CacheDatasetPlaceholder(),
            span_corruption.span_corruption,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=True, required=False),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        metric_fns=[])


def register_pretraining_tasks(data_dir=None, vocabulary="tiny", exponent=1.0, sizes=None,
                               validation_fraction=None):
    """(Re-)registers the four language tasks and the mixture; returns the mixture name.

    data_dir: corpus directory (None: $MEDMT5_DATA_DIR or the shipped sample); vocabulary:
    "tiny" or "mt5"; exponent: mixture rate = rows ** exponent; sizes: see language_sizes;
    validation_fraction: documents held out (by a stable hash of their text) as each task's
    "validation" split, which EVAL_PERIOD evaluates during pretraining (None: 5% of the
    shipped sample, 1% of any other corpus; 0: no validation split).
    """
    data_dir = corpus_readers.resolve_data_dir(data_dir)
    if validation_fraction is None:
        validation_fraction = corpus_readers.default_validation_fraction(data_dir)
    corpus_readers.check_validation_fraction(validation_fraction)
    # Everything that can fail comes before the old registrations are removed.
    rates = mixture_rates(language_sizes(data_dir, sizes), exponent)
    tasks = {name: _pretrain_task(name, lang, data_dir, vocabulary, validation_fraction)
             for name, lang in PRETRAIN_TASKS.items()}
    seqio.MixtureRegistry.remove(PRETRAIN_MIXTURE)
    for name, task in tasks.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add_provider(name, task)
    seqio.MixtureRegistry.add(
        PRETRAIN_MIXTURE, [(name, rates[lang]) for name, lang in PRETRAIN_TASKS.items()])
    logging.info("Registered %s on %s (vocabulary %s, %g of documents held out for "
                 "validation), rates %s.", PRETRAIN_MIXTURE, data_dir, vocabulary,
                 validation_fraction, {lang: round(r, 4) for lang, r in rates.items()})
    return PRETRAIN_MIXTURE


register_pretraining_tasks()
