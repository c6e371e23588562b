"""CPU layout levers of the train step (issue 14): the matmul gradient of
`medmt5.model.layers.project` equals autodiff's gradient of the plain dot and compiles with no
dot contracting dimension 0 of both operands (the form XLA CPU's fast dot library does not
take); the shared attention bias's gradient and Adafactor's leading-axis mean as dots equal
what they replace."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.model import layers


def _loss(x, w, dtype=jnp.float32):
    y = layers.project(x, w, dtype, jnp.float32)
    return jnp.sum(jnp.sin(y))


@pytest.fixture
def xw():
    rs = np.random.RandomState(0)
    return (jnp.asarray(rs.randn(3, 5, 16).astype(np.float32)),
            jnp.asarray(rs.randn(16, 24).astype(np.float32)))


def _grads(monkeypatch, on: bool, x, w):
    monkeypatch.setattr(layers, "CPU_WEIGHT_GRAD_LAYOUT", on)
    return jax.jit(jax.grad(_loss, argnums=(0, 1)))(x, w)


def test_gradient_equals_autodiff_of_the_plain_dot(monkeypatch, xw):
    x, w = xw
    assert jax.default_backend() == "cpu"
    dx_ref, dw_ref = _grads(monkeypatch, False, x, w)
    dx, dw = _grads(monkeypatch, True, x, w)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5)
    # the forward is the same dot: bitwise equal outputs
    monkeypatch.setattr(layers, "CPU_WEIGHT_GRAD_LAYOUT", False)
    y_ref = layers.project(x, w, jnp.float32)
    monkeypatch.setattr(layers, "CPU_WEIGHT_GRAD_LAYOUT", True)
    np.testing.assert_array_equal(layers.project(x, w, jnp.float32), y_ref)


def test_bfloat16_activations_keep_their_dtypes(monkeypatch, xw):
    x, w = xw
    dx, dw = _grads(monkeypatch, True, x.astype(jnp.bfloat16), w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    dx_ref, dw_ref = _grads(monkeypatch, False, x.astype(jnp.bfloat16), w)
    np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(dw_ref, np.float32),
                               rtol=0.05, atol=0.05)


def _dot_forms(monkeypatch, on: bool, x, w) -> list:
    monkeypatch.setattr(layers, "CPU_WEIGHT_GRAD_LAYOUT", on)
    hlo = jax.jit(jax.grad(_loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    return re.findall(r"lhs_contracting_dims=\{(\d+)\}, rhs_contracting_dims=\{(\d+)\}", hlo)


def test_no_weight_gradient_dot_contracts_the_rows(monkeypatch, xw):
    x, w = xw
    plain = _dot_forms(monkeypatch, False, x, w)
    assert ("0", "0") in plain  # what autodiff leaves: xᵀ·dy as a dim-0 contraction
    ours = _dot_forms(monkeypatch, True, x, w)
    assert len(ours) == 3 and ("0", "0") not in ours


def test_shared_bias_gradient_equals_autodiff_of_the_broadcast_add():
    """attention.add_bias: a [1, N, T, S] bias shared by the batch takes the batch sum of
    dlogits as a dot with ones (CPU); same gradient as autodiff of the broadcast add."""
    from medmt5.model import attention
    rs = np.random.RandomState(1)
    logits = jnp.asarray(rs.randn(4, 3, 5, 7).astype(np.float32))
    bias = jnp.asarray(rs.randn(1, 3, 5, 7).astype(np.float32))

    def loss(add, lg, b):
        return jnp.sum(jnp.sin(add(lg, b)) * jnp.arange(7.0))

    ref = jax.grad(functools.partial(loss, lambda a, b: a + b), argnums=(0, 1))(logits, bias)
    got = jax.jit(jax.grad(functools.partial(loss, attention.add_bias), argnums=(0, 1)))(
        logits, bias)
    np.testing.assert_array_equal(attention.add_bias(logits, bias), logits + bias)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-5)
    assert got[1].shape == bias.shape
    # a per-example bias ([B, ...]) is a plain add
    per_example = jnp.broadcast_to(bias, logits.shape)
    np.testing.assert_array_equal(attention.add_bias(logits, per_example), logits + per_example)


def test_adafactor_leading_axis_mean_equals_mean():
    from medmt5.training import optimizers
    x = jnp.asarray(np.random.RandomState(2).rand(64, 300).astype(np.float32))
    np.testing.assert_allclose(optimizers._mean(x, (0,)), jnp.mean(x, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(optimizers._mean(x, (1,)), jnp.mean(x, axis=1))
