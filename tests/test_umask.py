"""Output folders honour the user's umask (not tempfile.mkdtemp's 0700)."""
import os
import stat

import numpy as np
import pytest

from medmt5.checkpointing.atomic_dir import atomic_directory


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _modes(root):
    """{relative path: permission bits} of every directory and file under root, itself too."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def _check(root, dir_mode, file_mode):
    for rel, mode in _modes(root).items():
        want = dir_mode if os.path.isdir(os.path.join(root, rel)) else file_mode
        assert mode == want, f"{rel}: {oct(mode)} != {oct(want)}"


@pytest.mark.parametrize("mask,dir_mode,file_mode", [(0o022, 0o755, 0o644),
                                                    (0o077, 0o700, 0o600)])
def test_atomic_directory_follows_umask(tmp_path, umask, mask, dir_mode, file_mode):
    umask(mask)
    dst = tmp_path / "export"
    with atomic_directory(str(dst)) as tmp:
        os.makedirs(os.path.join(tmp, "sub"))
        with open(os.path.join(tmp, "sub", "a.json"), "w") as f:
            f.write("{}")
    _check(str(dst), dir_mode, file_mode)
    with atomic_directory(str(dst), overwrite=True) as tmp:  # replacing keeps the rule
        open(os.path.join(tmp, "b.txt"), "w").close()
    _check(str(dst), dir_mode, file_mode)
    assert os.listdir(tmp_path) == ["export"]  # no temporary folders left behind


@pytest.mark.parametrize("mask,dir_mode,file_mode", [(0o022, 0o755, 0o644),
                                                    (0o077, 0o700, 0o600)])
def test_checkpoint_hf_and_peft_exports_follow_umask(tmp_path, umask, mask, dir_mode,
                                                     file_mode):
    import jax

    import medmt5
    from medmt5.checkpointing import checkpoint_io
    from medmt5.model.config import T5Config
    from prompt_tuning import export

    umask(mask)
    cfg = T5Config(vocab_size=128, d_model=16, d_kv=8, d_ff=32, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    model = medmt5.Transformer(cfg)
    x = np.ones((1, 4), np.int32)
    params = model.init(jax.random.PRNGKey(0), x, x, x, enable_dropout=False)["params"]
    medmt5.save_hf(cfg, params, str(tmp_path / "hf"))
    _check(str(tmp_path / "hf"), dir_mode, file_mode)
    ckpt = tmp_path / "ckpt"
    prompt_params = dict(params, prompt={"embedding": np.zeros((3, 16), np.float32)})
    checkpoint_io.save_params_checkpoint(cfg, prompt_params, str(ckpt))
    _check(str(ckpt), dir_mode, file_mode)
    for fmt in ("npy", "peft"):
        export.export(str(ckpt), str(tmp_path / fmt), fmt=fmt)
        _check(str(tmp_path / fmt), dir_mode, file_mode)
