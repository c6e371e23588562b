"""Checkpoint integrity: a half-written step (orbax tmp folder, as a kill during a save
leaves it) is never restored; a truncated step gives an error naming the step and path, and
CheckpointConfig.checkpoint_fallback=True resumes from the previous step instead (moving the
bad one aside); metrics.jsonl is cut back to the restored step."""
import glob
import os
import re
import shutil

import cli_runs
import pytest
from cli_runs import clean_gin, compile_cache  # noqa: F401  (autouse fixtures)

import gin


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4 (kept as a pristine copy)."""
    model_dir = str(tmp_path_factory.mktemp("ckpt") / "run")
    gin.clear_config()
    from medmt5.cli import train
    rc = train.main(cli_runs.inprocess_argv(model_dir, steps=4, save_period=2))
    gin.clear_config()
    assert rc == 0
    return model_dir


def _copy(trained, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(trained, dst)
    return dst


def _resume(model_dir, capsys, steps=4, extra=()):
    rc, err = cli_runs.main_inprocess(
        cli_runs.inprocess_argv(model_dir, steps=steps, save_period=2, extra=extra), capsys)
    m = re.search(r"resumed from \S+ at step (\d+)", err)
    return rc, err, int(m.group(1)) if m else None


def test_half_written_step_is_never_restored(trained, tmp_path, capsys):
    model_dir = _copy(trained, tmp_path)
    ckpts = os.path.join(model_dir, "checkpoints")
    tmp = os.path.join(ckpts, "6.orbax-checkpoint-tmp-1795570000000000")
    shutil.copytree(os.path.join(ckpts, "4"), tmp)
    for f in glob.glob(os.path.join(tmp, "params", "**", "d", "*"), recursive=True)[:1]:
        os.remove(f)
    rc, err, resumed = _resume(model_dir, capsys)
    assert rc == 0 and resumed == 4, err


def _truncate_params(model_dir, step):
    files = sorted(f for f in glob.glob(os.path.join(model_dir, "checkpoints", str(step),
                                                     "params", "**", "d", "*"), recursive=True)
                   if os.path.isfile(f))
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(max(os.path.getsize(f) // 3, 1))


def test_truncated_checkpoint_names_step_and_path(trained, tmp_path, capsys):
    model_dir = _copy(trained, tmp_path)
    _truncate_params(model_dir, 4)
    rc, err, _ = _resume(model_dir, capsys)
    step_dir = os.path.join(model_dir, "checkpoints", "4")
    assert rc == 1 and f"checkpoint step 4 at {step_dir} cannot be restored" in err, err
    assert "checkpoint_fallback=True" in err
    assert os.path.isdir(step_dir)  # nothing was deleted


def test_fallback_resumes_from_previous_and_truncates_history(trained, tmp_path, capsys):
    model_dir = _copy(trained, tmp_path)
    _truncate_params(model_dir, 4)
    rc, err, resumed = _resume(model_dir, capsys, steps=4,
                               extra=["--gin.CheckpointConfig.checkpoint_fallback=True"])
    assert rc == 0 and resumed == 2, err
    ckpts = os.listdir(os.path.join(model_dir, "checkpoints"))
    assert "4" in ckpts and any(n.startswith("4.corrupt-") for n in ckpts), ckpts
    # steps 3-4 were trained again from step 2: the history equals the original run's
    assert cli_runs.dumps(cli_runs.history(model_dir)) == cli_runs.dumps(
        cli_runs.history(trained))


def test_all_checkpoints_unreadable_is_an_error_not_a_fresh_start(trained, tmp_path, capsys):
    model_dir = _copy(trained, tmp_path)
    _truncate_params(model_dir, 4)
    _truncate_params(model_dir, 2)
    rc, err, _ = _resume(model_dir, capsys,
                         extra=["--gin.CheckpointConfig.checkpoint_fallback=True"])
    assert rc == 1 and "no checkpoint in" in err and "can be restored" in err, err
