"""Pretraining tasks and mixture: registration, rates, and batches through the feature converter."""
import json

import numpy as np
import pytest
import seqio

from tasks import corpus_readers, pretraining, vocab

LENGTHS = {"inputs": 128, "targets": 32}
SENTINEL_MIN = 2100 - 100


@pytest.fixture(autouse=True)
def _default_registration():
    pretraining.register_pretraining_tasks()
    yield
    pretraining.register_pretraining_tasks()


def test_names_registered_at_import():
    for name in ("medmt5_pretrain_en", "medmt5_pretrain_es", "medmt5_pretrain_fr",
                 "medmt5_pretrain_it"):
        task = seqio.get_mixture_or_task(name)
        assert task.output_features["targets"].vocabulary.vocab_size == 2100
    mixture = seqio.get_mixture_or_task("medmt5_pretrain")
    assert sorted(t.name for t in mixture.tasks) == sorted(pretraining.PRETRAIN_TASKS)
    # Default rates: the sample's counted rows (exponent 1.0).
    counts = {name: corpus_readers.count_documents(None, lang)
              for name, lang in pretraining.PRETRAIN_TASKS.items()}
    assert len(set(counts.values())) > 1
    for task in mixture.tasks:
        assert mixture.get_rate(task) == pytest.approx(counts[task.name] / sum(counts.values()))


def test_mixture_rates():
    rates = pretraining.mixture_rates(pretraining.REAL_CORPUS_ROWS, 1.0)
    assert rates["es"] == pytest.approx(35.4 / (21.2 + 35.4 + 7.2 + 3.5))
    flat = pretraining.mixture_rates(pretraining.REAL_CORPUS_ROWS, 0.3)
    assert flat["it"] > rates["it"] and flat["es"] < rates["es"]
    assert sum(flat.values()) == pytest.approx(1.0)
    assert pretraining.mixture_rates({"en": 5, "es": 5}, 0.0) == {"en": 0.5, "es": 0.5}
    with pytest.raises(ValueError, match="exponent"):
        pretraining.mixture_rates({"en": 1}, -1.0)


def test_sample_rates_are_counted(tmp_path):
    sizes = pretraining.language_sizes(None)
    assert sizes == {lang: corpus_readers.count_documents(None, lang)
                     for lang in ("en", "es", "fr", "it")}
    # Another directory defaults to the real corpus rows (counting 67M rows would take hours).
    assert pretraining.language_sizes(str(tmp_path)) == pretraining.REAL_CORPUS_ROWS


def test_reregistration_with_other_data_and_exponent(tmp_path):
    counts = {"en": 8, "es": 2, "fr": 4, "it": 2}
    for lang, n in counts.items():
        with open(tmp_path / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"{lang} document number {i} about asthma"}) + "\n")
    name = pretraining.register_pretraining_tasks(str(tmp_path), "tiny", 0.5, sizes="count")
    assert name == "medmt5_pretrain"
    mixture = seqio.get_mixture_or_task(name)
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates["medmt5_pretrain_en"] == pytest.approx(2 * rates["medmt5_pretrain_es"])
    ds = seqio.get_mixture_or_task("medmt5_pretrain_fr").get_dataset(
        LENGTHS, split="train", shuffle=False, seed=0)
    ex = next(ds.as_numpy_iterator())
    text = vocab.get_vocabulary("tiny").decode(
        [t for t in ex["inputs"] if t < SENTINEL_MIN])
    assert text.startswith("fr document")
    with pytest.raises(ValueError, match="tiny, mt5"):
        pretraining.register_pretraining_tasks(str(tmp_path), "bert")
    # A failed re-registration leaves the previous one in place.
    assert seqio.get_mixture_or_task("medmt5_pretrain") is mixture


@pytest.mark.parametrize("pack", [False, True])
def test_mixture_batches_through_encdec_converter(pack):
    ds = seqio.get_dataset("medmt5_pretrain", task_feature_lengths=LENGTHS,
                           feature_converter=seqio.EncDecFeatureConverter(pack=pack),
                           batch_size=4, seed=3, shuffle=False)
    batches = list(ds.take(3).as_numpy_iterator())
    expected = {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                "decoder_loss_weights"}
    if pack:
        expected |= {"encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
                     "decoder_positions"}
    for b in batches:
        assert set(b) == expected
        assert b["encoder_input_tokens"].shape == (4, 128)
        assert b["decoder_target_tokens"].shape == (4, 32)
        assert all(v.dtype == np.int32 for v in b.values())
        targets = b["decoder_target_tokens"]
        np.testing.assert_array_equal(b["decoder_loss_weights"], (targets > 0).astype(np.int32))
        if not pack:
            # Shifted right with decoder start 0; every row ends in EOS then padding.
            np.testing.assert_array_equal(b["decoder_input_tokens"][:, 1:], targets[:, :-1])
            assert (b["decoder_input_tokens"][:, 0] == 0).all()
            for row in targets:
                n = int((row > 0).sum())
                assert row[n - 1] == vocab.EOS_ID and row[0] == 2099
            for row in b["encoder_input_tokens"]:
                n = int((row > 0).sum())
                assert row[n - 1] == vocab.EOS_ID
                assert (row >= SENTINEL_MIN).sum() >= 1
        else:
            assert b["encoder_segment_ids"].max() >= 1


def _first_examples(seed, n=5):
    ds = seqio.get_mixture_or_task("medmt5_pretrain_it").get_dataset(
        {"inputs": 128, "targets": 29}, split="train", shuffle=False, seed=seed)
    return list(ds.take(n).as_numpy_iterator())


def test_task_examples_exact_lengths_eos_and_seeded():
    examples = _first_examples(seed=0)
    assert len(examples) == 5
    for ex in examples[:-1]:  # full-length chunks (the sample has many per group)
        assert len(ex["inputs"]) == 128 and len(ex["targets"]) == 29
        assert ex["inputs"][-1] == vocab.EOS_ID and ex["targets"][-1] == vocab.EOS_ID
    same, other = _first_examples(seed=0), _first_examples(seed=1)
    for a, b in zip(examples, same):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["targets"], b["targets"])
    assert any(not np.array_equal(a["inputs"], c["inputs"]) for a, c in zip(examples, other))
