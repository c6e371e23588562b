"""The GPU suite's children: a child over its limit is killed with its whole process group,
workers a child leaves behind are killed when it exits, and a measurement that needs more of
the budget than is left is skipped with a record saying how to run it alone (no device)."""
import json
import os
import sys
import time

from benchmarks import gpu_suite

# The child starts a grandchild (a stand-in for a torch.compile inductor worker) in its own
# process group, writes the grandchild's pid, then sleeps or exits.
CHILD = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(worker.pid))
sys.stderr.write("child started its worker\\n"); sys.stderr.flush()
if sys.argv[2] == "hang":
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _run(tmp_path, mode: str, limit: float):
    pid_file = tmp_path / f"{mode}.pid"
    t0 = time.monotonic()
    code, tail = gpu_suite.run_child([sys.executable, "-c", CHILD, str(pid_file), mode], limit,
                                     str(tmp_path / f"{mode}.err"))
    return code, tail, int(pid_file.read_text()), time.monotonic() - t0


def test_child_over_its_limit_is_killed_with_its_workers(tmp_path):
    code, tail, worker, wall = _run(tmp_path, "hang", limit=5)
    assert code is None and wall < 30
    assert "child started its worker" in tail
    assert _wait_dead(worker), f"worker {worker} of the timed-out child is still running"


def test_workers_left_by_a_finished_child_are_killed(tmp_path):
    code, _, worker, wall = _run(tmp_path, "exit", limit=60)
    assert code == 0 and wall < 30  # the worker's 120 s sleep did not hold the suite
    assert _wait_dead(worker), f"worker {worker} left by the child is still running"


def test_compile_peer_is_skipped_without_enough_budget(tmp_path):
    out = tmp_path / "out"
    rc = gpu_suite.main(["--only", "train_large_512_compile", "--budget_s", "100",
                         "--out_dir", str(out)])
    assert rc == 0
    rec = json.loads((out / "train_large_512_compile.json").read_text())
    assert "needs 300 s" in rec["skipped"]
    assert "--only train_large_512_compile" in rec["skipped"]
    assert os.path.exists(out / "summary.json")
