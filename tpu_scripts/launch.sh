#!/usr/bin/env bash
# Launches `jaxlayer train` or `jaxlayer sweep` on every worker of a TPU VM, in the background.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT train|sweep --config FILE[:ARG] --zone ZONE [--config.KEY=VALUE ...] [--env NAME=VALUE ...] [--run-name NAME] [--check-seconds N] [options]

Copies the config file to every worker, then starts the same jaxlayer command on all of
them (--worker=all). On a multi-host slice jaxlayer joins the hosts itself
(jax.distributed.initialize); paths in the config are read on the workers, so put data where
each worker has it and, on several workers, outputs in a directory all of them mount (NFS,
such as Filestore). jaxlayer takes file system paths, not gs:// URLs.
The run goes on after this script returns; each worker writes its own log,
REMOTE_DIR/logs/RUN_NAME-<worker hostname>.log: follow it with logs.sh --follow.
A run that ends within --check-seconds (a bad override, a missing model) shows the end of its
log, and this script fails.

  train | sweep        the jaxlayer command to run
  --config FILE[:ARG]  ml_collections config file (ARG is passed to its get_config)
  --config.KEY=VALUE   a config override, passed through unchanged (repeatable)
  --env NAME=VALUE     an environment variable for the run (repeatable), e.g. HF_TOKEN=...;
                       its value is masked in the commands printed (--dry-run shows it)
  --run-name NAME      names the log files [default: COMMAND-YYYYmmdd-HHMMSS]
  --check-seconds N    how long each worker watches that its run keeps going after it starts
                       [default 10]

example: $SCRIPT train --zone us-west4-a --config configs/grpo_arithmetic.py \
  --config.model.path=Qwen/Qwen2.5-0.5B --config.run_dir=runs/grpo_arithmetic"

COMMAND=""
CONFIG=""
RUN_NAME=""
CHECK_SECONDS=10
OVERRIDES=()
ENV_VARS=()

script_flag() {
  case "$1" in
    train | sweep)
      [[ -z "$COMMAND" ]] || die "two commands given ('$COMMAND' and '$1'): give one of train, sweep"
      COMMAND="$1" && CONSUMED=1
      ;;
    --config) take_value CONFIG "$@" ;;
    --config.*=*) OVERRIDES+=("$1") && CONSUMED=1 ;;
    --config.*) die "override '$1' has no value: write it as $1=VALUE" ;;
    --env)
      need_value "$@"
      [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes NAME=VALUE, got '$2'"
      ENV_VARS+=("$2") && CONSUMED=2
      ;;
    --run-name) take_value RUN_NAME "$@" ;;
    --check-seconds) take_value CHECK_SECONDS "$@" ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
[[ -n "$COMMAND" ]] || die "no command given: $SCRIPT train ... or $SCRIPT sweep ... (see $SCRIPT --help)"
[[ -n "$CONFIG" ]] || die "no config given: pass --config FILE, e.g. --config configs/grpo_arithmetic.py"
RUN_NAME="${RUN_NAME:-$COMMAND-$(date +%Y%m%d-%H%M%S)}"
[[ "$RUN_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "--run-name may hold only letters, digits, '.', '_' and '-', got '$RUN_NAME'"
[[ "$CHECK_SECONDS" =~ ^[0-9]+$ ]] || die "--check-seconds takes a whole number of seconds, got '$CHECK_SECONDS'"

# FILE:ARG is ml_collections' way to pass ARG to get_config; split it off to copy FILE.
config_file="$CONFIG"
config_arg=""
if [[ ! -f "$config_file" && "$CONFIG" == *:* && -f "${CONFIG%:*}" ]]; then
  config_file="${CONFIG%:*}"
  config_arg=":${CONFIG##*:}"
fi
[[ -f "$config_file" ]] || die "config file not found: '$config_file'"
config_name="$(basename "$config_file")"
remote_config="$REMOTE_DIR/configs/${config_name//[^A-Za-z0-9._-]/_}"
log="$(shell_quote "$REMOTE_DIR/logs/$RUN_NAME")-\"\$(hostname)\".log"
pid_file="$(shell_quote "$REMOTE_DIR/jaxlayer.pid")"
# Unbuffered: jaxlayer's lines reach the log (logs.sh) as they are printed, not at the end.
jaxlayer_command="$(quote_command env PYTHONUNBUFFERED=1 ${ENV_VARS[@]+"${ENV_VARS[@]}"} \
  "$VENV/bin/jaxlayer" "$COMMAND" \
  --config "$remote_config$config_arg" ${OVERRIDES[@]+"${OVERRIDES[@]}"})"
# --env values (tokens) stay off the screen, as the printed ssh command holds them: quoted for
# the worker's shell, then for this one.
for variable in ${ENV_VARS[@]+"${ENV_VARS[@]}"}; do
  value="${variable#*=}"
  value="${value//\'/\'\\\'\'}"
  HIDDEN+=("${variable%%=*}=${value//\'/\'\\\'\'}")
done
jaxlayer_executable="$(shell_quote "$VENV/bin/jaxlayer")"
not_installed=": no jaxlayer at $VENV/bin/jaxlayer: install it with $(next_step install.sh)"

still_going="if $(remote_run_is_alive); then echo \"a jaxlayer run is still going on \$(hostname) (pid \$(cat $pid_file)): stop it with stop.sh first, and wait until it has ended on every worker\" >&2; exit 1; fi"
# Every worker is asked before any starts: the others would wait for the busy one's process
# until JAX gives up (a run stopped by stop.sh may still be saving its checkpoint there).
ssh_workers all "if test ! -x $jaxlayer_executable; then echo \"\$(hostname)\"$(shell_quote "$not_installed") >&2; exit 1; fi; \
$still_going; mkdir -p $(shell_quote "$REMOTE_DIR/configs") $(shell_quote "$REMOTE_DIR/logs")"
scp_to_all_workers "$config_file" "$remote_config"
# Each worker watches its run for CHECK_SECONDS: one that ended at once (a bad override, a
# missing model) prints the end of its log, and fails unless it exited with status 0. It asks
# about its own child (kill -0 PID), not remote_run_is_alive: while the child execs nohup, env
# and python its /proc cmdline can read empty, and a run taken for ended would be waited for.
if ! ssh_workers all "$still_going; \
rm -f $(shell_quote "$REMOTE_DIR/jaxlayer.stopping"); \
nohup $jaxlayer_command > $log 2>&1 < /dev/null & pid=\$!; echo \$pid > $pid_file; \
waited=0; while test \$waited -lt $CHECK_SECONDS && kill -0 \$pid 2>/dev/null; do sleep 1; waited=\$((waited + 1)); done; \
if kill -0 \$pid 2>/dev/null; then echo \"\$(hostname): started, log in \"$log; \
else wait \$pid; status=\$?; echo \"\$(hostname): jaxlayer ended at once, exit status \$status; the end of its log, \"$log: >&2; \
tail -n 20 $log >&2; test \$status = 0; fi"; then
  note "the run failed on a worker (above): fix what its log says, end the run on the other workers with $(next_step stop.sh), then launch again"
  exit 1
fi
note "logs: $(next_step logs.sh --follow)  (add --worker N for another worker)"
note "stop: $(next_step stop.sh)"
