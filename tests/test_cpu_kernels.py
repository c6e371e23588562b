"""The hand-written CPU kernel for the few-row products of a decoding step
(`medmt5.model.cpu_kernels`, csrc/small_rows_matmul.cc; issue 14, decoding): its products
equal float64 matmuls within float32 rounding for every shape path (column tail, K not a
multiple of the band, 1-8 rows, wide N split across threads, K = 0); `layers.project` uses
it only inside the decoding switch and only for float32 products of 2-8 rows; greedy and
beam decoding give the same sequences with and without it; the build is cached and atomic;
without a compiler or when switched off, decoding falls back to XLA's products with one
warning that says why."""
import os
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.decoding import sampling
from medmt5.model import T5Config, Transformer, cpu_kernels
from medmt5.model.layers import project

needs_kernel = pytest.mark.skipif(
    not cpu_kernels.cpu_supported()[0] or cpu_kernels.compiler() is None,
    reason="the kernel needs an x86-64 CPU with AVX2/FMA and a C++ compiler")


def _operands(m, k, n, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.standard_normal((m, k)).astype(np.float32),
            rng.standard_normal((k, n)).astype(np.float32))


@needs_kernel
@pytest.mark.parametrize("m,k,n", [
    (2, 512, 384),   # mT5-small attention projection
    (4, 1024, 512),  # MLP wo
    (3, 37, 50),     # K not a multiple of the 8-row band; 2 columns past the 16-wide strips
    (5, 100, 33),    # one full group of 4 rows and a group of 1
    (8, 64, 4099),   # several column ranges (threads) and a 3-column tail
    (1, 16, 16),     # one row
    (6, 16, 15),     # no 16-wide strip at all: the scalar columns only
    (7, 9, 2048),
    (4, 512, 32128),  # the mT5 LM head: several output tiles per thread's column range
    (2, 3, 40000),    # uneven ranges and a tail
])
def test_products_equal_float64_matmul(m, k, n):
    assert cpu_kernels.available(), cpu_kernels.why_unavailable()
    x, w = _operands(m, k, n)
    got = np.asarray(jax.jit(cpu_kernels.small_rows_matmul)(x, w))
    want = x.astype(np.float64) @ w.astype(np.float64)
    assert got.shape == (m, n) and got.dtype == np.float32
    # float32 accumulation over k terms of unit-normal products
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 * k ** 0.5 * 4)


@needs_kernel
def test_zero_k_gives_zeros_and_shape_errors_are_clear():
    assert cpu_kernels.available()
    got = jax.jit(cpu_kernels.small_rows_matmul)(np.zeros((3, 0), np.float32),
                                                  np.zeros((0, 20), np.float32))
    np.testing.assert_array_equal(got, np.zeros((3, 20), np.float32))
    with pytest.raises(ValueError, match=r"expected \[M, K\] @ \[K, N\], got \(3, 4\) @ \(5, 6\)"):
        cpu_kernels.small_rows_matmul(np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32))


@needs_kernel
def test_inside_a_larger_jitted_computation():
    """The result feeds further ops and is consumed twice (no aliasing of XLA buffers)."""
    x, w = _operands(4, 48, 64, seed=1)

    def f(x, w):
        y = cpu_kernels.small_rows_matmul(jnp.tanh(x), w * 2.0)
        return y + cpu_kernels.small_rows_matmul(jnp.tanh(x), w * 2.0).sum(0), y

    got, y = jax.jit(f)(x, w)
    want_y = np.tanh(x.astype(np.float64)) @ (2.0 * w.astype(np.float64))
    np.testing.assert_allclose(y, want_y, atol=1e-4)
    np.testing.assert_allclose(got, want_y + want_y.sum(0), atol=1e-3)


def _project_hlo(x, kernel, dtype):
    """A fresh function each time: jax caches traces by function, and the switch is read
    while tracing (generate keys its jit on the switch: `small_rows_kernel` is static)."""
    return jax.jit(lambda x, kernel: project(x, kernel, dtype)).lower(x, kernel).as_text()


@needs_kernel
@pytest.mark.parametrize("rows,dtype,inside,expected", [
    (4, jnp.float32, True, True),
    (2, jnp.float32, True, True),
    (8, jnp.float32, True, True),
    (1, jnp.float32, True, False),    # one row: XLA's matrix-vector product is as fast
    (9, jnp.float32, True, False),    # beam 4 x batch 4 and up: Eigen (measured faster)
    (4, jnp.bfloat16, True, False),   # the kernel is float32 only
    (4, jnp.float32, False, False),   # training / encoder: never
])
def test_project_uses_the_kernel_only_in_the_switch_for_2_to_8_float32_rows(
        rows, dtype, inside, expected):
    x = jnp.ones((rows, 1, 16), dtype)
    kernel = jnp.ones((16, 32), jnp.float32)
    if inside:
        with cpu_kernels.small_rows_products():
            text = _project_hlo(x, kernel, dtype)
    else:
        text = _project_hlo(x, kernel, dtype)
    assert (cpu_kernels.TARGET in text) == expected
    with cpu_kernels.small_rows_products(False):
        assert cpu_kernels.TARGET not in _project_hlo(x, kernel, dtype)


def _model(batch):
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_heads=4,
                   num_encoder_layers=2, num_decoder_layers=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0)
    model = Transformer(cfg)
    enc = jnp.asarray(np.random.RandomState(5).randint(2, 64, (batch, 9)).astype(np.int32))
    params = nn.unbox(model.init(jax.random.PRNGKey(7), enc, jnp.ones((batch, 5), jnp.int32),
                                 enable_dropout=False)["params"])
    # larger weights than the initialiser's, so that greedy choices are well separated
    params = jax.tree_util.tree_map(lambda p: p * 3.0, params)
    return model, params, enc


def _decode(model, params, enc, method, flag):
    beam = 2 if method == "beam" else 0
    return sampling._generate_jit_cpu(
        params, enc, None, None, None, None, None, model=model, method=method,
        max_decode_length=8, beam_size=beam, alpha=0.6 if beam else 0.0, return_all_beams=False,
        temperature=1.0, top_k=0, top_p=1.0, small_rows_kernel=flag)


@needs_kernel
@pytest.mark.parametrize("method,batch", [("greedy", 4), ("beam", 3), ("greedy", 8)])
def test_decoding_gives_the_same_sequences_with_the_kernel(method, batch):
    model, params, enc = _model(batch)
    rows = batch * (2 if method == "beam" else 1)
    assert sampling.uses_small_rows_kernel(rows, params)
    with_kernel = _decode(model, params, enc, method, True)
    without = _decode(model, params, enc, method, False)
    np.testing.assert_array_equal(with_kernel[0], without[0])
    np.testing.assert_allclose(with_kernel[1], without[1], rtol=1e-5, atol=1e-5)
    text = sampling._generate_jit_cpu.lower(
        params, enc, None, None, None, None, None, model=model, method=method,
        max_decode_length=8, beam_size=2 if method == "beam" else 0, alpha=0.0,
        return_all_beams=False, temperature=1.0, top_k=0, top_p=1.0,
        small_rows_kernel=True).as_text()
    # every decoder product of the step: per layer q, k, v, o, cross q, cross o, wi_0, wi_1,
    # wo, and the LM head (twice for beam search: two steps per loop iteration); the
    # encoder and the cross-attention cache fill are XLA dots
    assert text.count(f'@{cpu_kernels.TARGET}(') == (2 * 9 + 1) * (2 if method == "beam" else 1)


@needs_kernel
def test_generate_picks_the_kernel_by_rows_backend_and_placement():
    model, params, enc = _model(4)
    assert sampling.uses_small_rows_kernel(4, params)
    assert not sampling.uses_small_rows_kernel(1, params)
    assert not sampling.uses_small_rows_kernel(16, params)
    if jax.device_count() >= 2:  # conftest gives 8 CPU devices
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("model",))
        spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        sharded = jax.tree_util.tree_map(lambda p: jax.device_put(p, spread), params)
        assert not sampling.uses_small_rows_kernel(4, sharded)
    # bfloat16 activations: project would turn every product down, so no kernel variant
    assert not sampling.uses_small_rows_kernel(4, params, jnp.bfloat16)
    # under an outer transformation the parameters are tracers: XLA's products (the custom
    # call has no derivative rule and would not be partitioned)
    seen = []
    jax.jit(lambda p: seen.append(sampling.uses_small_rows_kernel(4, p)) or 0)(params)
    assert seen == [False]
    got = sampling.generate(model, params, {"encoder_input_tokens": enc}, method="greedy",
                            max_decode_length=8)
    want = _decode(model, params, enc, "greedy", False)
    np.testing.assert_array_equal(got[0], want[0])


@needs_kernel
def test_build_is_cached_and_leaves_no_partial_file(tmp_path):
    first = cpu_kernels.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cpu_kernels.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    assert first.name.startswith("small_rows_matmul-") and first.suffix == ".so"


def test_a_missing_compiler_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(cpu_kernels.KernelBuildError, match="no-such-c\\+\\+"):
        cpu_kernels.build(tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # no half-written library left


@pytest.fixture
def fresh_state():
    cpu_kernels._reset_for_tests()
    yield
    cpu_kernels._reset_for_tests()


def test_switched_off_by_the_environment_without_a_warning(monkeypatch, fresh_state):
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpu_kernels.available()
    assert cpu_kernels.why_unavailable() == "switched off by MEDMT5_CPU_KERNELS=0"
    model, params, _ = _model(4)
    assert not sampling.uses_small_rows_kernel(4, params)


def test_unbuildable_kernel_warns_once_and_decoding_falls_back(tmp_path, monkeypatch,
                                                               fresh_state):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path / "empty-cache"))
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH, raising=False)
    monkeypatch.setattr(cpu_kernels, "_registered", [])  # as in a fresh process
    model, params, enc = _model(4)
    with pytest.warns(RuntimeWarning) as caught:
        got = sampling.generate(model, params, {"encoder_input_tokens": enc}, method="greedy",
                                max_decode_length=8)
        sampling.generate(model, params, {"encoder_input_tokens": enc}, method="greedy",
                          max_decode_length=8)
    messages = [str(w.message) for w in caught if "CPU decoding kernel" in str(w.message)]
    if cpu_kernels.cpu_supported()[0]:
        assert len(messages) == 1 and "no-such-c++" in messages[0]
        assert "MEDMT5_CPU_KERNELS=0" in messages[0]
    want = _decode(model, params, enc, "greedy", False)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    assert os.environ["CXX"].endswith("no-such-c++")


@needs_kernel
def test_registered_once_per_process(tmp_path, monkeypatch, fresh_state):
    """A second load (here from another cache folder) reuses the library already registered
    with XLA instead of registering another handler under the same name."""
    assert cpu_kernels.available()
    first = cpu_kernels._state["library"]
    cpu_kernels._reset_for_tests()
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path / "other-cache"))
    assert cpu_kernels.available() and cpu_kernels._state["library"] is first
    x, w = _operands(3, 20, 40)
    np.testing.assert_allclose(jax.jit(cpu_kernels.small_rows_matmul)(x, w), x @ w, atol=1e-4)


def test_an_unusable_cache_folder_is_named(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    with pytest.raises(cpu_kernels.KernelBuildError, match="a-file.*MEDMT5_KERNEL_CACHE"):
        cpu_kernels.build(taken / "kernels")
    assert taken.read_text() == "not a folder"
