#!/usr/bin/env bash
# Creates a Cloud TPU VM: one host (e.g. v5litepod-8, v4-8) or a multi-host slice (e.g. v4-32).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [--accelerator-type TYPE] [--runtime-version VERSION] [--queued] [--spot] [options]

Creates the TPU VM named by --name. A multi-host slice (v4-32, v5litepod-32, ...) is one
TPU VM with several workers; the other scripts address them all with --worker=all.

  --accelerator-type TYPE    TPU type and size [\$JAXLAYER_ACCELERATOR_TYPE, default v5litepod-8]
  --runtime-version VERSION  TPU software version [\$JAXLAYER_RUNTIME_VERSION, default by type:
                             v6e-* v2-alpha-tpuv6e, v5p-* v2-alpha-tpuv5,
                             v5litepod-* v2-alpha-tpuv5-lite, v2/v3/v4-* tpu-ubuntu2204-base]
  --queued                   ask through a queued resource (waits for capacity instead of failing);
                             the node gets the same name, and delete.sh needs --queued too
  --spot                     Spot capacity: much cheaper, may be preempted at any time, and the
                             VM's disks go with it: put run_dir on a shared mount (README.md)

example: $SCRIPT --zone us-central2-b --accelerator-type v4-32 --queued"

ACCELERATOR_TYPE="${JAXLAYER_ACCELERATOR_TYPE:-v5litepod-8}"
RUNTIME_VERSION="${JAXLAYER_RUNTIME_VERSION:-}"
QUEUED=0
SPOT=0

script_flag() {
  case "$1" in
    --accelerator-type) take_value ACCELERATOR_TYPE "$@" ;;
    --runtime-version) take_value RUNTIME_VERSION "$@" ;;
    --queued) QUEUED=1 && CONSUMED=1 ;;
    --spot) SPOT=1 && CONSUMED=1 ;;
    *) return 1 ;;
  esac
}

# The TPU software versions Google lists for JAX (cloud.google.com/tpu/docs/runtimes).
default_runtime_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
if [[ -z "$RUNTIME_VERSION" ]]; then
  RUNTIME_VERSION="$(default_runtime_version "$ACCELERATOR_TYPE")" ||
    die "no default runtime version for accelerator type '$ACCELERATOR_TYPE': pass --runtime-version VERSION (see cloud.google.com/tpu/docs/runtimes)"
fi
NODE_FLAGS=()
if ((INTERNAL_IP)); then
  NODE_FLAGS+=(--internal-ips)
fi
if ((SPOT)); then
  NODE_FLAGS+=(--spot)
  note "a preemption takes the workers' disks along: put run_dir and sweep.dir on a shared mount \
(NFS) to resume on a new TPU ($(dirname "$0")/README.md, 6. Spot TPUs and preemption)"
fi

if ((QUEUED)); then
  note "a TPU bills by the hour until it is deleted: $(next_step delete.sh --queued)"
  gcloud_tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" ${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"}
  note "queued; it is ready when this says ACTIVE: $(quote_command gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOCATION[@]}")"
else
  note "a TPU bills by the hour until it is deleted: $(next_step delete.sh)"
  gcloud_tpus tpu-vm create "$TPU_NAME" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"}
fi
note "next: $(next_step install.sh)"
