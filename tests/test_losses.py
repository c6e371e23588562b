"""Losses: hand-computed z-loss / label smoothing, normalisers, chunked CE == plain CE."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.training import losses


def test_z_loss_and_plain_ce_by_hand():
    logits = jnp.array([[[1.0, 2.0, 0.5]]])
    targets = jnp.array([[1]])
    loss, z = losses.cross_entropy_with_logits(logits, targets, z_loss=1e-4)
    lse = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    np.testing.assert_allclose(z[0, 0], 1e-4 * lse ** 2, rtol=1e-6)
    np.testing.assert_allclose(loss[0, 0], (lse - 2.0) + 1e-4 * lse ** 2, rtol=1e-6)


def test_label_smoothing_by_hand():
    x = np.array([0.3, -1.0, 2.0, 0.1])
    s, v, t = 0.1, 4, 2
    logp = x - math.log(np.exp(x).sum())
    q = np.full(v, s / (v - 1))
    q[t] = 1 - s
    entropy = -(q * np.log(q)).sum()
    expected = -(q * logp).sum() - entropy
    loss, z = losses.cross_entropy_with_logits(jnp.array([[x]], jnp.float32), jnp.array([[t]]),
                                               z_loss=0.0, label_smoothing=s)
    np.testing.assert_allclose(loss[0, 0], expected, rtol=1e-5)
    assert float(z[0, 0]) == 0.0


def test_normalizers():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
    targets = jnp.array([[1, 2, 0], [3, 0, 0]])
    weights = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    per_tok, _ = losses.cross_entropy_with_logits(logits, targets, z_loss=0.0)
    per_tok = np.asarray(per_tok)
    total = per_tok[0, 0] + per_tok[0, 1] + per_tok[1, 0]
    for norm, expected in [("num_tokens", total / 3), (None, total), (7.0, total / 7),
                           ("per_sequence", ((per_tok[0, 0] + per_tok[0, 1]) / 2
                                             + per_tok[1, 0]) / 2)]:
        loss, sums = losses.compute_loss(logits, targets, weights, z_loss=0.0, normalizer=norm)
        np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=str(norm))
    assert float(sums["num_tokens"]) == 3.0
    with pytest.raises(ValueError, match="normalizer"):
        losses.compute_loss(logits, targets, weights, normalizer="tokens")


def test_accuracy_ignores_padding():
    logits = jnp.array([[[0.0, 5.0], [5.0, 0.0], [5.0, 0.0]]])
    correct, count = losses.token_accuracy(logits, jnp.array([[1, 1, 1]]),
                                           jnp.array([[1.0, 1.0, 0.0]]))
    assert (float(correct), float(count)) == (1.0, 2.0)


@pytest.mark.parametrize("vocab,chunk,smooth", [(37, 8, 0.0), (37, 8, 0.1), (32, 32, 0.1),
                                                (40, 7, 0.0)])
def test_chunked_equals_plain_value_and_grads(vocab, chunk, smooth):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(vocab + chunk), 3)
    hidden = jax.random.normal(k1, (2, 5, 6))
    kernel = jax.random.normal(k2, (6, vocab))
    targets = jax.random.randint(k3, (2, 5), 0, vocab)
    weights = (jnp.arange(5) < 4).astype(jnp.float32)[None].repeat(2, 0)

    def plain(h, k):
        logits = jnp.einsum("bth,hv->btv", h, k)
        loss, z = losses.cross_entropy_with_logits(logits, targets, 1e-4, smooth)
        acc = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return jnp.sum(loss * weights), (z, acc)

    def chunked(h, k):
        loss, z, acc = losses.chunked_cross_entropy(h, k, targets, chunk, 1e-4, smooth)
        return jnp.sum(loss * weights), (z, acc)

    (vp, (zp, ap)), gp = jax.jit(jax.value_and_grad(plain, argnums=(0, 1), has_aux=True))(
        hidden, kernel)
    (vc, (zc, ac)), gc = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True))(
        hidden, kernel)
    np.testing.assert_allclose(vc, vp, rtol=1e-5)
    np.testing.assert_allclose(zc, zp, rtol=1e-5)
    np.testing.assert_array_equal(ac, ap)
    for a, b in zip(gc, gp):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_chunked_does_not_build_full_logits():
    hidden = jnp.ones((2, 4, 8))
    kernel = jnp.ones((8, 1024))
    targets = jnp.zeros((2, 4), jnp.int32)
    f = jax.grad(lambda h, k: jnp.sum(losses.chunked_cross_entropy(h, k, targets, 128)[0]),
                 argnums=(0, 1))
    hlo = jax.jit(f).lower(hidden, kernel).as_text()
    assert "2x4x1024" not in hlo and "2x4x128" in hlo
