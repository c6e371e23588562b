"""Checkpoints: exact resume (with dropout), restore onto another mesh, retention,
load_checkpoint on a training dir, and the initial-checkpoint merge rules."""
import os

import jax
import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.checkpointing import checkpoints
from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from medmt5.training import train_state

MESH = (2, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 uninterrupted steps with dropout; a checkpoint every 2 steps (async)."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    model = fixtures.model(dropout_rate=0.2)
    mesh = fixtures.make_mesh(MESH)
    state, shardings, step_fn, config = fixtures.setup(mesh, model)
    manager = checkpoints.make_checkpoint_manager(model_dir, save_period=2, keep=None,
                                                  config=model.config)
    rng = jax.random.key(1, impl="rbg")   # typed key; rbg dropout also compiles faster
    losses = []
    for i in range(4):
        state, part = fixtures.run(step_fn, state, mesh, i + 1, start=i, rng=rng)
        losses += part
        checkpoints.save_checkpoint(manager, state, {
            "rng": checkpoints.rng_to_json(rng), "data_position": i + 1, "note": "kept"})
    manager.wait_until_finished()
    return dict(model_dir=model_dir, model=model, mesh=mesh, step_fn=step_fn, config=config,
                rng=rng,
                final=jax.device_get(state), losses=losses, manager=manager)


def _abstract(run, mesh):
    return train_state.abstract_state(run["model"], run["config"].optimizer, fixtures.make_batch(0),
                                      mesh)


def test_saved_steps_and_meta(run):
    assert list(run["manager"].all_steps()) == [2, 4]
    assert os.path.isfile(os.path.join(run["model_dir"], "model_config.json"))


def test_resume_is_bitwise_identical(run):
    manager = checkpoints.make_checkpoint_manager(run["model_dir"], save_period=2)
    state, meta = checkpoints.restore_checkpoint(manager, _abstract(run, run["mesh"]), step=2)
    assert int(state.step) == 2 and meta["data_position"] == 2 and meta["note"] == "kept"
    rng = checkpoints.rng_from_json(meta["rng"])
    np.testing.assert_array_equal(jax.random.key_data(rng), jax.random.key_data(run["rng"]))
    state, losses = fixtures.run(run["step_fn"], state, run["mesh"], 4, start=meta["data_position"],
                           rng=rng)
    assert losses == run["losses"][2:]
    resumed = jax.device_get(state)
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(run["final"])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(1, 1), (2, 4)])
def test_restore_onto_another_mesh(run, shape):
    mesh = fixtures.make_mesh(shape)
    manager = checkpoints.make_checkpoint_manager(run["model_dir"])
    abstract = _abstract(run, mesh)
    state, meta = checkpoints.restore_checkpoint(manager, abstract)    # latest = 4
    assert meta["step"] == 4
    kernel = state.params["decoder"]["logits_dense"]["kernel"]
    assert kernel.sharding == abstract.params["decoder"]["logits_dense"]["kernel"].sharding
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(run["final"])):
        np.testing.assert_array_equal(a, b)


def test_training_dir_loads_with_load_checkpoint(run):
    import medmt5
    cfg, params = medmt5.load_checkpoint(run["model_dir"])
    assert cfg == run["model"].config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(run["final"].params)):
        np.testing.assert_array_equal(a, b)


def test_keep_latest_and_missing(tmp_path):
    manager = checkpoints.make_checkpoint_manager(str(tmp_path), save_period=1, keep=2,
                                                  async_save=False)
    abstract_step = jax.numpy.zeros([], jax.numpy.int32)
    assert checkpoints.restore_checkpoint(manager, None) is None
    for step in range(1, 5):
        state = train_state.TrainState(step=abstract_step + step, params={"w": np.ones(3)},
                                       opt_state={"v": np.zeros(3)})
        checkpoints.save_checkpoint(manager, state, {"rng": [0, 1]})
    assert list(manager.all_steps()) == [3, 4]
    with pytest.raises(ValueError, match="rng"):
        checkpoints.save_checkpoint(manager, state.replace(step=abstract_step + 5), {})


# ---- initial checkpoints -----------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = fixtures.model()
    params = fixtures.host_params(model, seed=3)
    path = str(tmp_path_factory.mktemp("init") / "model")
    save_params_checkpoint(model.config, params, path)
    return model, params, path


def test_initial_params_load_and_new_prompt(saved):
    model, params, path = saved
    init = fixtures.host_params(model, seed=4)
    loaded = checkpoints.load_initial_params(path, init)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    init["prompt"] = {"prompt": np.full((5, 16), 0.5, np.float32)}
    with pytest.raises(ValueError, match=r"lacks model parameter\(s\) \['prompt/prompt'\]"):
        checkpoints.load_initial_params(path, init)
    merged = checkpoints.load_initial_params(path, init, new_params=["prompt/.*"])
    np.testing.assert_array_equal(merged["prompt"]["prompt"], init["prompt"]["prompt"])
    np.testing.assert_array_equal(merged["encoder"]["encoder_norm"]["scale"],
                                  params["encoder"]["encoder_norm"]["scale"])


def test_initial_params_shape_and_unused_errors(saved):
    model, params, path = saved
    bigger = fixtures.host_params(fixtures.model(d_ff=48))
    with pytest.raises(ValueError, match=r"(en|de)coder/layers_0/mlp/wi_0/kernel has shape "
                                         r"\(16, 32\) but the model expects \(16, 48\)"):
        checkpoints.load_initial_params(path, bigger)
    smaller = {k: v for k, v in fixtures.host_params(model).items() if k != "token_embedder"}
    with pytest.raises(ValueError, match="token_embedder/embedding"):
        checkpoints.load_initial_params(path, smaller)
    merged = checkpoints.load_initial_params(path, smaller, unused_params=["token_embedder/.*"])
    assert "token_embedder" not in merged
