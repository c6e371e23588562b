"""Benchmark metrics: seqeval span F1 for sequence labelling, ROUGE for abstractive QA.

Both follow seqio's `metric_fn(targets, predictions) -> {name: float}` convention and
report percentages (0-100). No TensorFlow or seqio import here: seqeval and rouge-score
are imported when a metric is first computed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from tasks import seqlabel


def _check_pairs(targets: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]):
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    for i, (t, p) in enumerate(zip(targets, predictions)):
        if len(t) != len(p):
            raise ValueError(
                f"example {i}: {len(t)} gold tags but {len(p)} predicted tags; predictions "
                "must be postprocessed against the input words (tasks.benchmarks postprocess)")


def span_f1(targets: Sequence[Sequence[str]],
            predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """seqeval micro precision/recall/F1 over exact spans, and F1 per label (0-100).

    `targets` and `predictions` are lists of BIO tag lists, one tag per input word.
    Keys: "precision", "recall", "f1" (micro) and "f1_<Label>" for every label that
    occurs in the gold or predicted tags. With no entities at all on either side the
    prediction is perfect and every score is 100.
    """
    # lazy: only the sequence-labelling tasks need seqeval
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    _check_pairs(targets, predictions)
    y_true = [seqlabel.to_bio(list(t)) for t in targets]
    y_pred = [seqlabel.to_bio(list(p)) for p in predictions]
    gold_labels = {lab for t in y_true for _, _, lab in seqlabel.iob_spans(t)}
    pred_labels = {lab for p in y_pred for _, _, lab in seqlabel.iob_spans(p)}
    if not gold_labels and not pred_labels:
        return {"precision": 100.0, "recall": 100.0, "f1": 100.0}
    kw = dict(average="micro", zero_division=0)
    out = {"precision": 100.0 * float(precision_score(y_true, y_pred, **kw)),
           "recall": 100.0 * float(recall_score(y_true, y_pred, **kw)),
           "f1": 100.0 * float(f1_score(y_true, y_pred, **kw))}
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for label in sorted(gold_labels | pred_labels):
        out[f"f1_{label}"] = 100.0 * float(report[label]["f1-score"])
    return out


# ----------------------------------------------------------------------------------------
# ROUGE with an accent-preserving tokenizer.

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


class UnicodeTokenizer:
    """rouge-score tokenizer that keeps accented letters (the default maps them to spaces).

    Text is NFC-normalised and lower-cased; tokens are maximal runs of Unicode letters
    and digits, so "reumática" stays one token and differs from "reumatica". No
    stemming (rouge-score's Porter stemmer is English-only).
    """

    def tokenize(self, text: str) -> list[str]:
        return _WORD_RE.findall(unicodedata.normalize("NFC", text).lower())


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(targets: Sequence[str | Sequence[str]],
          predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-100) with `UnicodeTokenizer`.

    A target may be a list of references: the best-scoring one counts (rouge-score's
    `score_multi`). Keys: "rouge1", "rouge2", "rougeL".
    """
    from rouge_score import rouge_scorer  # lazy: only the summarisation metric needs it

    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if not targets:
        raise ValueError("rouge needs at least one example")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer())
    totals = {k: 0.0 for k in ROUGE_TYPES}
    for target, prediction in zip(targets, predictions):
        refs = [target] if isinstance(target, str) else list(target)
        scores = scorer.score_multi(refs, prediction)
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / len(targets) for k, v in totals.items()}
