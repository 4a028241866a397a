"""Run untrusted Python (a model's code plus unit tests) so that the tests pass or fail
and nothing else happens to the machine.

Each run is a fresh `python -I` child in its own session, in a throwaway working
directory, with a scrubbed environment, under these layers (each used where the
machine allows it; `isolation()` says which are active):

- resource limits: CPU seconds, address space, processes, file size, open files,
  no core dumps; a wall-clock deadline after which the whole process group is killed;
- Linux namespaces (util-linux `unshare`): a network namespace with no interfaces up
  (no network at all) and a PID namespace (every process of the run dies with it);
  run by root directly, by other users inside a new user namespace;
- as root: the child runs as a fresh unprivileged uid (so the process limit applies,
  root's files are not writable), keeping only CAP_DAC_READ_SEARCH so it can read
  the Python installation wherever it lives; with namespaces, its working directory is a
  tmpfs of `disk_bytes` in a mount namespace of its own (the file size limit caps each
  file, not how many: elsewhere a run can write as much as its time allows);
- Landlock (Linux >= 5.13): reads only from the Python installation and system
  libraries, writes only inside the working directory, no TCP connect/bind (ABI 4+),
  no signals or abstract unix sockets out of the sandbox (ABI 6+). Without it (landlock_abi
  0 in results) a program reads what its uid can, which as root's fresh uid is every file
  (CAP_DAC_READ_SEARCH: /etc/shadow, an HF token), and its own memory (/proc/self/mem), so
  the result token too;
- seccomp (x86_64, arm64): no signal handlers (see _sandbox_child.py).

Result lines carry a random token per run that the candidate is not handed, on a
stdout it cannot read back, so exiting early, printing fake results or erasing them
passes nothing (see _sandbox_child.py for the limits of that).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CHILD_SOURCE = (Path(__file__).parent / "_sandbox_child.py").read_text()
# Fresh uids for root's sandboxes: far above any real account and the usual subuid ranges.
_SANDBOX_UID_RANGE = (1_900_000_000, 1_900_000_000 + (1 << 28))
_SYSTEM_READ_PATHS = (
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/dev", "/etc/ld.so.cache", "/etc/localtime"
)


class SandboxError(RuntimeError):
  """The sandbox itself cannot run here (not: the candidate's code failed)."""


@dataclass(frozen=True)
class SandboxLimits:
  """What one run may use. Memory and file size in bytes, times in seconds."""

  wall_seconds: float = 5.0
  cpu_seconds: int = 5
  memory_bytes: int = 1 << 30
  max_processes: int = 16
  file_size_bytes: int = 16 << 20
  open_files: int = 64
  disk_bytes: int = 64 << 20  # all files in the working directory (as root, with namespaces)


@dataclass(frozen=True)
class SandboxResult:
  """Outcome of one run: which tests passed, and why not when they did not."""

  passed: list[bool]  # one per test, in order
  timed_out: bool
  error: str | None  # first failing test's error, or the child's stderr tail when it died
  landlock_abi: int  # 0 when Landlock was not applied

  @property
  def fraction_passed(self) -> float:
    return sum(self.passed) / len(self.passed) if self.passed else 0.0

  @property
  def all_passed(self) -> bool:
    return bool(self.passed) and all(self.passed)


def _namespace_prefix() -> list[str]:
  unshare = shutil.which("unshare")
  if unshare is None:
    return []
  if os.geteuid() == 0:
    return [unshare, "--mount", "--net", "--pid", "--fork", "--kill-child"]
  return [unshare, "--user", "--map-current-user", "--net", "--pid", "--fork", "--kill-child"]


def _on_tmpfs(workdir: str, size_bytes: int, uid: int | None) -> list[str]:
  """The command prefix, run as root in the namespaces, that mounts a tmpfs of size_bytes (owned
  by uid) on workdir and runs the rest of the command in it."""
  owner = "" if uid is None else f",uid={uid},gid={uid}"
  script = ('mount -t tmpfs -o "size=$2,mode=700$3" jaxlayer-sandbox "$1" && cd "$1" '
            '&& shift 3 && exec "$@"')
  return ["sh", "-c", script, "sh", workdir, str(size_bytes), owner]


@functools.cache
def _working_namespace_prefix() -> tuple[str, ...]:
  """The unshare command prefix if namespaces can be created here, else ()."""
  prefix = _namespace_prefix()
  if prefix:
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    if probe.returncode == 0:
      return tuple(prefix)
    logger.warning(
        "sandbox: cannot create network/PID namespaces here (%s); code runs without "
        "them: network is blocked only by Landlock (TCP) where the kernel has it",
        probe.stderr.decode(errors="replace").strip(),
    )
  else:
    logger.warning("sandbox: `unshare` (util-linux) not found; code runs without namespaces")
  return ()


@functools.cache
def _tmpfs_works() -> bool:
  """Whether runs get a working directory of disk_bytes (`_on_tmpfs`): as root, where the
  namespaces work and a tmpfs mounts in them. Probed apart, so that a machine without it keeps
  the namespaces."""
  if os.geteuid() != 0 or not _working_namespace_prefix():
    return False
  with tempfile.TemporaryDirectory() as probe_directory:
    tmpfs = _on_tmpfs(probe_directory, 1 << 20, None)
    probe = subprocess.run([*_working_namespace_prefix(), *tmpfs, "true"], capture_output=True,
                           timeout=30)
  if probe.returncode != 0:
    logger.warning("sandbox: cannot mount a tmpfs in the runs' namespaces (%s); the working "
                   "directory is not limited to disk_bytes",
                   probe.stderr.decode(errors="replace").strip())
  return probe.returncode == 0


def _privilege_drop(uid: int) -> list[str]:
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    raise SandboxError(
        "running as root, the code sandbox drops to an unprivileged uid with util-linux's "
        "`setpriv`, which is not on PATH: install util-linux (apt-get install util-linux)"
    )
  return [
      setpriv,
      f"--reuid={uid}",
      f"--regid={uid}",
      "--clear-groups",
      "--inh-caps=-all,+dac_read_search",
      "--ambient-caps=-all,+dac_read_search",
      "--bounding-set=-all,+dac_read_search",
  ]


@functools.cache
def _read_paths() -> tuple[str, ...]:
  """What the child may read under Landlock: the Python installation and system libraries."""
  paths = {
      sys.prefix,
      sys.base_prefix,
      sys.exec_prefix,
      sys.base_exec_prefix,
      os.path.dirname(os.path.realpath(sys.executable)),
      *site.getsitepackages(),
      *_SYSTEM_READ_PATHS,
  }
  return tuple(sorted(os.path.realpath(path) for path in paths if os.path.exists(path)))


def isolation() -> dict[str, bool]:
  """Which isolation layers runs get on this machine (Landlock: see SandboxResult)."""
  return {
      "network_and_pid_namespaces": bool(_working_namespace_prefix()),
      "fresh_uid_per_run": os.geteuid() == 0,
      "working_directory_of_disk_bytes": _tmpfs_works(),
  }


def _kill_everything(process: subprocess.Popen, uid: int | None) -> None:
  # Kill unshare's child (the PID namespace's init) first, so that unshare reaps it
  # instead of leaving a zombie to the machine's init; then the whole process group.
  try:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
  except OSError:
    children = []
  for child in children:
    try:
      os.kill(int(child), signal.SIGKILL)
    except ProcessLookupError:
      pass
  try:
    process.wait(timeout=1)
  except subprocess.TimeoutExpired:
    pass
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.wait()
  if uid is not None and not _working_namespace_prefix():
    # No PID namespace took the stragglers down with it, but the run had its own uid:
    # every process still running under it (a setsid'd fork, say) dies now.
    kill_all = "import os, signal; os.kill(-1, signal.SIGKILL)"
    subprocess.run(
        [*_privilege_drop(uid), sys.executable, "-I", "-c", kill_all], capture_output=True
    )


def _remove_tree(path: str) -> None:
  def make_writable_and_retry(function, failed_path, _exc_info):
    os.chmod(os.path.dirname(failed_path), 0o700)
    if os.path.isdir(failed_path) and not os.path.islink(failed_path):
      os.chmod(failed_path, 0o700)
    function(failed_path)

  try:
    shutil.rmtree(path, onerror=make_writable_and_retry)
  except OSError as error:  # a leftover temporary directory must not stop training
    logger.warning("sandbox: could not remove %s: %s", path, error)


def run_tests(
    program: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits(), setup: str = ""
) -> SandboxResult:
  """Run `program`, then each test (Python statements, e.g. asserts) in its namespace.

  `setup` is the benchmark's code for the tests (MBPP's test_setup_code): it runs before the
  program, in a namespace of its own, and the names it defines replace the program's in the
  namespace the program's functions and the tests see, as when it runs between the program and
  the tests; so the program can neither see nor pre-empt what it builds.

  A test passes when it runs without raising. The candidate's failures never raise
  here; SandboxError means the sandbox itself cannot run on this machine.
  """
  token, lines, timed_out, log_tail = _run_child(program, tests, limits, setup)
  records = _records(lines, token)
  if not records and not timed_out:
    # The child writes its first record once locked down, before any candidate code runs; a
    # program can erase its results (truncate its stdout), a sandbox that cannot start has none.
    _check_sandbox_starts()
  return _result(records, len(tests), timed_out, log_tail)


def _run_child(
    program: str, tests: Sequence[str], limits: SandboxLimits, setup: str
) -> tuple[str, list[str], bool, str]:
  """Runs the child: its token, the lines it wrote to its stdout, whether it timed out and the
  tail of its stderr."""
  token = secrets.token_hex(16)
  uid = secrets.SystemRandom().randrange(*_SANDBOX_UID_RANGE) if os.geteuid() == 0 else None
  workdir = tempfile.mkdtemp(prefix="jaxlayer-sandbox-")
  command = list(_working_namespace_prefix())
  if uid is not None:
    os.chown(workdir, uid, uid)
    if command and _tmpfs_works():  # (in the namespaces only: never mounted on the host)
      command += _on_tmpfs(workdir, limits.disk_bytes, uid)
    command += _privilege_drop(uid)
  command += [sys.executable, "-I", "-c", _CHILD_SOURCE]
  request = {
      "token": token,
      "setup": setup,
      "program": program,
      "tests": list(tests),
      "workdir": workdir,
      "read_paths": list(_read_paths()),
      "limits": {key: value for key, value in asdict(limits).items()
                 if key not in ("wall_seconds", "disk_bytes")},
  }
  environment = {
      "PATH": "/usr/bin:/bin",
      "HOME": workdir,
      "TMPDIR": workdir,
      "LANG": "C.UTF-8",
      "OMP_NUM_THREADS": "1",
      "OPENBLAS_NUM_THREADS": "1",
      "MKL_NUM_THREADS": "1",
  }
  try:
    with (tempfile.TemporaryFile() as request_file, tempfile.TemporaryFile() as results_file,
          tempfile.TemporaryFile() as log_file):
      request_file.write(json.dumps(request).encode())
      request_file.seek(0)
      # Write-only for the child: its program cannot read back the token its first line carries.
      results_writer = _write_only(results_file.fileno())
      try:
        process = subprocess.Popen(
            command,
            stdin=request_file,
            stdout=results_writer,
            stderr=log_file,
            cwd=workdir,
            env=environment,
            start_new_session=True,
        )
      finally:
        os.close(results_writer)
      try:
        process.wait(timeout=limits.wall_seconds)
        timed_out = False
      except subprocess.TimeoutExpired:
        timed_out = True
      finally:
        _kill_everything(process, uid)
      results_file.seek(0)
      lines = results_file.read().decode(errors="replace").splitlines()
      log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - 2000))
      log_tail = log_file.read().decode(errors="replace")
  finally:
    _remove_tree(workdir)
  return token, lines, timed_out, log_tail


def _write_only(descriptor: int) -> int:
  """A new write-only descriptor of the file open as `descriptor`, reopened through /proc (Linux);
  elsewhere a duplicate, which the child's program can read back."""
  try:
    return os.open(f"/proc/self/fd/{descriptor}", os.O_WRONLY)
  except FileNotFoundError:
    return os.dup(descriptor)


def _check_sandbox_starts() -> None:
  """Raises SandboxError if a sandbox that runs no code reports nothing either."""
  token, lines, _, log_tail = _run_child("", [], SandboxLimits(), "")
  if not _records(lines, token):
    raise SandboxError(
        f"the sandboxed process failed before running any code: {log_tail.strip()!r}"
    )


def _records(lines: list[str], token: str) -> list[dict]:
  """The records of the lines that carry the run's token."""
  records = []
  for line in lines:
    if line.startswith(token + " "):
      try:
        records.append(json.loads(line[len(token) + 1:]))
      except ValueError:
        pass  # a line cut short by the file size limit
  return records


def _result(records: list[dict], n_tests: int, timed_out: bool, log_tail: str) -> SandboxResult:
  passed = [False] * n_tests
  errors = []
  landlock_abi = 0
  for record in records:
    if "landlock_abi" in record:
      landlock_abi = record["landlock_abi"]
    else:
      passed[record["test"]] = record["passed"]
      if record["error"]:
        errors.append(record["error"])
  if timed_out:
    error = "timed out"
  elif errors:
    error = errors[0]
  elif not all(passed):
    error = log_tail.strip() or "the sandboxed process died without reporting results"
  else:
    error = None
  return SandboxResult(passed=passed, timed_out=timed_out, error=error, landlock_abi=landlock_abi)


def run_tests_batch(
    programs: Sequence[str],
    tests: Sequence[Sequence[str]],
    limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None,
    setups: Sequence[str] | None = None,
) -> list[SandboxResult]:
  """run_tests on many (program, tests, setup) triples, `workers` sandboxes at a time (no
  setups: none runs setup code)."""
  setups = [""] * len(programs) if setups is None else setups
  if not len(programs) == len(tests) == len(setups):
    raise ValueError(f"got {len(programs)} programs, {len(tests)} test lists and "
                     f"{len(setups)} setups")
  with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as executor:
    return list(executor.map(lambda run: run_tests(run[0], run[1], limits, run[2]),
                             zip(programs, tests, setups)))
