"""T5X checkpoint layout: write in t5x's format, read back (params, optimizer state, logits),
the on-disk variants official checkpoints use, and clear errors for broken checkpoints."""
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from medmt5.checkpointing.checkpoint_io import load_checkpoint
from medmt5.checkpointing.param_tree import CheckpointError, expected_shapes, flatten, unflatten
from medmt5.checkpointing.t5x_io import find_t5x_checkpoint, load_t5x, read_t5x_state, write_t5x
from medmt5.model.config import T5Config
from medmt5.model.transformer import Transformer

CFG = T5Config(vocab_size=48, d_model=12, d_kv=5, d_ff=20, num_heads=2, num_encoder_layers=2,
               num_decoder_layers=1, relative_attention_num_buckets=10,
               relative_attention_max_distance=24)


def _random_params(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return unflatten({n: rng.normal(0, 0.5, s).astype(np.float32)
                      for n, s in expected_shapes(cfg).items()})


def _adafactor_like_states(params):
    """state/param_states as T5X's Adafactor keeps them: v_row/v_col for 2-D, v for 1-D."""
    out = {}
    for name, arr in flatten(params).items():
        if arr.ndim == 2:
            out[name + "/v_row"] = np.abs(arr).mean(1)
            out[name + "/v_col"] = np.abs(arr).mean(0)
        else:
            out[name + "/v"] = arr * arr
    return unflatten(out)


def _read_msgpack(step_dir):
    with open(os.path.join(step_dir, "checkpoint"), "rb") as f:
        return serialization.msgpack_restore(f.read())


def _write_msgpack(step_dir, contents):
    with open(os.path.join(step_dir, "checkpoint"), "wb") as f:
        f.write(serialization.msgpack_serialize(contents))


@pytest.fixture(scope="module")
def t5x_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("t5x") / "model")
    params = _random_params(CFG)
    write_t5x(params, root, step=7, param_states=_adafactor_like_states(params))
    return root, params


def _assert_same(a, b):
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name].dtype == fb[name].dtype, name
        assert np.array_equal(fa[name], fb[name]), name


def test_layout_matches_t5x(t5x_dir):
    root, params = t5x_dir
    step_dir = os.path.join(root, "checkpoint_7")
    contents = _read_msgpack(step_dir)
    assert contents["version"] == 3
    assert set(contents["optimizer"]) == {"target", "state"}
    spec = contents["optimizer"]["target"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert spec["driver"] == "zarr"
    assert spec["kvstore"]["driver"] == "file"
    assert spec["kvstore"]["path"].rstrip("/") == "target.encoder.layers_0.attention.query.kernel"
    assert list(spec["metadata"]["shape"]) == [12, 10]
    zarr_dir = os.path.join(step_dir, "target.encoder.layers_0.attention.query.kernel")
    assert os.path.isfile(os.path.join(zarr_dir, ".zarray"))
    assert os.path.isdir(os.path.join(
        step_dir, "state.param_states.encoder.layers_0.attention.query.kernel.v_row"))
    assert int(contents["optimizer"]["state"]["step"]) == 7
    assert not [d for d in os.listdir(root) if ".tmp-" in d]


def test_read_back_params_state_config_and_logits(t5x_dir):
    root, params = t5x_dir
    cfg, got = load_checkpoint(root, relative_attention_max_distance=24)
    assert cfg == CFG
    _assert_same(got, params)
    state = read_t5x_state(root, prefix="state")
    assert int(state["step"]) == 7
    _assert_same(unflatten({k[len("param_states/"):]: v for k, v in state.items() if k != "step"}),
                 _adafactor_like_states(params))
    enc = jnp.asarray([[5, 9, 3, 1, 0, 0]], jnp.int32)
    dec = jnp.asarray([[0, 7, 2, 4]], jnp.int32)
    tgt = jnp.asarray([[7, 2, 4, 1]], jnp.int32)
    model = Transformer(cfg)
    apply = jax.jit(lambda p: model.apply({"params": p}, enc, dec, tgt, enable_dropout=False))
    assert np.array_equal(np.asarray(apply(got)), np.asarray(apply(params)))


def test_step_selection_and_path_forms(tmp_path):
    root = str(tmp_path / "m")
    p3, p9 = _random_params(CFG, 3), _random_params(CFG, 9)
    write_t5x(p3, root, step=3)
    write_t5x(p9, root, step=9)
    _assert_same(load_t5x(root, relative_attention_max_distance=24)[1], p9)
    _assert_same(load_t5x(root, step=3, relative_attention_max_distance=24)[1], p3)
    step_dir = os.path.join(root, "checkpoint_3")
    _assert_same(load_checkpoint(step_dir, relative_attention_max_distance=24)[1], p3)
    _assert_same(load_checkpoint(os.path.join(step_dir, "checkpoint"), config=CFG)[1], p3)
    with pytest.raises(CheckpointError, match=r"step 5.*\[3, 9\]"):
        load_t5x(root, step=5)
    with pytest.raises(CheckpointError, match="already exists"):
        write_t5x(p3, root, step=3)


def test_official_spec_variants_and_inline_arrays(t5x_dir, tmp_path):
    """Old tensorstore specs (path at top level), GCS-written specs, arrays inside the msgpack."""
    root, params = t5x_dir
    step_dir = str(tmp_path / "checkpoint_7")
    shutil.copytree(os.path.join(root, "checkpoint_7"), step_dir)
    contents = _read_msgpack(step_dir)
    target = contents["optimizer"]["target"]
    old = target["encoder"]["encoder_norm"]["scale"]
    target["encoder"]["encoder_norm"]["scale"] = dict(old, path=old["kvstore"]["path"],
                                                      kvstore={"driver": "file"})
    gcs = target["decoder"]["decoder_norm"]["scale"]
    target["decoder"]["decoder_norm"]["scale"] = dict(
        gcs, kvstore={"driver": "gcs", "bucket": "t5x-dummy-bucket",
                      "path": gcs["kvstore"]["path"]})
    target["token_embedder"]["embedding"] = params["token_embedder"]["embedding"]
    _write_msgpack(step_dir, contents)
    _assert_same(load_checkpoint(step_dir, config=CFG)[1], params)


def test_bfloat16_save_dtype(tmp_path):
    params = _random_params(CFG, 1)
    write_t5x(params, str(tmp_path), step=0, save_dtype=ml_dtypes.bfloat16)
    _, got = load_t5x(str(tmp_path), config=CFG)
    for name, arr in flatten(got).items():
        assert arr.dtype == ml_dtypes.bfloat16, name
        assert np.array_equal(arr, flatten(params)[name].astype(ml_dtypes.bfloat16)), name


def test_broken_checkpoints_name_file_and_parameter(t5x_dir, tmp_path):
    root, _ = t5x_dir
    name = "target.decoder.layers_0.mlp.wo.kernel"

    def fresh(tag):
        d = str(tmp_path / tag / "checkpoint_7")
        shutil.copytree(os.path.join(root, "checkpoint_7"), d)
        return d

    missing = fresh("missing")
    shutil.rmtree(os.path.join(missing, name))
    with pytest.raises(CheckpointError,
                       match=r"target/decoder/layers_0/mlp/wo/kernel.*does not exist"):
        load_checkpoint(missing, config=CFG)

    corrupt = fresh("corrupt")
    chunk = os.path.join(corrupt, name, "0.0")
    with open(chunk, "wb") as f:
        f.write(b"not gzip data")
    with pytest.raises(CheckpointError, match=r"mlp\.wo\.kernel.*cannot read parameter "
                                              r"target/decoder/layers_0/mlp/wo/kernel"):
        load_checkpoint(corrupt, config=CFG)

    lost_chunk = fresh("lost_chunk")
    os.remove(os.path.join(lost_chunk, name, "0.0"))
    with pytest.raises(CheckpointError, match=r"wo\.kernel: parameter target/decoder/layers_0/"
                                              r"mlp/wo/kernel: chunk file '0.0' is missing"):
        load_checkpoint(lost_chunk, config=CFG)

    truncated = fresh("truncated")
    path = os.path.join(truncated, "checkpoint")
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError,
                       match=r"truncated/checkpoint_7/checkpoint: not a readable T5X"):
        load_checkpoint(truncated, config=CFG)

    wrong = T5Config(**dict(CFG.to_dict(), num_decoder_layers=2))
    with pytest.raises(CheckpointError, match=r"missing parameter 'decoder/layers_1/"):
        load_t5x(root, config=wrong)


def test_scanned_and_non_checkpoint_paths_are_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="looked for"):
        find_t5x_checkpoint(str(tmp_path))
    scanned = {"token_embedder": {"embedding": np.zeros((4, 2), np.float32)},
               "encoder": {"layers": {"mlp": {"wo": {"kernel": np.zeros((3, 2, 2), np.float32)}}}}}
    write_t5x(scanned, str(tmp_path), step=1)
    with pytest.raises(CheckpointError, match="scanned T5X checkpoint"):
        load_t5x(str(tmp_path))
