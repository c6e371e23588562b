"""mT5 Transformer behaviour on a toy config: shapes, dtypes, masking, packing, dropout,
cached decoding, scan/remat, tied head, logical axes, prompt-tuning hook, config checks."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.model.config import T5Config
from medmt5.model.relpos import relative_position_bucket
from medmt5.model.transformer import Transformer, init_cache, scan_params, unscan_params

CFG = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_heads=3, num_encoder_layers=2,
               num_decoder_layers=2, relative_attention_num_buckets=8,
               relative_attention_max_distance=12)


STATIC = ("enable_dropout", "method", "decode", "max_decode_length", "return_hidden", "mutable")


@functools.cache
def japply(cfg: T5Config):
    """jit(Transformer(cfg).apply): eager flax on a shared 2-core box is far too slow."""
    return jax.jit(Transformer(cfg).apply, static_argnames=STATIC)


@functools.cache
def jinit(cfg: T5Config):
    return jax.jit(Transformer(cfg).init, static_argnames=("enable_dropout",))


def rng(seed: int):
    """An "rbg" key: same flax semantics, far cheaper to compile on CPU than threefry."""
    return jax.random.key(seed, impl="rbg")


def _batch():
    """Two right-padded examples: encoder [2, 9], decoder [2, 7] (longer than max_distance
    would be too slow to matter; the relpos test covers log buckets)."""
    enc = np.array([[5, 6, 7, 8, 9, 10, 11, 1, 0], [3, 4, 12, 1, 0, 0, 0, 0, 0]], np.int32)
    tgt = np.array([[8, 9, 10, 13, 14, 15, 1], [11, 12, 1, 0, 0, 0, 0]], np.int32)
    dec = np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], axis=1) * (tgt > 0)
    return enc, dec, tgt


@pytest.fixture(scope="module")
def model_and_params():
    enc, dec, tgt = _batch()
    model = Transformer(CFG)
    variables = jinit(CFG)(rng(0), enc, dec, tgt, enable_dropout=False)
    return model, variables, nn.unbox(variables["params"])


def _logits(model, params, enc, dec, tgt, **kw):
    return np.asarray(japply(model.config)({"params": params}, enc, dec, tgt,
                                           enable_dropout=False, **kw))


def test_shapes_and_dtypes(model_and_params):
    model, _, params = model_and_params
    enc, dec, tgt = _batch()
    fwd = japply(model.config)
    logits = fwd({"params": params}, enc, dec, tgt, enable_dropout=False)
    assert logits.shape == (2, 7, CFG.vocab_size) and logits.dtype == jnp.float32
    encoded = fwd({"params": params}, enc, enable_dropout=False, method="encode")
    assert encoded.shape == (2, 9, CFG.d_model)
    hidden = fwd({"params": params}, encoded, enc > 0, dec, tgt, enable_dropout=False,
                 return_hidden=True, method="decode")
    assert hidden.shape == (2, 7, CFG.d_model)
    from_hidden = model.apply({"params": params}, hidden, method="logits_from_hidden")
    np.testing.assert_allclose(from_hidden, logits, atol=1e-6)
    assert params["token_embedder"]["embedding"].shape == (64, 16)
    assert params["decoder"]["logits_dense"]["kernel"].shape == (16, 64)
    assert params["encoder"]["layers_1"]["attention"]["query"]["kernel"].shape == (16, 12)
    assert params["decoder"]["relpos_bias"]["rel_embedding"].shape == (3, 8)
    assert "relpos_bias" not in params["encoder"]["layers_0"]


def test_bf16_activations_float32_logits(model_and_params):
    _, _, params = model_and_params
    enc, dec, tgt = _batch()
    cfg = CFG.replace(dtype="bfloat16")
    logits = japply(cfg)({"params": params}, enc, dec, tgt, enable_dropout=False)
    assert logits.dtype == jnp.float32
    ref = _logits(Transformer(CFG), params, enc, dec, tgt)
    err = np.abs(np.asarray(logits) - ref)[tgt > 0].max()
    assert 0 < err < 0.1 * np.abs(ref).max()  # bf16 really used, yet close to float32
    # Dtypes from abstract evaluation (no compilation).
    model = Transformer(cfg)
    encoded = jax.eval_shape(functools.partial(model.apply, enable_dropout=False,
                                               method="encode"), {"params": params}, enc)
    assert encoded.dtype == jnp.bfloat16
    v = jax.eval_shape(functools.partial(
        Transformer(cfg.replace(param_dtype="bfloat16")).init, enable_dropout=False),
        jax.random.PRNGKey(0), enc, dec)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(nn.unbox(v)))
    bf16_params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    out = jax.eval_shape(functools.partial(model.apply, enable_dropout=False),
                         {"params": bf16_params}, enc, dec)
    assert out.dtype == jnp.float32


def test_padding_invariance(model_and_params):
    model, _, params = model_and_params
    enc, dec, tgt = _batch()
    ref = _logits(model, params, enc, dec, tgt)
    pad = lambda x, n: np.pad(x, ((0, 0), (0, n)))  # noqa: E731
    more = _logits(model, params, pad(enc, 5), pad(dec, 3), pad(tgt, 3))
    real = tgt > 0
    np.testing.assert_allclose(more[:, :7][real], ref[real], atol=1e-5)
    # Changing a padded (masked) token id does not leak into real positions either.
    enc2 = enc.copy()
    enc2[1, 6] = 0  # already padding; set other padding ids to nonzero garbage via mask
    np.testing.assert_allclose(_logits(model, params, enc2, dec, tgt)[real], ref[real], atol=1e-6)


def test_packing_equals_separate_examples(model_and_params):
    model, _, params = model_and_params
    enc, dec, tgt = _batch()
    ref = _logits(model, params, enc, dec, tgt)
    # Pack example 0 (enc 8 real, tgt 7) and example 1 (enc 4, tgt 3) into one row.
    p_enc = np.concatenate([enc[0, :8], enc[1, :4], [0, 0]])[None]
    e_seg = np.array([[1] * 8 + [2] * 4 + [0, 0]])
    e_pos = np.array([list(range(8)) + list(range(4)) + [0, 0]])
    p_tgt = np.concatenate([tgt[0], tgt[1, :3], [0]])[None]
    p_dec = np.concatenate([dec[0], dec[1, :3], [0]])[None]
    d_seg = np.array([[1] * 7 + [2] * 3 + [0]])
    d_pos = np.array([list(range(7)) + list(range(3)) + [0]])
    for positions in (True, False):  # contiguous packing: positions are redundant
        kw = dict(encoder_segment_ids=e_seg, decoder_segment_ids=d_seg)
        if positions:
            kw.update(encoder_positions=e_pos, decoder_positions=d_pos)
        packed = _logits(model, params, p_enc, p_dec, p_tgt, **kw)
        np.testing.assert_allclose(packed[0, :7], ref[0], atol=1e-5)
        np.testing.assert_allclose(packed[0, 7:10], ref[1, :3], atol=1e-5)


def test_positions_drive_relative_bias(model_and_params):
    model, _, params = model_and_params
    enc, dec, tgt = _batch()
    ref = _logits(model, params, enc, dec, tgt)
    shifted = np.broadcast_to(np.arange(9) + 3, (2, 9))  # shifting all positions: same deltas
    same = _logits(model, params, enc, dec, tgt, encoder_positions=shifted)
    np.testing.assert_allclose(same, ref, atol=1e-5)
    spread = np.broadcast_to(np.arange(9) * 5, (2, 9))  # larger gaps -> other buckets
    moved = _logits(model, params, enc, dec, tgt, encoder_positions=spread)
    assert np.abs(moved - ref).max() > 1e-3


def test_dropout(model_and_params):
    _, _, params = model_and_params
    enc, dec, tgt = _batch()
    model = Transformer(CFG.replace(dropout_rate=0.3))
    run = lambda seed, on: np.asarray(japply(model.config)(  # noqa: E731
        {"params": params}, enc, dec, tgt, enable_dropout=on,
        rngs={"dropout": rng(seed)}))
    np.testing.assert_array_equal(run(0, False), run(1, False))
    np.testing.assert_allclose(run(0, False), _logits(Transformer(CFG), params, enc, dec, tgt),
                               atol=1e-6)
    np.testing.assert_array_equal(run(0, True), run(0, True))
    assert np.abs(run(0, True) - run(1, True)).max() > 1e-3
    assert np.abs(run(0, True) - run(0, False)).max() > 1e-3


@pytest.mark.parametrize("scan,cross_cache", [(False, True), (False, False), (True, True)])
def test_cached_decoding_equals_full_forward(model_and_params, scan, cross_cache):
    _, _, params = model_and_params
    enc, dec, tgt = _batch()
    cfg = CFG.replace(scan_layers=scan)
    model = Transformer(cfg)
    p = scan_params(params) if scan else params
    full = _logits(Transformer(CFG), params, enc, dec, tgt)
    length = dec.shape[1]
    cache = init_cache(cfg, 2, length, encoder_length=enc.shape[1] if cross_cache else None)
    has_cross = "encoder_decoder_attention" in str(jax.tree_util.tree_structure(cache))
    assert has_cross == cross_cache
    encoded = japply(model.config)({"params": p}, enc, enable_dropout=False, method="encode")

    @jax.jit
    def step(cache, token):
        logits, mut = model.apply({"params": p, "cache": cache}, encoded, enc > 0, token,
                                  enable_dropout=False, decode=True, max_decode_length=length,
                                  method="decode", mutable=["cache"])
        return logits, mut["cache"]

    steps = []
    for t in range(length):
        logits, cache = step(cache, dec[:, t:t + 1])
        steps.append(np.asarray(logits))
    real = tgt > 0  # padded steps differ only by the decoder padding mask of the full pass
    np.testing.assert_allclose(np.concatenate(steps, axis=1)[real], full[real], atol=1e-5)


def test_init_cache_layout_and_errors(model_and_params):
    _, _, params = model_and_params
    cache = init_cache(CFG, 3, 5, encoder_length=7)
    layer = cache["decoder"]["layers_1"]
    assert layer["self_attention"]["cached_key"].shape == (3, 3, 4, 5)
    assert layer["encoder_decoder_attention"]["cached_value"].shape == (3, 3, 4, 7)
    assert layer["self_attention"]["cache_index"].shape == ()
    scanned = init_cache(CFG.replace(scan_layers=True), 3, 5)
    assert scanned["decoder"]["layers"]["self_attention"]["cached_key"].shape == (2, 3, 3, 4, 5)
    with pytest.raises(ValueError, match="max_decode_length"):
        init_cache(CFG, 3, 0)
    enc, dec, _ = _batch()
    fwd = japply(CFG)
    encoded = fwd({"params": params}, enc, enable_dropout=False, method="encode")
    with pytest.raises(ValueError, match="one decoder token"):
        fwd({"params": params, "cache": init_cache(CFG, 2, 7)}, encoded, enc > 0, dec,
            enable_dropout=False, decode=True, max_decode_length=7, method="decode",
            mutable="cache")


def _loss_and_grads(cfg: T5Config, params):
    enc, dec, tgt = _batch()
    model = Transformer(cfg)

    def loss(p):
        logits = model.apply({"params": p}, enc, dec, tgt, enable_dropout=False)
        return jnp.mean(logits ** 2)

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def reference_loss_and_grads(model_and_params):
    return _loss_and_grads(CFG, model_and_params[2])


def _assert_same_loss_and_grads(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           got[1], want[1])


def test_remat_without_scan_equals_plain(model_and_params, reference_loss_and_grads):
    cfg = CFG.replace(remat_policy="dots")
    _assert_same_loss_and_grads(_loss_and_grads(cfg, model_and_params[2]),
                                reference_loss_and_grads)


@pytest.mark.parametrize("policy", ["none", "full", "minimal"])
def test_scanned_equals_unscanned(model_and_params, reference_loss_and_grads, policy):
    """Same loss and gradients; remat only changes what the backward pass recomputes."""
    _, _, params = model_and_params
    enc, dec, _ = _batch()
    scanned_cfg = CFG.replace(scan_layers=True, remat_policy=policy)
    sp = scan_params(params)
    init_tree = nn.unbox(jax.eval_shape(
        functools.partial(Transformer(scanned_cfg).init, enable_dropout=False),
        jax.random.PRNGKey(0), enc, dec))
    assert jax.tree_util.tree_structure(init_tree["params"]) == jax.tree_util.tree_structure(sp)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: a.shape == b.shape, init_tree["params"], sp))
    roundtrip = unscan_params(sp)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, roundtrip, params))
    loss, grads = _loss_and_grads(scanned_cfg, sp)
    _assert_same_loss_and_grads((loss, unscan_params(grads)), reference_loss_and_grads)


def test_remat_policies_are_wired():
    from medmt5.model import stacks
    from medmt5.model.config import REMAT_POLICIES
    assert set(stacks.REMAT_POLICIES) == set(REMAT_POLICIES) - {"none"}
    assert stacks.REMAT_POLICIES["dots"] is jax.checkpoint_policies.checkpoint_dots
    enc, dec, _ = _batch()
    params = nn.unbox(jax.eval_shape(functools.partial(Transformer(CFG).init, enable_dropout=False),
                                     jax.random.PRNGKey(0), enc, dec))["params"]

    def remat_ops(policy):  # one remat region per layer, none without a policy
        model = Transformer(CFG.replace(remat_policy=policy))
        fn = functools.partial(model.apply, enable_dropout=False)
        return str(jax.make_jaxpr(fn)({"params": params}, enc, dec)).count("remat")

    assert remat_ops("none") == 0
    assert remat_ops("full") == CFG.num_encoder_layers + CFG.num_decoder_layers


def test_tied_variant(model_and_params):
    """Tied head == an untied head whose kernel is embedding.T * d_model**-0.5 (T5's rescale)."""
    model, _, params = model_and_params
    enc, dec, tgt = _batch()
    cfg = CFG.replace(tie_word_embeddings=True)
    v = nn.unbox(jax.eval_shape(functools.partial(Transformer(cfg).init, enable_dropout=False),
                                jax.random.PRNGKey(1), enc, dec))["params"]
    assert "logits_dense" not in v["decoder"]
    tied = dict(params)
    tied["decoder"] = {k: x for k, x in params["decoder"].items() if k != "logits_dense"}
    logits = np.asarray(japply(cfg)({"params": tied}, enc, dec, tgt, enable_dropout=False))
    untied = dict(params)
    kernel = params["token_embedder"]["embedding"].T * CFG.d_model ** -0.5
    untied["decoder"] = dict(params["decoder"], logits_dense={"kernel": kernel})
    np.testing.assert_allclose(logits, _logits(model, untied, enc, dec, tgt), atol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_logical_axes_on_every_parameter(scan):
    enc, dec, tgt = _batch()
    model = Transformer(CFG.replace(scan_layers=scan))
    boxed = jax.eval_shape(functools.partial(model.init, enable_dropout=False),
                           jax.random.PRNGKey(0), enc, dec)["params"]
    specs = nn.get_partition_spec(boxed)
    leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))
    spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(spec_leaves)
    for (path, value), spec in zip(leaves, spec_leaves):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == value.ndim and all(isinstance(a, str) for a in spec), (path, spec)
        if scan and "layers" in jax.tree_util.keystr(path).split("'"):
            assert spec[0] == "layers", (path, spec)
    assert specs["token_embedder"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
    layer = specs["decoder"]["layers" if scan else "layers_0"]
    assert layer["mlp"]["wo"]["kernel"][-2:] == ("mlp", "embed")


def test_encode_with_input_embeddings(model_and_params):
    model, _, params = model_and_params
    enc, _, _ = _batch()
    fwd = japply(CFG)
    ref = fwd({"params": params}, enc, enable_dropout=False, method="encode")
    emb = fwd({"params": params}, enc, method="embed")
    same = fwd({"params": params}, enc, enable_dropout=False, input_embeddings=emb,
               method="encode")
    np.testing.assert_allclose(same, ref, atol=1e-6)
    # A 2-vector "prompt" prepended with its own mask: outputs have length S + 2 and differ.
    prompt = jnp.ones((2, 2, CFG.d_model)) * 0.5
    mask = np.concatenate([np.ones((2, 2), np.int32), (enc > 0).astype(np.int32)], axis=1)
    out = fwd({"params": params}, enc, enable_dropout=False,
              input_embeddings=jnp.concatenate([prompt, emb], 1), input_mask=mask,
              method="encode")
    assert out.shape == (2, 11, CFG.d_model)
    assert np.abs(np.asarray(out[:, 2:]) - np.asarray(ref)).max() > 1e-3
    with pytest.raises(ValueError, match="input_mask"):
        model.apply({"params": params}, enc, enable_dropout=False,
                    input_embeddings=jnp.concatenate([prompt, emb], 1), method="encode")


@pytest.mark.parametrize("causal", [False, True])
def test_cudnn_call_matches_xla_attention(causal):
    """The arguments given to jax.nn.dot_product_attention (scale 1, bias, lengths or mask)
    reproduce the exact path; checked with JAX's own reference implementation on CPU."""
    from medmt5.model.attention import AttentionInputs, cudnn_attention, xla_attention
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    q, k, v = (jax.random.normal(x, (2, 6, 3, 4)) for x in keys[:3])
    bias = jax.random.normal(keys[3], (1, 3, 6, 6))
    valid = jnp.arange(6)[None, :] < jnp.array([[6], [4]])
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    if causal:
        mask = mask & jnp.tril(jnp.ones((6, 6), bool))[None, None]
    ref = xla_attention(q, k, v, bias, mask)
    lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)
    by_lengths = cudnn_attention(q, k, v, AttentionInputs(bias, mask, lengths, lengths, causal),
                                 implementation="xla")
    by_mask = cudnn_attention(q, k, v, AttentionInputs(bias, mask, causal=causal),
                              implementation="xla")
    rows = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(by_lengths)[rows], np.asarray(ref)[rows], atol=1e-5)
    np.testing.assert_allclose(np.asarray(by_mask)[rows], np.asarray(ref)[rows], atol=1e-5)


def test_cudnn_config_falls_back_to_exact_path_on_cpu():
    from medmt5.model.attention import _use_cudnn
    cfg = CFG.replace(attention_impl="cudnn", dtype="bfloat16")
    assert jax.default_backend() != "gpu" and not _use_cudnn(cfg, jnp.bfloat16, False)


def _bucket_reference(rel, bidirectional, num_buckets, max_distance):
    """Straight per-element transcription of the T5 paper code's bucketing (Python floats)."""
    import math
    n = -rel
    ret = 0
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket(bidirectional):
    rel = np.arange(-300, 301)
    ours = np.asarray(relative_position_bucket(rel, bidirectional, 32, 128))
    ref = np.array([_bucket_reference(int(r), bidirectional, 32, 128) for r in rel])
    np.testing.assert_array_equal(ours, ref)
    assert ours.min() == 0 and ours.max() == 31


def test_config_validation_and_json(tmp_path):
    with pytest.raises(ValueError, match="d_model"):
        CFG.replace(d_model=0)
    with pytest.raises(ValueError, match="dtype"):
        CFG.replace(dtype="fp16")
    with pytest.raises(ValueError, match="remat_policy"):
        CFG.replace(remat_policy="sometimes")
    with pytest.raises(ValueError, match="attention_impl"):
        CFG.replace(attention_impl="flash")
    with pytest.raises(ValueError, match="unknown T5Config field"):
        T5Config.from_dict({**CFG.to_dict(), "hidden_size": 3})
    path = tmp_path / "model_config.json"
    CFG.save(str(path))
    assert T5Config.load(str(path)) == CFG
    with pytest.raises(ValueError, match="missing required"):
        T5Config.from_dict({"vocab_size": 8})
