"""Preemption: SIGTERM stops the loop at a step every process agrees on.

The CLI path (SIGTERM -> checkpoint at the current step, exit 0 within a bound) is checked
on the real `python -m medmt5.train` in tests/test_kill_resume.py; here the guard itself, in
one process and in two JAX processes on loopback (tests/failure_worker.py).
"""
import os
import signal
import time

import pytest
from test_multiprocess_failure import start_pair, wait_steps

from medmt5.runtime.preemption import PreemptionGuard


def test_sigterm_sets_the_flag_and_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs between bytecodes of the main thread
            if guard.should_stop(2):
                break
            time.sleep(0.01)
        assert guard.should_stop(2) and guard.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_bad_sync_period():
    with pytest.raises(ValueError, match="sync_period=0"):
        PreemptionGuard(sync_period=0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_stop_at_the_same_step(tmp_path):
    procs = start_pair("term", tmp_path)
    try:
        wait_steps(tmp_path, procs)
        procs[1].send_signal(signal.SIGTERM)
        t0 = time.time()
        outs = [p.communicate(timeout=120)[0] for p in procs]
        elapsed = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    stopped = [open(tmp_path / f"stopped_{i}").read().split() for i in range(2)]
    assert stopped[0] == stopped[1], stopped  # same step, same accumulated global sums
    assert elapsed < 60, elapsed
