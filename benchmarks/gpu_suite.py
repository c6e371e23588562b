"""The GPU suite: every accelerator measurement of issue 14 in one call, one JSON each.

    OUT=/tmp/out benchmarks/gpu_suite.sh             # one H100/H200, <= ~8 minutes
    MEDMT5_SUITE_TINY=1 OUT=/tmp/out benchmarks/gpu_suite.sh   # CPU dry run, tiny shapes

Measurements (in priority order; each in a fresh process so device peak memory is its own,
each with a time limit, the whole suite under --budget_s; one left out for lack of time
gets a JSON saying so):
  train_large_512     mT5-large continued pretraining 512/114, bf16, the best lever set
                      (cuDNN attention with the shared relative bias, scan + remat policy,
                      vocabulary-chunked loss): tokens/s, MFU vs the chip's bf16 peak, peak
                      memory; HF eager interleaved in the same run
  train_large_1024    the same at 1024/229 (the paper's recipe length)
  decode_large_beam4  beam-4 decoding vs HF generate, same weights, sequences compared
  promot_stage1_memory, full_finetune_memory
                      ProMoT stage 1 (100-vector prompt trained, mT5-large frozen) vs full
                      fine-tuning of the same model: peak memory and step time
  xl_finetune_memory  mT5-XL full fine-tuning (256/256): peak memory and step time
  train_large_512_plain  ours without the levers (no scan, XLA attention, plain loss)
  train_large_512_compile  train_large_512 against HF + torch.compile (its compile of forward
                      and backward takes minutes: last, so it cannot starve the others; it
                      starts only with MIN_START_S left, else it is skipped: run it alone,
                      `gpu_suite.sh --only train_large_512_compile`)
Each child runs in its own session (process group); on its time limit the whole group is
killed (torch.compile's inductor workers included), and leftovers are killed after it exits,
so no stray process keeps the CPUs busy for the next measurement.
Imports only jax/flax/optax/orbax/torch/transformers (never TensorFlow or seqio).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVERS = ["--dtype", "bfloat16", "--scan_layers", "true", "--remat_policy", "dots",
          "--attention_impl", "cudnn", "--vocab_chunk_size", "8192"]
TINY_SHAPE = ["--size", "tiny", "--vocab_size", "256", "--layers", "1", "--threads", "1",
              "--num_devices", "1"]


def _train(full: list, tiny: list) -> dict:
    return {"kind": "train", "full": full, "tiny": tiny}


# name -> (kind, arguments on the GPU, arguments of the tiny CPU dry run)
MEASUREMENTS = {
    "train_large_512": _train(
        ["--size", "large", "--vocab_size", "250112", "--batch", "32", "--inputs_length", "512",
         "--targets_length", "114", "--peer", "eager", *LEVERS],
        [*TINY_SHAPE, "--batch", "2", "--inputs_length", "16", "--targets_length", "4",
         "--peer", "eager", *LEVERS]),
    "train_large_1024": _train(
        ["--size", "large", "--vocab_size", "250112", "--batch", "16", "--inputs_length", "1024",
         "--targets_length", "229", "--peer", "eager", *LEVERS],
        [*TINY_SHAPE, "--batch", "2", "--inputs_length", "24", "--targets_length", "6",
         "--peer", "eager", *LEVERS]),
    "decode_large_beam4": {"kind": "decode", "full": [
        "--size", "large", "--vocab_size", "250112", "--batch", "16", "--inputs_length", "512",
        "--max_decode_length", "64", "--beam_size", "4", "--dtype", "bfloat16"],
        "tiny": ["--size", "tiny", "--vocab_size", "256", "--batch", "2", "--inputs_length", "10",
                 "--max_decode_length", "4", "--beam_size", "4", "--threads", "1"]},
    "promot_stage1_memory": {"kind": "finetune_memory", "prompt": True, "full": [
        "--size", "large", "--vocab_size", "250112", "--batch", "64", "--inputs_length", "512",
        "--targets_length", "128"],
        "tiny": ["--size", "tiny", "--vocab_size", "256", "--batch", "2", "--inputs_length", "8",
                 "--targets_length", "4", "--prompt_length", "3", "--layers", "1"]},
    "full_finetune_memory": {"kind": "finetune_memory", "prompt": False, "full": [
        "--size", "large", "--vocab_size", "250112", "--batch", "64", "--inputs_length", "512",
        "--targets_length", "128"],
        "tiny": ["--size", "tiny", "--vocab_size", "256", "--batch", "2", "--inputs_length", "8",
                 "--targets_length", "4", "--layers", "1"]},
    "xl_finetune_memory": _train(
        ["--size", "xl", "--vocab_size", "250112", "--batch", "16", "--inputs_length", "256",
         "--targets_length", "256", "--peer", "none", *LEVERS],
        [*TINY_SHAPE, "--batch", "2", "--inputs_length", "8", "--targets_length", "8",
         "--peer", "none", *LEVERS]),
    "train_large_512_plain": _train(
        ["--size", "large", "--vocab_size", "250112", "--batch", "32", "--inputs_length", "512",
         "--targets_length", "114", "--peer", "none", "--dtype", "bfloat16",
         "--attention_impl", "xla"],
        [*TINY_SHAPE, "--batch", "2", "--inputs_length", "16", "--targets_length", "4",
         "--peer", "none"]),
    # the compile peer alone (the tiny dry run uses the eager peer: inductor's C++ compile of
    # even a tiny model takes minutes on a CPU)
    "train_large_512_compile": _train(
        ["--size", "large", "--vocab_size", "250112", "--batch", "32", "--inputs_length", "512",
         "--targets_length", "114", "--peer", "compile", *LEVERS],
        [*TINY_SHAPE, "--batch", "2", "--inputs_length", "16", "--targets_length", "4",
         "--peer", "eager", *LEVERS]),
}
# Seconds each may take on one H200 before it is stopped (compile included). The first run
# (2026-12-04): ours ~30 s to set up + ~30 s warm-up (compile), HF eager ~40 s to set up;
# torch.compile of the HF forward + backward over 200 s.
TIME_LIMITS = {"train_large_512": 180, "train_large_1024": 200, "decode_large_beam4": 90,
               "promot_stage1_memory": 60, "full_finetune_memory": 60,
               "xl_finetune_memory": 90, "train_large_512_plain": 60,
               "train_large_512_compile": 420}
# Seconds of suite budget a measurement needs left to start at all (default 20): one that
# cannot finish in less is skipped with a record saying how to run it alone.
MIN_START_S = {"train_large_512_compile": 300}


# ---- fine-tuning memory (ProMoT stage 1 vs full) --------------------------------------------

def finetune_memory_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="fine-tuning step memory, prompt-only or full")
    p.add_argument("--size", default="large", choices=common.SIZES)
    p.add_argument("--vocab_size", type=int, default=250112)
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--inputs_length", type=int, default=512)
    p.add_argument("--targets_length", type=int, default=128)
    p.add_argument("--prompt_length", type=int, default=100)
    p.add_argument("--prompt", action="store_true", help="ProMoT stage 1: train the prompt only")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    common.add_protocol_args(p, rounds=5, warmup=1)
    return p


def run_finetune_memory(args) -> dict:
    """Peak memory and step time of one fine-tuning step: ProMoT stage 1 (prompt trained,
    backbone frozen: gradients of the prompt alone, the masked Adafactor holds state for the
    prompt only) or full."""
    proto = common.check_protocol(args)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from medmt5.model.transformer import Transformer
    from medmt5.training import optimizers, partitioning, train_state, trainer
    from prompt_tuning.prompts import PROMPT_PATTERN
    from prompt_tuning.stages import prompted_model

    gpu = jax.devices()[0].platform == "gpu"
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if gpu else "float32")
    layers = ({"num_encoder_layers": args.layers, "num_decoder_layers": args.layers}
              if args.layers > 0 else {})
    cfg = common.model_config(args.size, args.vocab_size or None, **layers, dtype=dtype,
                              scan_layers=True, remat_policy="dots",
                              attention_impl="cudnn" if gpu else "xla")
    model = prompted_model(cfg, args.prompt_length) if args.prompt else Transformer(cfg)
    batch_np = common.synthetic_batch(cfg.vocab_size, args.batch, args.inputs_length,
                                      args.targets_length)
    mesh = partitioning.create_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
    boxed = jax.eval_shape(lambda r: train_state.init_boxed_params(model, batch_np, r),
                           jax.random.PRNGKey(0))
    abstract = partitioning.unbox(boxed)
    mask = optimizers.trainable_mask(abstract, [PROMPT_PATTERN]) if args.prompt else None
    opt = optimizers.create_optimizer("adafactor", 1e-3, logical_axes=nn.get_partition_spec(boxed),
                                      mask=mask, factor_rules=optimizers.model_factor_rules(model))
    state, shardings = train_state.create_train_state(model, opt, mesh, batch_np,
                                                      jax.random.PRNGKey(0))
    # the mask goes to the step too: stage 1 differentiates the prompt alone
    step_cfg = trainer.StepConfig(model, opt, vocab_chunk_size=8192,
                                  rules=partitioning.model_axis_rules(model), trainable=mask)
    fn = trainer.jit_train_step(step_cfg, mesh, shardings)
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch_np.items()},
                           partitioning.batch_sharding(mesh))
    holder = {"state": state}
    del state
    rng = jax.random.PRNGKey(1)

    def call():
        holder["state"], metrics = fn(holder["state"], batch, rng)
        return metrics

    def sync(metrics):
        jax.block_until_ready((holder["state"], metrics))

    proto["allocator"] = common.allocator_info()
    timing = common.interleave([common.Side("ours", call, sync, memory=common.jax_peak_memory,
                                            reset_memory=common.reset_peak_rss)],
                               args.rounds, args.warmup)
    proto["order"] = timing.pop("order")
    trained = sum(int(x.size) for x, m in zip(jax.tree.leaves(abstract),
                                              jax.tree.leaves(mask)) if m) if mask else None
    opt_bytes = sum(int(x.size) * x.dtype.itemsize
                    for x in jax.tree.leaves(holder["state"].opt_state))
    tokens = args.batch * (args.inputs_length + args.targets_length)
    rec = {
        "benchmark": "finetune_memory", "mode": "promot_stage1" if args.prompt else "full",
        "size": args.size, "dtype": dtype,
        "shape": {"batch": args.batch, "inputs_length": args.inputs_length,
                  "targets_length": args.targets_length, "vocab_size": cfg.vocab_size,
                  "prompt_length": args.prompt_length if args.prompt else 0},
        "levers": {"scan_layers": True, "remat_policy": "dots", "vocab_chunk_size": 8192,
                   "attention_impl": cfg.attention_impl,
                   "grads_of_trainable_only": mask is not None},
        "num_params": train_state.param_count(abstract), "trainable_params": trained,
        "optimizer_state_bytes": opt_bytes, "device": common.device_info(),
        "ours": dict(timing["ours"], tokens_per_s=tokens / timing["ours"]["median_step_s"]),
        "environment": common.environment(), "protocol": common.finish_protocol(proto),
    }
    return rec


# ---- one measurement (child process) ---------------------------------------------------------

def run_one(name: str, tiny: bool, force: bool) -> dict:
    spec = MEASUREMENTS[name]
    argv = list(spec["tiny" if tiny else "full"])
    argv += ["--rounds", "1", "--force"] if tiny else (["--force"] if force else [])
    if spec["kind"] == "train":
        from benchmarks import train_throughput
        rec = train_throughput.run_config(
            train_throughput.resolve(train_throughput.build_parser().parse_args(argv)))
    elif spec["kind"] == "decode":
        from benchmarks import decode_throughput
        rec = decode_throughput.run(decode_throughput.build_parser().parse_args(argv))
    else:
        args = finetune_memory_parser().parse_args(argv + (["--prompt"] if spec["prompt"] else []))
        rec = run_finetune_memory(args)
    rec["measurement"] = name
    rec["tiny"] = tiny
    rec["argv"] = argv
    return rec


def run_child(cmd: list, limit: float, log_path: str) -> tuple:
    """Runs cmd in its own session (process group), stderr to log_path; on `limit` seconds
    kills the whole group (SIGTERM, then SIGKILL after 5 s), and after the child exits kills
    what is left of its group (workers it started). -> (returncode or None if timed out,
    stderr tail)."""
    with open(log_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
            _kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc.pid, signal.SIGKILL)  # leftovers (e.g. inductor compile workers)
        proc.wait()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-3000:]
    return code, tail


def _kill_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _write(path: str, rec: dict) -> None:
    # Its own temp-then-rename (not medmt5's atomic_write_json): this parent process imports
    # neither medmt5 nor jax, so the measured children have the machine to themselves.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def summarize(out_dir: str, names: list) -> dict:
    """The headline figures of the records written, plus the goals they are read against."""
    recs = {}
    for n in names:
        try:
            with open(os.path.join(out_dir, f"{n}.json")) as f:
                recs[n] = json.load(f)
        except (OSError, ValueError):
            recs[n] = {"error": "no record"}
    rows = {}
    for n, r in recs.items():
        ours = r.get("ours") or {}
        row = {k: ours.get(k) for k in ("tokens_per_s", "mfu", "median_step_s",
                                        "peak_memory_bytes")}
        row.update({k: v for k, v in (r.get("ratios") or {}).items()})
        for key in ("error", "skipped"):
            if key in r:
                row[key] = r[key]
        rows[n] = row
    s1 = recs.get("promot_stage1_memory", {}).get("ours", {}).get("peak_memory_bytes")
    ft = recs.get("full_finetune_memory", {}).get("ours", {}).get("peak_memory_bytes")
    return {"rows": rows,
            "promot_stage1_over_full_finetune_peak_memory": s1 / ft if s1 and ft else None,
            "goals": {"mfu_mt5_large": ">= 0.50", "ours_over_hf_eager": ">= 2.0",
                      "ours_over_hf_compile": ">= 1.3"}}


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", default=os.environ.get("OUT") or "gpu_suite_out")
    p.add_argument("--tiny", action="store_true",
                   default=os.environ.get("MEDMT5_SUITE_TINY", "") not in ("", "0"),
                   help="tiny shapes, one round, forced (a CPU dry run of the code paths)")
    p.add_argument("--only", default="", help="comma list of measurement names (default: all)")
    p.add_argument("--budget_s", type=float, default=float(os.environ.get(
        "MEDMT5_SUITE_BUDGET_S", "450")), help="wall seconds for the whole suite")
    p.add_argument("--force", action="store_true",
                   help="pass --force to every measurement (record marked forced)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _write(os.path.join(args.out_dir, f"{args.child}.json"),
               run_one(args.child, args.tiny, args.force))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MEASUREMENTS)
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        raise SystemExit(f"error: --only names unknown measurement(s) {unknown}; "
                         f"known: {list(MEASUREMENTS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.monotonic()
    failed = 0
    if args.tiny:  # the CPU dry run: one process (one JAX start), cheap compiles
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_backend_optimization_level=0"
                                   " --xla_llvm_disable_expensive_passes=true").strip()
        for name in names:
            common.log(f"gpu_suite (tiny, in process): {name}")
            try:
                _write(os.path.join(args.out_dir, f"{name}.json"), run_one(name, True, True))
            except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded, the suite goes on
                failed += 1
                _write(os.path.join(args.out_dir, f"{name}.json"),
                       {"measurement": name, "error": f"{type(e).__name__}: {e}"})
        names_done = names
        names = []
    else:
        names_done = names
    for name in names:
        path = os.path.join(args.out_dir, f"{name}.json")
        left = args.budget_s - (time.monotonic() - start)
        limit = min(TIME_LIMITS[name], left)
        need = MIN_START_S.get(name, 20)
        if left < need:
            _write(path, {"measurement": name, "skipped": f"suite budget {args.budget_s} s: "
                          f"{left:.0f} s left, {name} needs {need} s to start; run it alone: "
                          f"benchmarks/gpu_suite.sh --only {name}"})
            common.log(f"gpu_suite: {name} skipped ({left:.0f} s of budget left, needs {need})")
            continue
        common.log(f"gpu_suite: {name} (limit {limit:.0f} s)")
        os.environ["MEDMT5_IDLE_CHECK"] = "instant"  # see common.check_protocol
        cmd = [sys.executable, "-m", "benchmarks.gpu_suite", "--child", name,
               "--out_dir", args.out_dir] + (["--tiny"] if args.tiny else []) + \
              (["--force"] if args.force else [])
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            code, tail = run_child(cmd, limit, os.path.join(tmp, "stderr.txt"))
        if code is None:
            err = (f"timed out after {limit:.0f} s (its process group killed); stderr tail: "
                   f"{tail[-2000:]}")
        else:
            err = None if code == 0 else tail
        if err is not None:
            failed += 1
            _write(path, {"measurement": name, "error": err,
                          "wall_s": round(time.monotonic() - t0, 1)})
            common.log(f"gpu_suite: {name} FAILED: {err.strip().splitlines()[-1:]}")
        else:
            common.log(f"gpu_suite: {name} done in {time.monotonic() - t0:.0f} s")
    summary = summarize(args.out_dir, names_done)
    summary["wall_s"] = round(time.monotonic() - start, 1)
    summary["tiny"] = args.tiny
    _write(os.path.join(args.out_dir, "summary.json"), summary)
    print(json.dumps(summary, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
