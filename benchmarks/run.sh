#!/usr/bin/env bash
# Runs one benchmark module with tcmalloc preloaded when the machine has it (Debian package
# libtcmalloc-minimal4); otherwise with glibc malloc. Either way the JSON record says which
# (protocol.allocator), and ours and the peer share the process, hence the allocator.
#
#   benchmarks/run.sh train_throughput --size small --vocab_size 32128 ...
#   MEDMT5_ALLOCATOR=glibc benchmarks/run.sh decode_throughput ...   # no preload
#   DRY_RUN=1 benchmarks/run.sh train_throughput ...                 # print the command only
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: benchmarks/run.sh {train_throughput|decode_throughput|data_pipeline|gpu_suite} [flags...]" >&2
  exit 2
fi
module="$1"
shift
case "$module" in
  train_throughput|decode_throughput|data_pipeline|gpu_suite) ;;
  *) echo "benchmarks/run.sh: unknown benchmark '$module' (train_throughput, decode_throughput, data_pipeline, gpu_suite)" >&2
     exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

find_tcmalloc() {
  local candidate
  for candidate in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
                   /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 \
                   /usr/lib64/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4; do
    if [[ -e "$candidate" ]]; then echo "$candidate"; return 0; fi
  done
  if command -v ldconfig >/dev/null 2>&1; then
    ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}'
  fi
}

preload="${LD_PRELOAD:-}"
if [[ "${MEDMT5_ALLOCATOR:-tcmalloc}" == "tcmalloc" && "$preload" != *tcmalloc* ]]; then
  lib="$(find_tcmalloc || true)"
  if [[ -n "$lib" ]]; then
    preload="${lib}${preload:+:$preload}"
    echo "benchmarks/run.sh: preloading $lib (recorded in the JSON as protocol.allocator)" >&2
  else
    echo "benchmarks/run.sh: tcmalloc not found (apt-get install libtcmalloc-minimal4); running with glibc malloc (recorded)" >&2
  fi
fi

cmd=(env "LD_PRELOAD=$preload" "$python" -m "benchmarks.$module" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
# The 1-minute load average decays slowly after a previous run (~1.5 min from 2 to 0.5):
# wait up to MEDMT5_LOAD_WAIT_S seconds (default 180) for it to fall under the protocol's
# 0.5; the benchmark itself still refuses if it has not.
wait_s="${MEDMT5_LOAD_WAIT_S:-180}"
waited=0
while [[ -r /proc/loadavg ]] && awk '{exit !($1 >= 0.5)}' /proc/loadavg && (( waited < wait_s )); do
  (( waited == 0 )) && echo "benchmarks/run.sh: load average $(cut -d' ' -f1 /proc/loadavg) >= 0.5, waiting up to ${wait_s} s" >&2
  sleep 10
  waited=$((waited + 10))
done
cd "$root"
exec "${cmd[@]}"
