"""Trainer: mesh invariance, grad accumulation, chunked CE, freezing, non-finite skip, eval."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trainer_fixtures as fixtures
from jax.sharding import PartitionSpec as P

from medmt5.training import optimizers, partitioning, train_state, trainer

STEPS = 3


@pytest.fixture(scope="module")
def model():
    return fixtures.model()   # no dropout: see test_checkpoints for dropout-rng resume


@pytest.fixture(scope="module")
def reference(model):
    """Single-device run: (initial host params, losses over STEPS, final params, step_fn...)."""
    mesh = fixtures.make_mesh((1, 1))
    state, shardings, step_fn, config = fixtures.setup(mesh, model)
    init = jax.device_get(state.params)
    final, losses = fixtures.run(step_fn, state, mesh, STEPS)
    # one step on batch 7 from the initial params: the baseline for the variants below
    fresh, _ = fixtures.create_state(mesh, model, config.optimizer, init)
    one, one_m = step_fn(fresh, partitioning.make_global_batch(fixtures.make_batch(7), mesh),
                         jax.random.PRNGKey(3))
    return dict(mesh=mesh, init=init, losses=losses, step_fn=step_fn, config=config,
                one_step=(jax.device_get(one), jax.device_get(one_m)))


def test_reference_runs(reference):
    assert all(np.isfinite(reference["losses"])) and len(set(reference["losses"])) == STEPS


def test_random_init_is_sharded(model):
    mesh = fixtures.make_mesh((2, 4))
    opt = fixtures.make_optimizer(model)
    state, shardings = train_state.create_train_state(model, opt, mesh, fixtures.make_batch(0),
                                                      jax.random.PRNGKey(0))
    wi = state.params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]   # [H, F]
    assert wi.sharding.spec == P(None, "model") and wi.sharding.mesh.shape["model"] == 4
    emb = state.params["token_embedder"]["embedding"]                   # [V, H]
    assert emb.sharding.spec == P("model", None)
    assert 0.5 < float(jnp.std(emb)) < 1.5      # T5X's unit-normal embedding init
    assert int(state.step) == 0


@pytest.mark.parametrize("shape", [(8, 1), (4, 2), (2, 4)])
def test_meshes_give_same_losses(model, reference, shape):
    mesh = fixtures.make_mesh(shape)
    state, shardings, step_fn, _ = fixtures.setup(mesh, model, params=reference["init"])
    if shape[1] > 1:  # the LM head really is split over "model"
        assert shardings.params["decoder"]["logits_dense"]["kernel"].spec == P(None, "model")
    _, losses = fixtures.run(step_fn, state, mesh, STEPS)
    np.testing.assert_allclose(losses, reference["losses"], rtol=1e-5)


def _one_step(model, params, mesh_shape=(1, 1), optimizer=None, **step_kw):
    mesh = fixtures.make_mesh(mesh_shape)
    state, _, step_fn, _ = fixtures.setup(mesh, model, optimizer=optimizer, params=params,
                                          **step_kw)
    batch = partitioning.make_global_batch(fixtures.make_batch(7), mesh)
    new, metrics = step_fn(state, batch, jax.random.PRNGKey(3))
    return jax.device_get(new), jax.device_get(metrics)


def test_grad_accumulation_equals_full_batch(model, reference):
    full_state, full_m = reference["one_step"]
    # on 2 data shards: microbatches stay sharded over "data"
    acc_state, acc_m = _one_step(model, reference["init"], (2, 1), num_microbatches=4)
    for k in ("loss", "z_loss", "accuracy", "grad_norm", "num_tokens"):
        np.testing.assert_allclose(acc_m[k], full_m[k], rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(acc_state.params), jax.tree.leaves(full_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_step_equals_plain(model, reference):
    full_state, full_m = reference["one_step"]
    ch_state, ch_m = _one_step(model, reference["init"], vocab_chunk_size=48)  # 3 chunks
    for k in ("loss", "z_loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(ch_m[k], full_m[k], rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(ch_state.params), jax.tree.leaves(full_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tied_lm_head_matches_model():
    model = fixtures.model(tie_word_embeddings=True)
    batch = fixtures.make_batch(1, batch_size=2)
    inputs = {k: batch[k] for k in trainer.MODEL_INPUTS if k in batch}

    @jax.jit
    def both(params):
        logits = model.apply({"params": params}, **inputs, enable_dropout=False)
        hidden = model.apply({"params": params}, **inputs, enable_dropout=False,
                             method=trainer._hidden_states)
        h, kernel = trainer.lm_head(model, params, hidden)
        return logits, jnp.einsum("bth,hv->btv", h, kernel)

    logits, ours = both(fixtures.host_params(model))
    np.testing.assert_allclose(ours, logits, rtol=1e-5, atol=1e-5)


def test_only_trainable_params_change(model, reference):
    mask = optimizers.trainable_mask(reference["init"], trainable=["decoder/.*"])
    opt = fixtures.make_optimizer(model, mask=mask)
    state, metrics = _one_step(model, reference["init"], optimizer=opt)
    flat_new = dict(jax.tree_util.tree_leaves_with_path(state.params))
    for path, old in jax.tree_util.tree_leaves_with_path(reference["init"]):
        name = optimizers.path_str(path)
        changed = not np.array_equal(flat_new[path], old)
        assert changed == name.startswith("decoder/"), name
    # optimizer state exists only for decoder params: as big as an unmasked optimizer's
    # state for the decoder subtree alone, and smaller than one for all params
    def state_size(tree):
        return sum(x.size for x in jax.tree.leaves(tree) if x.ndim)
    plain_tx = fixtures.make_optimizer(model).tx
    decoder = {"decoder": reference["init"]["decoder"]}
    assert state_size(state.opt_state) == state_size(jax.eval_shape(plain_tx.init, decoder))
    assert state_size(state.opt_state) < state_size(
        jax.eval_shape(plain_tx.init, reference["init"]))


def test_nonfinite_loss_skips_update(reference):
    mesh = reference["mesh"]
    params = jax.tree.map(np.array, reference["init"])
    params["encoder"]["encoder_norm"]["scale"][0] = np.nan
    state, _ = fixtures.create_state(mesh, fixtures.model(), reference["config"].optimizer, params)
    new, metrics = reference["step_fn"](
        state, partitioning.make_global_batch(fixtures.make_batch(3), mesh), jax.random.PRNGKey(0))
    assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1
    for a, b in zip(jax.tree.leaves(jax.device_get(new.params)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_eval_step_matches_train_loss(model, reference):
    _, full_m = reference["one_step"]
    mesh = fixtures.make_mesh((2, 1))
    state, shardings, _, config = fixtures.setup(mesh, model, params=reference["init"])
    eval_fn = trainer.jit_eval_step(config, mesh, shardings)
    batch = partitioning.make_global_batch(fixtures.make_batch(7), mesh)
    # split the batch in two halves: summable metrics add up to the full-batch loss
    halves = [{k: v[i * 4:(i + 1) * 4] for k, v in fixtures.make_batch(7).items()}
              for i in range(2)]
    totals = [jax.device_get(eval_fn(state, partitioning.make_global_batch(h, mesh)))
              for h in halves]
    total = {k: sum(t[k] for t in totals) for k in totals[0]}
    summary = trainer.summarize_eval(total)
    np.testing.assert_allclose(summary["loss"], full_m["loss"], rtol=1e-5)
    np.testing.assert_allclose(summary["accuracy"], full_m["accuracy"], rtol=1e-6)
    assert summary["num_tokens"] == full_m["num_tokens"] and int(total["num_sequences"]) == 8
    del batch
