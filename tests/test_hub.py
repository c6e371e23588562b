"""Hub ids (google/mt5-small, hf://..., @revision) resolved from an offline cache.

The cache is built by hand in huggingface_hub's on-disk layout, as documented in
huggingface_hub's guide "Understand caching" (docs/source/en/guides/manage-cache.md;
https://huggingface.co/docs/huggingface_hub/guides/manage-cache) and written by
huggingface_hub/file_download.py (hf_hub_download: blob by etag, snapshot symlink, ref file):

  $HF_HOME/hub/models--google--mt5-small/
      refs/main                      the commit sha the branch points at (no newline)
      snapshots/<sha>/config.json    symlink -> ../../blobs/<etag>
      snapshots/<sha>/model.safetensors, spiece.model   (same)
      blobs/<etag>                   the file contents (etag = sha256 for LFS files, sha1 else)

HF_HUB_OFFLINE=1: nothing is downloaded (there is no network here either).
"""
import hashlib
import os

import numpy as np
import pytest

from medmt5.checkpointing.checkpoint_io import load_checkpoint
from medmt5.checkpointing.hf_io import save_hf
from medmt5.checkpointing.param_tree import CheckpointError, expected_shapes, flatten, unflatten
from medmt5.cli.convert import main as convert_main
from medmt5.data import hub
from medmt5.model.config import T5Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SPM = os.path.join(ROOT, "tasks", "data", "vocab", "medmt5_tiny.model")
CFG = T5Config(vocab_size=2112, d_model=16, d_kv=4, d_ff=24, num_heads=2, num_encoder_layers=2,
               num_decoder_layers=2, relative_attention_num_buckets=8,
               relative_attention_max_distance=16, dropout_rate=0.0)
SHA_MAIN = "a1" * 20
SHA_V1 = "b2" * 20


def _params(seed):
    rng = np.random.default_rng(seed)
    return unflatten({n: rng.normal(0, 0.3, s).astype(np.float32)
                      for n, s in expected_shapes(CFG).items()})


def _add_snapshot(repo_dir, sha, src_dir):
    """Put every file of src_dir into blobs/ (named by content hash) and link it from
    snapshots/<sha>/, as hf_hub_download does."""
    snap = os.path.join(repo_dir, "snapshots", sha)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "blobs"), exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        data = open(os.path.join(src_dir, name), "rb").read()
        etag = hashlib.sha256(data).hexdigest()
        with open(os.path.join(repo_dir, "blobs", etag), "wb") as f:
            f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", etag), os.path.join(snap, name))
    return snap


def _set_ref(repo_dir, ref, sha):
    """refs/<ref>; a ref with slashes (refs/convert/parquet) is a nested file, as in the hub's
    cache (huggingface_hub/_snapshot_download.py:
    os.path.join(storage_folder, "refs", revision))."""
    os.makedirs(os.path.dirname(os.path.join(repo_dir, "refs", ref)), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", ref), "w") as f:
        f.write(sha)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HOME with google/mt5-small at main (params seed 0) and tag v1 (seed 1)."""
    home = tmp_path / "hf_home"
    repo = str(home / "hub" / "models--google--mt5-small")
    local = {}
    for seed, sha, ref in ((0, SHA_MAIN, "main"), (1, SHA_V1, "v1")):
        src = str(tmp_path / f"src{seed}")
        save_hf(CFG, _params(seed), src)
        with open(TINY_SPM, "rb") as fi, open(os.path.join(src, "spiece.model"), "wb") as fo:
            fo.write(fi.read())
        _add_snapshot(repo, sha, src)
        _set_ref(repo, ref, sha)
        local[ref] = src
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return {"repo": repo, "local": local}


def _logits(cfg, params):
    import jax.numpy as jnp

    from medmt5 import Transformer

    enc = jnp.asarray([[5, 9, 300, 2000, 1, 0]], jnp.int32)
    dec_in = jnp.asarray([[0, 7, 11, 1]], jnp.int32)
    dec_tgt = jnp.asarray([[7, 11, 1, 0]], jnp.int32)
    return np.asarray(Transformer(cfg).apply({"params": params}, enc, dec_in, dec_tgt,
                                             enable_dropout=False))


def test_hub_id_resolves_from_the_offline_cache_and_loads(hub_cache):
    snap = os.path.join(hub_cache["repo"], "snapshots", SHA_MAIN)
    for spelling in ("google/mt5-small", "hf://google/mt5-small", "google/mt5-small@main",
                     f"google/mt5-small@{SHA_MAIN}"):
        assert hub.is_hub_id(spelling)
        assert os.path.realpath(hub.resolve_checkpoint(spelling)) == os.path.realpath(snap)
    folder = hub.resolve_checkpoint("google/mt5-small")
    # The checkpoint's own vocabulary is in the resolved folder (for tasks.vocab to read).
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
    assert sp.get_piece_size() == spm.SentencePieceProcessor(model_file=TINY_SPM).get_piece_size()

    cfg, params = load_checkpoint("google/mt5-small")
    local_cfg, local_params = load_checkpoint(hub_cache["local"]["main"])
    assert cfg == local_cfg
    np.testing.assert_array_equal(_logits(cfg, params), _logits(local_cfg, local_params))


def test_revision_selects_another_snapshot(hub_cache):
    cfg, params = load_checkpoint("hf://google/mt5-small@v1")
    _, main_params = load_checkpoint("google/mt5-small")
    _, v1_local = load_checkpoint(hub_cache["local"]["v1"])
    np.testing.assert_array_equal(_logits(cfg, params), _logits(cfg, v1_local))
    assert not np.array_equal(_logits(cfg, params), _logits(cfg, main_params))


def test_missing_id_offline_names_id_variable_and_download(hub_cache):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint("HiTZ/Medical-mT5-large")
    msg = str(e.value)
    assert "HiTZ/Medical-mT5-large" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download HiTZ/Medical-mT5-large" in msg and str(hub.hub_cache_dir()) in msg
    with pytest.raises(CheckpointError, match="google/mt5-small@nope.*HF_HUB_OFFLINE"):
        load_checkpoint("google/mt5-small@nope")


def test_local_folder_wins_and_paths_are_not_ids(hub_cache, tmp_path):
    os.makedirs(tmp_path / "google")
    os.symlink(hub_cache["local"]["v1"], tmp_path / "google" / "mt5-small")
    assert not hub.is_hub_id("google/mt5-small")  # ./google/mt5-small exists
    _, params = load_checkpoint("google/mt5-small")
    _, v1 = load_checkpoint(hub_cache["local"]["v1"])
    assert all(np.array_equal(a, b) for a, b in zip(flatten(params).values(), flatten(v1).values()))
    for not_id in ("/abs/x", "./x/y", "~/x/y", "gs://b/x", "a/b/c", "plain"):
        assert not hub.is_hub_id(not_id), not_id


def test_convert_takes_a_hub_id(hub_cache, tmp_path):
    dst = str(tmp_path / "ours")
    assert convert_main(["hf-to-medmt5", "google/mt5-small", dst]) == 0
    cfg, params = load_checkpoint(dst)
    _, local = load_checkpoint(hub_cache["local"]["main"])
    np.testing.assert_array_equal(_logits(cfg, params), _logits(cfg, local))


def test_eval_output_of_a_hub_id_is_neither_in_the_cache_nor_an_org_folder(hub_cache, tmp_path):
    from medmt5.cli.eval import default_output_dir

    out = default_output_dir("hf://google/mt5-small@v1", "validation")
    assert out == str(tmp_path / "eval" / "google--mt5-small@v1" / "eval_validation")
    assert not out.startswith(hub.hub_cache_dir())
    assert hub.is_hub_id("google/mt5-small")  # nothing was created at ./google/mt5-small


# ------------------------------------------------------------------ datasets by hub id
# Same cache, repo type "dataset": $HF_HOME/hub/datasets--{org}--{name}/{refs,snapshots,blobs}
# (the guide above; huggingface_hub's repo_folder_name: f"{repo_type}s--{org}--{name}").
# The files inside follow the releases' layouts cited in tests/test_real_layouts.py.


def _add_tree_snapshot(repo_dir, sha, src_dir):
    """_add_snapshot for a tree of folders (dataset repositories have config folders)."""
    snap = os.path.join(repo_dir, "snapshots", sha)
    os.makedirs(os.path.join(repo_dir, "blobs"), exist_ok=True)
    for dirpath, _, names in os.walk(src_dir):
        rel = os.path.relpath(dirpath, src_dir)
        for name in sorted(names):
            data = open(os.path.join(dirpath, name), "rb").read()
            etag = hashlib.sha256(data).hexdigest()
            with open(os.path.join(repo_dir, "blobs", etag), "wb") as f:
                f.write(data)
            link_dir = os.path.normpath(os.path.join(snap, rel))
            os.makedirs(link_dir, exist_ok=True)
            depth = 2 + (0 if rel == "." else len(rel.split(os.sep)))
            os.symlink(os.path.join(*[".."] * depth, "blobs", etag), os.path.join(link_dir, name))
    return snap


@pytest.fixture
def dataset_cache(tmp_path, monkeypatch):
    """HF_HOME holding HiTZ/multilingual-abstrct (main) and aps/super_glue's
    refs/convert/parquet branch (rte/{split}/0000.parquet), HF_HUB_OFFLINE=1."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_real_layouts import _authors_tree, _hub_abstrct

    home = tmp_path / "hf_home"
    src = tmp_path / "abstrct_src"
    _hub_abstrct(str(src / "fr" / "mixed_test-00000-of-00001.parquet"), labels_txt=False)
    _hub_abstrct(str(src / "es" / "neoplasm_train-00000-of-00001.parquet"))
    repo = str(home / "hub" / "datasets--HiTZ--multilingual-abstrct")
    _add_tree_snapshot(repo, SHA_MAIN, str(src))
    _set_ref(repo, "main", SHA_MAIN)

    glue = tmp_path / "glue_src"
    for split in ("train", "validation"):
        (glue / "rte" / split).mkdir(parents=True)
        pq.write_table(pa.table({
            "premise": ["It rained all day.", "The shop was closed."],
            "hypothesis": ["The ground is wet.", "The shop was open."],
            "idx": pa.array([0, 1], pa.int32()), "label": pa.array([0, 1], pa.int64())}),
            str(glue / "rte" / split / "0000.parquet"))
    repo = str(home / "hub" / "datasets--aps--super_glue")
    _add_tree_snapshot(repo, SHA_V1, str(glue))
    _set_ref(repo, "refs/convert/parquet", SHA_V1)  # the file refs/refs/convert/parquet
    bundle = tmp_path / "bundle_src"  # a user's own benchmark folder pushed as one dataset
    _hub_abstrct(str(bundle / "abstrct" / "fr" / "mixed_test-00000-of-00001.parquet"))
    _authors_tree(str(bundle))
    repo = str(home / "hub" / "datasets--me--medbench")
    _add_tree_snapshot(repo, SHA_MAIN, str(bundle))
    _set_ref(repo, "main", SHA_MAIN)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return home


def test_dataset_ids_resolve_from_the_offline_cache(dataset_cache):
    snap = os.path.join(dataset_cache, "hub", "datasets--HiTZ--multilingual-abstrct",
                        "snapshots", SHA_MAIN)
    for ref in ("HiTZ/multilingual-abstrct", "hf://datasets/HiTZ/multilingual-abstrct",
                "hf://datasets/HiTZ/multilingual-abstrct@main/",
                f"HiTZ/multilingual-abstrct@{SHA_MAIN}"):
        assert hub.is_dataset_ref(ref)
        assert os.path.realpath(hub.resolve_data_dir(ref)) == os.path.realpath(snap), ref
    assert hub.resolve_data_dir("hf://datasets/HiTZ/multilingual-abstrct/fr") == \
        os.path.join(hub.resolve_data_dir("HiTZ/multilingual-abstrct"), "fr")
    assert hub.parse_dataset_ref("hf://datasets/aps/super_glue@refs%2Fconvert%2Fparquet/rte") \
        == ("aps/super_glue", "refs/convert/parquet", "rte")
    with pytest.raises(hub.HubError, match="plain relative path"):
        hub.resolve_data_dir("hf://datasets/HiTZ/multilingual-abstrct/../..")
    for not_ref in (None, "/abs/x", "gs://b/x", "./x/y", "a/b/c"):
        assert hub.resolve_data_dir(not_ref) == not_ref


def test_benchmark_source_by_dataset_id(dataset_cache):
    import seqio

    from tasks import benchmark_readers as readers
    from tasks import benchmarks

    try:
        benchmarks.register_benchmark_tasks(sources={"abstrct": "HiTZ/multilingual-abstrct"})
        ds = seqio.get_mixture_or_task("abstrct_mixed_fr").source.get_dataset(
            "test", shuffle=False)
        assert [r["targets"].decode() for r in ds.as_numpy_iterator()] == [
            "<Claim> Cisplatin improved survival </Claim> .",
            "Patients <Premise> tolerated it . </Premise>"]
        [path] = benchmarks.task_files("abstrct_neoplasm_es", "train")
        assert "datasets--HiTZ--multilingual-abstrct" in path
        assert path.endswith("es/neoplasm_train-00000-of-00001.parquet")
        # a whole benchmark folder (abstrct/, ner/) given as a dataset id
        benchmarks.register_benchmark_tasks(data_dir="me/medbench", sources={})
        ds = seqio.get_mixture_or_task("e3c_it").source.get_dataset("test", shuffle=False)
        assert [r["targets"].decode() for r in ds.as_numpy_iterator()][1] == \
            "<ClinicalEntity> Tosse secca </ClinicalEntity> ."
        ds = seqio.get_mixture_or_task("abstrct_mixed_fr").source.get_dataset(
            "test", shuffle=False)
        assert len(list(ds.as_numpy_iterator())) == 2
        assert "datasets--me--medbench" in benchmarks.benchmark_dir("me/medbench")
    finally:
        benchmarks.register_benchmark_tasks()
    with pytest.raises(readers.BenchmarkDataError) as e:
        benchmarks.read_sentences(benchmarks.TASKS_BY_NAME["abstrct_mixed_it"], "test",
                                  benchmarks.DEFAULT_BENCHMARK_DIR,
                                  sources={"abstrct": "HiTZ/no-such-set"})
    msg = str(e.value)
    assert "benchmark source abstrct: dataset HiTZ/no-such-set" in msg
    assert "HF_HUB_OFFLINE=1" in msg and str(hub.hub_cache_dir()) in msg
    assert "`hf download HiTZ/no-such-set --repo-type dataset`" in msg


def test_promot_dir_and_source_by_dataset_id(dataset_cache, monkeypatch):
    import gin
    from tasks import promot_readers

    url = "hf://datasets/aps/super_glue@refs%2Fconvert%2Fparquet"
    rows = promot_readers.read_split("rte", "validation", url)  # the whole repo as the data dir
    assert [r["label"] for r in rows] == ["entailment", "not_entailment"]
    monkeypatch.setenv(promot_readers.DATA_DIR_ENV, url)
    assert promot_readers.read_split("rte", "train") == rows
    monkeypatch.delenv(promot_readers.DATA_DIR_ENV)
    try:
        with gin.unlock_config():
            gin.bind_parameter("promot_sources.sources", {"rte": url + "/rte"})
        [path] = promot_readers.split_files(promot_readers.data_dir(), "rte", "validation")
        assert "datasets--aps--super_glue" in path and path.endswith("rte/validation/0000.parquet")
        assert promot_readers.read_split("rte", "validation") == rows
    finally:
        with gin.unlock_config():
            gin.bind_parameter("promot_sources.sources", None)
    with pytest.raises(promot_readers.PromotDataError) as e:
        promot_readers.read_split("rte", "validation", "hf://datasets/aps/super_glue@v9/rte")
    msg = str(e.value)
    assert "ProMoT data folder: dataset aps/super_glue@v9" in msg
    assert "`hf download aps/super_glue --repo-type dataset --revision v9 --include 'rte/*'`" in msg
    with pytest.raises(promot_readers.PromotDataError, match="has no folder 'cb'"):
        promot_readers.read_split("rte", "validation", url + "/cb")
