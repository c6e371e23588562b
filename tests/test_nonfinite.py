"""A non-finite loss stops training naming the step and the term (default), or is skipped
(StepSettings.nonfinite_policy='skip'); a non-finite state is never saved. The CLI runs with
StepSettings.loss_normalizer=0.0, so every step's loss is sum / 0 = inf."""
import math
import os

import cli_runs
import jax
import numpy as np
import pytest
from cli_runs import clean_gin, compile_cache  # noqa: F401  (autouse fixtures)

from medmt5.runtime import nonfinite


def test_policy_rows():
    rows = [{"step": 1, "loss": 2.0, "z_loss": 0.1, "grad_norm": 1.0, "nonfinite": 0.0},
            {"step": 2, "loss": float("nan"), "z_loss": 0.1, "grad_norm": float("inf"),
             "nonfinite": 1.0}]
    with pytest.raises(nonfinite.NonFiniteLossError, match=r"at step 2: loss=nan, grad_norm=inf"):
        nonfinite.apply_policy(rows, "raise")
    assert nonfinite.apply_policy(rows, "skip") == [2]
    with pytest.raises(ValueError, match="nonfinite_policy='ignore'"):
        nonfinite.check_policy("ignore")


def test_nonfinite_loss_stops_naming_step_and_term(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    rc, err = cli_runs.main_inprocess(cli_runs.inprocess_argv(
        model_dir, steps=3, extra=["--gin.StepSettings.loss_normalizer=0.0"]), capsys)
    assert rc == 1, err
    assert "non-finite training value at step 1: loss=inf" in err, err
    assert "nonfinite_policy='skip'" in err and "Traceback" not in err
    ckpts = os.path.join(model_dir, "checkpoints")
    assert not os.path.isdir(ckpts) or not [n for n in os.listdir(ckpts) if n.isdigit()]


def test_skip_policy_keeps_params_and_saves_only_finite_state(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    rc, err = cli_runs.main_inprocess(cli_runs.inprocess_argv(
        model_dir, steps=2, save_period=1,
        extra=["--gin.StepSettings.loss_normalizer=0.0",
               "--gin.StepSettings.nonfinite_policy='skip'"]),
        capsys)
    assert rc == 0, err
    rows = cli_runs.history(model_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["nonfinite"] == 1.0 and not math.isfinite(r["loss"]) for r in rows)
    from medmt5.checkpointing import checkpoints
    from medmt5.checkpointing.checkpoint_io import load_checkpoint
    _, p1 = load_checkpoint(model_dir, step=1)
    _, p2 = load_checkpoint(model_dir, step=2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)  # both updates were skipped
    del checkpoints
