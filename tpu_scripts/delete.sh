#!/usr/bin/env bash
# Deletes a TPU VM (or its queued resource), which stops the billing.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [--queued] [--yes] [options]

Deletes the TPU VM named by --name, with its disks: whatever the workers hold (checkpoints,
results, logs) is lost unless it was written to a shared mount or fetched first with fetch.sh.
gcloud asks for confirmation unless --yes is given.

  --queued   the TPU was made with create.sh --queued: delete the queued resource and its node
  --yes      do not ask for confirmation (gcloud --quiet)

example: $SCRIPT --zone us-west4-a"

QUEUED=0
YES_FLAG=()

script_flag() {
  case "$1" in
    --queued) QUEUED=1 && CONSUMED=1 ;;
    --yes) YES_FLAG=(--quiet) && CONSUMED=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
note "deleting $TPU_NAME loses everything on its workers' disks; to keep results: $(next_step fetch.sh --from PATH)"
if ((QUEUED)); then
  gcloud_tpus queued-resources delete "$TPU_NAME" --force ${YES_FLAG[@]+"${YES_FLAG[@]}"}
else
  gcloud_tpus tpu-vm delete "$TPU_NAME" ${YES_FLAG[@]+"${YES_FLAG[@]}"}
fi
