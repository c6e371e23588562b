"""kill -9 at random moments, then SIGTERM, on the real `python -m medmt5.train` CLI.

One chain of runs of the same command on the same MODEL_DIR: 5 runs killed with SIGKILL at
a random step plus a random delay (kills land in steps, in async saves, in the flush of the
metrics), one run stopped with SIGTERM, and a last run that finishes. Meanwhile an
uninterrupted reference run of the same command trains in another MODEL_DIR. Checked:
every rerun resumes from (at least) the last checkpoint that was complete before the kill
(orbax's tmp folders are never restored, and keep=2 never deletes the last good checkpoint
first); SIGTERM exits 0 within a bounded time with a checkpoint at the current step; the
final parameters and the per-step metrics history equal the reference run's bitwise.
The seed of the random moments is printed; MEDMT5_KILL_SEED=N replays one.
"""
import os
import random
import re
import signal
import time

import cli_runs
import numpy as np
import pytest

STEPS = 40
MARGIN = 15  # kill targets stay this many steps before the end (steps are ms long)
KILLS = 5
SIGTERM_BOUND_S = 60.0
EXTRA = ("--gin.CheckpointConfig.keep_checkpoints=2",)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    cache, ref_dir, dir_ = tmp / "jax_cache", str(tmp / "ref"), str(tmp / "chain")
    seed = int(os.environ.get("MEDMT5_KILL_SEED", time.time_ns() % 2**31))
    rs = random.Random(seed)
    argv = cli_runs.train_argv(dir_, STEPS, extra=EXTRA)
    ref = cli_runs.start(cli_runs.train_argv(ref_dir, STEPS, extra=EXTRA), cache,
                         tmp / "ref.log")
    trials = []
    try:
        for i in range(KILLS + 1):
            before = cli_runs.last_step(dir_)
            proc = cli_runs.start(argv, cache, tmp / f"run{i}.log")
            target = rs.randint(before + 1, max(before + 1, min(before + 4, STEPS - MARGIN)))
            delay = rs.uniform(0.0, 0.05)
            reached = cli_runs.wait_for(lambda target=target: cli_runs.last_step(dir_) >= target,
                                        proc)
            assert reached and proc.poll() is None, \
                f"seed {seed}: run {i} ended before step {target}:\n" + \
                cli_runs.read(tmp / f"run{i}.log")[-3000:]
            time.sleep(delay)
            complete = cli_runs.complete_steps(dir_)
            sig = signal.SIGKILL if i < KILLS else signal.SIGTERM
            t0 = time.time()
            proc.send_signal(sig)
            proc.wait(timeout=300)
            trials.append(dict(signal=sig, target=target, delay=delay, complete=complete,
                               rc=proc.returncode, seconds=time.time() - t0,
                               log=cli_runs.read(tmp / f"run{i}.log"),
                               history_step=cli_runs.last_step(dir_),
                               steps_after=cli_runs.complete_steps(dir_),
                               listing=sorted(os.listdir(os.path.join(dir_, "checkpoints")))))
        rc, last_log = cli_runs.run(argv, cache, tmp / "final.log")
        ref.wait(timeout=600)
    finally:
        for p in (ref,):
            if p.poll() is None:
                p.kill()
    return dict(seed=seed, trials=trials, rc=rc, last_log=last_log, dir=dir_,
                ref_dir=ref_dir, ref_rc=ref.returncode, ref_log=cli_runs.read(tmp / "ref.log"))


def _resumed_step(log):
    m = re.search(r"resumed from \S+ at step (\d+)", log)
    return int(m.group(1)) if m else 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the chain (a fixture) runs inside the first test
def test_every_rerun_resumes_from_the_last_complete_checkpoint(chain):
    logs = [t["log"] for t in chain["trials"][1:]] + [chain["last_log"]]
    for trial, next_log in zip(chain["trials"], logs):
        resumed = _resumed_step(next_log)
        good = max(trial["steps_after"] if trial["signal"] == signal.SIGTERM
                   else trial["complete"] or [0])
        assert resumed >= good, (chain["seed"], trial["complete"], resumed)
        assert resumed in trial["steps_after"] or resumed == 0, (chain["seed"], trial)
    assert sum(t["signal"] == signal.SIGKILL for t in chain["trials"]) >= 5


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the chain (a fixture) runs inside the first test
def test_sigterm_saves_the_current_step_and_exits_zero(chain):
    term = chain["trials"][-1]
    assert term["signal"] == signal.SIGTERM
    assert term["rc"] == 0, term["log"][-3000:]
    assert term["seconds"] < SIGTERM_BOUND_S
    # the checkpoint is at the step the run had reached, and the history covers it
    assert max(term["steps_after"]) == term["history_step"] >= term["target"], term
    assert f"saving step {term['history_step']} and exiting" in term["log"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the chain (a fixture) runs inside the first test
def test_final_params_and_history_equal_an_uninterrupted_run(chain):
    assert chain["ref_rc"] == 0, chain["ref_log"][-3000:]
    assert chain["rc"] == 0, chain["last_log"][-3000:]
    history, ref_history = cli_runs.history(chain["dir"]), cli_runs.history(chain["ref_dir"])
    assert [r["step"] for r in history] == list(range(1, STEPS + 1))
    assert cli_runs.dumps(history) == cli_runs.dumps(ref_history), f"seed {chain['seed']}"
    params, ref_params = cli_runs.final_params(chain["dir"]), cli_runs.final_params(
        chain["ref_dir"])
    import jax
    flat = jax.tree_util.tree_leaves_with_path(params)
    ref_flat = dict(jax.tree_util.tree_leaves_with_path(ref_params))
    assert len(flat) == len(ref_flat)
    for path, x in flat:
        np.testing.assert_array_equal(x, ref_flat[path], err_msg=f"{path} seed {chain['seed']}")


def test_history_ignores_a_torn_line_and_is_cut_back_on_resume(tmp_path):
    from medmt5.run.metrics_history import MetricsHistory, read_history
    d = str(tmp_path / "train")
    h = MetricsHistory(d, 0, enabled=True)
    for step in (1, 2, 3):
        h.record(step, {"loss": np.float32(1.0 / step)})
    h.flush()
    with open(h.path, "a") as f:
        f.write('{"step": 4, "loss": 0.2')  # a kill in the middle of a write
    assert [r["step"] for r in read_history(h.path)] == [1, 2, 3]
    resumed = MetricsHistory(d, 2, enabled=True)  # the checkpoint was at step 2
    assert [r["step"] for r in read_history(h.path)] == [1, 2]
    resumed.record(3, {"loss": np.float32(0.5)})
    resumed.flush()
    rows = read_history(h.path)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] == 0.5
    assert rows[0]["loss"] == float(np.float32(1.0))  # float32 values round-trip exactly
