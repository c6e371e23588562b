"""The bad-input catalogue (docs/errors.md), each case through the train CLI's main():
a clear message naming what to fix, a non-zero exit, and nothing corrupted."""
import errno
import json
import os
import shutil

import cli_runs
import jax
import numpy as np
import pytest
from cli_runs import clean_gin, compile_cache  # noqa: F401  (autouse fixtures)

from tasks import corpus_readers

SAMPLE = corpus_readers.SAMPLE_DATA_DIR




def _run(tmp_path, capsys, *extra, model_dir=None, steps=2, **kw):
    model_dir = model_dir or str(tmp_path / "run")
    return cli_runs.main_inprocess(cli_runs.inprocess_argv(model_dir, steps, extra=extra, **kw),
                                   capsys)


# ---- gin and flags ---------------------------------------------------------------------


@pytest.mark.parametrize("flag, rc, needles", [
    ("--gin.train.no_such_param=1", 2, ["no_such_param", "Hint"]),
    ("--gin.DataConfig.batch_size=%NO_SUCH_MACRO", 2, ["NO_SUCH_MACRO"]),
    ("--gin.MIXTURE_OR_TASK_NAME='medmt5_pretrian'", 1,
     ["'medmt5_pretrian' is not a registered", "medmt5_pretrain"]),
    ("--gin.T5Config.vocab_size=1000", 1, ["2,100 ids", "vocab_size=1,000", "VOCABULARY"]),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 32}", 1, ["lacks feature(s) ['targets']"]),
    ("--gin.BATCH_SIZE=6", 1, ["batch size 6 must be divisible by the data-parallel size 8"]),
    ("--gin.INITIAL_CHECKPOINT_PATH='/nonexistent/medmt5_ckpt'", 1,
     ["/nonexistent/medmt5_ckpt"]),
])
def test_config_mistakes_are_named(tmp_path, capsys, flag, rc, needles):
    got_rc, err = _run(tmp_path, capsys, flag)
    assert got_rc == rc, err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err
    assert not os.path.isdir(tmp_path / "run" / "checkpoints") or \
        not os.listdir(tmp_path / "run" / "checkpoints")


def test_missing_required_macro(capsys):
    from medmt5.cli import train
    rc = train.main(["--gin_file=models/mt5_tiny.gin", "--gin_file=runs/pretrain.gin"])
    err = capsys.readouterr().err
    assert rc == 2 and "Missing required gin macros: MIXTURE_OR_TASK_NAME, MODEL_DIR" in err


def test_model_dir_not_writable(capsys):
    rc, err = cli_runs.main_inprocess(cli_runs.inprocess_argv("/proc/medmt5_not_writable"),
                                      capsys)
    assert rc == 1 and "MODEL_DIR=/proc/medmt5_not_writable is not writable" in err, err


def test_gcs_model_dir_without_credentials(tmp_path, capsys, monkeypatch):
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GCE_METADATA_HOST",
                "TPU_ACCELERATOR_TYPE", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rc, err = cli_runs.main_inprocess(cli_runs.inprocess_argv("gs://medmt5-bucket/run"),
                                      capsys)
    assert rc == 1 and "no credentials" in err and "gcloud auth" in err, err
    assert os.listdir(tmp_path) == []  # no local "gs:" folder was created


# ---- corpus files ------------------------------------------------------------------------


def _corpus(tmp_path, lang="en", content=b""):
    d = tmp_path / "corpus"
    shutil.copytree(SAMPLE, d)
    (d / f"{lang}.jsonl").write_bytes(content)
    return str(d)


@pytest.mark.parametrize("content, needle", [
    (b'{"text": "ok"}\n{"text": "broken\n', "en.jsonl:2: malformed JSON"),
    (b'{"text": "ok"}\n{"body": "no text"}\n', 'en.jsonl:2: record has no "text" field'),
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "en.jsonl:2: invalid UTF-8"),
    (b"\n\n", "en.jsonl: the file holds no documents"),
])
def test_bad_corpus_file_is_named_with_its_line(tmp_path, capsys, content, needle):
    corpus = _corpus(tmp_path, content=content)
    rc, err = _run(tmp_path, capsys, f"--gin.setup_tasks.corpus_dir='{corpus}'")
    assert rc == 1 and needle in err, err


# ---- checkpoints ---------------------------------------------------------------------------


def _other_shape_checkpoint(model_dir):
    """A step-1 checkpoint of the same model with d_ff=48 (the CLI runs d_ff=64)."""
    from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
    from medmt5.model.config import T5Config
    from medmt5.model.transformer import Transformer
    from medmt5.training import partitioning, train_state

    cfg = T5Config(vocab_size=2176, d_model=32, d_kv=16, d_ff=48, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    example = {k: np.zeros((1, 8), np.int32) for k in train_state.INIT_FEATURES}
    abstract = jax.eval_shape(lambda r: partitioning.unbox(train_state.init_boxed_params(
        Transformer(cfg), example, r)), jax.random.PRNGKey(0))
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    save_params_checkpoint(cfg, params, model_dir, step=1)


def test_config_checkpoint_shape_mismatch_names_parameter_and_shapes(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    _other_shape_checkpoint(model_dir)
    rc, err = _run(tmp_path, capsys, model_dir=model_dir)
    assert rc == 1, err
    assert "decoder/layers_0/mlp/wi_0/kernel has shape (32, 48) in the checkpoint but " \
           "(32, 64) in the model config" in err, err
    assert os.listdir(os.path.join(model_dir, "checkpoints")) == ["1"]  # untouched
    # the same checkpoint as INITIAL_CHECKPOINT_PATH of a new run
    rc, err = _run(tmp_path, capsys, f"--gin.INITIAL_CHECKPOINT_PATH='{model_dir}'",
                   model_dir=str(tmp_path / "new"))
    assert rc == 1 and "mlp/wi_0/kernel" in err, err
    assert "has shape (32, 48)" in err and "(32, 64)" in err, err


def test_disk_full_while_saving_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """ENOSPC injected at the write of step 2's train_meta; keep=1 must not have deleted
    step 1 first, and the failed step is never listed (so never restored)."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch

    real = jch.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if x.get("step", 0) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return await real(self, x, directory)

    monkeypatch.setattr(jch.JsonCheckpointHandler, "_save_fn", full_disk)
    model_dir = str(tmp_path / "run")
    rc, err = _run(tmp_path, capsys, "--gin.CheckpointConfig.keep_checkpoints=1",
                   model_dir=model_dir,
                   steps=3)
    assert rc == 1, err
    assert "No space left on device" in err and "step 1" in err, err
    assert "Traceback" not in err
    steps = [n for n in os.listdir(os.path.join(model_dir, "checkpoints")) if n.isdigit()]
    assert steps == ["1"], os.listdir(os.path.join(model_dir, "checkpoints"))
    with open(os.path.join(model_dir, "checkpoints", "1", "train_meta", "metadata")) as f:
        assert json.load(f)["step"] == 1
