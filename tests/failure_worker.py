"""One process of the 2-process failure tests (tests/test_preemption.py,
tests/test_multiprocess_failure.py).

usage: failure_worker.py PORT PROCESS_ID MODE OUT_DIR
Both processes (2 fake CPU devices each, gloo collectives) run a loop of cross-process
steps (a global sum of a sharded array) under PreemptionGuard and Watchdog, writing
OUT_DIR/step_<id> after every step and OUT_DIR/stopped_<id> with the step they stopped at.
MODE "term": the test sends SIGTERM to one process; both must stop at the same step.
MODE "die": the test kills one process; the other must end (watchdog) within its timeout.
"""
import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

WATCHDOG_S = 8.0


def main(port: str, process_id: str, mode: str, out_dir: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id),
                               heartbeat_timeout_seconds=60)
    from medmt5.runtime.preemption import PreemptionGuard
    from medmt5.runtime.watchdog import Watchdog

    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices())
    sharding = NamedSharding(mesh, P("data"))
    local = np.full((2,), 1.0 + jax.process_index(), np.float32)
    x = jax.make_array_from_process_local_data(sharding, local, (4,))
    total = jax.jit(lambda a, s: s + jnp.sum(a), out_shardings=NamedSharding(mesh, P()))
    acc = jnp.zeros([], jnp.float32)
    me = jax.process_index()
    with PreemptionGuard() as guard, Watchdog(WATCHDOG_S, f"process {me} of 2") as dog:
        step = 0
        while step < 100000:
            acc = total(x, acc)
            float(acc)  # a device sync each step, as a log/flush point does
            step += 1
            dog.beat(step)
            with open(os.path.join(out_dir, f"step_{me}"), "w") as f:
                f.write(str(step))
            if guard.should_stop(step):
                break
            time.sleep(0.05)
    with open(os.path.join(out_dir, f"stopped_{me}"), "w") as f:
        f.write(f"{step} {float(acc)}")
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(*sys.argv[1:])
