"""Training throughput: our jitted train step vs Hugging Face MT5 on torch, same run.

    python -m benchmarks.train_throughput --size small --vocab_size 32128 \
        --batch 8 --inputs_length 256 --targets_length 64
    python -m benchmarks.train_throughput --levers ...     # one JSON record per configuration

Prints one JSON record per configuration: step time, tokens/s (batch * (inputs + targets)
positions), model TFLOP/s (exact matmul count, see benchmarks/common.FLOP_FORMULA), MFU
against the device's bf16 peak (null on CPU), peak memory, and the peer (transformers
`MT5ForConditionalGeneration` + transformers' Adafactor, eager and on GPU `torch.compile`)
with the ratios ours / peer. Synthetic batches; no TensorFlow or seqio is imported.
"""
from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import subprocess
import sys

from benchmarks import common

PEER_MODES = ("eager", "compile")


def _gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small", choices=common.SIZES)
    p.add_argument("--vocab_size", type=int, default=32128,
                   help="vocabulary override (0 = the size's own, 250112 for mT5)")
    p.add_argument("--layers", type=int, default=0,
                   help="encoder and decoder layers each (0 = the size's own)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs_length", type=int, default=256)
    p.add_argument("--targets_length", type=int, default=64)
    p.add_argument("--num_devices", type=int, default=0,
                   help="data parallel over the first N devices (0 = all)")
    common.add_protocol_args(p, rounds=5, warmup=1)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="activations (params and logits stay float32); auto: bfloat16 on "
                        "GPU/TPU, float32 on CPU")
    p.add_argument("--scan_layers", type=_bool, default=False)
    p.add_argument("--remat_policy", default="none", choices=("none", "full", "minimal", "dots"))
    p.add_argument("--attention_impl", default="auto", choices=("auto", "xla", "cudnn"),
                   help="auto: cudnn on GPU, xla elsewhere (cudnn falls back to the exact XLA "
                        "path off GPU or in float32)")
    p.add_argument("--vocab_chunk_size", type=int, default=0, help="0 = plain [B,T,V] logits")
    p.add_argument("--donate", type=_bool, default=True, help="donate the train state buffers")
    p.add_argument("--xla_flags", default="auto",
                   help="appended to XLA_FLAGS before JAX starts; auto: "
                        f"'{common.GPU_XLA_FLAGS}' on GPU, nothing on CPU; 'none': nothing")
    p.add_argument("--peer", default="auto",
                   help="comma list of eager,compile or 'none'; auto: eager on CPU, "
                        "eager,compile on GPU")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0 = all affinity CPUs, what XLA's CPU pool uses)")
    p.add_argument("--levers", action="store_true",
                   help="sweep: baseline (with the peer) then each lever flipped, ours only; "
                        "each configuration in a fresh process")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    return p


def resolve(args) -> argparse.Namespace:
    """Fills the 'auto' choices (before JAX starts) and validates the shape."""
    gpu = _gpu_present()
    for name in ("batch", "inputs_length", "targets_length", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name}={getattr(args, name)} must be >= 1")
    if args.vocab_chunk_size < 0:
        raise SystemExit(f"error: --vocab_chunk_size={args.vocab_chunk_size} must be >= 0")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if gpu else "float32"
    if args.attention_impl == "auto":
        args.attention_impl = "cudnn" if gpu else "xla"
    if args.xla_flags == "auto":
        args.xla_flags = common.GPU_XLA_FLAGS if gpu else ""
    elif args.xla_flags == "none":
        args.xla_flags = ""
    if args.peer == "auto":
        args.peer = "eager,compile" if gpu else "eager"
    modes = [] if args.peer == "none" else [m.strip() for m in args.peer.split(",") if m.strip()]
    bad = [m for m in modes if m not in PEER_MODES]
    if bad:
        raise SystemExit(f"error: --peer has unknown mode(s) {bad}; use eager, compile or none")
    args.peer_modes = modes
    if args.threads <= 0:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
    return args


def apply_xla_flags(flags: str) -> None:
    """Appends flags to XLA_FLAGS; must run before the JAX backend starts."""
    if flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


# ---- ours ------------------------------------------------------------------------------------

def _jit_without_donation(step_config, mesh, shardings):
    """trainer.jit_train_step with donate_argnums=() (the lever's off position)."""
    import jax
    from flax import linen as nn

    from medmt5.training import partitioning, trainer
    rep = partitioning.replicated(mesh)
    fn = jax.jit(functools.partial(trainer.train_step, step_config),
                 in_shardings=(shardings, partitioning.batch_sharding(mesh), rep),
                 out_shardings=(shardings, rep))

    def wrapped(*a):
        with jax.set_mesh(mesh), nn.logical_axis_rules(step_config.rules):
            return fn(*a)
    return wrapped


def setup_ours(cfg, batch_np: dict, args) -> tuple:
    """Our jitted train step as a protocol Side, and done() -> the side's extra fields."""
    import jax
    import jax.numpy as jnp

    from medmt5.model.transformer import Transformer
    from medmt5.training import optimizers, partitioning, train_state, trainer

    n = args.num_devices or jax.device_count()
    if n > jax.device_count():
        raise SystemExit(f"error: --num_devices={n} but only {jax.device_count()} devices")
    if args.batch % n:
        raise SystemExit(f"error: --batch={args.batch} must be divisible by the {n} devices "
                         "(data parallel; see --num_devices)")
    mesh = partitioning.create_mesh(mesh_shape=(n, 1), devices=jax.devices()[:n])
    common.log(f"ours: {args.size} on {n} {jax.devices()[0].platform} device(s)")
    model = Transformer(cfg)
    opt = optimizers.create_optimizer("adafactor", optimizers.make_schedule(
        "constant", args.learning_rate))
    state, shardings = train_state.create_train_state(model, opt, mesh, batch_np,
                                                      jax.random.PRNGKey(0))
    step_cfg = trainer.StepConfig(model, opt, vocab_chunk_size=args.vocab_chunk_size or None)
    fn = (trainer.jit_train_step(step_cfg, mesh, shardings) if args.donate
          else _jit_without_donation(step_cfg, mesh, shardings))
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch_np.items()},
                           partitioning.batch_sharding(mesh))
    rng = jax.random.PRNGKey(1)
    holder = {"state": state}
    losses = []

    def call():
        holder["state"], metrics = fn(holder["state"], batch, rng)
        return metrics

    def sync(metrics):
        jax.block_until_ready((holder["state"], metrics))
        losses.append(float(metrics["loss"]))

    def done() -> dict:
        rec = dict(loss_first=losses[0], loss_last=losses[-1],
                   num_params=train_state.param_count(holder["state"].params))
        holder.clear()
        gc.collect()
        return rec

    side = common.Side("ours", call, sync, memory=common.jax_peak_memory,
                       reset_memory=common.reset_peak_rss)
    return side, done


# ---- one configuration -------------------------------------------------------------------------

def _rates(rec: dict, tokens: int, flops: float, peak_total: float | None,
           ceiling_gflops: float | None = None) -> dict:
    """Rates at the median round; the fraction of the same run's fp32 matmul rate on CPU."""
    s = rec["median_step_s"]
    tflops = flops / s / 1e12
    frac = tflops * 1e3 / ceiling_gflops if ceiling_gflops else None
    return dict(rec, tokens_per_s=tokens / s, tokens_per_s_best=tokens / rec["min_step_s"],
                model_tflops_per_s=tflops, mfu=common.mfu(tflops, peak_total),
                fraction_of_fp32_matmul_rate=frac)


def run_config(args) -> dict:
    """Measures ours and the peer modes asked for, interleaved in this process (the
    measurement protocol, benchmarks/common.py); returns the record."""
    proto = common.check_protocol(args)
    apply_xla_flags(args.xla_flags)
    # Both sides share the process: JAX must not grab 75% of the GPU before torch runs.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    layers = {"num_encoder_layers": args.layers, "num_decoder_layers": args.layers} \
        if args.layers > 0 else {}
    cfg = common.model_config(args.size, args.vocab_size or None, **layers, dtype=args.dtype,
                              scan_layers=args.scan_layers, remat_policy=args.remat_policy,
                              attention_impl=args.attention_impl)
    dev = common.device_info()
    batch = common.synthetic_batch(cfg.vocab_size, args.batch, args.inputs_length,
                                   args.targets_length)
    tokens = args.batch * (args.inputs_length + args.targets_length)
    flops = common.matmul_flops(cfg, args.batch, args.inputs_length, args.targets_length)
    dev["num_devices_used"] = args.num_devices or dev["num_devices"]
    peak = dev["peak_bf16_tflops"] and dev["peak_bf16_tflops"] * dev["num_devices_used"]
    cudnn_active = (cfg.attention_impl == "cudnn" and dev["platform"] == "gpu"
                    and cfg.dtype in ("bfloat16", "float16"))
    record = {
        "benchmark": "train_throughput", "size": args.size,
        "shape": {"batch": args.batch, "inputs_length": args.inputs_length,
                  "layers": [cfg.num_encoder_layers, cfg.num_decoder_layers],
                  "targets_length": args.targets_length, "vocab_size": cfg.vocab_size},
        "levers": {"dtype": cfg.dtype, "param_dtype": cfg.param_dtype,
                   "scan_layers": cfg.scan_layers, "remat_policy": cfg.remat_policy,
                   "attention_impl": cfg.attention_impl, "cudnn_attention_active": cudnn_active,
                   "vocab_chunk_size": args.vocab_chunk_size or None, "donate": args.donate,
                   "xla_flags": args.xla_flags},
        "optimizer": {"ours": "medmt5.training.optimizers.adafactor (T5X defaults: decay 0.8, "
                              "clip 1.0, parameter scale, factored), constant lr",
                      "peer": "transformers Adafactor(scale_parameter=True, relative_step=False, "
                              "warmup_init=False), constant lr",
                      "learning_rate": args.learning_rate},
        "tokens_definition": common.TOKENS_DEFINITION, "tokens_per_step": tokens,
        "flop_formula": common.FLOP_FORMULA, "flops_per_step": flops["train_step"],
        "num_params": common.param_count(cfg), "rounds": args.rounds, "warmup": args.warmup,
        "device": dev,
        "threads": {"jax": "XLA CPU runtime: Eigen intra-op pool over all affinity CPUs "
                           f"({len(os.sched_getaffinity(0))}); XLA_FLAGS as recorded",
                    "torch_intra_op": args.threads},
        "environment": common.environment(),
    }
    proto["allocator"] = common.allocator_info()
    proto["matmul_rate"] = common.matmul_rate() if dev["platform"] == "cpu" else None
    ceiling = proto["matmul_rate"] and proto["matmul_rate"]["ceiling_gflops"]
    sides = [setup_ours(cfg, batch, args)]
    if args.peer_modes:
        # lazy: torch and transformers only when a peer is measured
        from benchmarks.train_peer import setup_peer
        sides += [setup_peer(cfg, batch, args, mode) for mode in args.peer_modes]
    timings = common.interleave([s for s, _ in sides], args.rounds, args.warmup)
    proto["order"] = timings.pop("order")
    results = {}
    for side, done in sides:
        results[side.name] = _rates(dict(timings[side.name], **done()), tokens,
                                    flops["train_step"], peak, ceiling)
    record["ours"] = results.pop("ours")
    record["peer"] = {name[len("peer_"):]: rec for name, rec in results.items()}
    record["ratios"] = {}
    for mode, peer in record["peer"].items():
        record["ratios"][f"tokens_per_s_ours_over_peer_{mode}"] = (
            record["ours"]["tokens_per_s"] / peer["tokens_per_s"])
        record["ratios"][f"best_round_ours_over_peer_{mode}"] = (
            peer["min_step_s"] / record["ours"]["min_step_s"])
    record["environment"]["load_average_after"] = common.load_average()
    record["protocol"] = common.finish_protocol(proto)
    return record


# ---- lever sweep -------------------------------------------------------------------------------

def lever_configs(gpu: bool) -> list[tuple[str, list[str]]]:
    """(name, extra flags) per configuration; the first is the baseline (with the peer)."""
    configs = [("baseline", [])]
    if gpu:
        configs += [("fp32_activations", ["--dtype", "float32"]),
                    ("xla_attention", ["--attention_impl", "xla"])]
    else:
        configs += [("bf16_activations", ["--dtype", "bfloat16"])]
    configs += [
        ("scan_remat_none", ["--scan_layers", "true", "--remat_policy", "none"]),
        ("scan_remat_minimal", ["--scan_layers", "true", "--remat_policy", "minimal"]),
        ("scan_remat_full", ["--scan_layers", "true", "--remat_policy", "full"]),
        ("vocab_chunk_8192", ["--vocab_chunk_size", "8192"]),
        ("no_donation", ["--donate", "false"]),
        # One token "--xla_flags=..." (a separate value starting with "--" reads as a flag).
        ("xla_flags_off" if gpu else "xla_single_thread_eigen",
         ["--xla_flags=" + ("none" if gpu else "--xla_cpu_multi_thread_eigen=false")]),
    ]
    return configs


def child_args(argv: list[str]) -> list[str]:
    """The sweep's arguments for one child: without --levers and --out (the parent writes)."""
    base, skip = [], False
    for a in argv:
        if skip or a == "--levers" or a.startswith("--out="):
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        base.append(a)
    return base


def sweep(argv: list[str], args) -> list[dict]:
    """Runs each configuration in a fresh process (XLA flags and memory peaks stay apart)."""
    base = child_args(argv)
    records = []
    for i, (name, extra) in enumerate(lever_configs(_gpu_present())):
        peer = [] if i == 0 else ["--peer", "none"]
        cmd = [sys.executable, "-m", "benchmarks.train_throughput", *base, *extra, *peer]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if proc.returncode != 0:
            rec = {"benchmark": "train_throughput", "lever": name, "error": proc.stderr[-2000:]}
        else:
            import json
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            rec["lever"] = name
        if records and "ours" in rec and "ours" in records[0]:
            rec["ratios"]["tokens_per_s_over_baseline"] = (
                rec["ours"]["tokens_per_s"] / records[0]["ours"]["tokens_per_s"])
        common.emit(rec, args.out)
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve(build_parser().parse_args(argv))
    if args.levers:
        recs = sweep(argv, args)
        return 1 if any("error" in r for r in recs) else 0
    common.emit(run_config(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
