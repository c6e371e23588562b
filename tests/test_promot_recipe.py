"""The ProMoT recipe: the stage gin files' optimizer settings (parsed from the real files),
their agreement with prompt_tuning.recipe, the prompt step's independence of the
initialiser's scale, and the keep-best metric chosen per task kind / refused at start-up."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import trainer_fixtures as fixtures

import gin
import tasks  # noqa: F401  (registers every task: benchmarks, promot_* / icl_*)
from medmt5.cli import gin_utils
from medmt5.training import optimizers
from prompt_tuning import recipe
from prompt_tuning.prompts import PromptedTransformer


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _parse(stage_file, tmp_path, extra=()):
    """Parses gin/models/mt5_tiny.gin + the stage file as the CLI does (real files)."""
    npy = tmp_path / "p.npy"
    np.save(npy, np.zeros((3, 4), np.float32))
    argv = ["--gin_file=models/mt5_tiny.gin", f"--gin_file={stage_file}",
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path}'", f"--gin.PROMPT_FILE='{npy}'",
            *extra]
    gin_utils.parse_gin(gin_utils.parse_flags(argv), "medmt5.train")


def _settings():
    """The stage settings the parsed config trains with, in StageSettings' terms."""
    opt = gin.get_bindings("create_optimizer")
    sched = gin.get_bindings("make_schedule")
    return {
        "optimizer": opt["name"],
        "multiply_by_parameter_scale": opt.get("multiply_by_parameter_scale", True),
        "weight_decay_rate": opt.get("weight_decay_rate"),
        "learning_rate": gin_utils.query_macro("LEARNING_RATE"),
        "schedule": sched["name"], "warmup_steps": sched["warmup_steps"],
        "dropout_rate": gin_utils.query_macro("DROPOUT_RATE"),
        "label_smoothing": gin.query_parameter("StepSettings.label_smoothing")
        if "label_smoothing" in gin.get_bindings("StepSettings") else 0.0,
        "steps": gin_utils.query_macro("TRAIN_STEPS"),
        "eval_period": gin_utils.query_macro("EVAL_PERIOD"),
        "eval_beam_size": gin.query_parameter("EvalConfig.eval_beam_size"),
    }


def _as_settings(s: recipe.StageSettings):
    return {"optimizer": "adafactor",
            **{k: getattr(s, k) for k in ("multiply_by_parameter_scale", "weight_decay_rate",
                                          "learning_rate", "schedule", "warmup_steps",
                                          "dropout_rate", "label_smoothing", "steps",
                                          "eval_period", "eval_beam_size")}}


@pytest.mark.parametrize("stage_file", ["promot/stage1_prompt.gin",
                                        "promot/prompt_tuning_baseline.gin"])
def test_stage1_gin_is_the_reference_recipe(stage_file, tmp_path):
    _parse(stage_file, tmp_path)
    got = _settings()
    # google-research/prompt-tuning (configs/models/t5_1_1_prompt.gin) + the ProMoT paper
    assert got == {"optimizer": "adafactor", "multiply_by_parameter_scale": False,
                   "weight_decay_rate": 1e-5, "learning_rate": 0.2, "schedule": "constant",
                   "warmup_steps": 0, "dropout_rate": 0.1, "label_smoothing": 0.0,
                   "steps": 5000, "eval_period": 500, "eval_beam_size": 4}
    assert got == _as_settings(recipe.PROMPT_STAGE)
    assert gin_utils.query_macro("PROMPT_LENGTH") == 100
    assert gin.query_parameter("prompt_initializer.kind") == "uniform"
    assert gin.query_parameter("FreezeConfig.trainable") == ["prompt/.*"]


@pytest.mark.parametrize("stage_file", ["promot/stage2_model.gin",
                                        "promot/finetune_baseline.gin"])
def test_stage2_gin_is_the_reference_recipe(stage_file, tmp_path):
    _parse(stage_file, tmp_path)
    got = _settings()
    assert got == {"optimizer": "adafactor", "multiply_by_parameter_scale": True,
                   "weight_decay_rate": None, "learning_rate": 1e-3, "schedule": "constant",
                   "warmup_steps": 0, "dropout_rate": 0.1, "label_smoothing": 0.1,
                   "steps": 1000, "eval_period": 100, "eval_beam_size": 4}
    assert got == _as_settings(recipe.MODEL_STAGE)


def test_multitask_stage2_gin_uses_the_stage2_optimizer(tmp_path):
    npy = tmp_path / "p.npy"
    np.save(npy, np.zeros((3, 4), np.float32))
    _parse("promot/multitask_stage2.gin", tmp_path, [f"--gin.PROMPT_FILES=['{npy}', '{npy}']"])
    got = _settings()
    assert (got["multiply_by_parameter_scale"], got["weight_decay_rate"],
            got["learning_rate"], got["dropout_rate"], got["label_smoothing"]) == (
                True, None, 1e-3, 0.1, 0.1)


def _prompt_step(settings: recipe.StageSettings, scale: float) -> np.ndarray:
    """|delta| of a [P, H] prompt after one optimizer step of `settings` on the real loss of a
    tiny prompted model, the prompt initialised U(-scale, scale) (same direction)."""
    cfg = fixtures.tiny_config()
    model = PromptedTransformer(cfg, prompt_length=4)
    params = fixtures.host_params(model, seed=0)
    direction = np.random.RandomState(1).uniform(-1, 1, params["prompt"]["embedding"].shape)
    params["prompt"]["embedding"] = (scale * direction).astype(np.float32)
    batch = fixtures.make_batch(0)

    def loss(prompt):
        logits = model.apply({"params": dict(params, prompt={"embedding": prompt})},
                             batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                             batch["decoder_target_tokens"], enable_dropout=False)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             batch["decoder_target_tokens"])
        return (ce * batch["decoder_loss_weights"]).sum() / batch["decoder_loss_weights"].sum()

    prompt = jnp.asarray(params["prompt"]["embedding"])
    grad = jax.grad(loss)(prompt)
    assert float(jnp.abs(grad).min()) > 0  # every entry gets a gradient
    tx = settings.optimizer_fn()(schedule=settings.schedule_fn()).tx
    updates, _ = tx.update(grad, tx.init(prompt), prompt)
    return np.abs(np.asarray(updates))


def test_prompt_step_does_not_depend_on_the_initialiser_scale():
    small = _prompt_step(recipe.PROMPT_STAGE, 0.5)
    large = _prompt_step(recipe.PROMPT_STAGE, 5.0)
    # one Adafactor step moves every entry by ~LR whatever the scale (weight decay 1e-5 * p
    # is the only scale-dependent term: at most 5e-5 here)
    np.testing.assert_allclose(small.mean(), 0.2, rtol=1e-3)
    np.testing.assert_allclose(large.mean(), small.mean(), rtol=1e-3)
    # with T5X's parameter scaling (the old stage 1) the step follows the scale: 10x apart
    scaled = dataclasses.replace(recipe.PROMPT_STAGE, multiply_by_parameter_scale=True,
                                 weight_decay_rate=None)
    ratio = _prompt_step(scaled, 5.0).mean() / _prompt_step(scaled, 0.5).mean()
    assert 9.0 < ratio < 11.0


def test_stage1_gin_optimizer_is_the_recipe_optimizer(tmp_path):
    """The optimizer built from the parsed gin bindings moves a prompt exactly as
    recipe.PROMPT_STAGE's does."""
    _parse("promot/stage1_prompt.gin", tmp_path)
    kwargs = {k: v for k, v in gin.get_bindings("create_optimizer").items() if k != "name"}
    p = jnp.asarray(np.random.RandomState(0).uniform(-5, 5, (4, 16)), jnp.float32)
    g = jnp.asarray(np.random.RandomState(1).standard_normal((4, 16)), jnp.float32)
    from_gin = optimizers.create_optimizer("adafactor", 0.2, **kwargs).tx
    from_recipe = recipe.PROMPT_STAGE.optimizer_fn()(schedule=0.2).tx
    a, _ = from_gin.update(g, from_gin.init(p), p)
    b, _ = from_recipe.update(g, from_recipe.init(p), p)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # T5X semantics of weight decay: new = (1 - wd) * p - lr * y
    y = np.asarray(g) / np.sqrt(np.asarray(g) ** 2 + 1e-30)
    np.testing.assert_allclose(np.asarray(a), -0.2 * y - 1e-5 * np.asarray(p), rtol=1e-5)


@pytest.mark.parametrize("task,metric", [
    ("promot_rte", "accuracy"), ("promot_wmt14_enfr", "bleu"), ("icl_xsum_1shot", "rouge2"),
    ("icl_triviaqa_1shot", "exact_match"), ("icl_cb_1shot", "accuracy"),
    ("ncbi_disease_en", "f1"), ("bioasq_en", "rouge2")])
def test_default_best_metric_per_task_kind(task, metric):
    assert recipe.default_best_metric(task) == metric
    assert recipe.best_metric_for(task) == metric


def test_a_metric_the_task_does_not_produce_is_an_error():
    # translation reports a teacher-forced token "accuracy"; keeping the best on it is refused
    with pytest.raises(ValueError, match=r"BEST_METRIC='accuracy' is not produced by task "
                       r"'promot_wmt14_enfr'.*\['bleu'\].*teacher-forced.*'bleu'"):
        recipe.best_metric_for("promot_wmt14_enfr", "accuracy")
    with pytest.raises(ValueError, match="'rouge2' is not produced by task 'promot_rte'"):
        recipe.best_metric_for("promot_rte", "rouge2")
    assert recipe.best_metric_for("promot_rte", "accuracy") == "accuracy"


def test_stage_kwargs_refuse_a_wrong_metric_before_training(tmp_path):
    with pytest.raises(ValueError, match="not produced by task 'promot_wmt14_enfr'"):
        recipe.stage_train_kwargs(
            stage="model", model_dir=str(tmp_path), model_config=fixtures.tiny_config(),
            task="promot_wmt14_enfr", initial_checkpoint_path=str(tmp_path),
            task_feature_lengths={"inputs": 32, "targets": 8}, batch_size=8,
            settings=recipe.MODEL_STAGE, best_metric="accuracy")


def test_stage_kwargs_carry_the_recipe(tmp_path):
    npy = tmp_path / "p.npy"
    np.save(npy, np.zeros((3, 16), np.float32))
    common = dict(model_dir=str(tmp_path / "r"), model_config=fixtures.tiny_config(),
                  task="promot_rte", initial_checkpoint_path=str(tmp_path),
                  task_feature_lengths={"inputs": 32, "targets": 8}, batch_size=8)
    s1 = recipe.stage_train_kwargs(stage="prompt", settings=recipe.PROMPT_STAGE,
                                   prompt_length=3, **common)
    assert (s1["model_config"].dropout_rate, s1["step"].label_smoothing, s1["eval"].best_metric,
            s1["eval"].eval_beam_size, s1["eval"].eval_period, s1["freeze"].trainable) == (
                0.1, 0.0, "accuracy", 4, 500, ("prompt/.*",))
    assert float(s1["schedule"](0)) == pytest.approx(0.2)
    s2 = recipe.stage_train_kwargs(stage="model", settings=recipe.MODEL_STAGE,
                                   prompt_file=str(npy), **common)
    assert (s2["model_config"].dropout_rate, s2["step"].label_smoothing, s2["freeze"].frozen,
            s2["model_factory"](fixtures.tiny_config()).prompt_length) == (
                0.1, 0.1, ("prompt/.*",), 3)
    ft = recipe.stage_train_kwargs(stage="model", settings=recipe.MODEL_STAGE, **common)
    assert "model_factory" not in ft and ft["eval"].best_metric == "accuracy"
    with pytest.raises(ValueError, match="eval_period must be > 0"):
        recipe.stage_train_kwargs(stage="model", settings=dataclasses.replace(
            recipe.MODEL_STAGE, eval_period=0), **common)


def test_format_rate_and_label_pattern():
    from tasks.promot_metrics import format_rate

    pattern = recipe.label_pattern(["true", "false"])
    assert format_rate(["true", " false ", "truely", "la vie", "false"], pattern) == 60.0
    with pytest.raises(ValueError):
        format_rate([], pattern)
