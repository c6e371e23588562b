#!/usr/bin/env bash
# Launch medmt5.train on one node of a multi-node GPU job. Run it once per node (by hand,
# from SLURM's srun, or a cluster scheduler), with the same coordinator on every node:
#
#   tpu_scripts/gpu_multinode.sh --coordinator 10.0.0.1:12345 --num-nodes 2 --node-rank 0 -- \
#       --gin_file=medmt5_large.gin --gin.MODEL_DIR="'/shared/runs/large'"
#
# Under SLURM, --num-nodes and --node-rank default to SLURM_NNODES and SLURM_NODEID.
# One JAX process per node drives all of its GPUs. --dry-run prints the command.
set -euo pipefail

die() {
  echo "gpu_multinode.sh: $*" >&2
  exit 2
}

DRY_RUN=0
COORDINATOR=""
NUM_NODES="${SLURM_NNODES:-}"
NODE_RANK="${SLURM_NODEID:-}"
PYTHON="${PYTHON:-python3}"
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --coordinator) COORDINATOR="${2:?--coordinator needs HOST:PORT}"; shift ;;
    --num-nodes) NUM_NODES="${2:?--num-nodes needs a value}"; shift ;;
    --node-rank) NODE_RANK="${2:?--node-rank needs a value}"; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[[ "$COORDINATOR" =~ ^[^:]+:[0-9]+$ ]] || die "--coordinator must be HOST:PORT of node 0, e.g. 10.0.0.1:12345"
[[ "$NUM_NODES" =~ ^[1-9][0-9]*$ ]] || die "--num-nodes must be a positive integer (or set SLURM_NNODES)"
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] || die "--node-rank must be an integer (or set SLURM_NODEID)"
(( NODE_RANK < NUM_NODES )) || die "--node-rank $NODE_RANK must be below --num-nodes $NUM_NODES"
[[ ${#TRAIN_ARGS[@]} -gt 0 ]] || die "give the medmt5.train flags after '--'"

cmd=("$PYTHON" -m medmt5.train --multiprocess_gpu --coordinator_address="$COORDINATOR"
  --process_count="$NUM_NODES" --process_index="$NODE_RANK" "${TRAIN_ARGS[@]}")
# XLA flags that help GPU training throughput (latency-hiding scheduler, async collectives).
export XLA_FLAGS="${XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true}"
if [[ "$DRY_RUN" == 1 ]]; then
  printf 'XLA_FLAGS=%q ' "$XLA_FLAGS"
  printf '%q ' "${cmd[@]}" | sed 's/ $//'
  printf '\n'
else
  exec "${cmd[@]}"
fi
