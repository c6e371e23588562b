"""The held-out validation split of the pretraining corpus (a stable hash of the document
text) and its use by EVAL_PERIOD during pretraining."""
import glob
import json
import os
import stat

import numpy as np
import pytest
import seqio
from cli_runs import SMALL_MODEL, clean_gin, compile_cache  # noqa: F401 (fixtures)

from tasks import corpus_readers as cr
from tasks import pretraining


def _texts(source, split, **kwargs):
    return [x["text"].decode() for x in source.get_dataset(split, **kwargs).as_numpy_iterator()]


def _write(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


@pytest.fixture
def corpus(tmp_path):
    """600 distinct documents in three files."""
    docs = [f"Document {i}: patient {i % 7} received treatment {i % 11} for {i} days."
            for i in range(600)]
    os.makedirs(tmp_path / "en")
    for k in range(3):
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"text": docs[k::3]}), tmp_path / "en" / f"{k}.parquet")
    return tmp_path, docs


def test_split_is_disjoint_complete_and_respects_the_fraction(corpus):
    data_dir, docs = corpus
    source = cr.CorpusDataSource(str(data_dir), "en", validation_fraction=0.2)
    assert set(source.splits) == {"train", "validation"}
    train = _texts(source, "train", shuffle=False)
    val = _texts(source, "validation", shuffle=False)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    # binomial(600, 0.2): mean 120, sd 9.8
    assert 120 - 40 < len(val) < 120 + 40
    # membership is the hash of the text alone
    held = cr.in_validation_split(np.array(docs, dtype=object), 0.2).numpy()
    assert sorted(d for d, h in zip(docs, held) if h) == sorted(val)


def test_fraction_is_respected_on_many_documents():
    texts = np.array([f"text number {i}" for i in range(20000)], dtype=object)
    for fraction in (0.01, 0.1, 0.5):
        n = int(cr.in_validation_split(texts, fraction).numpy().sum())
        sd = (20000 * fraction * (1 - fraction)) ** 0.5
        assert abs(n - 20000 * fraction) < 4 * sd, (fraction, n)
    # a larger fraction only adds documents (thresholds on one hash)
    small = cr.in_validation_split(texts, 0.1).numpy()
    large = cr.in_validation_split(texts, 0.3).numpy()
    assert np.all(large[small])


def test_split_is_the_same_in_any_file_order_shard_and_seed(corpus, tmp_path):
    data_dir, docs = corpus
    source = cr.CorpusDataSource(str(data_dir), "en", validation_fraction=0.1)
    reference = sorted(_texts(source, "validation", shuffle=False))
    for seed in (1, 2):
        assert sorted(_texts(source, "validation", shuffle=True, seed=seed)) == reference
    hosts = [_texts(source, "validation", shuffle=False, shard_info=seqio.ShardInfo(i, 3))
             for i in range(3)]
    assert sorted(sum(hosts, [])) == reference
    # the same documents in one file of another format, another order: same split
    other = tmp_path / "other"
    os.makedirs(other)
    _write(other / "en.jsonl", docs[::-1])
    again = cr.CorpusDataSource(str(other), "en", validation_fraction=0.1)
    assert sorted(_texts(again, "validation", shuffle=False)) == reference


def test_no_validation_split_with_fraction_zero_and_bad_fraction_is_named(corpus):
    data_dir, docs = corpus
    source = cr.CorpusDataSource(str(data_dir), "en", validation_fraction=0)
    assert list(source.splits) == ["train"]
    assert len(_texts(source, "train", shuffle=False)) == len(docs)
    with pytest.raises(ValueError, match="corpus_validation_fraction > 0"):
        source.list_shards("validation")
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="setup_tasks.corpus_validation_fraction"):
            cr.CorpusDataSource(str(data_dir), "en", validation_fraction=bad)


def test_shipped_sample_tasks_have_a_validation_split():
    pretraining.register_pretraining_tasks()
    try:
        task = seqio.get_mixture_or_task("medmt5_pretrain_fr")
        assert set(task.splits) == {"train", "validation"}
        val = list(task.source.get_dataset("validation", shuffle=False).as_numpy_iterator())
        n_docs = cr.count_documents(None, "fr")
        assert 0 < len(val) < 0.15 * n_docs  # 5% of the sample's 360 French documents
    finally:
        pretraining.register_pretraining_tasks()


def test_pretraining_logs_a_validation_loss(tmp_path, capsys):
    from medmt5.cli import train
    from medmt5.run.plotting import read_scalars

    model_dir = tmp_path / "run"
    old_mask = os.umask(0o027)  # the whole MODEL_DIR (orbax checkpoints too) follows it
    try:
        rc = train.main(["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
                         "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2",
                         "--gin.train.log_period=1", "--gin.EvalConfig.eval_max_examples=4",
                         "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
                         *SMALL_MODEL])
    finally:
        os.umask(old_mask)
    out, err = capsys.readouterr()
    assert rc == 0, err
    out += err  # the progress writer may use either stream
    assert "eval @ step 2:" in out
    for lang in ("en", "es", "fr", "it"):
        line = [s for s in out.splitlines() if f"medmt5_pretrain_{lang}:" in s]
        assert line and "loss=" in line[0], out
        scalars = read_scalars(str(model_dir / "eval" / f"medmt5_pretrain_{lang}"))
        (step, loss), = scalars["loss"]
        assert step == 2 and np.isfinite(loss) and loss > 0
    assert glob.glob(str(model_dir / "eval" / "*" / "events.out.tfevents.*"))
    assert os.listdir(model_dir / "checkpoints")
    for d, _dirs, files in os.walk(model_dir):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o750, d
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o640, name
