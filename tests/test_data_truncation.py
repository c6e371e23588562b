"""Examples that seqio would cut to TASK_FEATURE_LENGTHS are counted and reported (training:
one warning per task and feature; evaluation of an accuracy / exact-match task: an error),
and a preprocessor's assertion (the encoder budget) reaches the user as our message alone."""
import logging

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from medmt5.data import pipeline as data  # noqa: E402
from tasks import promot_tasks, truncation  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.setattr(truncation, "COUNTS", {})
    monkeypatch.setattr(data, "_WARNED_CUTS", set())


def _target_lengths(task, split):
    full = seqio.get_mixture_or_task(task).get_dataset(
        {"inputs": 1024, "targets": 512}, split=split, shuffle=False)
    return [len(ex["targets"]) for ex in full.as_numpy_iterator()]


def test_long_training_targets_are_counted_and_warned_once(caplog):
    """WMT targets longer than 'targets': 4 are cut by seqio: the iterator says so once, with
    the count, the longest length and the flag; the batches keep their shapes."""
    lengths = _target_lengths("promot_wmt14_enfr", "train")
    cfg = data.DataConfig("promot_wmt14_enfr", {"inputs": 256, "targets": 4}, batch_size=2,
                          pack=False, shuffle=False, num_epochs=1)
    with caplog.at_level(logging.WARNING, logger="medmt5.data.pipeline"):
        with data.get_batches(cfg) as it:
            batches = list(it)
    assert batches and all(b["decoder_target_tokens"].shape == (2, 4) for b in batches)
    cut = truncation.snapshot()[("promot_wmt14_enfr", "targets")]
    assert (cut.count, cut.longest, cut.limit) == (sum(n > 4 for n in lengths), max(lengths), 4)
    warnings = [r.getMessage() for r in caplog.records if "promot_wmt14_enfr" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "TASK_FEATURE_LENGTHS['targets']=4" in warnings[0]
    assert "--gin.TASK_FEATURE_LENGTHS" in warnings[0] and "example(s)" in warnings[0]


def test_targets_that_fit_are_not_reported(caplog):
    lengths = _target_lengths("promot_rte", "train")
    cfg = data.DataConfig("promot_rte", {"inputs": 256, "targets": max(lengths)},
                          batch_size=2, pack=False, shuffle=False, num_epochs=1)
    with caplog.at_level(logging.WARNING, logger="medmt5.data.pipeline"):
        with data.get_batches(cfg) as it:
            list(it)
    assert truncation.snapshot() == {}
    assert not [r for r in caplog.records if "TASK_FEATURE_LENGTHS" in r.getMessage()]


def test_cut_eval_targets_stop_an_accuracy_task_and_warn_for_bleu(caplog):
    """Evaluation: a cut label can never be matched (accuracy, exact match): an error naming
    the task, the feature, the longest length and the flag; BLEU only warns."""
    longest = max(_target_lengths("promot_rte", "validation"))
    assert longest >= 2 and "promot_rte" in truncation.STRICT_EVAL
    with pytest.raises(ValueError) as e:
        data.load_examples("promot_rte", {"inputs": 256, "targets": longest - 1}, "validation")
    msg = str(e.value)
    assert "eval task 'promot_rte' split 'validation'" in msg
    assert f"TASK_FEATURE_LENGTHS['targets']={longest - 1}" in msg
    assert f"the longest: {longest} tokens" in msg and "--gin.TASK_FEATURE_LENGTHS" in msg
    ok = data.load_examples("promot_rte", {"inputs": 256, "targets": longest}, "validation")
    assert all(int(ex["targets_full_length"]) <= longest for ex in ok)

    assert "promot_wmt14_enfr" not in truncation.STRICT_EVAL
    with caplog.at_level(logging.WARNING, logger="medmt5.data.pipeline"):
        examples = data.load_examples("promot_wmt14_enfr", {"inputs": 256, "targets": 4},
                                      "validation")
    assert all(len(ex["targets"]) == 4 for ex in examples if ex["targets_full_length"] > 4)
    assert any("eval task 'promot_wmt14_enfr'" in r.getMessage() and "lowers the score"
               in r.getMessage() for r in caplog.records)


def test_encoder_budget_error_is_our_message_alone():
    """The inputs_fit assertion raised inside tf.data reaches the caller as a ValueError
    holding only the task's message (no TensorFlow iterator / op / node text), in training
    batches and in evaluation examples."""
    pattern = (r"^task promot_rte_1shot: an input of \d+ tokens \(EOS included\) does not fit "
               r"the encoder budget of 32 tokens .*--gin.TASK_FEATURE_LENGTHS.*query\.$")
    cfg = data.DataConfig("promot_rte_1shot", {"inputs": 32, "targets": 8}, batch_size=2,
                          pack=False)
    for call in (lambda: next(data.get_batches(cfg)),
                 lambda: data.load_examples("promot_rte_1shot", {"inputs": 32, "targets": 8},
                                            "validation")):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert e.match(pattern), msg
        for tf_text in ("Iterator", "node", "IteratorGetNext", "assertion failed", "[["):
            assert tf_text not in msg, msg
    assert promot_tasks.ICL_INPUT_TOKENS_ENV in msg


def test_other_tensorflow_errors_keep_their_conversion():
    err = tf.errors.InvalidArgumentError(None, None, "ValueError: en.jsonl:2: malformed JSON")
    assert str(data.input_error(err)) == ("reading the training data failed: en.jsonl:2: "
                                          "malformed JSON")
    plain = ValueError("x")
    assert data.input_error(plain) is plain
    np.testing.assert_equal(truncation.full_length_key("targets"), "targets_full_length")
