"""Building blocks of mT5 / T5 v1.1: RMSNorm, 2-D dense kernels, the token embedder, gated-GELU MLP.

Every parameter carries logical axis names (`nn.with_logical_partitioning`); initialisers
follow T5X (fan-in scaled normals, unit-normal embeddings). Parameters live in
`config.param_dtype`, computation in `config.dtype` (activations), norms in float32.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medmt5.model import cpu_kernels
from medmt5.model.config import T5Config

Initializer = Callable[..., jax.Array]


def gelu_tanh(x):
    """GELU with the tanh approximation (HF `gelu_new`, T5X `gelu`)."""
    return jax.nn.gelu(x, approximate=True)


class RMSNorm(nn.Module):
    """T5 layer norm: x / sqrt(mean(x^2) + eps) * scale; no mean, no bias; float32 inside."""

    config: T5Config

    @nn.compact
    def __call__(self, x):
        """x [..., H] -> [..., H] in the activation dtype."""
        cfg = self.config
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), cfg.parameter_dtype)
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + cfg.layer_norm_epsilon)).astype(cfg.activation_dtype)
        return y * scale.astype(cfg.activation_dtype)


class Dense(nn.Module):
    """y = x @ kernel with a 2-D `kernel` [in, out] (T5X layout; HF stores the transpose).

    The kernel is created in `setup` so a parent can read `self.<child>.kernel` directly
    (cross-attention key/value caching projects inside `lax.cond`).
    """

    config: T5Config
    in_features: int
    features: int
    axes: Sequence[str]
    kernel_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

    def setup(self):
        init = nn.with_logical_partitioning(self.kernel_init, self.axes)
        self.kernel = self.param("kernel", init, (self.in_features, self.features),
                                 self.config.parameter_dtype)

    def __call__(self, x):
        """x [..., in] -> [..., out] in the activation dtype (float32 accumulation)."""
        return project(x, self.kernel, self.config.activation_dtype)


# Read at trace time: False restores autodiff's own matmul gradient on CPU (A/B checks).
CPU_WEIGHT_GRAD_LAYOUT = True


def project(x, kernel, dtype, out_dtype=None):
    """x [..., in] @ kernel [in, out] computed in `dtype` with float32 accumulation, returned
    in `out_dtype` (default `dtype`).

    Written as one 2-D matmul over the flattened rows [N, in] (a free reshape of row-major
    [B, T, in]): the weight gradient is then a plain 2-D dot, where the 3-D einsum's gradient
    (contracting over both B and T) made XLA write dy out transposed to [out, B, T] first.
    On CPU the matmul carries its own gradient (`_cpu_matmul`) so that every backward dot
    is in the layout XLA CPU's fast dot library takes. Inside the CPU decoding jit
    (`cpu_kernels.small_rows_products`) a float32 product of 2-8 rows goes to the
    hand-written kernel instead (no gradient; decoding only).
    """
    lead = x.shape[:-1]
    x2, w = x.reshape((-1, x.shape[-1])).astype(dtype), kernel.astype(dtype)
    if cpu_kernels.takes(x2, w):
        y = cpu_kernels.small_rows_matmul(x2, w)
    elif CPU_WEIGHT_GRAD_LAYOUT and jax.default_backend() == "cpu":
        y = _cpu_matmul(x2, w)
    else:
        y = jnp.dot(x2, w, preferred_element_type=jnp.float32)
    return y.reshape(lead + (kernel.shape[-1],)).astype(out_dtype or dtype)


@jax.custom_vjp
def _cpu_matmul(x2, w):
    """[N, in] @ [in, out] -> float32 [N, out]; same forward as jnp.dot, gradient below."""
    return jnp.dot(x2, w, preferred_element_type=jnp.float32)


def _cpu_matmul_fwd(x2, w):
    return _cpu_matmul(x2, w), (x2, w)


def _cpu_matmul_bwd(res, dy):
    """dx = dy @ wᵀ and dw = xᵀ @ dy, with xᵀ materialised as a row-major [in, N] array.

    Left to itself, XLA folds the transpose into the weight-gradient dot (contracting dim
    0 of both operands); XLA CPU's fast dot library (YNNPACK in jax 0.10) does not take that
    form and the dot falls back to a slower Eigen kernel. The optimization barrier keeps the
    transposed copy (a memory-bound pass over x) so the dot is a standard [in, N] @ [N, out].
    Same products, summed by another kernel: equal to the plain gradient within float32
    rounding (tests/test_model_parity.py)."""
    x2, w = res
    dy = dy.astype(x2.dtype)  # float32 from the forward's accumulation
    dx = jnp.dot(dy, w.T, preferred_element_type=jnp.float32).astype(x2.dtype)
    xt = jax.lax.optimization_barrier(x2.T)
    dw = jnp.dot(xt, dy, preferred_element_type=jnp.float32).astype(w.dtype)
    return dx, dw


_cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


class Embed(nn.Module):
    """Token embedder `embedding` [V, H] (unit-normal init like T5X); `attend` is the tied head."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model), cfg.parameter_dtype)

    def __call__(self, tokens):
        """tokens [B, S] int -> [B, S, H] in the activation dtype."""
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"token ids must be integers, got dtype {tokens.dtype}.")
        return jnp.take(self.embedding, tokens, axis=0).astype(self.config.activation_dtype)

    def attend(self, hidden):
        """hidden [B, T, H] -> float32 logits [B, T, V] = hidden @ embedding.T."""
        dtype = self.config.activation_dtype
        return jnp.einsum("bth,vh->btv", hidden.astype(dtype), self.embedding.astype(dtype),
                          preferred_element_type=jnp.float32)


# Variable collection of decoding-only re-laid-out weights (`transformer.mlp_decode_blocks`),
# read by MlpBlock when present; training and the encoder never see it.
DECODE_WEIGHTS = "decode_weights"


class MlpBlock(nn.Module):
    """Gated GELU: wo(dropout(gelu(x @ wi_0) * (x @ wi_1))); x [B, T, H] -> [B, T, H]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.wi_0 = Dense(cfg, cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.wi_1 = Dense(cfg, cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.wo = Dense(cfg, cfg.d_ff, cfg.d_model, ("mlp", "embed"))
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, x, deterministic: bool = True):
        if self.has_variable(DECODE_WEIGHTS, "wi_blocks"):
            return self._blocked(x)
        hidden = gelu_tanh(self.wi_0(x)) * self.wi_1(x)  # [B, T, F]
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        hidden = self.dropout(hidden, deterministic=deterministic)
        return self.wo(hidden)

    def _blocked(self, x):
        """The same block from column blocks of [wi_0 | wi_1] and of wo (the DECODE_WEIGHTS
        collection, `transformer.mlp_decode_blocks`): one product per block, outputs joined.
        Decoding only (no dropout)."""
        cfg = self.config
        dtype = cfg.activation_dtype
        gate_and_linear = jnp.concatenate(
            [project(x, w, dtype) for w in self.get_variable(DECODE_WEIGHTS, "wi_blocks")], -1)
        hidden = gelu_tanh(gate_and_linear[..., :cfg.d_ff]) * gate_and_linear[..., cfg.d_ff:]
        return jnp.concatenate(
            [project(hidden, w, dtype) for w in self.get_variable(DECODE_WEIGHTS, "wo_blocks")],
            -1)
