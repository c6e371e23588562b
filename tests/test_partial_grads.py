"""Prompt-only gradients (StepConfig.trainable): the stage-1 step differentiates the prompt
alone, yet trains it exactly like the full-gradient step under the optimizer's mask."""
import functools

import jax
import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.training import optimizers, partitioning, trainer
from prompt_tuning.prompts import PROMPT_PATTERN, PromptedTransformer

P = 4


@pytest.fixture(scope="module")
def setup():
    model = PromptedTransformer(fixtures.tiny_config(), prompt_length=P)
    params = fixtures.host_params(model, seed=0)
    mask = optimizers.trainable_mask(params, trainable=[PROMPT_PATTERN])
    opt = optimizers.create_optimizer(
        "adafactor", 0.2, mask=mask, multiply_by_parameter_scale=False,
        factor_rules=optimizers.model_factor_rules(model))
    return model, params, mask, opt


def _step(model, params, opt, mesh_shape=(1, 1), **step_kw):
    mesh = fixtures.make_mesh(mesh_shape)
    state, _, step_fn, _ = fixtures.setup(mesh, model, optimizer=opt, params=params,
                                    rules=partitioning.model_axis_rules(model), **step_kw)
    batch = partitioning.make_global_batch(fixtures.make_batch(7), mesh)
    new, metrics = step_fn(state, batch, jax.random.PRNGKey(3))
    return jax.device_get(new), jax.device_get(metrics)


def _flat(tree):
    return {optimizers.path_str(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("mesh_shape,micro", [((1, 1), 1), ((2, 1), 4)])
def test_prompt_only_step_equals_masked_full_step(setup, mesh_shape, micro):
    model, params, mask, opt = setup
    full, full_m = _step(model, params, opt, mesh_shape, num_microbatches=micro)
    part, part_m = _step(model, params, opt, mesh_shape, num_microbatches=micro,
                         trainable=mask)
    new_full, new_part, old = _flat(full.params), _flat(part.params), _flat(params)
    assert not np.allclose(new_part["prompt/embedding"], old["prompt/embedding"])
    np.testing.assert_allclose(new_part["prompt/embedding"], new_full["prompt/embedding"],
                               rtol=1e-5, atol=1e-6)
    for k in ("loss", "z_loss", "accuracy", "num_tokens"):
        np.testing.assert_allclose(part_m[k], full_m[k], rtol=1e-5, err_msg=k)
    for name, value in old.items():  # every frozen weight: bitwise the initial one
        if name != "prompt/embedding":
            np.testing.assert_array_equal(new_part[name], value, err_msg=name)
    # the same optimizer state (moments of the prompt only)
    for a, b in zip(jax.tree.leaves(part.opt_state), jax.tree.leaves(full.opt_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # grad_norm: the norm over the trained leaves (the prompt), not over every weight
    grads, _, _ = jax.jit(functools.partial(trainer.grads, trainer.StepConfig(model, opt)))(
        params, fixtures.make_batch(7), jax.random.fold_in(jax.random.PRNGKey(3), 0))
    prompt_norm = float(np.linalg.norm(np.asarray(grads["prompt"]["embedding"])))
    np.testing.assert_allclose(part_m["grad_norm"], prompt_norm, rtol=1e-5)
    assert full_m["grad_norm"] > 2 * prompt_norm


def _lowered(model, params, opt, **step_kw):
    cfg = trainer.StepConfig(model, opt, rules=partitioning.model_axis_rules(model), **step_kw)
    mesh = fixtures.make_mesh((1, 1))
    state, _ = fixtures.create_state(mesh, model, opt, params)
    batch = {k: jax.numpy.asarray(v) for k, v in fixtures.make_batch(7).items()}
    with jax.set_mesh(mesh):
        return jax.jit(functools.partial(trainer.train_step, cfg)).lower(
            state, batch, jax.random.PRNGKey(0))


def test_prompt_only_step_has_fewer_matmuls(setup):
    """Structural: the weight-gradient dots of frozen weights are not in the program."""
    model, params, mask, opt = setup
    full = _lowered(model, params, opt)
    part = _lowered(model, params, opt, trainable=mask)
    n_full = full.as_text().count("dot_general")
    n_part = part.as_text().count("dot_general")
    # every frozen kernel's dW dot is gone: about a third of the full step's dots
    assert n_part < n_full - n_full // 4, (n_part, n_full)
    flops = lambda lowered: lowered.compile().cost_analysis()["flops"]  # noqa: E731
    assert flops(part) < flops(full)


def test_mask_that_does_not_match_params_is_an_error(setup):
    model, params, _, opt = setup
    other = optimizers.trainable_mask(fixtures.host_params(fixtures.model()),
                                      trainable=["decoder/.*"])
    with pytest.raises(ValueError, match="StepConfig.trainable does not match"):
        trainer.Split(other, params)
