"""The measurement protocol every benchmark runs through (see the comment below and
docs/performance.md): refusal of a loaded machine, interleaved rounds, per-round CPU
accounting, the allocator and the same-run fp32 matmul rate. `benchmarks.common` re-exports
these names."""
from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def log(message: str) -> None:
    """Progress line on stderr (stdout carries only the JSON records)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
