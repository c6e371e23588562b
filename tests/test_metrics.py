"""Span F1 and ROUGE against hand-computed values."""
import unicodedata

import pytest

from tasks import metrics


def test_span_f1_perfect_and_per_label():
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"], ["O", "B-Chemical"]]
    out = metrics.span_f1(gold, gold)
    assert out == {"precision": 100.0, "recall": 100.0, "f1": 100.0,
                   "f1_Chemical": 100.0, "f1_Disease": 100.0}


def test_span_f1_hand_computed():
    # gold spans: D[0:2], C[3:4], C[1:2] (second sentence) -> 3
    # pred spans: D[0:1] (wrong boundary), C[3:4] (right), C[1:2] (right), D[0:1] (extra) -> 4
    gold = [["B-D", "I-D", "O", "B-C"], ["O", "B-C", "O"]]
    pred = [["B-D", "O", "O", "B-C"], ["B-D", "B-C", "O"]]
    out = metrics.span_f1(gold, pred)
    p, r = 2 / 4, 2 / 3
    assert out["precision"] == pytest.approx(100 * p)
    assert out["recall"] == pytest.approx(100 * r)
    assert out["f1"] == pytest.approx(100 * 2 * p * r / (p + r))      # 57.142857...
    assert out["f1_C"] == pytest.approx(100.0)                         # 2/2 right
    assert out["f1_D"] == pytest.approx(0.0)                           # 0 of 1 gold, 2 pred


def test_span_f1_accepts_iob1_like_bio():
    gold = [["I-D", "I-D", "O", "I-C"]]
    assert metrics.span_f1(gold, [["B-D", "I-D", "O", "B-C"]])["f1"] == 100.0


def test_span_f1_no_entities_anywhere_is_perfect_and_missing_all_is_zero():
    assert metrics.span_f1([["O", "O"]], [["O", "O"]])["f1"] == 100.0
    assert metrics.span_f1([["B-D", "O"]], [["O", "O"]])["f1"] == 0.0
    assert metrics.span_f1([["O", "O"]], [["B-D", "O"]])["f1"] == 0.0


def test_span_f1_rejects_misaligned_predictions():
    with pytest.raises(ValueError, match="example 0: 2 gold tags but 1 predicted"):
        metrics.span_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 targets but 2 predictions"):
        metrics.span_f1([["O"]], [["O"], ["O"]])


def test_tokenizer_keeps_accents_and_normalises():
    tok = metrics.UnicodeTokenizer()
    assert tok.tokenize("Fiebre reumática, 5 años (ÉPICA)") == [
        "fiebre", "reumática", "5", "años", "épica"]
    decomposed = unicodedata.normalize("NFD", "reumática")
    assert tok.tokenize(decomposed) == ["reumática"]


def test_accents_matter():
    out = metrics.rouge(["fiebre reumática"], ["fiebre reumatica"])
    assert out["rouge1"] == pytest.approx(50.0)    # 1 of 2 unigrams
    assert out["rouge2"] == pytest.approx(0.0)
    assert out["rougeL"] == pytest.approx(50.0)
    assert metrics.rouge(["fiebre reumática"], ["Fiebre reumática."])["rouge1"] == 100.0


def test_rouge_hand_computed():
    # ref: the cat sat on the mat (6), pred: the cat on the mat (5)
    # R1: overlap 5 -> P 1, R 5/6, F 10/11; R2: bigrams 3 of 4 pred / 5 ref -> F 2/3;
    # RL: LCS 5 -> like R1. Second example perfect.
    out = metrics.rouge(["the cat sat on the mat", "la fièvre"],
                        ["the cat on the mat", "la fièvre"])
    assert out["rouge1"] == pytest.approx(100 * (10 / 11 + 1) / 2)
    assert out["rouge2"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert out["rougeL"] == pytest.approx(100 * (10 / 11 + 1) / 2)


def test_rouge_multi_reference_takes_best():
    out = metrics.rouge([["completely different", "la fièvre"]], ["la fièvre"])
    assert out["rouge1"] == 100.0


def test_rouge_rejects_bad_lengths():
    with pytest.raises(ValueError, match="1 targets but 0 predictions"):
        metrics.rouge(["a"], [])
