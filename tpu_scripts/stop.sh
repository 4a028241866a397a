#!/usr/bin/env bash
# Stops the run that launch.sh started, on every worker (the TPU VM itself keeps running).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [--now] [options]

Sends SIGTERM to the jaxlayer process launch.sh started on each worker (its pid is in
REMOTE_DIR/jaxlayer.pid) and waits for it to end. A training run stops after its current RL
step, on every worker the same one, with a checkpoint there: launch.sh with the same command
resumes it. Ctrl-C leaves the run stopping; stop.sh again waits for it without sending a second
SIGTERM (which would stop it at once, without the checkpoint). Logs, checkpoints and results on
the workers stay. The TPU VM goes on billing: delete it with delete.sh when done.

  --now   kill the run at once (SIGKILL), without a checkpoint: for a run that does not stop

example: $SCRIPT --zone us-west4-a"

NOW=0

script_flag() {
  case "$1" in
    --now) NOW=1 && CONSUMED=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
pid_file="$(shell_quote "$REMOTE_DIR/jaxlayer.pid")"
# The pid stop.sh sent SIGTERM to: a second SIGTERM would stop the run without its checkpoint.
stopping_file="$(shell_quote "$REMOTE_DIR/jaxlayer.stopping")"
if ((NOW)); then
  ssh_workers all "if $(remote_run_is_alive); then kill -KILL \"\$(cat $pid_file)\" && \
echo \"\$(hostname): killed pid \$(cat $pid_file)\"; else echo \"\$(hostname): no jaxlayer run going\"; fi"
else
  note "waiting for the run to end on every worker after its step (Ctrl-C leaves it stopping)"
  ssh_workers all "if $(remote_run_is_alive); then pid=\"\$(cat $pid_file)\"; \
if test \"\$(cat $stopping_file 2>/dev/null)\" = \"\$pid\"; then \
echo \"\$(hostname): pid \$pid is stopping already\"; \
else echo \"\$pid\" > $stopping_file && kill \"\$pid\" && \
echo \"\$(hostname): sent SIGTERM to pid \$pid\"; fi; \
while $(remote_run_is_alive); do sleep 1; done; echo \"\$(hostname): pid \$pid stopped\"; \
else echo \"\$(hostname): no jaxlayer run going\"; fi"
fi
