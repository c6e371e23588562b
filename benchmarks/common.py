"""Shared pieces of the throughput benchmarks: model sizes, FLOP count, device peak, memory,
environment record, and the measurement protocol (benchmarks/protocol.py) they all run
through. No TensorFlow / seqio here (GPU machines lack them).

The FLOP count is an exact count of the matmuls (2 FLOPs per multiply-add), written out in
`FLOP_FORMULA`; embedding lookups, norms, softmax and the optimizer are not counted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
GIN_MODELS = Path(__file__).resolve().parents[1] / "gin" / "models"

# Dense bf16 peak (TFLOP/s, no sparsity) by device kind substring, lower-case; first match wins.
PEAK_BF16_TFLOPS = (
    ("h200", 989.0), ("h100", 989.0), ("a100", 312.0),
    ("tpu v5p", 459.0), ("tpu v5 lite", 197.0), ("tpu v5e", 197.0), ("tpu v4", 275.0),
)

FLOP_FORMULA = (
    "exact matmul count, 2 FLOPs per multiply-add; forward = "
    "enc_layers * [2*S*(4*H*N*D + 3*H*F) + 4*S*S*N*D] "
    "+ dec_layers * [2*T*(4*H*N*D + 3*H*F) + 2*T*2*H*N*D + 2*S*2*H*N*D "
    "+ 4*T*T*N*D + 4*T*S*N*D] + 2*T*H*V, per example (S inputs, T targets, H d_model, "
    "N heads, D d_kv, F d_ff, V vocab; attention over full, unmasked lengths); "
    "train step = 3 * forward * batch (backward = 2 * forward; remat recompute not counted)")
TOKENS_DEFINITION = "batch * (inputs_length + targets_length) token positions per step"

# XLA defaults applied on GPU unless --xla_flags says otherwise (single-GPU overlap of
# async work; harmless on one device).
GPU_XLA_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true "
                 "--xla_gpu_enable_highest_priority_async_stream=true")


def read_gin_size(size: str) -> dict:
    """T5Config fields bound by gin/models/mt5_{size}.gin (architecture only)."""
    if size not in SIZES:
        raise ValueError(f"--size={size!r}: use one of {SIZES}.")
    path = GIN_MODELS / f"mt5_{size}.gin"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from a medmt5 checkout (gin/models).")
    fields = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"^T5Config\.(\w+)\s*=\s*(\S+)\s*$", line.strip())
        if not m:
            continue
        raw = m.group(2)
        if raw in ("True", "False"):
            value: Any = raw == "True"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: cannot read value {raw!r}") from None
        fields[m.group(1)] = value
    return fields


def model_config(size: str, vocab_size: int | None = None, **overrides):
    """`T5Config` of a named size; vocab_size and run options (dtype, scan_layers, ...) override."""
    from medmt5.model.config import T5Config
    fields = read_gin_size(size)
    if vocab_size is not None:
        fields["vocab_size"] = int(vocab_size)
    fields.update(overrides)
    return T5Config(**fields)


def matmul_flops(cfg, batch: int, inputs_length: int, targets_length: int) -> dict:
    """Forward and train-step FLOPs of one batch (see FLOP_FORMULA)."""
    s, t = inputs_length, targets_length
    h, nd, f, v = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, cfg.vocab_size
    enc = cfg.num_encoder_layers * (2 * s * (4 * h * nd + 3 * h * f) + 4 * s * s * nd)
    dec = cfg.num_decoder_layers * (2 * t * (4 * h * nd + 3 * h * f)   # self-attn proj, MLP
                                    + 2 * t * 2 * h * nd + 2 * s * 2 * h * nd  # cross q/o, k/v
                                    + 4 * t * t * nd + 4 * t * s * nd)         # scores, mix
    head = 2 * t * h * v
    forward = batch * (enc + dec + head)
    return {"forward": float(forward), "train_step": float(3 * forward)}


def param_count(cfg) -> int:
    """Parameters of the model (matches medmt5.training.train_state.param_count of an init)."""
    h, nd, f, v = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, cfg.vocab_size
    rel = cfg.num_heads * cfg.relative_attention_num_buckets
    enc_layer = 4 * h * nd + 3 * h * f + 2 * h
    dec_layer = 8 * h * nd + 3 * h * f + 3 * h
    head = 0 if cfg.tie_word_embeddings else h * v
    return (v * h + rel * 2 + cfg.num_encoder_layers * enc_layer + h
            + cfg.num_decoder_layers * dec_layer + h + head)


# ---- device -------------------------------------------------------------------------------

def device_info() -> dict:
    """JAX platform, device kind and its bf16 peak (None where unknown, e.g. CPU)."""
    import jax
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "") or ""
    peak = None
    if dev.platform != "cpu":
        low = kind.lower()
        peak = next((p for name, p in PEAK_BF16_TFLOPS if name in low), None)
    return {"platform": dev.platform, "device_kind": kind, "num_devices": jax.device_count(),
            "peak_bf16_tflops": peak}


def mfu(tflops: float | None, peak: float | None) -> float | None:
    return None if tflops is None or not peak else tflops / peak


# ---- memory -------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (Linux VmHWM via /proc/self/clear_refs); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset_peak_rss (VmHWM), else since start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def jax_peak_memory() -> dict:
    """{"peak_memory_bytes", "memory_source"}: device peak where the backend reports it,
    else the process peak RSS (CPU)."""
    import jax
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory_stats raise various errors
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]),
                "memory_source": "jax device.memory_stats()['peak_bytes_in_use'] (cumulative "
                                 "over the process)"}
    return {"peak_memory_bytes": peak_rss_bytes(),
            "memory_source": "process peak RSS (VmHWM, reset before this measurement)"}


# ---- environment ----------------------------------------------------------------------------

def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(extra: dict | None = None) -> dict:
    """Machine, versions, load and thread settings for the JSON record."""
    import jax
    import jaxlib
    env = {
        "host": platform.node(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0], "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "load_average_1_5_15": load_average(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    env.update(extra or {})
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---- measurement protocol ---------------------------------------------------------------------
#
# Every benchmark runs through this: (1) refuse a loaded machine (1-minute load average >=
# LOAD_LIMIT at the start) unless --force, which marks the record "forced"; (2) warm up each
# side once, then time ours and the peer in alternating rounds (A B A B ..., >= MIN_ROUNDS
# each) so a change of background load hits both; (3) per round record wall time, our CPU time
# and the CPU time used by *other* processes (/proc/stat busy time minus ours); (4) record the
# allocator and the machine's fp32 matmul rate measured in the same run, so "% of the matmul
# ceiling" is a figure.

LOAD_LIMIT = 0.5
MIN_ROUNDS = 5
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def add_protocol_args(parser, rounds: int = MIN_ROUNDS, warmup: int = 1) -> None:
    """--rounds (alias --steps), --warmup, --force on a benchmark's argument parser."""
    parser.add_argument("--rounds", "--steps", dest="rounds", type=int, default=rounds,
                        help=f"timed rounds per side, interleaved A B A B (>= {MIN_ROUNDS} "
                             "unless --force)")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help="untimed calls per side first (compile); >= 1")
    parser.add_argument("--force", action="store_true",
                        help=f"measure even on a loaded machine (1-min load >= {LOAD_LIMIT}) or "
                             f"with fewer than {MIN_ROUNDS} rounds; the record says forced")


def check_protocol(args, limit: float = LOAD_LIMIT) -> dict:
    """Refuses (SystemExit naming the reason) a loaded machine or too few rounds unless
    args.force; returns the protocol record's start: load before, reasons, forced."""
    if args.rounds < 1 or args.warmup < 1:
        raise SystemExit(f"error: need --rounds >= 1 and --warmup >= 1, got --rounds="
                         f"{args.rounds} --warmup={args.warmup}")
    load = load_average()
    reasons = []
    instant = None
    if load is not None and load[0] >= limit and os.environ.get("MEDMT5_IDLE_CHECK") == "instant":
        # A suite running one measurement after another (benchmarks/gpu_suite.py) sets this:
        # the 1-minute average still holds the previous, finished measurement's compile, so
        # what counts is how busy the CPUs are now, sampled over two seconds.
        instant = busy_cores_now()
    if load is not None and load[0] >= limit and (instant is None or instant >= limit):
        reasons.append(f"1-minute load average {load[0]:.2f} >= {limit} at the start: other "
                       "processes would share the CPUs and the timings would measure them")
    if args.rounds < MIN_ROUNDS:
        reasons.append(f"--rounds={args.rounds} < {MIN_ROUNDS}")
    if reasons and not args.force:
        raise SystemExit("refused to measure: " + "; ".join(reasons) + ". Run on an idle "
                         "machine (check `uptime`), or pass --force to measure anyway (the "
                         "record is then marked forced and is not a result).")
    return {"load_limit_1min": limit, "load_average_before": load,
            "busy_cores_sampled_before": instant, "min_rounds": MIN_ROUNDS,
            "rounds": args.rounds, "warmup": args.warmup, "force_flag": bool(args.force),
            "forced": bool(reasons), "forced_reasons": reasons}


def finish_protocol(proto: dict) -> dict:
    """Adds the load after the run."""
    proto["load_average_after"] = load_average()
    return proto


def cpu_busy_seconds() -> float | None:
    """Machine-wide busy CPU seconds since boot from /proc/stat (user+nice+system+irq+softirq+
    steal over all CPUs); None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    busy = v[0] + v[1] + v[2] + sum(v[5:8])  # user nice system | irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def busy_cores_now(seconds: float = 2.0) -> float | None:
    """How many cores the whole machine kept busy over the next `seconds` (from /proc/stat);
    None where /proc/stat is missing."""
    a = cpu_busy_seconds()
    if a is None:
        return None
    time.sleep(seconds)
    b = cpu_busy_seconds()
    return None if b is None else round((b - a) / seconds, 3)


def own_cpu_seconds() -> float:
    """This process's CPU seconds, all threads, user + system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def allocator_info() -> dict:
    """Which malloc this process uses: LD_PRELOAD and the allocator libraries mapped in."""
    mapped = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if any(a in os.path.basename(path) for a in _ALLOCATORS):
                    mapped.add(path)
    except OSError:
        pass
    name = next((a for a in _ALLOCATORS if any(a in os.path.basename(m) for m in mapped)),
                "glibc malloc")
    return {"allocator": name, "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
            "mapped_libraries": sorted(mapped),
            "note": "ours and the peer run in this one process, so both use this allocator"}


def matmul_rate(n: int = 1024, reps: int = 5) -> dict:
    """fp32 [n,n]@[n,n] rate of this machine now (best of reps), numpy and jax, GFLOP/s."""
    import jax
    import jax.numpy as jnp
    rs = np.random.RandomState(0)
    a, b = rs.randn(n, n).astype(np.float32), rs.randn(n, n).astype(np.float32)
    flops = 2.0 * n ** 3

    def best(fn):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return flops / min(times) / 1e9

    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision="highest"))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    rec = {"n": n, "reps": reps, "dtype": "float32",
           "numpy_gflops": round(best(lambda: a @ b), 1),
           "jax_gflops": round(best(lambda: dot(ja, jb).block_until_ready()), 1)}
    rec["ceiling_gflops"] = max(rec["numpy_gflops"], rec["jax_gflops"])
    return rec


@dataclasses.dataclass
class Side:
    """One contestant: call() runs one step; sync(result) waits for it; memory() -> dict read
    after its warm-up (peak memory); done(rec) adds side-specific fields at the end."""
    name: str
    call: Callable[[], Any]
    sync: Callable[[Any], Any] = lambda x: x
    memory: Callable[[], dict] | None = None
    reset_memory: Callable[[], Any] | None = None


def _summary(values: list) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def interleave(sides: list, rounds: int, warmup: int = 1) -> dict:
    """Warm-up each side (in order), then `rounds` rounds of one timed call per side in
    alternating order A B A B ...; returns {"order": [...], side name: timing record}."""
    if rounds < 1 or warmup < 1:
        raise ValueError(f"need rounds >= 1 and warmup >= 1, got {rounds}, {warmup}")
    if len({s.name for s in sides}) != len(sides):
        raise ValueError(f"side names must differ: {[s.name for s in sides]}")
    out: dict = {"order": []}
    for side in sides:
        if side.reset_memory:
            side.reset_memory()
        first = None
        for i in range(warmup):
            t0 = time.perf_counter()
            side.sync(side.call())
            dt = time.perf_counter() - t0
            first = dt if first is None else first
            out["order"].append(f"warmup:{side.name}")
            log(f"  {side.name} warm-up {i + 1}/{warmup}: {dt:.3f} s")
        out[side.name] = {"first_call_s": first, "rounds": []}
        if side.memory:
            out[side.name].update(side.memory())
    for r in range(rounds):
        for side in sides:
            o0, c0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
            side.sync(side.call())
            wall = time.perf_counter() - t0
            own = own_cpu_seconds() - c0
            o1 = cpu_busy_seconds()
            other = None if o0 is None or o1 is None else max(0.0, (o1 - o0) - own)
            out[side.name]["rounds"].append({"wall_s": round(wall, 5), "cpu_s": round(own, 4),
                                             "other_cpu_s": other and round(other, 3)})
            out["order"].append(side.name)
            log(f"  round {r + 1}/{rounds} {side.name}: {wall:.3f} s wall, {own:.3f} s CPU, "
                f"others {other if other is None else round(other, 2)} s CPU")
    for side in sides:
        rec = out[side.name]
        walls = [x["wall_s"] for x in rec["rounds"]]
        cpus = [x["cpu_s"] for x in rec["rounds"]]
        others = [x["other_cpu_s"] for x in rec["rounds"] if x["other_cpu_s"] is not None]
        s = _summary(walls)
        rec.update(min_step_s=s["min"], median_step_s=s["median"], max_step_s=s["max"],
                   step_times_s=walls, median_step_cpu_s=statistics.median(cpus),
                   other_cpu_s=_summary(others) if others else None)
    return out


def time_calls(fn: Callable[[], Any], warmup: int, steps: int,
               sync: Callable[[Any], Any] = lambda x: x) -> dict:
    """One side alone through `interleave` (a benchmark without a peer)."""
    return interleave([Side("only", fn, sync)], steps, max(1, warmup))["only"]


def synthetic_batch(vocab_size: int, batch: int, inputs_length: int, targets_length: int,
                    seed: int = 0) -> dict:
    """Feature-converter-like batch of random non-pad tokens (every position is real)."""
    rs = np.random.RandomState(seed)
    enc = rs.randint(2, vocab_size, (batch, inputs_length)).astype(np.int32)
    tgt = rs.randint(2, vocab_size, (batch, targets_length)).astype(np.int32)
    tgt[:, -1] = 1  # EOS
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt, np.float32)}


def hf_config_kwargs(cfg) -> dict:
    """transformers.MT5Config keyword arguments for the same architecture (no dropout)."""
    return dict(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                num_heads=cfg.num_heads, num_layers=cfg.num_encoder_layers,
                num_decoder_layers=cfg.num_decoder_layers,
                relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                relative_attention_max_distance=cfg.relative_attention_max_distance,
                dropout_rate=0.0, layer_norm_epsilon=cfg.layer_norm_epsilon,
                feed_forward_proj="gated-gelu", tie_word_embeddings=cfg.tie_word_embeddings,
                pad_token_id=cfg.pad_id, eos_token_id=cfg.eos_id,
                decoder_start_token_id=cfg.decoder_start_id)


def log(message: str) -> None:
    """Progress line on stderr (stdout carries only the JSON records)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(record: dict, out=None) -> None:
    """One JSON record per line on stdout (and appended to `out` if given)."""
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
