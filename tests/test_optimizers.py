"""Optimizers: Adafactor factoring and numerics, schedules, trainable masks."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from medmt5.training import optimizers as opt


def _params(key=0):
    ks = jax.random.split(jax.random.PRNGKey(key), 4)
    return {
        "wi": jax.random.normal(ks[0], (256, 512)) * 0.05,      # factored
        "small": jax.random.normal(ks[1], (64, 32)) * 0.05,     # below min dim: full
        "scale": jnp.ones((256,)) + 0.01 * jax.random.normal(ks[2], (256,)),
        "stack": jax.random.normal(ks[3], (2, 256, 512)) * 0.05,  # scanned layers
    }


AXES = {"wi": P("embed", "mlp"), "small": P("embed", "mlp"), "scale": P("embed"),
        "stack": P("layers", "embed", "mlp")}


def test_factored_state_shapes():
    state = opt.adafactor(1e-2, AXES).init(_params())
    m = state.moments
    assert isinstance(m["wi"], opt.FactoredMoment)
    assert m["wi"].v_row.shape == (256,) and m["wi"].v_col.shape == (512,)
    assert isinstance(m["small"], opt.FullMoment) and m["small"].v.shape == (64, 32)
    assert isinstance(m["scale"], opt.FullMoment) and m["scale"].v.shape == (256,)
    assert m["stack"].v_row.shape == (2, 256) and m["stack"].v_col.shape == (2, 512)
    assert m["stack"].batch_dims == (0,)


def test_factor_dims_by_names_for_3d():
    # [embed, heads, kv] with no layers: factored by logical names.
    assert opt.factor_dims((256, 8, 64), ("embed", "heads", "kv")) == ((0,), (1, 2), ())
    assert opt.factor_dims((256, 8, 64), ("embed", "heads", "relpos_buckets"))[0] == ()


def test_boxed_init_carries_logical_names():
    boxed = {"wi": nn.LogicallyPartitioned(jnp.zeros((256, 512)), ("embed", "mlp"))}
    state = jax.eval_shape(opt.adafactor(1e-2).init, boxed)
    specs = nn.get_partition_spec(state)
    assert specs.moments["wi"].v_row == P("embed")
    assert specs.moments["wi"].v_col == P("mlp")


def test_matches_optax_adafactor_on_matrices():
    # optax.adafactor implements the same (paper) algorithm for <= 2-D params.
    params = {k: v for k, v in _params().items() if k != "stack"}
    ours = opt.adafactor(1e-2, AXES)
    ref = optax.adafactor(1e-2, min_dim_size_to_factor=128, decay_rate=0.8,
                          multiply_by_parameter_scale=True, clipping_threshold=1.0, eps=1e-30)
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for i in range(3):
        g = jax.tree.map(lambda x, i=i: jax.random.normal(jax.random.PRNGKey(i), x.shape), params)
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = ref.update(g, s2, p2)
        for k in params:
            np.testing.assert_allclose(u1[k], u2[k], rtol=2e-5, atol=1e-7, err_msg=k)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)


def test_scanned_equals_unscanned():
    stack = _params()["stack"]
    tx = opt.adafactor(1e-2, AXES)
    grads = jax.random.normal(jax.random.PRNGKey(5), stack.shape)
    u_stack, _ = tx.update({"stack": grads}, tx.init({"stack": stack}), {"stack": stack})
    for layer in range(2):
        p = {"wi": stack[layer]}
        u, _ = tx.update({"wi": grads[layer]}, tx.init(p), p)
        np.testing.assert_allclose(u_stack["stack"][layer], u["wi"], rtol=1e-5, atol=1e-8)


def test_weight_decay_and_no_parameter_scale():
    p = {"w": jnp.full((4,), 2.0)}
    tx = opt.adafactor(0.1, multiply_by_parameter_scale=False, clipping_threshold=None,
                       weight_decay_rate=0.01)
    g = {"w": jnp.full((4,), 3.0)}
    u, _ = tx.update(g, tx.init(p), p)
    # step 0: decay = 1 - 1 = 0 -> v = g^2 + eps, y = g / |g| = 1
    np.testing.assert_allclose(u["w"], -0.1 * 1.0 - 0.01 * 2.0, rtol=1e-6)


def test_schedules():
    rs = opt.make_schedule("rsqrt", 0.01, warmup_steps=10000)
    np.testing.assert_allclose([rs(0), rs(10000), rs(40000)], [0.01, 0.01, 0.005], rtol=1e-6)
    c = opt.make_schedule("constant", 1e-3, warmup_steps=10)
    np.testing.assert_allclose([c(0), c(5), c(10), c(99)], [0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    cos = opt.make_schedule("cosine", 1e-4, warmup_steps=500, decay_steps=1500,
                            end_learning_rate=0.0)
    np.testing.assert_allclose([cos(250), cos(500), cos(1000), cos(1500), cos(3000)],
                               [5e-5, 1e-4, 5e-5, 0.0, 0.0], atol=1e-9)
    lin = opt.make_schedule("linear", 1.0, warmup_steps=0, decay_steps=4, end_learning_rate=0.5)
    np.testing.assert_allclose([lin(0), lin(2), lin(4), lin(8)], [1.0, 0.75, 0.5, 0.5])
    with pytest.raises(ValueError, match="decay_steps"):
        opt.make_schedule("cosine", 1e-4, warmup_steps=10)
    with pytest.raises(ValueError, match="unknown schedule"):
        opt.make_schedule("exp", 1e-4)


def _tree():
    return {"prompt": {"prompt": jnp.ones((4, 8))},
            "encoder": {"layers_0": {"mlp": {"wo": {"kernel": jnp.ones((8, 8))}}}},
            "decoder": {"decoder_norm": {"scale": jnp.ones((8,))}}}


def test_trainable_mask_patterns():
    mask = opt.trainable_mask(_tree(), trainable=["prompt/.*"])
    assert mask["prompt"]["prompt"] and not mask["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
    mask = opt.trainable_mask(_tree(), frozen=["prompt/.*"])
    assert not mask["prompt"]["prompt"] and mask["decoder"]["decoder_norm"]["scale"]
    with pytest.raises(ValueError, match="matches no parameter"):
        opt.trainable_mask(_tree(), trainable=["promtp/.*"])


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_masked_optimizer_holds_state_only_for_trainable(name):
    params = _tree()
    mask = opt.trainable_mask(params, trainable=["prompt/.*"])
    o = opt.create_optimizer(name, 0.1, mask=mask)
    state = o.tx.init(params)
    sizes = [x.size for x in jax.tree.leaves(state) if x.ndim > 0]
    # only the [4, 8] prompt has moments (adafactor: v [4, 8]; adam: mu, nu [4, 8])
    assert sizes == [32] * (1 if name == "adafactor" else 2), sizes
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = o.tx.update(grads, state, params)
    assert float(jnp.abs(updates["prompt"]["prompt"]).sum()) > 0
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        if "prompt" not in jax.tree_util.keystr(path):
            assert float(jnp.abs(u).sum()) == 0.0


def test_create_optimizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        opt.create_optimizer("sgd", 0.1)
    o = opt.create_optimizer("adamw", 0.1, weight_decay=0.01)
    assert float(o.learning_rate_fn(5)) == pytest.approx(0.1)
