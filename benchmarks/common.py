"""Shared pieces of the throughput benchmarks: model sizes, FLOP count, device peak, memory,
environment record, and the measurement protocol (benchmarks/protocol.py) they all run
through. No TensorFlow / seqio here (GPU machines lack them).

The FLOP count is an exact count of the matmuls (2 FLOPs per multiply-add), written out in
`FLOP_FORMULA`; embedding lookups, norms, softmax and the optimizer are not counted.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.protocol import (  # noqa: F401  (re-exported: the benchmarks use common.*)
    LOAD_LIMIT,
    MIN_ROUNDS,
    Side,
    _summary,
    add_protocol_args,
    allocator_info,
    busy_cores_now,
    check_protocol,
    cpu_busy_seconds,
    finish_protocol,
    interleave,
    load_average,
    log,
    matmul_rate,
    own_cpu_seconds,
    time_calls,
)

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


def emit(record: dict, out=None) -> None:
    """One JSON record per line on stdout (and appended to `out` if given)."""
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
