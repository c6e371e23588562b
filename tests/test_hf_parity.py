"""Parity with Hugging Face MT5/T5 (issue 3): same weights -> same encoder output, logits, loss.

Live tests build tiny random HF models (skipped without torch/transformers); the golden test
replays tests/data/golden_hf_logits.npz (HF outputs recorded by
tests/data/golden_make_hf_logits.py) so parity is still checked where transformers is absent.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.checkpointing.hf_io import load_hf, save_hf
from medmt5.checkpointing.param_tree import expected_shapes, flatten
from medmt5.model.config import T5Config
from medmt5.model.transformer import Transformer

try:  # imported once for the module
    import torch
    import transformers
    HAVE_HF = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_HF = False
needs_hf = pytest.mark.skipif(not HAVE_HF, reason="torch/transformers not installed")

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden_hf_logits.npz")
ATOL = 1e-4       # encoder output / logits, float32
LOSS_RTOL = 1e-5

# Random tiny configs: heads*d_kv != d_model, unequal depths, non-default buckets/distance.
CASES = {
    "mt5_untied_a": dict(model_type="mt5", vocab_size=64, d_model=16, d_kv=6, d_ff=24, num_heads=3,
                         num_layers=2, num_decoder_layers=3, relative_attention_num_buckets=8,
                         relative_attention_max_distance=20),
    "mt5_untied_b": dict(model_type="mt5", vocab_size=96, d_model=24, d_kv=8, d_ff=40, num_heads=2,
                         num_layers=3, num_decoder_layers=1, relative_attention_num_buckets=12,
                         relative_attention_max_distance=10, layer_norm_epsilon=1e-5),
    # transformers 5.x ties a fresh MT5 and does not rescale: read back as an untied copy.
    "mt5_tied_hf5": dict(model_type="mt5_tied", vocab_size=56, d_model=12, d_kv=4, d_ff=20,
                         num_heads=2, num_layers=1, num_decoder_layers=1,
                         relative_attention_num_buckets=16, relative_attention_max_distance=40),
    "t5_tied": dict(model_type="t5", vocab_size=80, d_model=16, d_kv=4, d_ff=32, num_heads=4,
                    num_layers=1, num_decoder_layers=2),
}


def _batch(vocab, seed):
    """Padded batch [3, 11] / [3, 9]: rows of full, medium and minimal length."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, vocab, (3, 11)).astype(np.int32)
    tgt = rng.integers(2, vocab, (3, 9)).astype(np.int32)
    for row, (n_enc, n_tgt) in enumerate([(11, 9), (6, 4), (2, 1)]):
        enc[row, n_enc:] = 0
        tgt[row, n_tgt:] = 0
    dec = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


@functools.cache
def _forward_fn(cfg):
    """Jitted (encoder output, logits, mean token loss) for one config (compiled once)."""
    model = Transformer(cfg)

    def forward(params, enc, dec, tgt):
        variables = {"params": params}
        encoded = model.apply(variables, enc, enable_dropout=False, method="encode")
        logits = model.apply(variables, enc, dec, tgt, enable_dropout=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        weights = (tgt > 0).astype(jnp.float32)
        return encoded, logits, jnp.sum(nll * weights) / jnp.sum(weights)

    return jax.jit(forward)


def _ours(cfg, params, enc, dec, tgt):
    """(encoder output [B,S,H], logits [B,T,V], mean token loss) from medmt5."""
    encoded, logits, loss = _forward_fn(cfg)(params, jnp.asarray(enc), jnp.asarray(dec),
                                             jnp.asarray(tgt))
    return np.asarray(encoded), np.asarray(logits), float(loss)


def _assert_parity(cfg, params, enc, dec, tgt, ref_encoded, ref_logits, ref_loss):
    encoded, logits, loss = _ours(cfg, params, enc, dec, tgt)
    assert logits.dtype == np.float32
    enc_mask, tgt_mask = enc > 0, tgt > 0
    np.testing.assert_allclose(encoded[enc_mask], ref_encoded[enc_mask], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits[tgt_mask], ref_logits[tgt_mask], rtol=0, atol=ATOL)
    assert abs(loss - ref_loss) <= LOSS_RTOL * abs(ref_loss), (loss, ref_loss)


def _hf_forward(model, enc, dec, tgt):
    labels = np.where(tgt > 0, tgt, -100)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long),
                    attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                    decoder_input_ids=torch.tensor(dec, dtype=torch.long),
                    labels=torch.tensor(labels, dtype=torch.long))
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy(), float(out.loss)


@pytest.fixture(scope="module", params=sorted(CASES))
def hf_case(request, tmp_path_factory):
    """A saved-and-reloaded random HF model, its directory, a batch and HF's outputs."""
    name = request.param
    kw = dict(CASES[name])
    model_type = kw.pop("model_type")
    common = dict(dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0,
                  eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(sorted(CASES).index(name))
    if model_type == "mt5":
        cls = transformers.MT5ForConditionalGeneration
        model = cls(transformers.MT5Config(**kw, **common, tie_word_embeddings=False))
        # transformers 5.x ties lm_head to shared at construction: give it its own weights.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(kw["vocab_size"],
                                                              kw["d_model"]) * 0.5)
    elif model_type == "mt5_tied":
        cls = transformers.MT5ForConditionalGeneration
        model = cls(transformers.MT5Config(**kw, **common, tie_word_embeddings=True))
    else:
        cls = transformers.T5ForConditionalGeneration
        model = cls(transformers.T5Config(**kw, **common, tie_word_embeddings=True))
    with torch.no_grad():  # HF initialises norms to 1: randomise them so the mapping shows
        for pname, p in model.named_parameters():
            if "layer_norm" in pname:
                p.uniform_(0.5, 1.5)
    hf_dir = str(tmp_path_factory.mktemp(name) / "hf")
    model.save_pretrained(hf_dir)
    reloaded = cls.from_pretrained(hf_dir).eval()
    tied = reloaded.lm_head.weight.data_ptr() == reloaded.shared.weight.data_ptr()
    assert tied == (model_type != "mt5"), "reloaded HF model is not tied/untied as intended"
    if not tied:
        assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight)
    enc, dec, tgt = _batch(kw["vocab_size"], seed=len(name))
    return dict(name=name, model_type=model_type, hf_dir=hf_dir, model=reloaded,
                batch=(enc, dec, tgt), ref=_hf_forward(reloaded, enc, dec, tgt),
                tmp=tmp_path_factory.mktemp(name + "_out"))


@needs_hf
def test_converted_model_matches_hf(hf_case):
    cfg, params = load_hf(hf_case["hf_dir"])
    kw = CASES[hf_case["name"]]
    assert cfg.tie_word_embeddings == (hf_case["model_type"] == "t5")
    if hf_case["model_type"] == "mt5_tied":  # exact: head = copy of the embedding, no rescale
        assert np.array_equal(params["decoder"]["logits_dense"]["kernel"],
                              params["token_embedder"]["embedding"].T)
    assert cfg.num_encoder_layers == kw["num_layers"]
    assert cfg.num_decoder_layers == kw["num_decoder_layers"]
    assert cfg.relative_attention_num_buckets == kw.get("relative_attention_num_buckets", 32)
    assert cfg.relative_attention_max_distance == kw.get("relative_attention_max_distance", 128)
    assert ("logits_dense" in params["decoder"]) == (not cfg.tie_word_embeddings)
    _assert_parity(cfg, params, *hf_case["batch"], *hf_case["ref"])


@needs_hf
def test_save_hf_reproduces_logits_in_transformers(hf_case):
    cfg, params = load_hf(hf_case["hf_dir"])
    out_dir = str(hf_case["tmp"] / "exported")
    save_hf(cfg, params, out_dir)
    with open(os.path.join(out_dir, "config.json")) as f:
        written = json.load(f)
    expected_arch = ("T5ForConditionalGeneration" if cfg.tie_word_embeddings
                     else "MT5ForConditionalGeneration")
    assert written["architectures"] == [expected_arch]
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out_dir).eval()
    assert type(model).__name__ == expected_arch
    tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    if hf_case["model_type"] != "mt5_tied":  # (an untied copy of the embedding may be re-tied)
        assert tied == cfg.tie_word_embeddings
    enc, dec, tgt = hf_case["batch"]
    _, logits, loss = _hf_forward(model, enc, dec, tgt)
    _, ref_logits, ref_loss = hf_case["ref"]
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-6)
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss)


@needs_hf
def test_medmt5_hf_medmt5_round_trip_is_bitwise(hf_case):
    cfg, params = load_hf(hf_case["hf_dir"])
    out_dir = str(hf_case["tmp"] / "roundtrip")
    save_hf(cfg, params, out_dir)
    cfg2, params2 = load_hf(out_dir)
    assert cfg2 == cfg
    a, b = flatten(params), flatten(params2)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name


def test_model_parameter_tree_matches_the_mapping():
    """The model's own init has exactly the shapes the converters produce (every case)."""
    for kw in CASES.values():
        kw = dict(kw)
        cfg = T5Config(vocab_size=kw["vocab_size"], d_model=kw["d_model"], d_kv=kw["d_kv"],
                       d_ff=kw["d_ff"], num_heads=kw["num_heads"],
                       num_encoder_layers=kw["num_layers"],
                       num_decoder_layers=kw["num_decoder_layers"],
                       relative_attention_num_buckets=kw.get("relative_attention_num_buckets", 32),
                       relative_attention_max_distance=kw.get(
                           "relative_attention_max_distance", 128),
                       tie_word_embeddings=kw["model_type"] != "mt5")
        enc = jnp.ones((1, 4), jnp.int32)
        shapes = jax.eval_shape(lambda cfg=cfg, enc=enc: Transformer(cfg).init(
            jax.random.PRNGKey(0), enc, enc, enable_dropout=False))
        import flax.linen as nn

        got = {k: tuple(v.shape) for k, v in flatten(nn.unbox(shapes["params"])).items()}
        assert got == expected_shapes(cfg)


def test_golden_hf_logits(tmp_path):
    """Recorded HF outputs (no transformers needed): read the weights as a HF dir, compare."""
    from safetensors.numpy import save_file

    golden = np.load(GOLDEN)
    hf_dir = tmp_path / "golden_hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(str(golden["hf_config"]))
    weights = {k[2:]: golden[k] for k in golden.files if k.startswith("w/")}
    assert "lm_head.weight" in weights and not np.array_equal(weights["lm_head.weight"],
                                                              weights["shared.weight"])
    save_file(weights, str(hf_dir / "model.safetensors"))
    cfg, params = load_hf(str(hf_dir))
    assert not cfg.tie_word_embeddings and cfg.d_kv * cfg.num_heads != cfg.d_model
    _assert_parity(cfg, params, golden["encoder_input_tokens"], golden["decoder_input_tokens"],
                   golden["decoder_target_tokens"], golden["encoder_output"], golden["logits"],
                   float(golden["loss"]))
