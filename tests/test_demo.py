"""End to end on the tiny model: the demo's train -> fine-tune -> eval -> infer, a few steps.

Drives the real CLIs in-process (medmt5.cli.demo.run), then resumes the pretraining run and
checks it continues from the saved step and data position.
"""
import json
import os

import pytest

pytestmark = pytest.mark.slow


def _meta(model_dir, step):
    path = os.path.join(model_dir, "checkpoints", str(step), "train_meta")
    files = [f for f in os.listdir(path) if not f.startswith("_")]
    with open(os.path.join(path, files[0])) as f:
        return json.load(f)


@pytest.mark.timeout(900)  # ~1-2 CPU-minutes; more wall time on a loaded machine
def test_demo_pipeline_few_steps_then_resume(tmp_path, capsys):
    from medmt5.cli import demo, train
    from medmt5.run.plotting import read_scalars

    small = ["--gin.BATCH_SIZE=8"]  # one row per fake device (conftest: 8 CPU devices)
    # pretraining with 0 steps still writes its config and a step-0 checkpoint that the
    # fine-tuning starts from (the pretraining loop itself is covered by the resume below)
    out = demo.run(str(tmp_path), pretrain_steps=0, finetune_steps=2, eval_period=2,
                   eval_examples=2, task_feature_lengths="{'inputs': 24, 'targets': 24}",
                   extra_pretrain=small,
                   extra_finetune=small + ["--gin.EvalConfig.eval_max_examples=2"])
    pre, ft = tmp_path / "pretrain", tmp_path / "finetune"
    # artefacts of every stage
    for path in (pre / "config.gin", pre / "model_config.json", ft / "best" / "best.json",
                 tmp_path / "eval_test" / "metrics.json", tmp_path / "loss_curves.png"):
        assert path.is_file(), path
    assert "TRAIN_STEPS = 0" in (pre / "config.gin").read_text()
    assert _meta(str(pre), 0)["data_position"] == 0
    assert set(out["f1"]) == {"en", "es", "fr", "it"}
    assert all(v is not None and 0.0 <= v <= 100.0 for v in out["f1"].values())
    # held-out test sentences (one per language) tagged by medmt5.infer, with their gold tags
    assert [r["lang"] for r in out["predictions"]] == list(demo.LANGUAGES)
    assert all(set(r) == {"inputs", "prediction", "target", "lang"} and r["target"]
               for r in out["predictions"])
    # fine-tuning validation (dev) loss and F1, averaged over the languages for the plot
    assert [s for s, _ in out["finetune_validation"]["loss"]] == [2]
    assert out["finetune_validation"]["loss"][0][1] > 0
    assert "loss" in read_scalars(str(ft / "eval" / demo.MEAN_DIR))
    assert out["best"]["metric"] == "f1" and out["best"]["step"] == 2
    # TensorBoard: train scalars and the fine-tuning eval metrics per task
    train_scalars = read_scalars(str(ft / "train"))
    for tag in ("loss", "z_loss", "accuracy", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert [s for s, _ in train_scalars[tag]] == [1, 2], tag
    assert "f1" in read_scalars(str(ft / "eval" / "abstrct_neoplasm_es"))
    report = capsys.readouterr().out
    assert "span F1" in report and "loss curves:" in report
    assert "no steps run" in report and "validation loss:" in report
    assert "gold:" in report

    # resume: the fine-tuning run continues from step 2 and its data position
    assert _meta(str(ft), 2)["data_position"] == 2
    rc = train.main(["--gin_file=finetune/abstrct_tiny.gin", f"--gin.MODEL_DIR='{ft}'",
                     f"--gin.INITIAL_CHECKPOINT_PATH='{pre}'", "--gin.TRAIN_STEPS=4",
                     "--gin.EVAL_PERIOD=0", "--gin.WARMUP_STEPS=1",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 24}", *small])
    assert rc == 0
    meta = _meta(str(ft), 4)
    assert meta["step"] == 4 and meta["data_position"] == 4
    assert [s for s, _ in read_scalars(str(ft / "train"))["loss"]] == [1, 2, 3, 4]
