"""ProMoT stages: stage-1 / stage-2 invariants through the real trainer, the stage glue's
errors, and (slow) stage 1 -> stage 2 from gin through the `medmt5.train` CLI."""
import json
import os

import jax
import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.checkpointing import checkpoints
from medmt5.checkpointing.checkpoint_io import load_checkpoint, save_params_checkpoint
from medmt5.model.transformer import Transformer
from medmt5.training import optimizers, partitioning, train_state, trainer
from prompt_tuning import prompt_init, stages
from prompt_tuning.prompts import PROMPT_PATTERN, PromptedTransformer

P = 4


def _flat(tree):
    return {optimizers.path_str(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    cfg = fixtures.tiny_config()
    path = str(tmp_path_factory.mktemp("backbone"))
    save_params_checkpoint(cfg, fixtures.host_params(Transformer(cfg), seed=0), path,
                           overwrite=True)
    return path


def _run_stage(backbone_dir, model, trainable=None, frozen=(), lr=0.2, steps=2):
    """Restores the backbone into the prompted model, trains `steps` steps; returns
    (initial params, final state)."""
    abstract = jax.eval_shape(
        lambda r: partitioning.unbox(
            train_state.init_boxed_params(model, fixtures.make_batch(0), r)),
        jax.random.PRNGKey(0))
    init = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    init["prompt"]["embedding"] = np.random.RandomState(3).uniform(
        -.5, .5, init["prompt"]["embedding"].shape).astype(np.float32)
    params = checkpoints.load_initial_params(backbone_dir, init, new_params=(PROMPT_PATTERN,))
    mask = optimizers.trainable_mask(params, trainable, frozen)
    optimizer = optimizers.create_optimizer("adafactor", lr, mask=mask,
                                            factor_rules=optimizers.model_factor_rules(model))
    state, _, step_fn, _ = fixtures.setup(fixtures.make_mesh((1, 1)), model, optimizer,
                                          params=params)
    state, losses = fixtures.run(step_fn, state, fixtures.make_mesh((1, 1)), steps)
    assert np.all(np.isfinite(losses))
    return params, state


def test_stage1_trains_the_prompt_only(backbone_dir):
    model = PromptedTransformer(fixtures.tiny_config(), prompt_length=P)
    start, state = _run_stage(backbone_dir, model, trainable=[PROMPT_PATTERN])
    _, ckpt = load_checkpoint(backbone_dir)
    got = _flat(jax.device_get(state.params))
    for name, value in _flat(ckpt).items():  # every backbone weight: bitwise the checkpoint
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert not np.allclose(got["prompt/embedding"], start["prompt"]["embedding"])
    # optimizer state: Adafactor moments for the [P, H] prompt and nothing else
    sizes = [x.size for x in jax.tree.leaves(state.opt_state) if np.ndim(x)]
    assert sum(sizes) == P * model.config.d_model


def test_stage2_freezes_the_prompt_and_trains_every_weight(backbone_dir):
    model = PromptedTransformer(fixtures.tiny_config(dropout_rate=0.1), prompt_length=P)
    start, state = _run_stage(backbone_dir, model, frozen=[PROMPT_PATTERN], lr=1e-3)
    got = _flat(jax.device_get(state.params))
    np.testing.assert_array_equal(got["prompt/embedding"], start["prompt"]["embedding"])
    for name, value in _flat(start).items():
        if name != "prompt/embedding":
            assert not np.array_equal(got[name], value), f"{name} did not change"


def test_chunked_cross_entropy_uses_the_prompt(backbone_dir):
    model = PromptedTransformer(fixtures.tiny_config(), prompt_length=P)
    _, params = load_checkpoint(backbone_dir)
    params = dict(params, prompt={"embedding": np.full((P, 16), 0.3, np.float32)})
    batch = fixtures.make_batch(1)
    opt = optimizers.create_optimizer("adafactor", 0.1)
    losses = jax.jit(trainer.token_losses, static_argnums=(0, 4))
    plain = losses(trainer.StepConfig(model, opt), params, batch, None, False)
    chunked = losses(trainer.StepConfig(model, opt, vocab_chunk_size=32), params, batch, None,
                     False)
    np.testing.assert_allclose(plain[0], chunked[0], atol=1e-4)


def test_required_checkpoint_errors(tmp_path):
    for bad in (None, ""):
        with pytest.raises(ValueError, match="INITIAL_CHECKPOINT_PATH is not set.*random"):
            stages.required_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="nope"):
        stages.required_checkpoint(str(tmp_path / "nope"))
    run = tmp_path / "stage1"
    (run / "prompts").mkdir(parents=True)
    with pytest.raises(ValueError, match="prompt-tuning run"):
        stages.stage2_checkpoint(str(run), "/x.npy")
    with pytest.raises(ValueError, match="PROMPT_FILE is not set"):
        stages.stage2_checkpoint(str(tmp_path), None)
    with pytest.raises(ValueError, match="prompt_initializer.kind='bogus'"):
        prompt_init.prompt_initializer("bogus")


def test_prompt_writer_and_length(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    writer = stages.PromptWriter()
    writer(str(tmp_path), 7, {"prompt": {"embedding": values}})
    writer(str(tmp_path), 7, {"prompt": {"embedding": values}}, best=True)
    np.testing.assert_array_equal(np.load(tmp_path / "prompts" / "prompt_7.npy"), values)
    np.testing.assert_array_equal(np.load(tmp_path / "prompts" / "prompt_best.npy"), values)
    assert json.loads((tmp_path / "prompts" / "best.json").read_text()) == {"step": 7}
    assert stages.prompt_length_of(str(tmp_path / "prompts" / "prompt_7.npy")) == 3


def test_embedding_initialisers_read_the_backbone(backbone_dir, cli_backbone):
    with pytest.raises(ValueError, match="outside the checkpoint's 128-row embedding"):
        prompt_init.prompt_initializer("text", prompt_length=P, checkpoint=backbone_dir,
                                       text="cancer")(None, (P, 16))
    _, ckpt = load_checkpoint(cli_backbone)
    emb = ckpt["token_embedder"]["embedding"]
    init = prompt_init.prompt_initializer("vocab", prompt_length=P, checkpoint=cli_backbone,
                                          vocab_limit=50)
    values = np.asarray(init(None, (P, 16)))
    assert all(any(np.array_equal(v, e) for e in emb[3:50]) for v in values)
    text = prompt_init.prompt_initializer("text", prompt_length=P, checkpoint=cli_backbone,
                                          text="cancer")
    ids = prompt_init._token_ids(["cancer"], "tiny")[0]
    np.testing.assert_array_equal(np.asarray(text(None, (P, 16))),
                                  emb[(ids * P)[:P]])


# ---- the CLI, from gin ------------------------------------------------------------------

TINY = ["--gin.T5Config.d_model=16", "--gin.T5Config.d_kv=8", "--gin.T5Config.d_ff=32",
        "--gin.T5Config.num_heads=2", "--gin.T5Config.num_encoder_layers=1",
        "--gin.T5Config.num_decoder_layers=1", "--gin.T5Config.relative_attention_num_buckets=8",
        "--gin.T5Config.relative_attention_max_distance=16", "--gin.TRAIN_STEPS=2",
        "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 112, 'targets': 6}",
        "--gin.EvalConfig.eval_max_examples=8", "--gin.EvalConfig.eval_beam_size=1"]


@pytest.fixture(scope="module")
def cli_backbone(tmp_path_factory):
    """A tiny backbone with the tiny vocabulary's size (the CLI checks it)."""
    cfg = fixtures.tiny_config(vocab_size=2176, d_kv=8, num_heads=2)
    path = str(tmp_path_factory.mktemp("cli_backbone"))
    save_params_checkpoint(cfg, fixtures.host_params(Transformer(cfg), seed=1), path,
                           overwrite=True)
    return path


def _train(argv):
    from medmt5.cli import train
    return train.main(["--gin_file=models/mt5_tiny.gin", *argv, *TINY])


def test_cli_refuses_training_without_a_backbone(tmp_path, capsys):
    code = _train(["--gin_file=promot/stage1_prompt.gin", f"--gin.MODEL_DIR='{tmp_path}/r'",
                   "--gin.INITIAL_CHECKPOINT_PATH=None"])
    assert code == 1
    assert "INITIAL_CHECKPOINT_PATH is not set" in capsys.readouterr().err


@pytest.fixture(scope="module")
def stage1_dir(cli_backbone, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("stage1"))
    assert _train(["--gin_file=promot/stage1_prompt.gin", f"--gin.MODEL_DIR='{run}'",
                   f"--gin.INITIAL_CHECKPOINT_PATH='{cli_backbone}'",
                   f"--gin.PROMPT_LENGTH={P}"]) == 0
    return run


@pytest.mark.slow
def test_cli_stage1_from_gin(stage1_dir, cli_backbone):
    assert sorted(os.listdir(os.path.join(stage1_dir, "prompts"))) == [
        "best.json", "prompt_2.npy", "prompt_best.npy"]
    _, backbone = load_checkpoint(cli_backbone)
    _, trained = load_checkpoint(stage1_dir)
    got = _flat(trained)
    for name, value in _flat(backbone).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    np.testing.assert_array_equal(np.load(os.path.join(stage1_dir, "prompts", "prompt_2.npy")),
                                  got["prompt/embedding"])
    assert got["prompt/embedding"].shape == (P, 16)
    assert np.abs(got["prompt/embedding"]).max() > 0  # uniform init, then trained


@pytest.mark.slow
def test_cli_stage2_from_gin(stage1_dir, cli_backbone, tmp_path):
    prompt_file = os.path.join(stage1_dir, "prompts", "prompt_best.npy")
    run = str(tmp_path / "stage2")
    assert _train(["--gin_file=promot/stage2_model.gin", f"--gin.MODEL_DIR='{run}'",
                   f"--gin.INITIAL_CHECKPOINT_PATH='{cli_backbone}'",
                   f"--gin.PROMPT_FILE='{prompt_file}'"]) == 0
    _, backbone = load_checkpoint(cli_backbone)
    _, trained = load_checkpoint(run)
    np.testing.assert_array_equal(trained["prompt"]["embedding"], np.load(prompt_file))
    changed = [n for n, v in _flat(backbone).items() if not np.array_equal(_flat(trained)[n], v)]
    assert len(changed) == len(_flat(backbone))
    assert "label_smoothing = 0.1" in open(os.path.join(run, "config.gin")).read()


@pytest.mark.slow
def test_evaluate_cli_prompt_attached_and_removed(stage1_dir, cli_backbone, tmp_path):
    """Stage 1 with the prompt removed is exactly the backbone; attached differs."""
    from prompt_tuning import evaluate

    def run(path, mode, out):
        assert evaluate.main([
            "--gin_file=promot/icl_eval.gin", f"--gin.CHECKPOINT_PATH='{path}'",
            "--gin.MIXTURE_OR_TASK_NAME='promot_rte'", "--gin.EVAL_SPLIT='validation'",
            f"--gin.PROMPT_MODE='{mode}'", "--gin.BEAM_SIZE=1", "--gin.BATCH_SIZE=8",
            f"--gin.EVAL_OUTPUT_DIR='{out}'", "--gin.promot_evaluate.max_examples=8",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 112, 'targets': 6}"]) == 0
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f)

    removed = run(stage1_dir, "removed", str(tmp_path / "removed"))
    backbone = run(cli_backbone, "removed", str(tmp_path / "backbone"))
    attached = run(stage1_dir, "attached", str(tmp_path / "attached"))
    assert removed["prompt_mode"] == "removed" and attached["prompt_mode"] == "attached"
    assert removed["metrics"] == backbone["metrics"]
    assert attached["metrics"]["promot_rte/loss"] != removed["metrics"]["promot_rte/loss"]
    assert "all/norm_avg" in attached["metrics"]
    assert os.path.exists(tmp_path / "attached" / "promot_rte-predictions.jsonl")


@pytest.mark.parametrize("files,expect", [
    (["promot/stage1_prompt.gin"], {"FreezeConfig.trainable": ["prompt/.*"],
                                    "make_schedule.learning_rate": 0.2, "DataConfig.batch_size": 64,
                                    "train.train_steps": 5000,
                                    "prompted_model.prompt_length": 100}),
    (["promot/stage2_model.gin"], {"FreezeConfig.frozen": ["prompt/.*"],
                                   "StepSettings.label_smoothing": 0.1,
                                   "make_schedule.learning_rate": 1e-3,
                                   "T5Config.dropout_rate": 0.1, "train.train_steps": 1000}),
    (["promot/finetune_baseline.gin"], {"StepSettings.label_smoothing": 0.1,
                                        "FreezeConfig.trainable": None}),
    (["promot/prompt_tuning_baseline.gin"], {"FreezeConfig.trainable": ["prompt/.*"]}),
    (["promot/stage1_prompt.gin", "promot/init_vocab.gin"], {"prompt_initializer.kind": "vocab"}),
    (["promot/stage1_prompt.gin", "promot/init_class_labels.gin"],
     {"prompt_initializer.labels": ["true", "false"]}),
    (["promot/stage1_prompt.gin", "promot/init_text.gin"], {"prompt_initializer.kind": "text"}),
    (["promot/stage1_prompt.gin", "promot/init_file.gin"], {"prompt_initializer.kind": "file"}),
    (["promot/icl_eval.gin"], {"promot_evaluate.prompt_mode": "removed"}),
])
def test_promot_gin_files_parse(files, expect):
    import gin
    from medmt5.cli import gin_utils
    argv = [] if files == ["promot/icl_eval.gin"] else ["--gin_file=models/mt5_tiny.gin"]
    argv += [f"--gin_file={f}" for f in files] + [
        "--gin.MODEL_DIR='/tmp/x'", "--gin.INITIAL_CHECKPOINT_PATH='/tmp/b'",
        "--gin.PROMPT_FILE='/tmp/p.npy'", "--gin.CHECKPOINT_PATH='/tmp/c'"]
    gin_utils.parse_gin(gin_utils.parse_flags(argv), "test")
    for name, value in expect.items():
        try:
            got = gin.query_parameter(name)
        except ValueError:
            got = None
        while str(got).startswith("%"):  # a macro: its value
            got = gin_utils.query_macro(str(got)[1:])
        assert got == value, name
