"""SeqIO registrations of the ProMoT fine-tuning tasks and in-context evaluation tasks.

Fine-tuning (zero-shot template; `_1shot` = the paper's "ProMoT + 1-shot" variant, whose
demonstration comes from the train split, never the example itself):
  promot_rte, promot_rte_1shot                 RTE, accuracy
  promot_wmt14_enfr, promot_wmt14_enfr_1shot   WMT14 En->Fr, BLEU
In-context evaluation, 1-shot and 4-shot, demonstrations from the train split:
  icl_cb_{1,4}shot, icl_wic_{1,4}shot                      accuracy      (validation file)
  icl_triviaqa_{1,4}shot                                  exact match   (validation file)
  icl_webquestions_{1,4}shot                              exact match   (test file)
  icl_wmt16_ende_{1,4}shot, icl_wmt16_enro_{1,4}shot      BLEU          (test file)
  icl_xsum_{1,4}shot, icl_wikilingua_en_{1,4}shot         ROUGE-2       (test file)
  Every icl_* task has the single seqio split "test" (the data the paper evaluates on), so
  one split name evaluates a whole mixture.
Mixtures: icl_heldout_1shot, icl_heldout_4shot (the 8 evaluation tasks), promot_multitask.
The medical in-context suite (icl_med_*) is registered by `tasks/icl_medical_tasks.py`.

Importing this module registers everything with the tiny vocabulary; call
`register_promot_tasks(data_dir=..., vocabulary="mt5")` to re-register the same names for
real runs (as `tasks.benchmarks.register_benchmark_tasks` does for the benchmarks).
Data: `{data_dir}/{dataset}/{split}.jsonl` (layouts in tasks/promot_readers.py); data_dir is
the argument, else $MEDMT5_PROMOT_DIR, else the shipped samples tasks/data/promot. Without
an argument the folder is resolved when a dataset is built, so the variable may be set later.
Length budget: few-shot inputs are cut (demonstrations dropped or shortened, the query kept)
to $MEDMT5_ICL_INPUT_TOKENS tokens (default 1024) including EOS; an input longer than the
inputs feature length (e.g. a `_1shot` task fed 512 by the stage configs) is an error naming
the task, the example's length and the flag, never a silent cut of the query.
"""
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import seqio
import tensorflow as tf

from tasks import icl, promot_metrics, promot_readers, truncation, vocab

ICL_INPUT_TOKENS_ENV = "MEDMT5_ICL_INPUT_TOKENS"
DEFAULT_ICL_INPUT_TOKENS = 1024
# Demonstrations are drawn from the first ICL_POOL_EXAMPLES train examples (all of them for
# every dataset here except WMT, XSum, TriviaQA and WikiLingua, whose train splits are
# larger); the first examples of a file may not be a random sample of it.
ICL_POOL_EXAMPLES = 50_000
SELECTION_SEED = 0  # demonstration selection seed (per query index, see tasks/icl.py)


@dataclasses.dataclass(frozen=True)
class PromotTask:
    """One registered task: the dataset folder, template, query splits and shots."""

    dataset: str
    template: str
    splits: dict[str, str]  # seqio split -> file split ({data_dir}/{dataset}/{file}.jsonl)
    num_shots: int
    metric_fn: Callable[..., dict[str, float]]
    pool_split: str = "train"


_TV = {"train": "train", "validation": "validation"}
_TVT = {"train": "train", "validation": "validation", "test": "test"}
# In-context tasks have one split, "test": the data the paper evaluates on. For CB, WiC and
# TriviaQA that is the public validation file (their public test sets are unlabelled).
_EVAL_ON_VALIDATION = {"test": "validation"}
_EVAL_ON_TEST = {"test": "test"}
_ACC, _EM = promot_metrics.accuracy, promot_metrics.exact_match
_BLEU, _R2 = promot_metrics.bleu, promot_metrics.rouge2

# The explicit table of task names (grep for a name to find its definition).
TASKS: dict[str, PromotTask] = {
    "promot_rte": PromotTask("rte", "rte", _TV, 0, _ACC),
    "promot_rte_1shot": PromotTask("rte", "rte", _TV, 1, _ACC),
    "promot_wmt14_enfr": PromotTask("wmt14_fr_en", "translation",
                                    _TVT, 0, _BLEU),
    "promot_wmt14_enfr_1shot": PromotTask("wmt14_fr_en", "translation",
                                          _TVT, 1, _BLEU),
    "icl_cb_1shot": PromotTask("cb", "cb", _EVAL_ON_VALIDATION, 1, _ACC),
    "icl_cb_4shot": PromotTask("cb", "cb", _EVAL_ON_VALIDATION, 4, _ACC),
    "icl_wic_1shot": PromotTask("wic", "wic", _EVAL_ON_VALIDATION, 1, _ACC),
    "icl_wic_4shot": PromotTask("wic", "wic", _EVAL_ON_VALIDATION, 4, _ACC),
    "icl_triviaqa_1shot": PromotTask("trivia_qa", "qa", _EVAL_ON_VALIDATION, 1, _EM),
    "icl_triviaqa_4shot": PromotTask("trivia_qa", "qa", _EVAL_ON_VALIDATION, 4, _EM),
    "icl_webquestions_1shot": PromotTask("web_questions", "qa", _EVAL_ON_TEST, 1, _EM),
    "icl_webquestions_4shot": PromotTask("web_questions", "qa", _EVAL_ON_TEST, 4, _EM),
    "icl_wmt16_ende_1shot": PromotTask("wmt16_de_en", "translation", _EVAL_ON_TEST, 1, _BLEU),
    "icl_wmt16_ende_4shot": PromotTask("wmt16_de_en", "translation", _EVAL_ON_TEST, 4, _BLEU),
    "icl_wmt16_enro_1shot": PromotTask("wmt16_ro_en", "translation", _EVAL_ON_TEST, 1, _BLEU),
    "icl_wmt16_enro_4shot": PromotTask("wmt16_ro_en", "translation", _EVAL_ON_TEST, 4, _BLEU),
    "icl_xsum_1shot": PromotTask("xsum", "summarization", _EVAL_ON_TEST, 1, _R2),
    "icl_xsum_4shot": PromotTask("xsum", "summarization", _EVAL_ON_TEST, 4, _R2),
    "icl_wikilingua_en_1shot": PromotTask("wiki_lingua_en", "summarization", _EVAL_ON_TEST, 1, _R2),
    "icl_wikilingua_en_4shot": PromotTask("wiki_lingua_en", "summarization", _EVAL_ON_TEST, 4, _R2),
}

MIXTURES: dict[str, tuple[str, ...]] = {
    "icl_heldout_1shot": ("icl_cb_1shot", "icl_wic_1shot", "icl_triviaqa_1shot",
                          "icl_webquestions_1shot", "icl_wmt16_ende_1shot",
                          "icl_wmt16_enro_1shot", "icl_xsum_1shot", "icl_wikilingua_en_1shot"),
    "icl_heldout_4shot": ("icl_cb_4shot", "icl_wic_4shot", "icl_triviaqa_4shot",
                          "icl_webquestions_4shot", "icl_wmt16_ende_4shot",
                          "icl_wmt16_enro_4shot", "icl_xsum_4shot", "icl_wikilingua_en_4shot"),
    "promot_multitask": ("promot_rte", "promot_wmt14_enfr"),
}


def icl_input_tokens() -> int:
    raw = os.environ.get(ICL_INPUT_TOKENS_ENV, str(DEFAULT_ICL_INPUT_TOKENS))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"${ICL_INPUT_TOKENS_ENV}={raw!r}: expected a positive token count.")
    return value


def token_length_fn(vocabulary: seqio.Vocabulary) -> Callable[[str], int]:
    """Length in the task vocabulary's tokens, EOS included."""
    return lambda text: len(vocabulary.encode(text)) + 1


def iter_format_split(spec: PromotTask, split: str, data_dir: str | None = None,
                      vocabulary: str = "tiny", length_fn: Callable[[str], int] | None = None,
                      max_length: int | None = None,
                      pool_limit: int = ICL_POOL_EXAMPLES) -> Iterator[dict[str, Any]]:
    """Streams the formatted rows (inputs, targets, answers, idx, num_shots) of a task split.

    Queries stream from the file (the WMT14 train split is never held whole); demonstrations
    come from the first `pool_limit` train examples. Few-shot tasks are cut to `max_length`
    (default $MEDMT5_ICL_INPUT_TOKENS) in units of `length_fn` (default: tokens of
    `vocabulary`, EOS included); zero-shot ones are not cut.
    """
    if split not in spec.splits:
        raise ValueError(f"Split {split!r} is not registered for {spec.dataset}; "
                         f"available: {list(spec.splits)}.")
    root = promot_readers.data_dir(data_dir)
    pool: list[dict[str, Any]] = []
    if spec.num_shots:
        pool = promot_readers.read_split(spec.dataset, spec.pool_split, root, limit=pool_limit)
        length_fn = length_fn or token_length_fn(vocab.get_vocabulary(vocabulary))
        max_length = max_length or icl_input_tokens()
    queries = promot_readers.iter_split(spec.dataset, spec.splits[split], root)
    return icl.iter_format_examples(
        icl.get_template(spec.template), queries, pool, spec.num_shots, seed=SELECTION_SEED,
        max_length=max_length if spec.num_shots else None, length_fn=length_fn or len,
        pool_is_query_split=(spec.splits[split] == spec.pool_split))


def format_split(spec: PromotTask, split: str, **kwargs) -> list[dict[str, Any]]:
    """`iter_format_split` as a list."""
    return list(iter_format_split(spec, split, **kwargs))


_ROW_SIGNATURE = {
    "inputs": tf.TensorSpec([], tf.string),
    "targets": tf.TensorSpec([], tf.string),
    "answers": tf.TensorSpec([None], tf.string),
    "idx": tf.TensorSpec([], tf.int32),
    "num_shots": tf.TensorSpec([], tf.int32),
}


def rows_to_dataset(make_rows: Callable[[], Iterable[dict[str, Any]]],
                    extra: dict[str, tf.TensorSpec] | None = None) -> tf.data.Dataset:
    """tf.data over the rows `make_rows()` yields (called anew per iteration): inputs/targets
    (str), answers ([None] str), idx, num_shots (int32), plus the `extra` scalar features."""
    signature = dict(_ROW_SIGNATURE, **(extra or {}))

    def generate():
        for row in make_rows():
            yield {k: row[k] for k in signature}

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _dataset_fn(spec: PromotTask, data_dir: str | None, vocabulary: str):
    def dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None):
        del shuffle_files, seed  # one file per split; seqio shuffles examples
        if split not in spec.splits:
            raise ValueError(f"Split {split!r} is not registered for {spec.dataset}; "
                             f"available: {list(spec.splits)}.")
        root = promot_readers.data_dir(data_dir)
        promot_readers.split_file(root, spec.dataset, spec.splits[split])  # fail here, not
        if spec.num_shots:                                     # inside tf.data
            promot_readers.split_file(root, spec.dataset, spec.pool_split)
        icl_input_tokens()  # validates $MEDMT5_ICL_INPUT_TOKENS now
        return rows_to_dataset(lambda: iter_format_split(spec, split, data_dir=root,
                                                         vocabulary=vocabulary))
    return dataset_fn


def output_features(vocabulary: str = "tiny") -> dict[str, seqio.Feature]:
    v = vocab.get_vocabulary(vocabulary)
    return {"inputs": seqio.Feature(v, add_eos=True, required=True),
            "targets": seqio.Feature(v, add_eos=True, required=True)}


def inputs_fit(task_name: str) -> Callable[..., tf.data.Dataset]:
    """A seqio preprocessor (after tokenize) that stops with an error when an example's
    inputs (EOS included) are longer than the inputs feature length, instead of letting
    seqio cut the end of the query (e.g. "answer:") silently. The error names the task, the
    example's length and the flag to change."""

    def check(dataset: tf.data.Dataset, sequence_length=None,
              output_features=None) -> tf.data.Dataset:
        if not sequence_length or sequence_length.get("inputs") is None:
            return dataset
        limit = int(sequence_length["inputs"])
        eos = 1 if output_features and output_features["inputs"].add_eos else 0

        def fn(ex):
            n = tf.size(ex["inputs"]) + eos
            message = tf.strings.format(
                "task " + task_name + ": an input of {} tokens (EOS included) does not fit "
                "the encoder budget of " + str(limit) + " tokens (TASK_FEATURE_LENGTHS "
                "inputs). Raise the inputs length with the flag --gin.TASK_FEATURE_LENGTHS "
                "to at least the longest input (few-shot inputs are cut to $" +
                ICL_INPUT_TOKENS_ENV + " tokens, default " + str(DEFAULT_ICL_INPUT_TOKENS) +
                "), or set $" + ICL_INPUT_TOKENS_ENV + "=" + str(limit) + " to cut the "
                "demonstrations to fit. seqio would otherwise cut the end of the query.", [n])
            with tf.control_dependencies([tf.debugging.Assert(n <= limit, [message])]):
                return dict(ex, inputs=tf.identity(ex["inputs"]))
        return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return check


def register_task(name: str, source: seqio.DataSource, postprocess_fn: Callable[..., Any],
                  metric_fn: Callable[..., dict[str, float]], vocabulary: str = "tiny") -> None:
    """Registers one text-to-text ICL/ProMoT task (re-registration replaces it). An input
    longer than the inputs feature length is an error (`inputs_fit`), never a silent cut; a
    longer target is counted (`tasks.truncation`): a warning in training, an error in the
    evaluation of an accuracy / exact-match task."""
    seqio.TaskRegistry.remove(name)
    truncation.mark_strict(name, metric_fn)
    seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=[seqio.preprocessors.tokenize, inputs_fit(name),
                       truncation.count_cut(name), seqio.preprocessors.append_eos_after_trim],
        output_features=output_features(vocabulary),
        postprocess_fn=postprocess_fn,
        metric_fns=[metric_fn],
    )


def register_mixture(name: str, task_names: Sequence[str]) -> None:
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(task_names), default_rate=1.0)


def register_promot_tasks(data_dir: str | None = None, vocabulary: str = "tiny") -> None:
    """(Re-)registers every task and mixture in TASKS / MIXTURES.

    data_dir: the ProMoT data folder (None: $MEDMT5_PROMOT_DIR or the samples, resolved when
    a dataset is built); vocabulary: "tiny" or "mt5" (tasks.vocab.get_vocabulary).
    """
    for name, spec in TASKS.items():
        source = seqio.FunctionDataSource(_dataset_fn(spec, data_dir, vocabulary),
                                          splits=list(spec.splits))
        register_task(name, source, icl.make_postprocess_fn(icl.get_template(spec.template)),
                      spec.metric_fn, vocabulary)
    for name, members in MIXTURES.items():
        register_mixture(name, members)


register_promot_tasks()
