"""Span corruption: lengths, exact reconstruction, noise statistics, sentinels, determinism."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from tasks import span_corruption as sc

VOCAB_SIZE = 2100  # the tiny vocabulary: sentinels 2099, 2098, ...


class _FakeVocab:
    vocab_size = VOCAB_SIZE


OUTPUT_FEATURES = {"inputs": seqio.Feature(_FakeVocab(), add_eos=True),
                   "targets": seqio.Feature(_FakeVocab(), add_eos=True)}


def _token_docs(lengths, start=3):
    """Documents of consecutive ids (all < the sentinels), so reconstruction is checkable."""
    docs, nxt = [], start
    for n in lengths:
        docs.append(np.arange(nxt, nxt + n, dtype=np.int32) % 1900 + 3)
        nxt += n
    return docs


def _doc_dataset(docs):
    return tf.data.Dataset.from_generator(
        lambda: ({"targets": d} for d in docs),
        output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def _corrupt(docs, inputs_length, seed, docs_per_concat=4):
    with seqio.utils.map_seed_manager(seed):
        ds = sc.span_corruption(_doc_dataset(docs), {"inputs": inputs_length, "targets": None},
                                OUTPUT_FEATURES, docs_per_concat=docs_per_concat)
    return list(ds.as_numpy_iterator())


def _reconstruct(inputs, targets):
    """Original tokens from corrupted inputs and targets (no EOS)."""
    is_sentinel = targets >= VOCAB_SIZE - 100
    spans, current = {}, None
    for tok, sent in zip(targets, is_sentinel):
        if sent:
            current = int(tok)
            spans[current] = []
        else:
            spans[current].append(int(tok))
    out = []
    for tok in inputs:
        out.extend(spans[int(tok)] if tok >= VOCAB_SIZE - 100 else [int(tok)])
    return out


@pytest.mark.parametrize("inputs_length,raw,targets", [
    (512, 568, 114), (1024, 1137, 229), (128, 141, 29), (480, 532, 108)])
def test_lengths_match_t5(inputs_length, raw, targets):
    assert sc.span_corruption_lengths(inputs_length) == (raw, targets)


def test_lengths_reject_tiny_inputs():
    with pytest.raises(ValueError, match="inputs length"):
        sc.span_corruption_lengths(1)


@pytest.mark.parametrize("inputs_length", [64, 128, 512])
def test_full_chunks_have_exact_lengths_and_reconstruct(inputs_length):
    raw, targets_length = sc.span_corruption_lengths(inputs_length)
    docs = _token_docs([raw * 2 + 17, 90, raw - 5])
    examples = _corrupt(docs, inputs_length, seed=3)
    flat = np.concatenate(docs)
    rebuilt = []
    full = 0
    for ex in examples:
        original = _reconstruct(ex["inputs"], ex["targets"])
        rebuilt.extend(original)
        if len(original) == raw:
            full += 1
            # EOS is appended later: one position is left for it in both features.
            assert len(ex["inputs"]) == inputs_length - 1
            assert len(ex["targets"]) == targets_length - 1
        else:
            assert len(original) < raw
    assert full >= 2
    np.testing.assert_array_equal(rebuilt, flat)  # every token kept, in order


def test_noise_density_and_span_length():
    raw, _ = sc.span_corruption_lengths(512)
    docs = _token_docs([raw] * 60)
    examples = _corrupt(docs, 512, seed=11, docs_per_concat=1)
    noise = total = spans = 0
    span_lengths = []
    for ex in examples:
        sentinels = ex["targets"] >= VOCAB_SIZE - 100
        noise += int((~sentinels).sum())
        spans += int(sentinels.sum())
        total += len(_reconstruct(ex["inputs"], ex["targets"]))
        starts = np.flatnonzero(sentinels)
        span_lengths.extend(np.diff(np.append(starts, len(ex["targets"]))) - 1)
    assert abs(noise / total - 0.15) <= 0.01
    assert abs(noise / spans - 3.0) <= 0.2
    # Random segmentation: spans of many lengths, not a fixed pattern.
    assert len(set(span_lengths)) >= 5 and min(span_lengths) == 1


def test_noise_density_on_variable_lengths():
    docs = _token_docs(list(range(20, 400, 7)))
    examples = _corrupt(docs, 128, seed=5, docs_per_concat=1)
    noise = sum(int((ex["targets"] < VOCAB_SIZE - 100).sum()) for ex in examples)
    total = sum(len(_reconstruct(ex["inputs"], ex["targets"])) for ex in examples)
    assert abs(noise / total - 0.15) <= 0.01


def test_sentinels_count_down_from_top_of_vocabulary():
    docs = _token_docs([300])
    for ex in _corrupt(docs, 128, seed=1):
        for feature in ("inputs", "targets"):
            sentinels = ex[feature][ex[feature] >= VOCAB_SIZE - 100]
            np.testing.assert_array_equal(sentinels, VOCAB_SIZE - 1 - np.arange(len(sentinels)))
        # Non-noise first: targets start with the first sentinel, inputs end with a sentinel.
        assert ex["targets"][0] == VOCAB_SIZE - 1
        assert ex["inputs"][-1] >= VOCAB_SIZE - 100


def test_same_seed_same_examples_different_seed_different():
    docs = _token_docs([400, 250, 333])
    a, b, c = (_corrupt(docs, 128, seed=s) for s in (7, 7, 8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])
    assert any(not np.array_equal(x["inputs"], z["inputs"]) for x, z in zip(a, c))


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_noise_mask_short_lengths(length):
    seeds = [tf.constant([1, 2], tf.int64), tf.constant([3, 4], tf.int64)]
    mask = sc.random_spans_noise_mask(tf.constant(length), seeds).numpy()
    assert mask.shape == (length,)
    assert not mask[0]  # a non-noise span always comes first
    if length >= 2:
        assert mask.sum() >= 1


def test_random_segmentation_sums_and_positive():
    for n, k in [(10, 1), (10, 10), (85, 28), (2, 1)]:
        lengths = sc.random_segmentation(tf.constant(n), tf.constant(k),
                                         tf.constant([5, 6], tf.int64)).numpy()
        assert len(lengths) == k and lengths.sum() == n and lengths.min() >= 1


def test_missing_inputs_length_is_a_clear_error():
    with pytest.raises(ValueError, match="task_feature_lengths"):
        sc.span_corruption(_doc_dataset(_token_docs([5])), None, OUTPUT_FEATURES)
    with pytest.raises(ValueError, match="task_feature_lengths"):
        sc.span_corruption(_doc_dataset(_token_docs([5])), {"inputs": None, "targets": 8},
                           OUTPUT_FEATURES)
