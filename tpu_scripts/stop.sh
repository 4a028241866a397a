#!/usr/bin/env bash
# Stops the run that launch.sh started, on every worker (the TPU VM itself keeps running).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [options]

Sends SIGTERM to the jaxlayer process launch.sh started on each worker (its pid is in
REMOTE_DIR/jaxlayer.pid). A training run stops after its current RL step, on every worker the
same one, with a checkpoint there: launch.sh with the same command resumes it. Logs,
checkpoints and results on the workers stay. The TPU VM goes on billing: delete it with
delete.sh when done.

example: $SCRIPT --zone us-west4-a"

parse_args "$@"
pid_file="$(shell_quote "$REMOTE_DIR/jaxlayer.pid")"
ssh_workers all "if $(remote_run_is_alive); then kill \"\$(cat $pid_file)\" && echo \"\$(hostname): stopped pid \$(cat $pid_file)\"; \
else echo \"\$(hostname): no jaxlayer run going\"; fi"
