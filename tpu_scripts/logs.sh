#!/usr/bin/env bash
# Shows (or follows) the log of a run started by launch.sh, on one worker or all of them.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [--worker N|all] [--run-name NAME] [--lines N] [--follow] [options]

Prints the end of a worker's log: REMOTE_DIR/logs/RUN_NAME-<worker hostname>.log.
Every worker of a multi-host slice keeps its own log; worker 0 is usually the one to watch.

  --worker N|all    which worker [default 0]; 'all' prints every worker's, each line as it comes
  --run-name NAME   the run given to launch.sh [default: the newest log on the worker]
  --lines N         how many lines from the end [default 100]
  --follow          keep printing as the log grows (tail -f), until Ctrl-C

example: $SCRIPT --zone us-west4-a --follow"

WORKER=0
RUN_NAME=""
LINES=100
FOLLOW=0

script_flag() {
  case "$1" in
    --worker) take_value WORKER "$@" ;;
    --run-name) take_value RUN_NAME "$@" ;;
    --lines) take_value LINES "$@" ;;
    --follow) FOLLOW=1 && CONSUMED=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
[[ "$WORKER" =~ ^([0-9]+|all)$ ]] || die "--worker takes a worker index (0, 1, ...) or 'all', got '$WORKER'"
[[ "$LINES" =~ ^[0-9]+$ ]] || die "--lines takes a whole number, got '$LINES'"

logs_dir="$(shell_quote "$REMOTE_DIR/logs")"
if [[ -n "$RUN_NAME" ]]; then
  find_log="log=$logs_dir/$(shell_quote "$RUN_NAME")-\"\$(hostname)\".log"
else
  find_log="log=\"\$(ls -t $logs_dir/*.log 2>/dev/null | head -n 1)\""
fi
tail_flags="-n $LINES"
if ((FOLLOW)); then
  tail_flags+=" -f"
fi
ssh_workers "$WORKER" "$find_log; if test ! -f \"\$log\"; then echo \"no jaxlayer log on \$(hostname) under $logs_dir\" >&2; exit 1; fi; \
echo \"== \$(hostname): \$log\"; tail $tail_flags \"\$log\""
