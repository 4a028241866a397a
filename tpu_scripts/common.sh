# shellcheck shell=bash
# Shared by the tpu_scripts (sourced, not run): defaults, flag parsing, quoting, and the
# `run` wrapper that makes --dry-run print every command instead of running it.
#
# A script sources this file, sets USAGE, may define script_flag() for its own flags
# (it sets CONSUMED to the number of arguments it took, or returns 1), then calls
# parse_args "$@".

SCRIPT="$(basename "$0")"

# Flags win over these environment variables, which win over the defaults.
TPU_NAME="${JAXLAYER_TPU_NAME:-jaxlayer-tpu}"
ZONE="${JAXLAYER_ZONE:-}"
PROJECT="${JAXLAYER_PROJECT:-}"
REMOTE_DIR="${JAXLAYER_REMOTE_DIR:-jaxlayer-run}"
VENV="${JAXLAYER_VENV:-jaxlayer-venv}"
INTERNAL_IP="${JAXLAYER_INTERNAL_IP:-0}"
DRY_RUN=0
CONSUMED=0
LOCATION=()
SSH_FLAGS=()
# NAME=VALUE texts whose VALUE (a token) run() masks in the commands it prints as it runs them;
# --dry-run shows all.
HIDDEN=()

COMMON_HELP="common options (a flag wins over its environment variable):
  --name NAME        TPU VM name [\$JAXLAYER_TPU_NAME, default jaxlayer-tpu]
  --zone ZONE        Cloud zone, required [\$JAXLAYER_ZONE], e.g. us-west4-a (v5e), us-central2-b (v4)
  --project PROJECT  Cloud project [\$JAXLAYER_PROJECT, default: gcloud's configured project]
  --remote-dir DIR   run directory on each worker, relative to its home [\$JAXLAYER_REMOTE_DIR, default jaxlayer-run]
  --venv DIR         Python environment on each worker [\$JAXLAYER_VENV, default jaxlayer-venv]
                     (both on each worker's own disk, not on a mount the workers share)
  --internal-ip      for TPUs without external IPs: create.sh makes one, the others reach its
                     workers by internal IP, from a machine in its network [\$JAXLAYER_INTERNAL_IP=1]
  --dry-run          print every command, one per line and ready to paste, and run none
  -h, --help         show this help
Flags also take the form --flag=value."

die() {
  printf '%s: error: %s\n' "$SCRIPT" "$*" >&2
  exit 2
}

# Messages for the user go to stderr, so that --dry-run's stdout is exactly the plan.
note() {
  printf '%s: %s\n' "$SCRIPT" "$*" >&2
}

# One argument as the shell would need it typed: bare when it is safe, else in single quotes.
shell_quote() {
  local arg="$1"
  if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$arg"
  else
    printf "'%s'" "${arg//\'/\'\\\'\'}"
  fi
}

quote_command() {
  local out="" arg
  for arg in "$@"; do
    out+="$(shell_quote "$arg") "
  done
  printf '%s' "${out% }"
}

# Runs a command, or with --dry-run prints it on stdout and runs nothing.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote_command "$@")"
    return 0
  fi
  local shown hidden masked
  shown="$(quote_command "$@")"
  for hidden in ${HIDDEN[@]+"${HIDDEN[@]}"}; do
    masked="${hidden%%=*}=<hidden>"
    shown=${shown//"$hidden"/$masked}
  done
  printf '+ %s\n' "$shown" >&2
  "$@"
}

gcloud_tpus() {
  run gcloud compute tpus "$@" "${LOCATION[@]}"
}

# ssh_workers WORKER COMMAND: WORKER is a worker index or "all" (every host of the slice, in parallel).
ssh_workers() {
  gcloud_tpus tpu-vm ssh "$TPU_NAME" --worker="$1" ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"} --command "$2"
}

# scp_to_all_workers LOCAL_PATH REMOTE_PATH (relative to each worker's home).
scp_to_all_workers() {
  gcloud_tpus tpu-vm scp "$1" "$TPU_NAME:$2" --worker=all ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
}

# A remote shell test: true when the run started by launch.sh is still going on that worker
# (its recorded pid is alive and is a jaxlayer process, not another one that reused the pid).
remote_run_is_alive() {
  local pid_file
  pid_file="$(shell_quote "$REMOTE_DIR/jaxlayer.pid")"
  printf '%s' "test -f $pid_file && kill -0 \"\$(cat $pid_file)\" 2>/dev/null \
&& grep -qsa jaxlayer \"/proc/\$(cat $pid_file)/cmdline\""
}

# How to call another of these scripts on the same TPU, for the hints the scripts print.
next_step() {
  local script="$1"
  shift
  local flags=(--name "$TPU_NAME" --zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then
    flags+=(--project "$PROJECT")
  fi
  flags+=(${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"})
  quote_command "$(dirname "$0")/$script" "${flags[@]}" "$@"
}

need_value() {
  if (($# < 2)) || [[ "$2" == --* ]]; then
    die "$1 needs a value (see $SCRIPT --help)"
  fi
}

# take_value VARIABLE FLAG VALUE...: for script_flag, stores VALUE in VARIABLE.
take_value() {
  local variable="$1"
  shift
  need_value "$@"
  printf -v "$variable" '%s' "$2"
  CONSUMED=2
}

script_flag() {
  return 1
}

call_script_flag() {
  CONSUMED=0
  script_flag "$@" || die "unknown argument '$1' (see $SCRIPT --help)"
}

parse_args() {
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        printf '%s\n\n%s\n' "$USAGE" "$COMMON_HELP"
        exit 0
        ;;
      --dry-run) DRY_RUN=1 && CONSUMED=1 ;;
      --name) take_value TPU_NAME "$@" ;;
      --zone) take_value ZONE "$@" ;;
      --project) take_value PROJECT "$@" ;;
      --remote-dir) take_value REMOTE_DIR "$@" ;;
      --venv) take_value VENV "$@" ;;
      --internal-ip) INTERNAL_IP=1 && CONSUMED=1 ;;
      --config.*) call_script_flag "$@" ;;
      --*=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        CONSUMED=0
        ;;
      *) call_script_flag "$@" ;;
    esac
    shift "$CONSUMED"
  done
  [[ -n "$TPU_NAME" ]] || die "the TPU name is empty: pass --name NAME or set JAXLAYER_TPU_NAME"
  [[ -n "$ZONE" ]] || die "no zone given: pass --zone ZONE or set JAXLAYER_ZONE (see $SCRIPT --help)"
  [[ "$REMOTE_DIR$VENV" != *"~"* ]] || die "--remote-dir and --venv take a path relative to the worker's home or an absolute one, without '~'"
  [[ "$INTERNAL_IP" =~ ^[01]$ ]] || die "JAXLAYER_INTERNAL_IP takes 1 or 0, got '$INTERNAL_IP'"
  if ((INTERNAL_IP)); then
    SSH_FLAGS=(--internal-ip)
  fi
  LOCATION=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    LOCATION+=(--project="$PROJECT")
  fi
}
