"""Device mesh, logical-axis rules, and global batches (pjit/GSPMD in the T5X style).

The mesh always has two axes, ("data", "model"). Parameters carry logical axis names
(flax `nn.with_logical_partitioning`); the core table, `LOGICAL_AXIS_RULES`, maps the core
model's names to mesh axes. A package whose parameters add names supplies rules for them
(t5x's `additional_rules`): `standard_logical_axis_rules(additional_rules)`,
or `model_axis_rules(model)` for a model that carries its own (medmt5.model.protocols
.AddsLogicalAxes). Parameters and optimizer state are placed only by rules that name every
axis they carry (`logical_to_shardings` raises on an unknown one). Batches are sharded over
"data" on their leading dimension.

Multi-host: every process runs the same program. `initialize_distributed` starts
`jax.distributed`; `data_shard_info` says which input shard this process reads and
`make_global_batch` turns this process's rows into global `jax.Array`s.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from medmt5.model import protocols

DATA = "data"
MODEL = "model"
MESH_AXES = (DATA, MODEL)

# Logical axis name -> mesh axis (None = replicated). The core table (t5x-like, 1-D model
# parallelism: "embed" stays replicated so activations [B, T, H] are only batch-sharded).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA),
    ("vocab", MODEL),
    ("mlp", MODEL),
    ("heads", MODEL),
    ("joined_kv", MODEL),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
)

log = logging.getLogger(__name__)


class ShardInfo(NamedTuple):
    """This process's input shard; pass as `seqio.ShardInfo(*info)`."""

    index: int
    num_shards: int


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Starts multi-host JAX (call before anything touches devices).

    One process (all arguments None, not on TPU): nothing to do. On TPU VMs
    `jax.distributed.initialize()` discovers everything itself. On GPU/CPU clusters pass
    coordinator_address="host:port", num_processes and process_id (T5X's
    --coordinator_address / --process_count / --process_index flags).
    """
    given = [coordinator_address is not None, num_processes is not None,
             process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "multi-host GPU/CPU needs all of --coordinator_address, --process_count and "
            f"--process_index; got coordinator_address={coordinator_address!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r}")
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_index={process_id} must be in [0, {num_processes})")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
        return
    if _on_tpu_vm():
        jax.distributed.initialize()


def _on_tpu_vm() -> bool:
    # TPU VM metadata variables set by the TPU runtime; avoids touching devices here.
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE")
                or os.environ.get("CLOUD_TPU_TASK_ID"))


def create_mesh(num_partitions: int = 1, mesh_shape: Sequence[int] | None = None,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "model") mesh over all devices of all processes.

    num_partitions: model-parallel size; data size = num_devices // num_partitions.
    mesh_shape: explicit (data, model), overrides num_partitions; -1 in one place is inferred.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if mesh_shape is None:
        if num_partitions < 1 or n % num_partitions:
            raise ValueError(f"num_partitions={num_partitions} must be >= 1 and divide the "
                             f"number of devices ({n})")
        shape = (n // num_partitions, num_partitions)
    else:
        shape = tuple(int(d) for d in mesh_shape)
        if len(shape) != 2:
            raise ValueError(f"mesh_shape={mesh_shape} must be (data, model)")
        if shape.count(-1) == 1:
            known = shape[0] * shape[1] * -1
            if n % known:
                raise ValueError(f"mesh_shape={mesh_shape} does not divide {n} devices")
            shape = tuple(n // known if d == -1 else d for d in shape)
        if shape[0] * shape[1] != n or min(shape) < 1:
            raise ValueError(f"mesh_shape={tuple(mesh_shape)} needs {shape[0] * shape[1]} "
                             f"devices but there are {n}")
    try:
        # Topology-aware placement on real hardware (TPU/GPU slices).
        if devices == list(jax.devices()):
            grid = mesh_utils.create_device_mesh(shape, devices=devices,
                                                 allow_split_physical_axes=True)
        else:
            grid = np.asarray(devices, dtype=object).reshape(shape)
    except (ValueError, NotImplementedError, AssertionError) as e:
        # jax's mesh_utils refuses shapes it cannot lay out on the physical topology: a
        # ValueError (no contiguous submesh for this shape), a NotImplementedError (an axis
        # that is no product of physical axis sizes) or an AssertionError (TPU devices not
        # one per chip, or not a contiguous cuboid). The mesh is still correct in device
        # order, only its collectives may cross slower links, so say so and go on.
        log.warning("mesh %s: no topology-aware layout (%s: %s); devices placed in "
                    "jax.devices() order, which may make collectives slower on TPU/GPU "
                    "slices", shape, type(e).__name__, e)
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)


def standard_logical_axis_rules(additional_rules: Sequence[tuple] = ()) -> tuple:
    """The core rules plus a package's additions (new logical names only: an addition that
    names a core axis would never apply, flax taking the first rule for a name)."""
    additional = tuple(tuple(r) for r in additional_rules)
    known = {name for name, _ in LOGICAL_AXIS_RULES}
    for rule in additional:
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"additional_rules: {rule!r} is not (logical axis name, mesh axis)")
        if rule[0] in known:
            raise ValueError(f"additional_rules: logical axis {rule[0]!r} already has a rule "
                             f"({dict(LOGICAL_AXIS_RULES)[rule[0]]!r} in LOGICAL_AXIS_RULES)")
        known.add(rule[0])
    return LOGICAL_AXIS_RULES + additional


def model_axis_rules(model: Any, additional_rules: Sequence[tuple] = ()) -> tuple:
    """The rules for this model: core + the model's own additions (AddsLogicalAxes) + more."""
    own = (tuple(model.additional_axis_rules)
           if isinstance(model, protocols.AddsLogicalAxes) else ())
    return standard_logical_axis_rules(own + tuple(additional_rules))


def check_rules(logical_specs: Any, rules) -> None:
    """Raises if a logical axis name in the tree of PartitionSpecs has no rule (flax would
    silently replicate it), naming the axis and the first leaf that carries it."""
    known = {name for name, _ in rules}
    leaves = jax.tree_util.tree_flatten_with_path(
        logical_specs, is_leaf=lambda x: isinstance(x, P))[0]
    for path, spec in leaves:
        if not isinstance(spec, P):
            continue
        for name in spec:
            for n in (name if isinstance(name, tuple) else (name,)):
                if isinstance(n, str) and n not in known:
                    raise ValueError(
                        f"logical axis {n!r} (of {jax.tree_util.keystr(path)}) has no "
                        "partitioning rule: pass the rules of the package that adds it, "
                        "partitioning.standard_logical_axis_rules(additional_rules=...) or "
                        "partitioning.model_axis_rules(model) (a model carrying its own "
                        "rules implements medmt5.model.protocols.AddsLogicalAxes)")


def logical_to_mesh_specs(logical_specs: Any, rules=LOGICAL_AXIS_RULES) -> Any:
    """Tree of logical PartitionSpecs -> tree of mesh PartitionSpecs (flax's translation:
    a name without a rule is replicated; see logical_to_shardings)."""
    return nn.logical_to_mesh(logical_specs, rules)


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """Tree of logical PartitionSpecs (nn.get_partition_spec(boxed)) -> NamedShardings.
    Every logical name must have a rule (check_rules): this places parameters and state."""
    check_rules(logical_specs, rules)
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def is_box(x: Any) -> bool:
    """A flax partitioning box (LogicallyPartitioned): a value with its logical axis names."""
    return isinstance(x, nn.meta.AxisMetadata)


def unbox(tree: Any) -> Any:
    """Removes flax partitioning boxes (LogicallyPartitioned) and keeps the values."""
    return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over "data", the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _process_row_blocks(mesh: Mesh, global_batch_size: int) -> dict[int, tuple]:
    """process index -> sorted tuple of (start, stop) batch-row blocks its devices hold."""
    idx_map = batch_sharding(mesh).devices_indices_map((global_batch_size,))
    blocks: dict[int, set] = {}
    for device, index in idx_map.items():
        sl = index[0]
        start, stop, _ = sl.indices(global_batch_size)
        blocks.setdefault(device.process_index, set()).add((start, stop))
    return {p: tuple(sorted(b)) for p, b in blocks.items()}


def data_shard_info(mesh: Mesh) -> ShardInfo:
    """This process's input shard: processes holding the same batch rows share an index."""
    size = mesh.shape[DATA]  # any multiple of the data size works to identify row blocks
    blocks = _process_row_blocks(mesh, size)
    distinct = sorted(set(blocks.values()))
    return ShardInfo(distinct.index(blocks[jax.process_index()]), len(distinct))


def per_process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Rows of the global batch this process feeds to `make_global_batch`."""
    data = mesh.shape[DATA]
    if global_batch_size % data:
        raise ValueError(f"batch size {global_batch_size} must be divisible by the data-parallel "
                         f"size {data} (mesh {dict(mesh.shape)}); change BATCH_SIZE or the mesh")
    return global_batch_size // data_shard_info(mesh).num_shards


def make_global_batch(host_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows {name: [B/num_shards, ...]} -> global arrays {name: [B, ...]}."""
    sharding = batch_sharding(mesh)
    num_shards = data_shard_info(mesh).num_shards
    out = {}
    for name, x in host_batch.items():
        x = np.asarray(x)
        global_shape = (x.shape[0] * num_shards,) + x.shape[1:]
        if global_shape[0] % mesh.shape[DATA]:
            raise ValueError(f"feature {name!r}: global batch {global_shape[0]} is not divisible "
                             f"by the data-parallel size {mesh.shape[DATA]}")
        out[name] = jax.make_array_from_process_local_data(sharding, x, global_shape)
    return out


def with_sharding_constraint(x: jax.Array, logical_axes: Sequence[str | None],
                             mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> jax.Array:
    """Constrains an activation by logical axis names (e.g. ("batch", "length", "embed"))."""
    spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
