"""`python -m prompt_tuning.export`: .npy and PEFT adapters; peft on the save_hf model gives
our prompted logits."""
import json
import os

import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from medmt5.checkpointing.hf_io import save_hf
from medmt5.model.transformer import Transformer
from prompt_tuning import export
from prompt_tuning.prompts import PromptedTransformer

try:
    import peft  # noqa: F401
    import torch
    import transformers
    HAVE_PEFT = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_PEFT = False

P = 5
CFG = fixtures.tiny_config(num_encoder_layers=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A prompt-tuning checkpoint: backbone + params["prompt"] [P, H]."""
    params = fixtures.host_params(Transformer(CFG), seed=2)
    prompt = np.random.RandomState(4).uniform(-.5, .5, (P, CFG.d_model)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("run"))
    save_params_checkpoint(CFG, dict(params, prompt={"embedding": prompt}), path,
                           overwrite=True)
    return path, params, prompt


def test_npy_export(run_dir, tmp_path, capsys):
    path, _, prompt = run_dir
    assert export.main(["--checkpoint", path, "--out", str(tmp_path / "o"),
                        "--format", "npy"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "prompt.npy"), prompt)
    assert "wrote npy prompt [5, 16]" in capsys.readouterr().out
    # a non-empty destination is refused; --overwrite replaces it
    assert export.main(["--checkpoint", path, "--out", str(tmp_path / "o")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert export.main(["--checkpoint", path, "--out", str(tmp_path / "o"),
                        "--overwrite"]) == 0


def test_export_errors(run_dir, tmp_path, capsys):
    _, params, _ = run_dir
    plain = str(tmp_path / "plain")
    save_params_checkpoint(CFG, params, plain)
    assert export.main(["--checkpoint", plain, "--out", str(tmp_path / "x")]) == 1
    assert "no params['prompt']" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
    assert export.main(["--checkpoint", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "y")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_peft_config_and_weights(run_dir, tmp_path):
    path, _, prompt = run_dir
    out = tmp_path / "adapter"
    assert export.main(["--checkpoint", path, "--out", str(out), "--format", "peft"]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "SEQ_2_SEQ_LM"
    assert (config["num_virtual_tokens"], config["token_dim"]) == (P, CFG.d_model)
    from safetensors.numpy import load_file
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert list(weights) == ["prompt_embeddings"]
    np.testing.assert_array_equal(weights["prompt_embeddings"], prompt)


@pytest.mark.skipif(not HAVE_PEFT, reason="peft/torch/transformers not installed")
def test_peft_adapter_reproduces_prompted_logits(run_dir, tmp_path):
    path, params, prompt = run_dir
    hf_dir, adapter = str(tmp_path / "hf"), str(tmp_path / "adapter")
    save_hf(CFG, params, hf_dir)
    assert export.main(["--checkpoint", path, "--out", adapter, "--format", "peft",
                        "--base_model", hf_dir]) == 0
    batch = fixtures.make_batch(7, batch_size=3)  # right-padded inputs (attention mask matters)
    ours = PromptedTransformer(CFG, prompt_length=P).apply(
        {"params": dict(params, prompt={"embedding": prompt})}, batch["encoder_input_tokens"],
        batch["decoder_input_tokens"], enable_dropout=False)

    base = transformers.AutoModelForSeq2SeqLM.from_pretrained(hf_dir).eval()
    model = peft.PeftModel.from_pretrained(base, adapter).eval()
    ids = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=(ids > 0).long(),
                    decoder_input_ids=torch.tensor(batch["decoder_input_tokens"],
                                                   dtype=torch.long))
    np.testing.assert_allclose(out.logits.numpy(), np.asarray(ours), atol=1e-4)
    # without the adapter the logits differ: the prompt is what peft added
    with torch.no_grad(), model.disable_adapter():
        plain = model(input_ids=ids, attention_mask=(ids > 0).long(),
                      decoder_input_ids=torch.tensor(batch["decoder_input_tokens"],
                                                     dtype=torch.long)).logits.numpy()
    assert not np.allclose(plain, np.asarray(ours), atol=1e-3)
