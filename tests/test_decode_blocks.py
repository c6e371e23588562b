"""CPU decoding reads the gated MLP's kernels as column blocks (`transformer.mlp_decode_blocks`,
`layers.DECODE_WEIGHTS`): the blocks are the kernels cut by columns, a decoding step through
them gives the plain step's logits, generate's CPU jits use them from MLP_BLOCK_MIN_ROWS rows
and decode the same beams as the default jit (issue 14, decoding)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.decoding import sampling
from medmt5.model import T5Config, Transformer, fill_cross_cache, init_cache, transformer
from medmt5.model.layers import DECODE_WEIGHTS

B, S, L = 4, 6, 7


def _setup(scan: bool = False, d_ff: int = 24):
    cfg = T5Config(vocab_size=48, d_model=16, d_kv=4, d_ff=d_ff, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, scan_layers=scan)
    model = Transformer(cfg)
    enc = jnp.asarray(np.random.RandomState(1).randint(2, 48, (B, S)).astype(np.int32))
    params = nn.unbox(model.init(jax.random.PRNGKey(3), enc, jnp.ones((B, L), jnp.int32),
                                 enable_dropout=False)["params"])
    return cfg, model, params, enc


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 10 columns (wi [16, 2*d_ff] and wo [d_ff, 16] then have a short last block)
    from 4 rows up."""
    monkeypatch.setattr(transformer, "MLP_BLOCK_COLUMNS", 10)
    monkeypatch.setattr(transformer, "MLP_BLOCK_MIN_ROWS", 4)


def test_blocks_are_the_kernels_cut_by_columns(small_blocks):
    cfg, _, params, _ = _setup()
    got = transformer.mlp_decode_blocks(cfg, params, rows=4)["decoder"]
    assert sorted(got) == ["layers_0", "layers_1"]
    for name, blocks in got.items():
        mlp = params["decoder"][name]["mlp"]
        wi = blocks["mlp"]["wi_blocks"]
        assert [w.shape for w in wi] == [(16, 10)] * 4 + [(16, 8)]  # 2 * d_ff = 48 columns
        np.testing.assert_array_equal(
            np.concatenate(wi, 1),
            np.concatenate([mlp["wi_0"]["kernel"], mlp["wi_1"]["kernel"]], 1))
        wo = blocks["mlp"]["wo_blocks"]
        assert [w.shape for w in wo] == [(24, 10), (24, 6)]
        np.testing.assert_array_equal(np.concatenate(wo, 1), mlp["wo"]["kernel"])


def test_no_blocks_below_the_row_threshold_above_the_size_bound_or_when_scanned(
        small_blocks, monkeypatch):
    cfg, _, params, _ = _setup()
    assert transformer.mlp_decode_blocks(cfg, params, rows=3) == {}
    scfg, _, sparams, _ = _setup(scan=True)
    assert transformer.mlp_decode_blocks(scfg, sparams, rows=16) == {}
    # 2 layers x (16*24*2 + 24*16) float32 = 9216 bytes
    monkeypatch.setattr(transformer, "MLP_BLOCK_MAX_BYTES", 9215)
    assert transformer.mlp_decode_blocks(cfg, params, rows=16) == {}
    monkeypatch.setattr(transformer, "MLP_BLOCK_MAX_BYTES", 9216)
    assert transformer.mlp_decode_blocks(cfg, params, rows=16) != {}


def test_a_decoding_step_through_the_blocks_gives_the_plain_logits(small_blocks):
    cfg, model, params, enc = _setup()
    encoded = model.apply({"params": params}, enc, enable_dropout=False, method=model.encode)
    cache = fill_cross_cache(cfg, params, init_cache(cfg, B, L, encoder_length=S), encoded)
    blocks = transformer.mlp_decode_blocks(cfg, params, rows=B)
    tok = jnp.asarray([[0], [5], [9], [2]], jnp.int32)

    def step(variables):
        logits, _ = model.apply({**variables, "cache": cache}, encoded, enc > 0, tok,
                                enable_dropout=False, decode=True, max_decode_length=L,
                                method=model.decode, mutable=["cache"])
        return np.asarray(logits)

    plain = step({"params": params})
    blocked = step({"params": params, DECODE_WEIGHTS: blocks})
    np.testing.assert_allclose(blocked, plain, rtol=1e-6, atol=1e-6)
    # the blocks are what the step reads: changing one changes the logits
    bad = jax.tree.map(lambda x: x, blocks)
    bad["decoder"]["layers_0"]["mlp"]["wo_blocks"][0] = \
        bad["decoder"]["layers_0"]["mlp"]["wo_blocks"][0] * 2.0
    assert not np.allclose(step({"params": params, DECODE_WEIGHTS: bad}), plain, atol=1e-4)


@pytest.mark.parametrize("method,beam_size", [("beam", 2), ("greedy", 0)])
def test_cpu_jits_decode_through_the_blocks_and_equal_the_default_jit(
        small_blocks, method, beam_size):
    if jax.default_backend() != "cpu":
        pytest.skip("CPU decoding layout")
    jax.clear_caches()  # the block constants are read at trace time
    cfg, model, params, enc = _setup(d_ff=20)
    args = (params, enc, None, None, None, None, None)
    kw = dict(model=model, method=method, max_decode_length=L, beam_size=beam_size,
              alpha=0.6, return_all_beams=method == "beam", temperature=1.0, top_k=0,
              top_p=1.0)
    rows = B * max(beam_size, 1)
    jit = sampling.jitted_generate(method, rows)
    assert jit is (sampling._generate_jit_cpu_beam if method == "beam"
                   else sampling._generate_jit_cpu)
    # beam search below the row threshold keeps the multi-threaded products
    assert sampling.jitted_generate("beam", 3) is sampling._generate_jit_cpu
    hlo = jit.lower(*args, **kw).compile().as_text()
    # [rows, 10] products: the 10-column blocks of wi (40 columns) and wo (16 columns)
    assert f"f32[{rows},10]" in hlo
    got, want = jit(*args, **kw), sampling._generate_jit(*args, **kw)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5, atol=1e-5)
    jax.clear_caches()
