#!/usr/bin/env bash
# Installs jaxlayer with the TPU build of JAX on every worker of a TPU VM.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: $SCRIPT --zone ZONE [--package SPEC] [--python VERSION] [options]

On every worker: installs uv, makes a Python environment (--venv) with uv, and installs
jaxlayer there together with the TPU build of JAX (pip install -U \"jax[tpu]\", as the JAX
installation guide says). The TPU images ship Python 3.10 while jaxlayer needs >= 3.11: uv
fetches the Python asked for.

  --package SPEC     what to install as jaxlayer, any pip requirement (e.g. 'jaxlayer==0.1.0'
                     or 'git+https://...') [\$JAXLAYER_PACKAGE]; default: this checkout's
                     committed HEAD (git archive), copied to every worker
  --python VERSION   Python version of the environment [\$JAXLAYER_PYTHON, default 3.12]

example: $SCRIPT --zone us-west4-a --name my-tpu"

PACKAGE="${JAXLAYER_PACKAGE:-}"
PYTHON_VERSION="${JAXLAYER_PYTHON:-3.12}"

script_flag() {
  case "$1" in
    --package) take_value PACKAGE "$@" ;;
    --python) take_value PYTHON_VERSION "$@" ;;
    *) return 1 ;;
  esac
}

parse_args "$@"

if [[ -z "$PACKAGE" ]]; then
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  tarball="${TMPDIR:-/tmp}/jaxlayer-src-$TPU_NAME.tar.gz"
  remote_src="$REMOTE_DIR/src"
  note "shipping the committed HEAD of $repo (uncommitted changes are not included)"
  run git -C "$repo" archive --format=tar.gz --output="$tarball" HEAD
  ssh_workers all "mkdir -p $(shell_quote "$REMOTE_DIR")"
  scp_to_all_workers "$tarball" "$REMOTE_DIR/jaxlayer-src.tar.gz"
  unpack="rm -rf $(shell_quote "$remote_src") && mkdir -p $(shell_quote "$remote_src") && tar -xzf $(shell_quote "$REMOTE_DIR/jaxlayer-src.tar.gz") -C $(shell_quote "$remote_src") && "
  [[ "$remote_src" == /* ]] || remote_src="./$remote_src"
  PACKAGE="$remote_src"
else
  unpack=""
fi

python="$VENV/bin/python"
check='import importlib.metadata as m, jax, jaxlayer; print("jax", jax.__version__, "libtpu", m.version("libtpu"))'
pid_file="$(shell_quote "$REMOTE_DIR/jaxlayer.pid")"
# A run imports parts of jax and jaxlayer as it goes: new versions under it could break it.
ssh_workers all "if $(remote_run_is_alive); then echo \"a jaxlayer run is still going on \$(hostname) (pid \$(cat $pid_file)): \
stop it with stop.sh before installing under it\" >&2; exit 1; fi; \
${unpack}PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --upgrade uv \
&& { test -x $(shell_quote "$python") || python3 -m uv venv --python $(shell_quote "$PYTHON_VERSION") $(shell_quote "$VENV"); } \
&& python3 -m uv pip install --python $(shell_quote "$python") --upgrade "jax[tpu]" $(shell_quote "$PACKAGE") \
&& $(shell_quote "$python") -c $(shell_quote "$check")"
note "next: $(next_step launch.sh train --config CONFIG_FILE)"
