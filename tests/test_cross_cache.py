"""transformer.fill_cross_cache: the cross-attention keys/values projected once before the
decoding loop equal what the first cached step projects, the decoded logits are unchanged,
and the compiled decoding loop has no per-step `lax.cond` left (issue 14, decoding)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.decoding import sampling
from medmt5.model import T5Config, Transformer, fill_cross_cache, init_cache

B, S, L = 3, 7, 5


def _setup(scan: bool):
    cfg = T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_heads=2,
                   num_encoder_layers=2, num_decoder_layers=3,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, scan_layers=scan)
    model = Transformer(cfg)
    rs = np.random.RandomState(0)
    enc = jnp.asarray(rs.randint(2, 40, (B, S)).astype(np.int32))
    params = model.init(jax.random.PRNGKey(0), enc, jnp.ones((B, L), jnp.int32),
                        enable_dropout=False)["params"]
    params = nn.unbox(params)
    encoded = model.apply({"params": params}, enc, enable_dropout=False, method=model.encode)
    return cfg, model, params, enc, encoded


def _step(model, params, cache, encoded, enc, token):
    logits, mutated = model.apply(
        {"params": params, "cache": cache}, encoded, enc > 0, token, enable_dropout=False,
        decode=True, max_decode_length=L, method=model.decode, mutable=["cache"])
    return logits, mutated["cache"]


@pytest.mark.parametrize("scan", [False, True])
def test_filled_cache_equals_the_first_step_projection(scan):
    cfg, model, params, enc, encoded = _setup(scan)
    lazy = init_cache(cfg, B, L, encoder_length=S)
    filled = fill_cross_cache(cfg, params, lazy, encoded)
    tok = jnp.zeros((B, 1), jnp.int32)
    logits_lazy, after_lazy = _step(model, params, lazy, encoded, enc, tok)
    logits_filled, after_filled = _step(model, params, filled, encoded, enc, tok)
    np.testing.assert_array_equal(logits_filled, logits_lazy)
    layers = ["layers"] if scan else [f"layers_{i}" for i in range(cfg.num_decoder_layers)]
    for name in layers:
        lazy_kv = after_lazy["decoder"][name]["encoder_decoder_attention"]
        filled_kv = after_filled["decoder"][name]["encoder_decoder_attention"]
        assert "cache_index" not in filled_kv  # the "already filled" mark
        for key in ("cached_key", "cached_value"):
            np.testing.assert_array_equal(filled_kv[key], lazy_kv[key])
    # the next steps stay equal
    tok = jnp.argmax(logits_lazy[:, -1:], -1).astype(jnp.int32)
    np.testing.assert_array_equal(_step(model, params, after_filled, encoded, enc, tok)[0],
                                  _step(model, params, after_lazy, encoded, enc, tok)[0])


def test_decoding_loop_has_no_conditional():
    cfg, model, params, enc, _ = _setup(False)
    hlo = sampling._generate_jit.lower(
        params, enc, None, None, None, None, None, model=model, method="greedy",
        max_decode_length=L, beam_size=0, alpha=0.0, return_all_beams=False,
        temperature=1.0, top_k=0, top_p=1.0).as_text()
    assert "while" in hlo
    assert "conditional" not in hlo and "stablehlo.case" not in hlo


def test_filled_cache_with_wrong_encoder_length_is_an_error():
    cfg, model, params, enc, encoded = _setup(False)
    filled = fill_cross_cache(cfg, params, init_cache(cfg, B, L, encoder_length=S), encoded)
    short = encoded[:, :S - 1]
    with pytest.raises(ValueError, match="filled cross-attention cache"):
        _step(model, params, filled, short, enc[:, :S - 1], jnp.zeros((B, 1), jnp.int32))
