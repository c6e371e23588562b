#!/usr/bin/env bash
# The GPU suite of issue 14 in one call: one JSON per measurement under $OUT, a summary.json,
# <= ~8 minutes on one H100/H200 (benchmarks/gpu_suite.py lists the measurements).
#
#   OUT=/path/to/out benchmarks/gpu_suite.sh                  # on the GPU machine
#   MEDMT5_SUITE_TINY=1 OUT=/tmp/o benchmarks/gpu_suite.sh    # CPU dry run, tiny shapes
#   benchmarks/gpu_suite.sh --only train_large_512,decode_large_beam4
#
# Needs only jax[cuda], flax, optax, orbax, torch, transformers (no TensorFlow, no seqio).
# Waits up to MEDMT5_SUITE_LOAD_WAIT_S (60) seconds for the 1-minute load average to fall
# under 0.5 (the protocol's limit); if it does not, the measurements run with --force and
# every record says forced.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/gpu_suite_out}"
python="${PYTHON:-python3}"
tiny="${MEDMT5_SUITE_TINY:-0}"
wait_s="${MEDMT5_SUITE_LOAD_WAIT_S:-60}"

args=(--out_dir "$out")
if [[ "$tiny" != "0" ]]; then
  args+=(--tiny)
else
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_suite.sh: no nvidia-smi: this is not a GPU machine (set MEDMT5_SUITE_TINY=1 for a CPU dry run)" >&2
    exit 2
  fi
  waited=0
  while awk '{exit !($1 >= 0.5)}' /proc/loadavg && (( waited < wait_s )); do
    sleep 5
    waited=$((waited + 5))
  done
  if awk '{exit !($1 >= 0.5)}' /proc/loadavg; then
    echo "gpu_suite.sh: load average $(cut -d' ' -f1 /proc/loadavg) >= 0.5 after ${wait_s} s: measuring with --force (records marked forced)" >&2
    args+=(--force)
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi

mkdir -p "$out"
cd "$root"
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "$python" -m benchmarks.gpu_suite "${args[@]}" "$@"; echo
  exit 0
fi
exec "$python" -m benchmarks.gpu_suite "${args[@]}" "$@"
