"""medmt5.data.pipeline: feature shapes, packing, sharding, deterministic shuffling and exact
resume."""

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from medmt5.data import pipeline as data  # noqa: E402

TASK = "medmt5_test_data_glue"
_WORDS = "patient fever cough heart lung liver tumor dose drug trial".split()


def _source(split, shuffle_files, seed=None):
    del shuffle_files, seed
    n = 40 if split == "train" else 6
    texts_in = [" ".join(_WORDS[(i + j) % 10] for j in range(3 + i % 5)) for i in range(n)]
    texts_out = [f"{i} " + _WORDS[i % 10] for i in range(n)]
    return tf.data.Dataset.from_tensor_slices({"inputs": texts_in, "targets": texts_out})


def _register():
    if TASK in seqio.TaskRegistry.names():
        return
    vocab = seqio.ByteVocabulary()
    seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(_source, splits=["train", "validation"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={"inputs": seqio.Feature(vocab, add_eos=True),
                         "targets": seqio.Feature(vocab, add_eos=True)},
    )


@pytest.fixture(scope="module", autouse=True)
def task():
    _register()
    yield


LENGTHS = {"inputs": 48, "targets": 16}


def _config(**kw):
    base = dict(mixture_or_task_name=TASK, task_feature_lengths=LENGTHS, batch_size=4,
                seed=7, pack=False)
    base.update(kw)
    return data.DataConfig(**base)


def test_unpacked_features_and_shapes():
    it = data.get_batches(_config())
    batch = next(it)
    assert it.position == 1
    assert set(batch) == set(data.MODEL_FEATURES)
    assert batch["encoder_input_tokens"].shape == (4, 48)
    for k in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
        assert batch[k].shape == (4, 16) and batch[k].dtype == np.int32
    # decoder inputs are the targets shifted right; loss weights mark real target tokens.
    np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:],
                                  batch["decoder_target_tokens"][:, :-1])
    np.testing.assert_array_equal(batch["decoder_loss_weights"],
                                  batch["decoder_target_tokens"] > 0)
    # every row ends its input with EOS (=1) before padding.
    for row in batch["encoder_input_tokens"]:
        assert row[np.count_nonzero(row) - 1] == 1


def test_packed_batches_have_segments():
    lengths = {"inputs": 96, "targets": 32}
    batch = next(data.get_batches(_config(pack=True, task_feature_lengths=lengths)))
    assert "encoder_segment_ids" in batch and "decoder_positions" in batch
    assert batch["encoder_segment_ids"].max() >= 2  # several examples per row


def test_same_seed_same_stream_other_seed_differs():
    a = [next(data.get_batches(_config()))["encoder_input_tokens"] for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    b = next(data.get_batches(_config(seed=8)))["encoder_input_tokens"]
    assert not np.array_equal(a[0], b)


def test_resume_at_exact_position():
    it = data.get_batches(_config())
    stream = [next(it) for _ in range(14)]  # 40 examples / 4 -> crosses an epoch boundary
    assert it.position == 14
    resumed = data.get_batches(_config(), start_position=9)
    assert resumed.position == 9
    for expected in stream[9:]:
        got = next(resumed)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
    assert resumed.position == 14


def test_shards_are_disjoint():
    def firsts(index):
        cfg = _config(shuffle=False, num_epochs=1, shard_index=index, num_shards=2)
        return {tuple(r) for b in data.get_batches(cfg) for r in b["encoder_input_tokens"]}
    s0, s1 = firsts(0), firsts(1)
    assert s0 and s1 and not (s0 & s1)


def test_unknown_task_and_bad_lengths_are_named():
    with pytest.raises(ValueError, match="MIXTURE_OR_TASK_NAME='no_such_task'"):
        data.get_batches(_config(mixture_or_task_name="no_such_task"))
    with pytest.raises(ValueError, match="lacks \\['targets'\\]"):
        data.get_batches(_config(task_feature_lengths={"inputs": 8}))


def test_load_examples_and_numpy_conversion():
    examples = data.load_examples(TASK, LENGTHS, "validation")
    assert len(examples) == 6
    assert data.as_text(examples[0]["targets_pretokenized"]) == "0 patient"
    batch = data.examples_to_batch(examples, LENGTHS)
    ref = next(data.get_batches(_config(split="validation", shuffle=False, batch_size=6,
                                        num_epochs=1)))
    for k in data.MODEL_FEATURES:
        np.testing.assert_array_equal(batch[k], ref[k])
    with pytest.raises(ValueError, match="no split 'test'"):
        data.load_examples(TASK, LENGTHS, "test")
