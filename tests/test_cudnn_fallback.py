"""attention_impl="cudnn": shapes cuDNN flash attention refuses (mT5-large at 1024/229 on an
H200: "Unsupported sequence length Q 229, KV 229") take the XLA path, logged once. The rule
is checked against jax's own `check_is_flash_attention` and the fallback on CPU."""
import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.model import attention
from medmt5.model.attention import AttentionInputs, MultiHeadAttention, cudnn_refusal
from medmt5.model.config import T5Config


def test_rule_refuses_odd_lengths_with_a_bias_and_bad_head_dims():
    assert cudnn_refusal(229, 229, 64, has_bias=True, hopper_or_later=True) is not None
    assert "Q 229, KV 229" in cudnn_refusal(229, 229, 64, True, True)
    assert cudnn_refusal(1024, 229, 64, True, True) is not None
    assert cudnn_refusal(228, 1024, 64, True, True) is None
    assert cudnn_refusal(229, 1024, 64, has_bias=False, hopper_or_later=True) is None  # cross
    assert cudnn_refusal(128, 128, 60, False, True) is not None      # not a multiple of 8
    assert cudnn_refusal(128, 128, 256, False, True) is None
    assert cudnn_refusal(128, 128, 256, False, hopper_or_later=False) is not None  # <= 128


def test_rule_agrees_with_jax_check_is_flash_attention():
    try:
        from jax._src.cudnn import fused_attention_stablehlo as fa
        check, layout = fa.check_is_flash_attention, fa.AttentionLayout.BTNH.value
    except (ImportError, AttributeError) as e:  # private API moved: the rule needs re-reading
        pytest.fail(f"jax's check_is_flash_attention not found ({e}); re-read "
                    "jax/_src/cudnn/fused_attention_stablehlo.py and update cudnn_refusal")
    # on CPU jax's check sees no Hopper GPU: compare with hopper_or_later=False
    for t, s, d, bias in itertools.product((228, 229, 1), (229, 512), (64, 60, 128, 136),
                                           (True, False)):
        q = jax.ShapeDtypeStruct((1, t, 2, d), jnp.bfloat16)
        kv = jax.ShapeDtypeStruct((1, s, 2, d), jnp.bfloat16)
        try:
            check(q, kv, kv, layout, 90000, bias, True)
            theirs = True
        except NotImplementedError:
            theirs = False
        ours = cudnn_refusal(t, s, d, bias, hopper_or_later=False) is None
        assert ours == theirs, (t, s, d, bias)


@pytest.mark.parametrize("length,expect_cudnn", [(6, True), (7, False)])
def test_refused_length_takes_the_xla_path(monkeypatch, caplog, length, expect_cudnn):
    """The layer asks the rule before calling cuDNN (forced on CPU; the cuDNN call is
    recorded and run through jax's reference implementation)."""
    calls, real = [], attention.cudnn_attention

    def fake_cudnn(q, k, v, inputs, implementation="cudnn"):
        calls.append(q.shape)
        return real(q, k, v, inputs, implementation="xla")

    monkeypatch.setattr(attention, "cudnn_attention", fake_cudnn)
    monkeypatch.setattr(attention, "_use_cudnn", lambda *a: True)
    monkeypatch.setattr(attention, "_REFUSALS_LOGGED", set())
    cfg = T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1, attention_impl="cudnn")
    layer = MultiHeadAttention(cfg, kind="self")
    x = jnp.asarray(np.random.RandomState(0).standard_normal((2, length, 16)), jnp.float32)
    bias = jnp.zeros((1, 2, length, length), jnp.float32)
    inputs = AttentionInputs(bias=bias, mask=jnp.ones((1, 1, length, length), bool))
    params = layer.init(jax.random.PRNGKey(0), x, x, inputs)
    with caplog.at_level(logging.WARNING, logger="medmt5.model.attention"):
        out = layer.apply(params, x, x, inputs)
        layer.apply(params, x, x, inputs)  # a second trace: still one warning
    assert bool(calls) == expect_cudnn
    refusals = [r for r in caplog.records if "does not take" in r.getMessage()]
    assert len(refusals) == (0 if expect_cudnn else 1)
    assert out.shape == (2, length, 16) and bool(jnp.all(jnp.isfinite(out)))
