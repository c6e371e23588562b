"""One process of the 2-process loopback test (tests/test_multiprocess.py).

usage: multiprocess_worker.py COORDINATOR_PORT PROCESS_ID NUM_PROCESSES MESH_SHAPE OUT_JSON
Each process has 4 fake CPU devices; together they train the tiny model for 3 steps on the
global mesh; process i writes its losses and input shard infos to OUT_JSON.i.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(port: str, process_id: str, num_processes: str, mesh_shape: str, out: str) -> None:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from medmt5.training import partitioning
    partitioning.initialize_distributed(f"127.0.0.1:{port}", int(num_processes),
                                        int(process_id))
    import trainer_fixtures as fixtures
    shape = tuple(int(x) for x in mesh_shape.split(","))
    mesh = partitioning.create_mesh(mesh_shape=shape)
    model = fixtures.model()
    state, _, step_fn, _ = fixtures.setup(mesh, model)
    _, losses = fixtures.run(step_fn, state, mesh, 3)
    # input shards for other layouts (no compile): model parallelism across the processes
    shards = {f"{d},{m}": list(partitioning.data_shard_info(partitioning.create_mesh(
        mesh_shape=(d, m)))) for d, m in [shape, (8, 1), (2, 4), (1, 8)]}
    with open(f"{out}.{jax.process_index()}", "w") as f:
        json.dump({"losses": losses, "num_devices": jax.device_count(), "shards": shards}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
