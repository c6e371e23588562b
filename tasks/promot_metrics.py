"""Metrics of the ProMoT in-context evaluation, and the "Norm. Avg." over tasks.

seqio `metric_fn(targets, predictions) -> {name: float}` functions, all on a 0-100 scale:
  accuracy      100 * fraction of exact string matches (CB, WiC, RTE; post-processed labels).
  exact_match   100 * fraction of predictions equal, after SQuAD normalisation (lower case,
                no punctuation, no articles a/an/the, single spaces), to any reference
                (TriviaQA aliases, WebQuestions answers).
  bleu          sacrebleu corpus BLEU with its default 13a tokenizer (already 0-100).
  rouge2        100 * mean ROUGE-2 F-measure (rouge-score, English Porter stemming; the
                best of several references counts).
`normalized_average` is the paper's "Norm. Avg.": the plain mean of those 0-100 scores
(`normalized_average_of_results` picks each task's headline metric first).
Pure Python: sacrebleu and rouge-score are imported when first used; no TensorFlow.
"""
import re
import string
from collections.abc import Mapping, Sequence

Reference = str | Sequence[str]


def _check(targets: Sequence, predictions: Sequence, name: str) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"{name}: {len(targets)} targets but {len(predictions)} predictions")
    if not targets:
        raise ValueError(f"{name}: needs at least one example")


def _references(target: Reference) -> list:
    return [target] if isinstance(target, str) else list(target)


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    _check(targets, predictions, "accuracy")
    hits = sum(t == p for t, p in zip(targets, predictions))
    return {"accuracy": 100.0 * hits / len(targets)}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower, drop punctuation and articles, fix spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(targets: Sequence[Reference], predictions: Sequence[str]) -> dict[str, float]:
    """A target is one answer or a list of acceptable answers (aliases)."""
    _check(targets, predictions, "exact_match")
    hits = 0
    for target, prediction in zip(targets, predictions):
        pred = normalize_answer(prediction)
        hits += any(normalize_answer(ref) == pred for ref in _references(target))
    return {"exact_match": 100.0 * hits / len(targets)}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU, one reference per example (sacrebleu defaults: 13a, exp smoothing)."""
    import sacrebleu  # lazy: only the translation tasks need sacrebleu

    _check(targets, predictions, "bleu")
    refs = [t if isinstance(t, str) else _references(t)[0] for t in targets]
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), [refs]).score)}


def rouge2(targets: Sequence[Reference], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-2 F-measure over examples (English: rouge-score's tokenizer + stemmer)."""
    from rouge_score import rouge_scorer  # lazy: only the summarisation tasks need it

    _check(targets, predictions, "rouge2")
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    total = 0.0
    for target, prediction in zip(targets, predictions):
        total += scorer.score_multi(_references(target), prediction)["rouge2"].fmeasure
    return {"rouge2": 100.0 * total / len(targets)}


# The headline metric of each task family, in lookup order (all on 0-100); seqeval span "f1"
# (tasks.metrics.span_f1) is the medical tagging tasks'. "accuracy" comes last because
# medmt5.run.evaluation also reports a teacher-forced token "accuracy" for every task; only the
# classification tasks (CB, WiC, RTE) have no other metric.
HEADLINE_METRICS = ("exact_match", "bleu", "rouge2", "f1", "accuracy")


def headline_score(scores: Mapping[str, float]) -> float:
    """The score a task contributes to the Norm. Avg.: the first of HEADLINE_METRICS present
    in its metric dict (e.g. rouge2 out of tasks.metrics.rouge's rouge1/rouge2/rougeL)."""
    for key in HEADLINE_METRICS:
        if key in scores:
            return float(scores[key])
    raise KeyError(f"No headline metric among {sorted(scores)}; "
                   f"expected one of {HEADLINE_METRICS}.")


def normalized_average(scores: Mapping[str, float]) -> float:
    """The paper's "Norm. Avg.": the mean over tasks of their 0-100 scores.

    `scores` maps a task name to its headline score (accuracy, exact match, BLEU or
    ROUGE-2 from this module, all percentages). A score outside [0, 100] is an error: it
    means a fraction or an unnormalised number was passed.
    """
    if not scores:
        raise ValueError("normalized_average needs at least one task score")
    for task, value in scores.items():
        if not 0.0 <= float(value) <= 100.0:
            raise ValueError(f"score of {task!r} is {value}, outside 0-100: pass percentages "
                             "(this module's metrics already are)")
    return sum(float(v) for v in scores.values()) / len(scores)


def normalized_average_of_results(results: Mapping[str, Mapping[str, float]]) -> float:
    """Norm. Avg. from per-task metric dicts ({task: {metric: value}}, as seqio returns)."""
    return normalized_average({task: headline_score(m) for task, m in results.items()})


def format_rate(predictions: Sequence[str], pattern: str) -> float:
    """The share (0-100) of `predictions` that are in a target task's output format: the
    stripped text fully matches the regular expression `pattern` (e.g. "(?:true|false)" for
    RTE). ProMoT's mechanism is that fine-tuning makes held-out outputs take this format."""
    if not predictions:
        raise ValueError("format_rate needs at least one prediction")
    regex = re.compile(pattern)
    hits = sum(1 for p in predictions if regex.fullmatch(str(p).strip()))
    return 100.0 * hits / len(predictions)
