"""T5X checkpoints (the layout of the official mT5 T5X checkpoints) <-> canonical params.

Layout of one step directory, MODEL_DIR/checkpoint_<step>/ (as t5x/checkpoints.py writes it):
  checkpoint      msgpack (flax.serialization) of
                  {"version": 3, "optimizer": {"target": {...params...},
                                               "state": {"step": ..., "param_states": {...}}}}
                  Each leaf is either the array itself (small / unpartitioned values) or the
                  JSON of a tensorstore spec pointing at a zarr array stored next to it:
                  {"driver": "zarr", "dtype": ..., "kvstore": {"driver": "file",
                   "path": "target.encoder.layers_0.attention.query.kernel/"},
                   "metadata": {"shape": [...], "chunks": [...], "compressor": {"id": "gzip"}}}
                  (tensorstore < 0.1.14 specs keep "path" at the top level; checkpoints written
                  to GCS use the "gcs" kvstore driver; both resolve relative to the step dir.)
  target.<a>.<b>.<c>/   zarr v2 arrays: .zarray + chunk files "0.0", ...
  state.param_states.<...>/   optimizer slots, same format

T5X parameter names equal ours (2-D kernels, query [embed, heads*kv], rel_embedding
[heads, buckets]). Scanned T5X checkpoints (layers stacked on axis 1) are not supported.
A T5X checkpoint stores no model config: sizes are inferred from shapes; the relative
attention max distance is not recoverable and defaults to 128 (mT5's value).
"""
from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import serialization, traverse_util

from medmt5.checkpointing.atomic_dir import atomic_directory
from medmt5.checkpointing.param_tree import (
    CheckpointError,
    flatten,
    infer_config_fields,
    unflatten,
    validate,
)
from medmt5.data import paths
from medmt5.model.config import T5Config

CHECKPOINT_FILE = "checkpoint"
STEP_DIR_PREFIX = "checkpoint_"
T5X_VERSION = 3
_STEP_DIR_RE = re.compile(r"^checkpoint_(\d+)$")
_CHUNK_BYTES = 64 * 1024 * 1024  # t5x's target chunk size


# ----------------------------------------------------------------------------- locating


def t5x_steps(model_dir: str) -> list:
    """Sorted steps of the finished checkpoint_<step>/checkpoint files in `model_dir`."""
    steps = []
    for entry in paths.listdir(model_dir):
        m = _STEP_DIR_RE.match(entry)
        if m and paths.isfile(paths.join(model_dir, entry, CHECKPOINT_FILE)):
            steps.append(int(m.group(1)))
    return sorted(steps)


def is_t5x_path(path: str) -> bool:
    if paths.isfile(path):
        return paths.basename(path) == CHECKPOINT_FILE
    return paths.isfile(paths.join(path, CHECKPOINT_FILE)) or bool(t5x_steps(path))


def find_t5x_checkpoint(path: str, step: int | None = None) -> str:
    """The msgpack file for `path` (a model dir, a checkpoint_<step> dir, or the file)."""
    if paths.isfile(path):
        if step is not None:
            raise CheckpointError(f"{path}: step={step} given, but the path is already one "
                                  "checkpoint file.")
        return path
    direct = paths.join(path, CHECKPOINT_FILE)
    if paths.isfile(direct):
        if step is not None:
            raise CheckpointError(f"{path}: step={step} given, but the path is already one "
                                  "checkpoint step directory.")
        return direct
    steps = t5x_steps(path)
    if not steps:
        raise CheckpointError(
            f"{path}: not a T5X checkpoint; looked for {direct} and "
            f"{STEP_DIR_PREFIX}<step>/{CHECKPOINT_FILE}.")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise CheckpointError(f"{path}: no T5X checkpoint for step {step}; available steps: "
                              f"{steps}.")
    return paths.join(path, f"{STEP_DIR_PREFIX}{step}", CHECKPOINT_FILE)


# ----------------------------------------------------------------------------- reading


def _is_spec(node: Any) -> bool:
    return isinstance(node, Mapping) and "driver" in node and ("kvstore" in node or "path" in node)


def _flatten_with_specs(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf}, a tensorstore spec counting as one leaf."""
    return traverse_util.flatten_dict(tree, sep="/", is_leaf=lambda _, node: _is_spec(node))


def _open_spec(spec: Mapping[str, Any], ckpt_dir: str, name: str,
               ckpt_file: str) -> tuple[dict, tuple | None, str]:
    kvstore = dict(spec.get("kvstore") or {})
    rel = kvstore.get("path") or spec.get("path")
    if not rel:
        raise CheckpointError(f"{ckpt_file}: parameter {name!r} has a tensorstore spec without a "
                              f"path: {dict(spec)}")
    meta = spec.get("metadata") or {}
    shape = (tuple(int(d) for d in np.asarray(meta.get("shape", [])).tolist())
             if "shape" in meta else None)
    dtype = spec.get("dtype") or meta.get("dtype")
    if dtype in ("uint16", "<u2"):
        raise CheckpointError(f"{ckpt_file}: parameter {name!r} is stored as uint16; re-save it as "
                              "bfloat16.")
    # gcs / gfile / file all resolve to a directory next to the msgpack file (local, or
    # tensorstore's gcs driver when the checkpoint is on gs://).
    if paths.is_remote(ckpt_dir):
        where = paths.normalize(paths.join(ckpt_dir, str(rel)))
    else:
        where = os.path.normpath(os.path.join(ckpt_dir, str(rel)))
    return ({"driver": spec.get("driver", "zarr"), "kvstore": paths.tensorstore_kvstore(where)},
            shape, where)


def _check_zarr_chunks(zarr_dir: str, name: str) -> None:
    """A missing chunk file reads back as fill values without error: refuse it instead."""
    meta_path = paths.join(zarr_dir, ".zarray")
    try:
        meta = json.loads(paths.read_text(meta_path))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: parameter {name}: missing or corrupt zarr metadata: "
                              f"{e}") from None
    shape, chunks = meta.get("shape") or [], meta.get("chunks") or []
    if not shape or len(shape) != len(chunks):
        return
    sep = meta.get("dimension_separator") or "."
    counts = [-(-int(n) // max(int(c), 1)) for n, c in zip(shape, chunks)]
    present = set(paths.listdir(zarr_dir)) if paths.is_remote(zarr_dir) else None
    for idx in itertools.product(*(range(c) for c in counts)):
        key = sep.join(str(i) for i in idx)
        missing = (key not in present) if present is not None else \
            not os.path.isfile(os.path.join(zarr_dir, key))
        if missing:
            raise CheckpointError(
                f"{zarr_dir}: parameter {name}: chunk file {key!r} is missing (the checkpoint copy "
                "is "
                "incomplete); re-copy the checkpoint.")


def read_t5x_state(path: str, step: int | None = None,
                   prefix: str = "target") -> dict[str, np.ndarray]:
    """Read every leaf under `prefix` ("target" = params, "state" = optimizer) as numpy.

    Returns {"encoder/layers_0/...": array} with `prefix/` stripped."""
    # lazy: only T5X checkpoints (zarr) need TensorStore
    import tensorstore as ts

    ckpt_file = find_t5x_checkpoint(path, step)
    ckpt_dir = paths.dirname(paths.normalize(ckpt_file))
    try:
        contents = serialization.msgpack_restore(paths.read_bytes(ckpt_file))
    except Exception as e:
        raise CheckpointError(f"{ckpt_file}: not a readable T5X msgpack checkpoint: {e}") from None
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"{ckpt_file}: expected a dict at the top level, got "
                              f"{type(contents).__name__}.")
    optimizer = contents.get("optimizer", contents) if "version" in contents else contents
    if prefix not in optimizer:
        raise CheckpointError(
            f"{ckpt_file}: no {prefix!r} entry; found {sorted(optimizer)} (a T5X checkpoint holds "
            "'target' params and 'state' optimizer entries).")
    leaves = _flatten_with_specs(optimizer[prefix])
    pending, out = {}, {}
    for name, leaf in leaves.items():
        if _is_spec(leaf):
            spec, shape, where = _open_spec(leaf, ckpt_dir, f"{prefix}/{name}", ckpt_file)
            if not paths.isdir(where):
                raise CheckpointError(
                    f"{ckpt_file}: parameter {prefix}/{name!s} refers to {where}, "
                    "which does not exist; the checkpoint directory is incomplete.")
            _check_zarr_chunks(where, f"{prefix}/{name}")
            pending[name] = (ts.open(spec, open=True, read=True), shape, where)
        elif leaf is None:
            continue
        else:
            out[name] = np.asarray(leaf)
    reads = {}
    for name, (fut, shape, where) in pending.items():
        try:
            store = fut.result()
        except Exception as e:
            raise CheckpointError(f"{where}: cannot open parameter {prefix}/{name}: {e}") from None
        if shape is not None and tuple(store.shape) != shape:
            raise CheckpointError(
                f"{where}: parameter {prefix}/{name} has shape {tuple(store.shape)} on disk but "
                f"{shape} in {ckpt_file}.")
        reads[name] = (store.read(), where)
    for name, (fut, where) in reads.items():
        try:
            out[name] = np.asarray(fut.result())
        except Exception as e:
            raise CheckpointError(f"{where}: cannot read parameter {prefix}/{name} (corrupt "
                                  f"chunk?): {e}") from None
    return out


def load_t5x(path: str, step: int | None = None, config=None,
             relative_attention_max_distance: int = 128) -> tuple[Any, dict[str, Any]]:
    """Read a T5X checkpoint -> (T5Config, nested numpy params).

    `config` (a T5Config) is checked against the shapes; without it the config is inferred."""
    flat = read_t5x_state(path, step, "target")
    source = find_t5x_checkpoint(path, step)
    if any(n.startswith(("encoder/layers/", "decoder/layers/")) for n in flat):
        raise CheckpointError(
            f"{source}: scanned T5X checkpoint (encoder/layers/...); only unscanned T5X "
            "checkpoints "
            "are supported.")
    if config is None:
        try:
            config = T5Config(**infer_config_fields(flat, source),
                              relative_attention_max_distance=relative_attention_max_distance)
        except ValueError as e:
            raise CheckpointError(f"{source}: inferred config is invalid: {e}") from None
    validate(config, flat, source)
    return config, unflatten(flat)


# ----------------------------------------------------------------------------- writing


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list:
    """Largest chunk <= 64 MiB that evenly divides `shape` (split the largest dim first)."""
    chunk = [max(int(d), 1) for d in shape]
    target = max(1, _CHUNK_BYTES // itemsize)
    while int(np.prod(chunk)) > target:
        i = int(np.argmax(chunk))
        d = chunk[i]
        divisor = next((p for p in range(2, d + 1) if d % p == 0), d)
        chunk[i] = d // divisor
    return chunk


def _write_tree(tree: Mapping[str, Any], prefix: str, step_dir: str, save_dtype) -> dict[str, Any]:
    """Write arrays with ndim >= 1 to zarr under step_dir; return the tree for the msgpack."""
    # lazy: only T5X checkpoints (zarr) need TensorStore
    import tensorstore as ts

    flat, futures = {}, []
    for name, leaf in flatten(tree).items():
        arr = np.asarray(leaf)
        if save_dtype is not None and prefix == "target":
            arr = arr.astype(save_dtype)
        if arr.ndim == 0:
            flat[name] = arr
            continue
        rel = f"{prefix}.{name.replace('/', '.')}"
        spec = {"driver": "zarr", "dtype": arr.dtype.name,
                "kvstore": {"driver": "file", "path": rel},
                "metadata": {"compressor": {"id": "gzip"}, "shape": list(arr.shape),
                             "chunks": _chunk_shape(arr.shape, arr.dtype.itemsize)}}
        abs_spec = dict(spec, kvstore={"driver": "file", "path": os.path.join(step_dir, rel)})
        store = ts.open(abs_spec, create=True, open=False).result()
        futures.append(store.write(arr))
        flat[name] = ts.Spec(spec).to_json()
    for fut in futures:
        fut.result()
    return unflatten(flat)


def write_t5x(params: Mapping[str, Any], model_dir: str, step: int,
              param_states: Mapping[str, Any] | None = None, save_dtype=None) -> str:
    """Write `params` (canonical tree) as MODEL_DIR/checkpoint_<step> in T5X's layout.

    `param_states` (optional nested dict of arrays, e.g. Adafactor v_row/v_col) goes under
    state/param_states. Written to checkpoint_<step>.tmp-XXXX and renamed when complete."""
    step_dir = os.path.join(model_dir, f"{STEP_DIR_PREFIX}{int(step)}")
    if os.path.exists(step_dir):
        raise CheckpointError(f"{step_dir}: already exists; T5X never overwrites a step.")
    with atomic_directory(step_dir) as tmp:
        target = _write_tree(params, "target", tmp, save_dtype)
        state: dict[str, Any] = {"step": np.asarray(int(step), np.int32)}
        if param_states:
            state["param_states"] = _write_tree(param_states, "state.param_states", tmp, None)
        blob = serialization.msgpack_serialize(
            {"version": T5X_VERSION, "optimizer": {"target": target, "state": state}})
        with open(os.path.join(tmp, CHECKPOINT_FILE), "wb") as f:
            f.write(blob)
    return step_dir
