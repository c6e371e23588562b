"""Two JAX processes on loopback (4 fake CPU devices each, jax.distributed with a coordinator
on 127.0.0.1) train the same losses as one process with 8 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import trainer_fixtures as fixtures

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")
MESH = (4, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    port, out = _free_port(), str(tmp_path / "losses.json")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(port), str(i), "2",
                               ",".join(map(str, MESH)), out], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        # the single-process run, meanwhile, on this process's 8 devices
        mesh = fixtures.make_mesh(MESH)
        state, _, step_fn, _ = fixtures.setup(mesh, fixtures.model())
        _, expected = fixtures.run(step_fn, state, mesh, 3)
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    results = []
    for i in range(2):
        with open(f"{out}.{i}") as f:
            results.append(json.load(f))
    for i, result in enumerate(results):
        assert result["num_devices"] == 8
        np.testing.assert_allclose(result["losses"], expected, rtol=1e-5)
        # data-parallel layouts split the input between the processes; when the model axis
        # spans both processes they hold the same rows and read the same shard
        assert result["shards"] == {"4,2": [i, 2], "8,1": [i, 2], "2,4": [i, 2],
                                    "1,8": [0, 1]}, result["shards"]
