"""transformer.fill_cross_cache: the cross-attention keys/values projected once before the
decoding loop equal what the first cached step projects, the decoded logits are unchanged,
and the compiled decoding loop has no per-step `lax.cond` left (issue 14, decoding)."""
import re

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
    hlo = sampling.jitted_generate().lower(
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


def _while_body_instructions(compiled_hlo: str) -> list[str]:
    """The instructions of the compiled while loop's body and everything it calls."""
    comps, cur = {}, None
    for line in compiled_hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$", line)
        if head:
            cur = head.group(1)
            comps[cur] = []
        elif cur:
            comps[cur].append(line)
    stack = re.findall(r"while\(.*body=%([\w.\-]+)", compiled_hlo)
    assert stack, "no while loop in the compiled decoding"
    seen = set()
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            for line in comps.get(name, []):
                stack += re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", line)
    return [line for name in seen for line in comps.get(name, [])]


def test_decoding_step_reads_the_caches_without_transposing_them():
    """The caches are stored [B, N, D, S], the layout the step's dots read: the compiled loop
    has no transpose of a cache-sized array (with [B, S, N, D] XLA CPU copied every layer's
    keys and values transposed on every step)."""
    cfg, model, params, enc, _ = _setup(False)
    compiled = sampling.jitted_generate().lower(
        params, enc, None, None, None, None, None, model=model, method="greedy",
        max_decode_length=L, beam_size=0, alpha=0.0, return_all_beams=False,
        temperature=1.0, top_k=0, top_p=1.0).compile().as_text()
    cache_shapes = {f"f32[{B},{cfg.num_heads},{cfg.d_kv},{n}]" for n in (S, L)}
    body = _while_body_instructions(compiled)
    transposed = [line for line in body if " transpose(" in line
                  and any(shape in line for shape in cache_shapes)]
    assert not transposed, transposed[:3]
    layer = init_cache(cfg, B, L, encoder_length=S)["decoder"]["layers_0"]
    assert layer["self_attention"]["cached_key"].shape == (B, cfg.num_heads, cfg.d_kv, L)
    assert layer["encoder_decoder_attention"]["cached_key"].shape == (B, cfg.num_heads,
                                                                     cfg.d_kv, S)


def test_beams_share_their_example_cross_attention_cache():
    """cached_attention with G = 3 query rows per cache row (beam search's layout) equals the
    same attention over the cache repeated per row; a row count that is not a multiple, or a
    bias, is an error."""
    from medmt5.model.attention import cached_attention, to_cache_layout

    rs = np.random.RandomState(1)
    g, n, d, s = 3, 2, 4, 6
    q = jnp.asarray(rs.randn(B * g, 1, n, d), jnp.float32)
    k = jnp.asarray(rs.randn(B, s, n, d), jnp.float32)
    v = jnp.asarray(rs.randn(B, s, n, d), jnp.float32)
    valid = jnp.asarray(rs.rand(B, s) > 0.3).at[:, 0].set(True)
    shared = cached_attention(q, to_cache_layout(k), to_cache_layout(v), None,
                              valid[:, None, None, :])
    rep = lambda x: jnp.repeat(x, g, axis=0)  # noqa: E731
    per_row = cached_attention(q, to_cache_layout(rep(k)), to_cache_layout(rep(v)), None,
                               rep(valid)[:, None, None, :])
    assert shared.shape == (B * g, 1, n, d)
    np.testing.assert_allclose(shared, per_row, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of its rows"):
        cached_attention(q[:-1], to_cache_layout(k), to_cache_layout(v), None, None)


def test_cpu_decoding_jit_uses_its_compiler_options_and_decodes_the_same():
    """On CPU `generate` runs the jit with CPU_DECODE_COMPILER_OPTIONS (no YNNPACK library
    fusion); its beams equal the default-options jit's."""
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only compiler options")
    cfg, model, params, enc, _ = _setup(False)
    args = (params, enc, None, None, None, None, None)
    kw = dict(model=model, method="beam", max_decode_length=L, beam_size=2, alpha=0.6,
              return_all_beams=True, temperature=1.0, top_k=0, top_p=1.0)
    assert sampling.jitted_generate() is sampling._generate_jit_cpu
    compiled = sampling._generate_jit_cpu.lower(*args, **kw).compile().as_text()
    assert "ynn_fusion" not in compiled
    got, want = sampling._generate_jit_cpu(*args, **kw), sampling._generate_jit(*args, **kw)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5, atol=1e-5)


def test_cpu_beam_loop_copies_no_reordered_self_attention_cache():
    """Beam reordering gathers every layer's self-attention keys/values; with one step per
    loop iteration XLA copies each gathered cache back into the loop buffer on every step.
    The CPU beam jit runs two steps per iteration (beam_search unroll=2): no such copy is
    left in its loop (the default jit, one step per iteration, has them)."""
    if jax.default_backend() != "cpu":
        pytest.skip("CPU decoding jit")
    cfg, model, params, enc, _ = _setup(False)
    k = 2
    kw = dict(model=model, method="beam", max_decode_length=L, beam_size=k, alpha=0.6,
              return_all_beams=False, temperature=1.0, top_k=0, top_p=1.0)
    args = (params, enc, None, None, None, None, None)
    shape = f"f32[{B * k},{cfg.num_heads},{cfg.d_kv},{L}]"

    def copies(jit):
        body = _while_body_instructions(jit.lower(*args, **kw).compile().as_text())
        return [line for line in body if " copy(" in line and shape in line]

    assert copies(sampling._generate_jit), "expected the one-step loop to copy the caches"
    assert not copies(sampling.jitted_generate("beam", B * k))
