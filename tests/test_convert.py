"""Converter CLI and our checkpoint layout: round trips, bad inputs, never a partial DST."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from medmt5.checkpointing.checkpoint_io import (
    load_checkpoint,
    restore_params_item,
    save_params_checkpoint,
)
from medmt5.checkpointing.hf_io import load_hf, save_hf
from medmt5.checkpointing.param_tree import CheckpointError, expected_shapes, flatten, unflatten
from medmt5.checkpointing.t5x_io import write_t5x
from medmt5.cli.convert import main
from medmt5.model.config import T5Config

CFG = T5Config(vocab_size=40, d_model=8, d_kv=3, d_ff=12, num_heads=2, num_encoder_layers=2,
               num_decoder_layers=1, relative_attention_num_buckets=6,
               relative_attention_max_distance=9, dropout_rate=0.1)
WEIGHTS = "model.safetensors"


def _random_params(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return unflatten({n: rng.normal(0, 0.5, s).astype(np.float32)
                      for n, s in expected_shapes(cfg).items()})


def _assert_same(a, b):
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name].dtype == fb[name].dtype and np.array_equal(fa[name], fb[name]), name


def _leftovers(parent):
    return [d for d in os.listdir(parent) if ".tmp-" in d or ".old-" in d]


@pytest.fixture
def hf_dir(tmp_path):
    d = str(tmp_path / "hf")
    save_hf(CFG, _random_params(CFG), d)
    return d


def test_hf_to_medmt5_to_hf_round_trip(hf_dir, tmp_path, capsys):
    ours = str(tmp_path / "ours")
    assert main(["hf-to-medmt5", hf_dir, ours]) == 0
    assert sorted(os.listdir(ours)) == ["checkpoints", "model_config.json"]
    import medmt5

    cfg, params = medmt5.load_checkpoint(ours)  # the public, lazily imported name
    assert cfg == CFG
    _assert_same(params, _random_params(CFG))
    back = str(tmp_path / "back")
    assert main(["medmt5-to-hf", ours, back]) == 0
    assert sorted(os.listdir(back)) == ["config.json", WEIGHTS]
    a, b = load_file(os.path.join(hf_dir, WEIGHTS)), load_file(os.path.join(back, WEIGHTS))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert "wrote" in capsys.readouterr().out
    assert _leftovers(str(tmp_path)) == []


def test_t5x_to_medmt5(tmp_path):
    params = _random_params(CFG, 5)
    write_t5x(params, str(tmp_path / "t5x"), step=12)
    dst = str(tmp_path / "ours")
    assert main(["t5x-to-medmt5", str(tmp_path / "t5x"), dst,
                 "--relative_attention_max_distance", "9"]) == 0
    cfg, got = load_checkpoint(dst)
    assert cfg == CFG.replace(dropout_rate=0.0)  # T5X checkpoints carry no dropout
    _assert_same(got, params)


def test_our_layout_scanned_step_dirs_and_prompt(tmp_path):
    cfg = CFG.replace(scan_layers=True)
    params = _random_params(CFG, 2)
    params["prompt"] = {"prompt": np.arange(6, dtype=np.float32).reshape(3, 2)}
    model_dir = str(tmp_path / "run")
    save_params_checkpoint(cfg, params, model_dir, step=40)
    on_disk = restore_params_item(os.path.join(model_dir, "checkpoints", "40", "params"))
    assert on_disk["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (2, 12, 8)  # scanned
    got_cfg, got = load_checkpoint(model_dir)
    assert got_cfg == cfg.replace(scan_layers=False)
    _assert_same(got, params)
    _assert_same(load_checkpoint(os.path.join(model_dir, "checkpoints", "40"))[1], params)
    with pytest.raises(CheckpointError, match=r"step 3.*\[40\]"):
        load_checkpoint(model_dir, step=3)
    hf = str(tmp_path / "hf")
    assert main(["medmt5-to-hf", model_dir, hf]) == 0  # the prompt is dropped, with a note
    _assert_same(load_hf(hf)[1], {k: v for k, v in params.items() if k != "prompt"})
    with pytest.raises(CheckpointError, match="soft prompt"):
        save_hf(CFG, params, str(tmp_path / "hf2"))


def test_reads_a_training_checkpoint(tmp_path):
    """What medmt5.checkpointing.checkpoints writes during training: sharded jax arrays,
    3 items, async."""
    import jax
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from medmt5.checkpointing.checkpoints import make_checkpoint_manager

    mesh = Mesh(np.array(jax.devices()[:2]).reshape(1, 2), ("data", "model"))
    shard = lambda x: jax.device_put(  # noqa: E731
        x, NamedSharding(mesh, PartitionSpec(None, "model") if x.ndim == 2 and x.shape[1] % 2 == 0
                         else PartitionSpec()))
    model_dir = str(tmp_path / "run")
    manager = make_checkpoint_manager(model_dir, save_period=1, async_save=True, config=CFG)
    for step, seed in ((10, 1), (20, 2)):
        params = jax.tree_util.tree_map(shard, _random_params(CFG, seed))
        manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave({"count": np.int32(step)}),
            train_meta=ocp.args.JsonSave({"step": step})))
    manager.wait_until_finished()
    manager.close()
    cfg, got = load_checkpoint(model_dir)
    assert cfg == CFG
    _assert_same(got, _random_params(CFG, 2))
    _assert_same(load_checkpoint(model_dir, step=10)[1], _random_params(CFG, 1))
    assert all(isinstance(v, np.ndarray) for v in flatten(got).values())


def test_load_checkpoint_names_what_it_looked_for(tmp_path):
    with pytest.raises(CheckpointError,
                       match=r"model_config\.json.*config\.json.*checkpoint_<step>"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope"))


def test_sharded_safetensors_and_pytorch_bin(hf_dir, tmp_path, monkeypatch):
    state = load_file(os.path.join(hf_dir, WEIGHTS))
    names = sorted(state)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(open(os.path.join(hf_dir, "config.json")).read())
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(sharded / fname))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    _assert_same(load_hf(str(sharded))[1], _random_params(CFG))

    index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    if "lm_head.weight" in halves["model-00001-of-00002.safetensors"]:
        index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'lm_head.weight' is listed in shard"):
        load_hf(str(sharded))

    torch = pytest.importorskip("torch")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text(open(os.path.join(hf_dir, "config.json")).read())
    torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()},
               str(bin_dir / "pytorch_model.bin"))
    _assert_same(load_hf(str(bin_dir))[1], _random_params(CFG))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: PyTorch weights need torch"):
        load_hf(str(bin_dir))


def _bert_config(d):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "bert", "hidden_size": 8, "architectures": ["BertModel"]}, f)
    return r"config\.json: field 'model_type' is 'bert'"


def _relu_t5_config(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.update(model_type="t5", feed_forward_proj="relu", tie_word_embeddings=False)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return r"config\.json: field 'feed_forward_proj' is 'relu'"


def _odd_buckets(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.update(relative_attention_num_buckets=7)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return r"config\.json: unusable model config: .*relative_attention_num_buckets"


def _edit_weights(d, fn):
    path = os.path.join(d, WEIGHTS)
    state = load_file(path)
    fn(state)
    save_file(state, path)


def _missing_weight(d):
    _edit_weights(d, lambda s: s.pop("decoder.block.0.layer.1.EncDecAttention.v.weight"))
    return (r"model\.safetensors: missing weight "
            r"'decoder\.block\.0\.layer\.1\.EncDecAttention\.v\.weight'")


def _extra_weight(d):
    _edit_weights(d, lambda s: s.update(
        {"encoder.block.2.layer.0.layer_norm.weight": np.ones(8, np.float32)}))
    return (r"model\.safetensors: unexpected weight "
            r"'encoder\.block\.2\.layer\.0\.layer_norm\.weight'")


def _shape_mismatch(d):
    _edit_weights(d, lambda s: s.update(
        {"encoder.block.1.layer.1.DenseReluDense.wo.weight": np.ones((8, 13), np.float32)}))
    return (r"model\.safetensors: weight 'encoder\.block\.1\.layer\.1\.DenseReluDense\.wo"
            r"\.weight' has shape \(8, 13\), config\.json implies \(8, 12\)")


def _truncated(d):
    path = os.path.join(d, WEIGHTS)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-50])
    return r"model\.safetensors: parameter '[\w.]+' is truncated"


def _untied_without_head(d):
    _edit_weights(d, lambda s: s.pop("lm_head.weight"))
    return r"tie_word_embeddings is false but the weights have no 'lm_head\.weight'"


BAD_INPUTS = {f.__name__.lstrip("_"): f for f in (_bert_config, _relu_t5_config, _odd_buckets,
                                                  _missing_weight,
                                                  _extra_weight, _shape_mismatch, _truncated,
                                                  _untied_without_head)}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hf_input_fails_cleanly(case, hf_dir, tmp_path, capsys):
    pattern = BAD_INPUTS[case](hf_dir)
    dst = str(tmp_path / "dst")
    assert main(["hf-to-medmt5", hf_dir, dst]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medmt5-convert hf-to-medmt5: error: ")
    assert re.search(pattern, err), err
    assert not os.path.exists(dst)
    assert _leftovers(str(tmp_path)) == []


def test_destination_rules(hf_dir, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("user data")
    assert main(["hf-to-medmt5", hf_dir, str(dst)]) == 1
    assert "not empty" in capsys.readouterr().err and (dst / "keep.txt").exists()
    assert main(["hf-to-medmt5", hf_dir, str(dst), "--overwrite"]) == 0
    assert sorted(os.listdir(dst)) == ["checkpoints", "model_config.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["medmt5-to-hf", str(dst), str(empty)]) == 0
    assert _leftovers(str(tmp_path)) == []


def test_module_entry_point_exit_status(tmp_path):
    """`python -m medmt5.convert` exits non-zero with one clear line (here: not a checkpoint)."""
    proc = subprocess.run([sys.executable, "-m", "medmt5.convert", "medmt5-to-hf", str(tmp_path),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "not a checkpoint" in proc.stderr and not os.path.exists(tmp_path / "out")
    usage = subprocess.run([sys.executable, "-m", "medmt5.convert", "bogus"], capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 2 and "the first argument is the command" in usage.stderr \
        and "bogus" in usage.stderr


def test_tied_mt5_reading_depends_on_the_transformers_version(tmp_path):
    """transformers 4.x rescaled a tied mT5's output (= our tied model); 5.x does not (= an
    untied head holding a copy of the embedding)."""
    tied_cfg = CFG.replace(tie_word_embeddings=True)
    params = _random_params(tied_cfg, 4)
    d = str(tmp_path / "tied")
    save_hf(tied_cfg, params, d)
    written = json.load(open(os.path.join(d, "config.json")))
    assert written["model_type"] == "t5" and written["tie_word_embeddings"] is True
    assert load_hf(d)[0] == tied_cfg
    for version, tied in (("4.46.3", True), ("5.2.0", False)):
        json.dump(dict(written, model_type="mt5", transformers_version=version),
                  open(os.path.join(d, "config.json"), "w"))
        cfg, got = load_hf(d)
        assert cfg.tie_word_embeddings == tied, version
        if not tied:
            assert np.array_equal(got["decoder"]["logits_dense"]["kernel"],
                                  params["token_embedder"]["embedding"].T)
