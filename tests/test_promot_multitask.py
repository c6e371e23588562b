"""Multi-task ProMoT stage 2: task_ids in mixed batches, per-example prompts in the train step
(table frozen), PROMPT_FILES stacking, and the gin run through the `medmt5.train` CLI."""
import os

import jax
import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.checkpointing.checkpoint_io import load_checkpoint, save_params_checkpoint
from medmt5.data import pipeline as data
from medmt5.model.transformer import Transformer
from medmt5.training import optimizers, partitioning, trainer
from prompt_tuning import multitask
from prompt_tuning.prompts import PROMPT_PATTERN, PromptedTransformer

P, H = 3, 16
TASKS = ("promot_rte", "promot_wmt14_enfr")
LENGTHS = {"inputs": 112, "targets": 40}


def _rows(ds):
    return {tuple(ex["encoder_input_tokens"]) for ex in ds.as_numpy_iterator()}


def test_mixed_batches_carry_each_examples_task_id():
    import seqio

    data.setup_tasks()
    config = data.DataConfig("promot_multitask", LENGTHS, batch_size=8, shuffle=False,
                             pack=False, num_epochs=1, task_id_tasks=TASKS)
    converter = seqio.EncDecFeatureConverter(pack=False)
    per_task = [_rows(seqio.get_dataset(t, task_feature_lengths=dict(LENGTHS),
                                        dataset_split="train", shuffle=False, num_epochs=1,
                                        feature_converter=converter)) for t in TASKS]
    assert not per_task[0] & per_task[1]
    seen = []
    for batch in data.get_batches(config):
        ids = batch["task_ids"]
        assert ids.dtype == np.int32 and ids.shape == (8,)
        for row, task_id in zip(batch["encoder_input_tokens"], ids):
            assert tuple(row) in per_task[task_id]
        seen.extend(ids.tolist())
    assert set(seen) == {0, 1}
    # the order of MULTITASK_TASKS defines the ids
    swapped = data.DataConfig("promot_multitask", LENGTHS, batch_size=8, shuffle=False,
                              pack=False, num_epochs=1, task_id_tasks=TASKS[::-1])
    batch = next(data.get_batches(swapped))
    for row, task_id in zip(batch["encoder_input_tokens"], batch["task_ids"]):
        assert tuple(row) in per_task[1 - task_id]


def test_mixed_stream_is_seeded_and_resumes_exactly():
    data.setup_tasks()
    config = data.DataConfig("promot_multitask", LENGTHS, batch_size=4, seed=3, pack=False,
                             task_id_tasks=TASKS)
    first = [next(it) for it in [data.get_batches(config)] for _ in range(3)]
    resumed = next(data.get_batches(config, start_position=2))
    for key in first[2]:
        np.testing.assert_array_equal(resumed[key], first[2][key], err_msg=key)


def test_task_list_must_match_the_mixture():
    data.setup_tasks()
    assert data.mixture_rates("promot_multitask", TASKS) == [1.0, 1.0]
    for bad in (TASKS[:1], TASKS + ("promot_cb",), (TASKS[0], TASKS[0])):
        with pytest.raises(ValueError, match="MULTITASK_TASKS=.*exactly once"):
            data.mixture_rates("promot_multitask", bad)


def _table():
    return np.random.RandomState(5).uniform(-1, 1, (2, P, H)).astype(np.float32)


def test_train_step_uses_each_examples_prompt_and_keeps_the_table():
    cfg = fixtures.tiny_config()
    table = _table()
    model = PromptedTransformer(cfg, prompt_length=P, num_prompts=2)
    params = fixtures.host_params(Transformer(cfg), seed=0)
    params = dict(params, prompt={"embedding": table})
    batch = fixtures.make_batch(7)
    batch["task_ids"] = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)
    opt = optimizers.create_optimizer("adafactor", 1e-3,
                                      mask=optimizers.trainable_mask(params, None,
                                                                     [PROMPT_PATTERN]))
    losses = jax.jit(trainer.token_losses, static_argnums=(0, 4))
    mixed = np.asarray(losses(trainer.StepConfig(model, opt), params, batch, None, False)[0])
    single = PromptedTransformer(cfg, prompt_length=P)
    single_batch = {k: v for k, v in batch.items() if k != "task_ids"}
    for task_id in (0, 1):  # each row's loss = the single-prompt model's with its task's prompt
        one = dict(params, prompt={"embedding": table[task_id]})
        ref = np.asarray(losses(trainer.StepConfig(single, opt), one, single_batch, None,
                                False)[0])
        rows = batch["task_ids"] == task_id
        np.testing.assert_allclose(mixed[rows], ref[rows], rtol=1e-5, atol=1e-6)
        assert not np.allclose(mixed[~rows], ref[~rows])

    mesh = fixtures.make_mesh((1, 1))
    state, _, step_fn, _ = fixtures.setup(mesh, model, opt, params=params)
    state, metrics = step_fn(state, partitioning.make_global_batch(batch, mesh),
                             jax.random.PRNGKey(0))
    assert np.isfinite(float(metrics["loss"]))
    got = jax.device_get(state.params)
    np.testing.assert_array_equal(got["prompt"]["embedding"], table)
    assert not np.array_equal(got["encoder"]["encoder_norm"]["scale"],
                              params["encoder"]["encoder_norm"]["scale"])


def test_prompt_files_stack_in_order(tmp_path):
    table = _table()
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"task{i}.npy"))
        np.save(paths[-1], table[i])
    init = multitask.table_initializer(paths, TASKS)
    np.testing.assert_array_equal(np.asarray(init(None, (2, P, H))), table)
    np.testing.assert_array_equal(np.asarray(multitask.table_initializer(paths[::-1])(
        None, (2, P, H))), table[::-1])
    assert multitask.prompt_length_of_files(paths) == P
    assert multitask.num_prompts_of(paths, TASKS) == 2
    with pytest.raises(ValueError, match="PROMPT_FILES has 1 prompts but MULTITASK_TASKS has 2"):
        multitask.num_prompts_of(paths[:1], TASKS)
    with pytest.raises(ValueError, match="non-empty list"):
        multitask.table_initializer(paths[0])
    with pytest.raises(ValueError, match=r"stack to \(2, 3, 16\).*\(2, 4, 16\)"):
        init(None, (2, 4, H))
    model = PromptedTransformer(fixtures.tiny_config(), prompt_length=P, num_prompts=2,
                                prompt_init=init)
    params = model.init(jax.random.PRNGKey(0),
                        **{k: v[:1] for k, v in fixtures.make_batch(0).items()
                           if k != "decoder_loss_weights"},
                        enable_dropout=False)["params"]  # no task_ids: init still works
    np.testing.assert_array_equal(np.asarray(params["prompt"]["embedding"].unbox()), table)


@pytest.mark.slow
def test_cli_multitask_stage2_from_gin(tmp_path):
    from medmt5.cli import train

    cfg = fixtures.tiny_config(vocab_size=2176, d_kv=8, num_heads=2)
    backbone = str(tmp_path / "backbone")
    save_params_checkpoint(cfg, fixtures.host_params(Transformer(cfg), seed=1), backbone,
                           overwrite=True)
    table = _table()
    paths = [str(tmp_path / f"p{i}.npy") for i in range(2)]
    for path, values in zip(paths, table):
        np.save(path, values)
    run = str(tmp_path / "run")
    argv = ["--gin_file=models/mt5_tiny.gin", "--gin_file=promot/multitask_stage2.gin",
            f"--gin.MODEL_DIR='{run}'", f"--gin.INITIAL_CHECKPOINT_PATH='{backbone}'",
            f"--gin.PROMPT_FILES={paths!r}", "--gin.T5Config.d_model=16",
            "--gin.T5Config.d_kv=8", "--gin.T5Config.d_ff=32", "--gin.T5Config.num_heads=2",
            "--gin.T5Config.num_encoder_layers=1", "--gin.T5Config.num_decoder_layers=1",
            "--gin.T5Config.relative_attention_num_buckets=8",
            "--gin.T5Config.relative_attention_max_distance=16", "--gin.TRAIN_STEPS=2",
            "--gin.BATCH_SIZE=8", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS!r}"]
    assert train.main(argv) == 0
    _, base = load_checkpoint(backbone)
    _, trained = load_checkpoint(run)
    np.testing.assert_array_equal(trained["prompt"]["embedding"], table)
    assert not np.array_equal(trained["encoder"]["encoder_norm"]["scale"],
                              base["encoder"]["encoder_norm"]["scale"])
    np.testing.assert_array_equal(np.load(os.path.join(run, "prompts", "prompt_2.npy")), table)
    assert train.main(argv[:-1] + ["--gin.EVAL_PERIOD=2", f"--gin.MODEL_DIR='{run}2'",
                                   argv[-1]]) == 1  # train-time eval is refused
