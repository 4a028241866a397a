#!/usr/bin/env bash
# Copies results (a file or a directory) from one worker to this machine, before a teardown.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE --from REMOTE_PATH [--to LOCAL_DIR] [--worker N] [options]

Copies REMOTE_PATH (relative to the worker's home, e.g. the run's output directory or
jaxlayer-run/logs) into LOCAL_DIR. It refuses to overwrite: if LOCAL_DIR already holds an
entry of that name, choose another --to. Results written to a shared NFS mount need no fetching.

  --from REMOTE_PATH  what to copy, on the worker
  --to LOCAL_DIR      where to put it [default: tpu-results/NAME]
  --worker N          which worker [default 0, the one that writes checkpoints and results]

example: $SCRIPT --zone us-west4-a --from runs/grpo_arithmetic"

FROM=""
TO=""
WORKER=0

script_flag() {
  case "$1" in
    --from) take_value FROM "$@" ;;
    --to) take_value TO "$@" ;;
    --worker) take_value WORKER "$@" ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
[[ -n "$FROM" ]] || die "nothing to fetch: pass --from REMOTE_PATH, e.g. --from runs/my_run"
[[ "$WORKER" =~ ^[0-9]+$ ]] || die "--worker takes a worker index (0, 1, ...), got '$WORKER'"
TO="${TO:-tpu-results/$TPU_NAME}"
destination="$TO/$(basename "$FROM")"
[[ ! -e "$destination" ]] || die "'$destination' already exists and would be overwritten: move it or pass another --to"

run mkdir -p "$TO"
gcloud_tpus tpu-vm scp --recurse "$TPU_NAME:$FROM" "$TO" --worker="$WORKER" \
  ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
