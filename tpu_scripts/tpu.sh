#!/usr/bin/env bash
# Manage a Cloud TPU VM or pod slice for medmt5: create, set up every worker, launch the same
# medmt5.train command on all workers (one log per worker), show status, fetch logs, delete.
#
#   tpu_scripts/tpu.sh create --name medmt5-v4 --zone us-central2-b --accelerator-type v4-32 \
#       --runtime-version tpu-ubuntu2204-base [--spot | --preemptible] [--project P]
#   tpu_scripts/tpu.sh setup  --name medmt5-v4 --zone us-central2-b [--repo-url URL | --copy-from DIR]
#   tpu_scripts/tpu.sh launch --name medmt5-v4 --zone us-central2-b --run-name large1 -- \
#       --gin_file=medmt5_large.gin --gin.MODEL_DIR="'gs://bucket/medmt5_large'"
#   tpu_scripts/tpu.sh status|logs|stop|delete --name medmt5-v4 --zone us-central2-b
#
# Every subcommand accepts --dry-run: it prints the exact commands instead of running them.
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

die() {
  echo "tpu.sh: $*" >&2
  exit 2
}

DRY_RUN=0
NAME=""
ZONE=""
PROJECT=""
ACCELERATOR=""
RUNTIME=""
CAPACITY=""
REPO_URL=""
COPY_FROM=""
RUN_NAME="medmt5"
LOG_DIR="medmt5_logs"
REMOTE_DIR="medmt5"
TRAIN_ARGS=()

# Print a command (shell-quoted) in dry-run mode, run it otherwise.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  else
    "$@"
  fi
}

gcloud_tpu() {
  local args=(gcloud compute tpus tpu-vm "$@" --zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    args+=(--project="$PROJECT")
  fi
  run "${args[@]}"
}

# Run a shell snippet on every worker of the slice.
on_all_workers() {
  gcloud_tpu ssh "$NAME" --worker=all --command="$1"
}

[[ $# -ge 1 ]] || usage
CMD="$1"
shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME="${2:?--name needs a value}"; shift ;;
    --zone) ZONE="${2:?--zone needs a value}"; shift ;;
    --project) PROJECT="${2:?--project needs a value}"; shift ;;
    --accelerator-type) ACCELERATOR="${2:?--accelerator-type needs a value}"; shift ;;
    --runtime-version) RUNTIME="${2:?--runtime-version needs a value}"; shift ;;
    --spot) CAPACITY="--spot" ;;
    --preemptible) CAPACITY="--preemptible" ;;
    --repo-url) REPO_URL="${2:?--repo-url needs a value}"; shift ;;
    --copy-from) COPY_FROM="${2:?--copy-from needs a value}"; shift ;;
    --run-name) RUN_NAME="${2:?--run-name needs a value}"; shift ;;
    --log-dir) LOG_DIR="${2:?--log-dir needs a value}"; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    -h|--help) usage 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[[ -n "$NAME" ]] || die "--name is required, e.g. --name medmt5-v4"
[[ -n "$ZONE" ]] || die "--zone is required, e.g. --zone us-central2-b"
[[ "$RUN_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run-name may hold letters, digits, '.', '_' and '-' only"

case "$CMD" in
  create)
    [[ -n "$ACCELERATOR" ]] || die "create needs --accelerator-type, e.g. v4-8, v5p-64, v5litepod-16"
    [[ -n "$RUNTIME" ]] || die "create needs --runtime-version, e.g. tpu-ubuntu2204-base or v2-alpha-tpuv5"
    args=(create "$NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME")
    if [[ -n "$CAPACITY" ]]; then
      args+=("$CAPACITY")
    fi
    gcloud_tpu "${args[@]}"
    ;;
  setup)
    if [[ -n "$COPY_FROM" ]]; then
      [[ -d "$COPY_FROM" ]] || die "--copy-from '$COPY_FROM' is not a directory"
      on_all_workers "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR"
      gcloud_tpu scp --recurse --worker=all "$COPY_FROM/." "$NAME:~/$REMOTE_DIR/"
    elif [[ -n "$REPO_URL" ]]; then
      on_all_workers "rm -rf ~/$REMOTE_DIR && git clone --depth 1 $(printf '%q' "$REPO_URL") ~/$REMOTE_DIR"
    else
      die "setup needs --repo-url URL (git clone on every worker) or --copy-from DIR (scp)"
    fi
    on_all_workers "cd ~/$REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -c constraints.txt && .venv/bin/pip install -q 'jax[tpu]==0.10.2' && .venv/bin/pip install -q --no-deps -e . && .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
    ;;
  launch)
    [[ ${#TRAIN_ARGS[@]} -gt 0 ]] || die "launch needs the medmt5.train flags after '--', e.g. -- --gin_file=medmt5_large.gin --gin.MODEL_DIR=\"'gs://b/run'\""
    quoted=$(printf '%q ' "${TRAIN_ARGS[@]}")
    # Same command on every worker; jax.distributed.initialize() finds its peers on TPU VMs.
    on_all_workers "mkdir -p ~/$LOG_DIR && cd ~/$REMOTE_DIR && nohup .venv/bin/python -m medmt5.train ${quoted% } > ~/$LOG_DIR/$RUN_NAME-\$(hostname).log 2>&1 < /dev/null & echo launched on \$(hostname)"
    ;;
  status)
    gcloud_tpu describe "$NAME" --format="value(state,health,acceleratorType)"
    on_all_workers "echo \$(hostname): \$(pgrep -fc 'medmt5.train' || true) trainer process; tail -n 2 ~/$LOG_DIR/$RUN_NAME-*.log 2>/dev/null || echo no log yet"
    ;;
  logs)
    run mkdir -p "$LOG_DIR/$NAME"
    gcloud_tpu scp --worker=all "$NAME:~/$LOG_DIR/$RUN_NAME-*.log" "$LOG_DIR/$NAME/"
    ;;
  stop)
    # SIGTERM: medmt5.train saves a checkpoint at the current step and exits.
    on_all_workers "pkill -TERM -f 'medmt5.train' || true"
    ;;
  delete)
    gcloud_tpu delete "$NAME" --quiet
    ;;
  *)
    die "unknown subcommand '$CMD': use create, setup, launch, status, logs, stop or delete"
    ;;
esac
