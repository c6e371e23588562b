"""gs:// checkpoints and MODEL_DIR, against a local GCS emulator (tests/gcs_emulator.py).

The same checkpoints as the local tests (test_convert's tiny config, the CLI's tiny run) are
written to and read from gs://medmt5-test/... through medmt5.data.paths: etils.epath with gcsfs for
files and folders, tensorstore's gcs driver for orbax and T5X array data. TensorFlow's GCS
client (tf.io.gfile) cannot reach an emulator (endpoints compiled in; see gcs_emulator.py), so
the emulator runs exercise the fsspec/gcsfs backend, the one used where TensorFlow is absent.
"""
import json
import os

import cli_runs
import numpy as np
import pytest
from cli_runs import clean_gin, compile_cache  # noqa: F401  (autouse fixtures)
from gcs_emulator import gcs_emulator  # noqa: F401  (fixture)

import gin
from medmt5.checkpointing.checkpoint_io import load_checkpoint, orbax_steps, save_params_checkpoint
from medmt5.checkpointing.hf_io import load_hf, save_hf
from medmt5.checkpointing.param_tree import CheckpointError, expected_shapes, flatten, unflatten
from medmt5.checkpointing.t5x_io import write_t5x
from medmt5.cli.convert import main as convert_main
from medmt5.data import paths
from medmt5.model.config import T5Config

CFG = T5Config(vocab_size=40, d_model=8, d_kv=3, d_ff=12, num_heads=2, num_encoder_layers=2,
               num_decoder_layers=1, relative_attention_num_buckets=6,
               relative_attention_max_distance=9, dropout_rate=0.1)


def _random_params(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return unflatten({n: rng.normal(0, 0.5, s).astype(np.float32)
                      for n, s in expected_shapes(cfg).items()})


def _assert_same(a, b):
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name].dtype == fb[name].dtype and np.array_equal(fa[name], fb[name]), name


def test_path_layer_on_gcs(gcs_emulator):  # noqa: F811 (the fixture)
    root = f"{gcs_emulator}/paths"
    assert paths.is_remote(root) and not paths.exists(root)
    paths.makedirs(paths.join(root, "a"))
    paths.write_text(paths.join(root, "a", "x.txt"), "one\n")
    paths.append_text(paths.join(root, "a", "x.txt"), "two\n")
    assert paths.read_text(paths.join(root, "a", "x.txt")) == "one\ntwo\n"
    assert paths.isfile(paths.join(root, "a", "x.txt")) and paths.isdir(paths.join(root, "a"))
    assert paths.listdir(root) == ["a"] and paths.getsize(paths.join(root, "a", "x.txt")) == 8
    paths.rename(paths.join(root, "a"), paths.join(root, "b"))
    assert paths.listdir(root) == ["b"] and not paths.exists(paths.join(root, "a", "x.txt"))
    with paths.local_copy(paths.join(root, "b")) as local:
        assert open(os.path.join(local, "x.txt")).read() == "one\ntwo\n"
    assert paths.dirname(paths.join(root, "b")) == root and paths.basename(root) == "paths"


def test_our_checkpoint_on_gcs(gcs_emulator):  # noqa: F811 (the fixture)
    dst = f"{gcs_emulator}/ours"
    params = _random_params(CFG)
    save_params_checkpoint(CFG, params, dst, step=7)
    # orbax on an object store: the step is written in place and marked finished.
    assert paths.isfile(f"{dst}/checkpoints/7/commit_success.txt")
    assert orbax_steps(dst) == [7]
    for path in (dst, f"{dst}/checkpoints/7", dst + "/"):
        cfg, loaded = load_checkpoint(path)
        assert cfg == CFG
        _assert_same(loaded, params)
    with pytest.raises(CheckpointError, match="not empty"):
        save_params_checkpoint(CFG, params, dst)
    save_params_checkpoint(CFG, _random_params(CFG, seed=1), dst, step=3, overwrite=True)
    assert orbax_steps(dst) == [3]
    _assert_same(load_checkpoint(dst)[1], _random_params(CFG, seed=1))
    with pytest.raises(CheckpointError, match=f"{gcs_emulator}/missing: does not exist"):
        load_checkpoint(f"{gcs_emulator}/missing")


def test_convert_hf_and_t5x_through_gcs(gcs_emulator, tmp_path, capsys):  # noqa: F811 (the fixture)
    params = _random_params(CFG)
    local_hf = str(tmp_path / "hf")
    save_hf(CFG, params, local_hf)
    hf = f"{gcs_emulator}/conv/hf"
    paths.copy_tree(local_hf, hf)
    cfg, loaded = load_checkpoint(hf)  # a Hugging Face folder on gs://
    assert cfg == CFG
    _assert_same(loaded, params)
    ours, back = f"{gcs_emulator}/conv/ours", f"{gcs_emulator}/conv/back"
    assert convert_main(["hf-to-medmt5", hf, ours]) == 0
    assert paths.listdir(ours) == ["checkpoints", "model_config.json"]
    assert convert_main(["medmt5-to-hf", ours, back]) == 0
    assert paths.listdir(back) == ["config.json", "model.safetensors"]
    with paths.local_copy(back) as local:
        _assert_same(load_hf(local)[1], params)
        assert json.load(open(os.path.join(local, "config.json")))["d_model"] == CFG.d_model
    assert convert_main(["medmt5-to-hf", ours, back]) == 1  # DST not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err

    # A T5X checkpoint (msgpack + zarr folders) copied to gs://: tensorstore reads its arrays
    # with the gcs driver, the msgpack goes through the path layer.
    local_t5x = str(tmp_path / "t5x")
    write_t5x(params, local_t5x, step=5)
    t5x = f"{gcs_emulator}/conv/t5x"
    paths.copy_tree(local_t5x, t5x)
    cfg, loaded = load_checkpoint(t5x, relative_attention_max_distance=9)
    _assert_same(loaded, params)
    ours2 = f"{gcs_emulator}/conv/ours2"
    assert convert_main(["t5x-to-medmt5", f"{t5x}/checkpoint_5", ours2,
                         "--relative_attention_max_distance=9"]) == 0
    cfg2, loaded2 = load_checkpoint(ours2)
    assert cfg2.replace(dropout_rate=CFG.dropout_rate) == CFG  # T5X stores no dropout rate
    _assert_same(loaded2, params)


def test_prompt_files_on_gcs(gcs_emulator):  # noqa: F811 (the fixture)
    from prompt_tuning import initializers, stages

    values = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    path = stages.prompt_path(f"{gcs_emulator}/promot/stage1", step=4)
    assert stages.save_prompt(values, path) == path
    np.testing.assert_array_equal(initializers.load_npy(path), values)
    assert stages.prompt_length_of(path) == 5
    with pytest.raises(FileNotFoundError, match="promot/missing.npy does not exist"):
        initializers.load_npy(f"{gcs_emulator}/promot/missing.npy")


def _train(model_dir, steps, extra=()):
    gin.clear_config()
    from medmt5.cli import train
    rc = train.main(cli_runs.inprocess_argv(model_dir, steps=steps, save_period=2, extra=extra))
    gin.clear_config()
    assert rc == 0


@pytest.mark.slow
def test_train_resume_and_initial_checkpoint_on_gcs(gcs_emulator, tmp_path):  # noqa: F811 (the fixture)
    """MODEL_DIR on gs://: train 2 steps, resume to 4; the result equals an uninterrupted
    local 4-step run bitwise (params and per-step metrics). Then a new run on gs:// starts
    from that gs:// checkpoint as INITIAL_CHECKPOINT_PATH."""
    run = f"{gcs_emulator}/train/run"
    _train(run, 2)
    assert orbax_steps(run) == [2]
    assert paths.isfile(f"{run}/config.gin") and paths.isfile(f"{run}/model_config.json")
    _train(run, 4)  # resumes from step 2
    assert orbax_steps(run) == [2, 4]
    reference = str(tmp_path / "ref")
    _train(reference, 4)
    from medmt5.run.metrics_history import read_history
    gcs_rows = read_history(f"{run}/train/metrics.jsonl")
    assert [r["step"] for r in gcs_rows] == [1, 2, 3, 4]
    assert gcs_rows == read_history(os.path.join(reference, "train", "metrics.jsonl"))
    _assert_same(load_checkpoint(run)[1], load_checkpoint(reference)[1])
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(f"{run}/train"))

    second = f"{gcs_emulator}/train/second"
    _train(second, 2, extra=(f"--gin.INITIAL_CHECKPOINT_PATH='{run}'",))
    assert orbax_steps(second) == [2]
