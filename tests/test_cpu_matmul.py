"""The CPU matmul gradient of `medmt5.model.layers.project` (issue 14, the weight-gradient
dots): equal to autodiff's gradient of the plain dot, and compiled so that no dot contracts
dimension 0 of both operands (the form XLA CPU's fast dot library does not take)."""
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
