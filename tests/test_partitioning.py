"""Partitioning: the rules table, meshes, input shards and global batches (8 fake devices)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from medmt5.training import partitioning as pt
from prompt_tuning.prompts import AXIS_RULES


def test_rules_table():
    specs = {"wi": P("embed", "mlp"), "emb": P("vocab", "embed"), "q": P("embed", "joined_kv"),
             "rel": P("heads", "relpos_buckets"), "prompt": P("prompt_length", "prompt_embed"),
             "scanned": P("layers", "embed", "mlp"), "act": P("batch", "length", "embed"),
             "unknown": P("made_up")}
    # the core rules plus the prompt package's additions (the rules a prompted model uses)
    mesh_specs = pt.logical_to_mesh_specs(specs, pt.standard_logical_axis_rules(AXIS_RULES))
    assert mesh_specs == {"wi": P(None, "model"), "emb": P("model", None),
                          "q": P(None, "model"), "rel": P("model", None),
                          "prompt": P(None, None), "scanned": P(None, None, "model"),
                          "act": P("data", None, None), "unknown": P(None)}


def test_create_mesh_shapes_and_errors():
    assert dict(pt.create_mesh().shape) == {"data": 8, "model": 1}
    assert dict(pt.create_mesh(num_partitions=2).shape) == {"data": 4, "model": 2}
    assert dict(pt.create_mesh(mesh_shape=(2, -1)).shape) == {"data": 2, "model": 4}
    with pytest.raises(ValueError, match="num_partitions=3"):
        pt.create_mesh(num_partitions=3)
    with pytest.raises(ValueError, match=r"needs 9 devices but there are 8"):
        pt.create_mesh(mesh_shape=(3, 3))


@pytest.mark.parametrize("error", [ValueError, NotImplementedError, AssertionError])
def test_mesh_falls_back_to_device_order_when_no_topology_layout_exists(monkeypatch, caplog,
                                                                          error):
    """jax's mesh_utils refusals (the three exception types it raises for a shape it cannot
    lay out) give a correct mesh in jax.devices() order, with a warning naming the reason;
    other errors propagate."""
    def refuse(*args, **kwargs):
        raise error("no layout for this topology")

    monkeypatch.setattr(pt.mesh_utils, "create_device_mesh", refuse)
    with caplog.at_level("WARNING", logger=pt.log.name):
        mesh = pt.create_mesh()
    assert list(mesh.devices.flat) == list(jax.devices())
    assert mesh.axis_names == pt.MESH_AXES
    assert f"{error.__name__}: no layout for this topology" in caplog.text

    def broken(*args, **kwargs):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(pt.mesh_utils, "create_device_mesh", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        pt.create_mesh()


def test_single_process_shard_and_batch():
    mesh = pt.create_mesh(mesh_shape=(4, 2))
    assert pt.data_shard_info(mesh) == (0, 1)
    assert pt.per_process_batch_size(8, mesh) == 8
    with pytest.raises(ValueError, match="divisible by the data-parallel size 4"):
        pt.per_process_batch_size(6, mesh)
    host = {"tokens": np.arange(16, dtype=np.int32).reshape(8, 2)}
    batch = pt.make_global_batch(host, mesh)
    assert batch["tokens"].sharding.spec == P("data")
    assert batch["tokens"].addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(batch["tokens"], host["tokens"])


def test_sharding_constraint_in_jit():
    mesh = pt.create_mesh(mesh_shape=(2, 4))
    f = jax.jit(lambda x: pt.with_sharding_constraint(x * 2, ("batch", "length", "mlp"), mesh))
    y = f(jnp.ones((4, 3, 8)))
    assert y.sharding.spec == P("data", None, "model")


def test_initialize_distributed_validates_flags():
    with pytest.raises(ValueError, match="--coordinator_address, --process_count"):
        pt.initialize_distributed(coordinator_address="127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"--process_index=2 must be in \[0, 2\)"):
        pt.initialize_distributed("127.0.0.1:1234", 2, 2)
    pt.initialize_distributed()   # one process, not a TPU VM: nothing to do
    assert jax.process_count() == 1
