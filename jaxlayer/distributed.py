"""Several hosts: joining them, the primary process, and moving batches between hosts and devices.

JAX runs one process per host: every process runs the same program, and arrays on a mesh over
all hosts' devices ("global" arrays, `jax.devices()`) are computed by all of them together.
What differs from one process is gathered here:

- `initialize()` joins the processes (`jax.distributed.initialize`) when this one is one of
  several: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID set, a Cloud TPU slice
  of several hosts (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES, MEGASCALE_NUM_SLICES, or the
  TPU VM's metadata, as JAX reads it), or a SLURM job step of several tasks. On one host it does
  nothing. It must run before any JAX computation; the CLI calls it first thing, a library user
  calls it at the top of the program.
- `is_primary()`: process 0, the only one that writes what is written once (metrics, run
  files, results, exported checkpoints); `sync(name)` is the barrier where the others wait.
- `to_host(tree)`: numpy values of arrays that may be spread over several hosts, on every process.
- `local_rows` / `rows_to_global`: which rows of a batch-sharded array this process's devices
  hold, and the global array assembled from every process's own rows.
- `split_work(fn, count)`: host-side work on items 0..count-1 (decoding, grading) split over the
  processes, the results gathered on every process.
- `check_same(arrays, what)`: fails clearly when processes that must agree do not.
- `from_primary(text)`: process 0's text (what it listed in a shared directory) on every
  process.
- `remove_temporary_leftovers(*directories)`: every host removes its own killed writers' files.
- `check_shared_directory(directory, key)`: fails clearly when a directory that every host
  writes into (a run's checkpoints) is not the same one on every host.
- `failing_together(what)`: an error in the block on one process (a model path only some hosts
  have) is raised on every process, instead of leaving the others waiting for it.
- `exit_together(code, message)`: a process leaving on an error that the others may not share
  (a full disk on process 0, a reward function that raises on one host's share) stops them
  too, with the same exit status, through the watcher thread that `initialize` starts; without
  it they would wait for it in their next collective until JAX's shutdown barrier times out
  (5 minutes), then abort.

Functions that gather (`to_host`, `split_work`, `check_same`, `from_primary`,
`remove_temporary_leftovers`, `check_shared_directory`, `failing_together`, `sync`) are
collective: every process must call them, in the same order.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from tqdm.auto import tqdm

from jaxlayer import paths


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "").strip()
  if not value:
    return default
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def _explicit_processes() -> tuple[str, int, int] | None:
  """(coordinator, processes, this process's id) from the JAX_* variables, when they ask for
  several processes."""
  count = _env_int("JAX_NUM_PROCESSES", 1)
  if count <= 1:
    return None
  address = os.environ.get("JAX_COORDINATOR_ADDRESS", "").strip()
  missing = [name for name, value in (("JAX_COORDINATOR_ADDRESS", address),
                                      ("JAX_PROCESS_ID", os.environ.get("JAX_PROCESS_ID", "")))
             if not value.strip()]
  if missing:
    raise ValueError(f"JAX_NUM_PROCESSES={count} asks for a multi-host run, but "
                     f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: set "
                     "JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host) and JAX_PROCESS_ID=0.."
                     f"{count - 1} on every process, or unset JAX_NUM_PROCESSES.")
  process_id = _env_int("JAX_PROCESS_ID", 0)
  if not 0 <= process_id < count:
    raise ValueError(f"JAX_PROCESS_ID={process_id} is outside 0..{count - 1} "
                     f"(JAX_NUM_PROCESSES={count}).")
  return address, count, process_id


def _cloud_tpu_hosts() -> int:
  """Hosts of the Cloud TPU slice (all slices) this process runs on; 1 off Cloud TPU."""
  hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES") or ""
  count = len([h for h in hosts.split(",") if h.strip()]) * _env_int("MEGASCALE_NUM_SLICES", 1)
  if count:
    return count
  try:  # a TPU VM keeps its worker list in its metadata: JAX's own detection reads it there
    from jax._src.clusters.cloud_tpu_cluster import GceTpuCluster
  except ImportError:
    return 1
  return GceTpuCluster.get_process_count() if GceTpuCluster.is_env_present() else 1


def _slurm_tasks() -> int:
  """Tasks of the SLURM job step this process is one of (1 outside a step)."""
  in_step = all(name in os.environ for name in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                                                "SLURM_PROCID", "SLURM_LOCALID"))
  return _env_int("SLURM_NTASKS", 1) if in_step else 1


def initialize(preemption_service: bool = True) -> bool:
  """Joins the processes of a multi-host run; True when this process is one of several.

  Does nothing on one host, or when jax.distributed is already initialised (calling it twice is
  fine). Raises ValueError when the JAX_* variables ask for several processes but are incomplete.
  preemption_service: JAX's, which takes SIGTERM for `reached_preemption_sync_point` (training
  steps); without it SIGTERM stays the process's own.
  """
  if jax.distributed.is_initialized():
    return is_multiprocess()
  jax.config.update("jax_enable_preemption_service", preemption_service)
  explicit = _explicit_processes()
  if explicit is not None:
    address, count, process_id = explicit
    jax.distributed.initialize(address, num_processes=count, process_id=process_id)
  elif _cloud_tpu_hosts() > 1 or _slurm_tasks() > 1:
    jax.distributed.initialize()  # JAX finds the coordinator and this process's id itself
  else:
    return False
  if is_multiprocess():
    _start_failure_watcher()
  return is_multiprocess()


def request_cpu_devices(count: int) -> None:
  """Before JAX starts, asks for `count` CPU devices (jax_num_cpu_devices: a CPU backend has
  one otherwise; other platforms ignore it). Once JAX has started (a notebook, a test), the
  devices it has stay."""
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    pass


def data_parallel_devices(count: int) -> list:
  """`count` devices of this host for a data-parallel mesh (each holds the whole model).

  On a CPU JAX has one device unless told otherwise: before JAX starts, this makes `count`
  CPU devices (jax_num_cpu_devices; other platforms ignore it). Small models then decode
  about 1.5x faster on 2 cores (docs/performance.md)."""
  if count < 1:
    raise ValueError(f"The device count must be >= 1, got {count}.")
  request_cpu_devices(count)
  devices = jax.local_devices()
  if len(devices) < count:
    raise ValueError(
        f"{count} devices asked for, but this host has {len(devices)} ({devices[0].platform}). "
        f"On a CPU, ask before JAX starts or set "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={count}.")
  return devices[:count]


def is_multiprocess() -> bool:
  """True in a run of several processes (jax.distributed initialised, by `initialize` or the
  user). A single process never starts a JAX backend here."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def is_primary() -> bool:
  """True on the process that writes files written once (process 0; the only one on one host)."""
  return not is_multiprocess() or jax.process_index() == 0


def write_once(text: str) -> None:
  """tqdm.write on process 0 only: a line every host would print alike (beside its bars)."""
  if is_primary():
    tqdm.write(text)


def warn_once(text: str) -> None:
  """write_once to stderr, with the progress bars: a warning or a note, never a result (a
  command's results alone go to stdout, for `> FILE` and `| jq`)."""
  if is_primary():
    tqdm.write(text, file=sys.stderr)


def sync(name: str) -> None:
  """Waits until every process has reached the barrier `name` (nothing on one process)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
  """The arrays in `tree` as numpy, on every process: an array spread over several hosts is
  gathered (collective: every process must call it)."""

  def fetch(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)


def _process_of(device) -> int:
  return device.process_index


def local_rows(sharding: NamedSharding, num_rows: int, process: int | None = None) -> np.ndarray:
  """Global indices, ascending, of the rows of a [num_rows, ...] array placed with `sharding`
  (split along its first dimension) that the devices of `process` (default: this one) hold.

  `jax.make_array_from_process_local_data` expects a process's data in this order: its
  shards' rows by position, each block once (devices holding the same block share it).
  """
  process = jax.process_index() if process is None else process
  shape = (num_rows,) + (1,) * (max(len(sharding.spec), 1) - 1)
  blocks = {(index[0].start or 0, num_rows if index[0].stop is None else index[0].stop)
            for device, index in sharding.devices_indices_map(shape).items()
            if _process_of(device) == process}
  if not blocks:
    return np.zeros(0, np.int64)
  return np.concatenate([np.arange(start, stop) for start, stop in sorted(blocks)])


def rows_to_global(local: np.ndarray, sharding: NamedSharding, num_rows: int) -> jax.Array:
  """The global [num_rows, ...] array with `sharding` whose rows `local_rows(sharding, num_rows)`
  are `local` [those rows, ...]: each process supplies only the rows its devices hold."""
  if not is_multiprocess():
    return jax.device_put(local, sharding)
  return jax.make_array_from_process_local_data(sharding, local, (num_rows, *local.shape[1:]))


def work_share(count: int, process: int | None = None,
               processes: int | None = None) -> np.ndarray:
  """The items of 0..count-1 that `process` (default: this one) works on: a contiguous block
  of ceil(count / processes), the last blocks filled up by repeating the last item, so every
  process's results have the same shape and gather into one array."""
  if count < 1:
    raise ValueError(f"count must be >= 1, got {count}.")
  if processes is None:
    processes = jax.process_count() if is_multiprocess() else 1
  process = (jax.process_index() if processes > 1 else 0) if process is None else process
  per_process = -(-count // processes)
  return np.minimum(np.arange(process * per_process, (process + 1) * per_process), count - 1)


def _gather_exact(x: np.ndarray, count: int) -> np.ndarray:
  """Every process's `x` [share, ...] concatenated in process order, trimmed to `count` rows;
  sent as bytes, so float64 and int64 survive (JAX computes in 32 bits by default)."""
  x = np.ascontiguousarray(x)
  as_bytes = x.reshape(len(x), -1).view(np.uint8)  # [share, bytes per row]
  gathered = np.asarray(multihost_utils.process_allgather(as_bytes, tiled=True))
  return gathered.view(x.dtype).reshape(-1, *x.shape[1:])[:count]


def split_work(fn: Callable[[np.ndarray], Any], count: int) -> Any:
  """fn(indices) -> a pytree of arrays with one row per index, run on this process's
  `work_share` of 0..count-1; returns the pytree of all `count` rows, in order, on every
  process (collective). On one process: fn(all indices)."""
  indices = work_share(count)
  result = jax.tree.map(np.asarray, fn(indices))
  if not is_multiprocess():
    return jax.tree.map(lambda x: x[:count], result)
  return jax.tree.map(lambda x: _gather_exact(x, count), result)


def check_same(arrays: Sequence[np.ndarray], what: str, hint: str = "") -> None:
  """Raises ValueError naming `what` (and the `hint` on what to do) when the arrays differ
  between processes (their shapes, dtypes or values); nothing on one process. Collective."""
  if not is_multiprocess():
    return
  digest = hashlib.sha256()
  for x in arrays:
    x = np.ascontiguousarray(x)
    digest.update(f"{x.dtype}{x.shape}".encode())
    digest.update(x.tobytes())
  mine = np.frombuffer(digest.digest(), np.uint8)[None]  # [1, 32]
  every = _gather_exact(mine, jax.process_count())  # [processes, 32]
  differing = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
  if differing:
    raise ValueError(f"{what} differ between processes (process 0 and process(es) "
                     f"{differing}), but every process must compute the same ones. {hint}")


def from_primary(text: str) -> str:
  """Process 0's `text`, on every process (each passes its own; the others' are not used), for
  what process 0 decides for all: what a listing of a shared directory says, which another
  host's NFS client may show late (a sweep's directory, its results, a run's checkpoints).
  Collective."""
  if not is_multiprocess():
    return text
  sent = np.frombuffer(text.encode(), np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(sent))))
  if not is_primary():
    sent = np.zeros(size, np.uint8)
  return bytes(multihost_utils.broadcast_one_to_all(sent)).decode()


def remove_temporary_leftovers(*directories: Path) -> None:
  """paths.remove_temporary_leftovers of each directory, on every host: the temporary files of
  writers killed there, which only their own host can tell ended (a killed run's process 0 may
  have been another host than this run's). Called under the lock of the directory that holds
  them, so no other run writes there; the processes wait for each other, so that none removes
  while this run's process 0 writes. Collective."""
  for directory in directories:
    paths.remove_temporary_leftovers(directory)
  sync("jaxlayer: temporary leftovers removed")


SHARED_MARK = ".jaxlayer-hosts"  # written by process 0 for the others to read, then removed
# How long the others look for it: an NFS client caches a directory's attributes (and that a
# name was missing) for 30 s by default (acdirmin), so it may show a new file late.
SHARED_WAIT_S = 30.0


def sees_in_time(condition: Callable[[], bool]) -> bool:
  """Whether `condition()` (this host sees a file that another host wrote) holds within
  SHARED_WAIT_S, looking again and again: an NFS client may show a new file late."""
  return _wait_for(condition, SHARED_WAIT_S)


def check_shared_directory(directory: str | os.PathLike, key: str) -> None:
  """Raises ValueError on every process when `directory` is not one directory that every host
  sees (say, a relative path on each host's own disk): Orbax writes a checkpoint's shards from
  the hosts that hold them and process 0 commits them, so each host would keep a part. Process
  0 writes a random token there, the others read it; a directory it made for that goes again
  when the check fails. Nothing on one process. Collective."""
  if not is_multiprocess():
    return
  with failing_together(f"Checking {key}"):
    paths.local_path(directory, key)  # a file or a broken link: named, not a FileExistsError
  given, directory = os.fspath(directory), os.path.abspath(directory)
  mark = os.path.join(directory, SHARED_MARK)
  token = bytes(multihost_utils.broadcast_one_to_all(
      np.frombuffer(os.urandom(16), np.uint8))).hex()  # process 0's
  made = is_primary() and not os.path.lexists(directory)
  if is_primary():
    os.makedirs(directory, exist_ok=True)
    with open(mark, "w") as f:
      f.write(token)
  sync("jaxlayer: shared-directory mark written")

  def reads_token() -> bool:
    try:
      with open(mark) as f:
        return f.read() == token
    except OSError:
      return False

  sees = reads_token() if is_primary() else sees_in_time(reads_token)
  every = _gather_exact(np.array([[sees]], np.uint8), jax.process_count())[:, 0]
  if is_primary():
    os.remove(mark)
  blind = [p for p in range(len(every)) if not every[p]]
  if blind:
    if made:
      with contextlib.suppress(OSError):  # (not empty: another process wrote there)
        os.rmdir(directory)
    raise ValueError(
        f"{key}={given!r} is not one directory that every host sees: process(es) {blind} could "
        "not read what process 0 wrote there. Every host writes its part of each checkpoint "
        f"into it: give {key} as a directory that all hosts mount (NFS, such as Filestore), by "
        "an absolute path.")


MESSAGE_BYTES = 2000  # of an error's message sent to the other processes


@contextlib.contextmanager
def failing_together(what: str) -> Iterator[None]:
  """Runs the block on every process; when it raises on any of them, every process raises:
  the failing ones their own error, the others a ValueError naming them and the first one's
  message. For blocks that read what each host has (paths, files) and run no collective
  (a process that failed would not reach it). Nothing on one process. Collective."""
  if not is_multiprocess():
    yield
    return
  error = None
  try:
    yield
  except Exception as err:  # raised below, once every process knows
    error = err
  message = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES]
  mine = np.zeros((1, 1 + MESSAGE_BYTES), np.uint8)  # [1, failed flag + message]
  mine[0, 0] = error is not None
  mine[0, 1:1 + len(message)] = np.frombuffer(message, np.uint8)
  every = _gather_exact(mine, jax.process_count())
  if error is not None:
    raise error
  failed = [p for p in range(len(every)) if every[p, 0]]
  if failed:
    first = bytes(every[failed[0], 1:]).rstrip(b"\0").decode(errors="replace")
    raise ValueError(f"{what} failed on process(es) {failed} of {len(every)}, so every process "
                     f"stops; process {failed[0]}: {first}")


# Keys in JAX's coordination service (a key-value store that every process reaches) through
# which the processes of a run leave together on a failure.
FAILED_KEY = "jaxlayer/failed"  # "PROCESS CODE MESSAGE" of the first process to fail
LEAVING_KEY = "jaxlayer/leaving"  # processes leaving on a failure, their own or another's
STOPPED_KEY = "jaxlayer/stopped"  # of those, the ones the watcher stopped
GONE_KEY = "jaxlayer/gone"  # processes other than 0 exiting at once
# How long a process has, once another failed, to fail on its own (the same error everywhere,
# a SIGTERM that every host obeys after the same step) before the watcher stops it.
STOP_GRACE_S = 10.0
_POLL_S = 0.5  # between two looks at the keys
_leaving = threading.Lock()  # taken by whichever of the main thread and the watcher ends it
_watcher_done = threading.Event()


def _client():
  from jax._src import distributed as jax_distributed

  return jax_distributed.global_state.client


def _count(key: str) -> int:
  return _client().key_value_increment(key, 0)


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
  deadline = time.monotonic() + timeout_s
  while not condition() and time.monotonic() < deadline:
    time.sleep(_POLL_S)
  return condition()


def _exit_now(code: int) -> None:
  """Ends this process with `code`, skipping JAX's shutdown barrier (a process that was stopped
  never reaches it). Process 0 runs the coordination service: it goes last."""
  sys.stdout.flush()
  sys.stderr.flush()
  if jax.process_index() == 0:
    _wait_for(lambda: _count(GONE_KEY) == jax.process_count() - 1, STOP_GRACE_S)
  else:
    _client().key_value_increment(GONE_KEY, 1)
  os._exit(code)


def exit_together(code: int, message: str) -> None:
  """For a process of a multi-host run leaving on an error (exit status `code`; `message`, one
  line, names it): tells the others and waits for them. Returns when every process failed on
  its own (they exit as usual, through JAX's shutdown barrier); else the watcher stops the
  others after STOP_GRACE_S, and this process ends with `code` here. Nothing on one process."""
  if not is_multiprocess():
    return
  if not _leaving.acquire(blocking=False):  # the watcher is ending this process
    threading.Event().wait()
  client = _client()
  try:
    client.key_value_set(FAILED_KEY, f"{jax.process_index()} {code} {message}")
  except jax.errors.JaxRuntimeError:  # another process failed first
    pass
  client.key_value_increment(LEAVING_KEY, 1)
  everyone = _wait_for(lambda: _count(LEAVING_KEY) == jax.process_count(), 3 * STOP_GRACE_S)
  if everyone and _count(STOPPED_KEY) == 0:
    return
  _exit_now(code)


def _watch_for_failures() -> None:
  """Stops this process, with the failed one's exit status, when another process failed and
  this one has not failed as well within STOP_GRACE_S (it would wait for the failed one)."""
  client = _client()
  while not _watcher_done.wait(_POLL_S):
    try:
      failure = client.key_value_try_get(FAILED_KEY)
    except jax.errors.JaxRuntimeError:  # no failure yet
      continue
    if _watcher_done.wait(STOP_GRACE_S) or not _leaving.acquire(blocking=False):
      return  # this process ended, or is leaving on its own error
    process, code, message = failure.split(" ", 2)
    print(f"jaxlayer: process {process} stopped on an error ({message}), so process "
          f"{jax.process_index()} stops too, instead of waiting for it.", file=sys.stderr)
    client.key_value_increment(STOPPED_KEY, 1)
    client.key_value_increment(LEAVING_KEY, 1)
    _exit_now(int(code))


def _start_failure_watcher() -> None:
  watcher = threading.Thread(target=_watch_for_failures, name="jaxlayer-failure-watcher",
                             daemon=True)
  watcher.start()

  def stop_watching():
    _watcher_done.set()
    watcher.join(timeout=1.0)

  # Registered after JAX's own exit handler, so it runs first: the watcher stops polling
  # before JAX shuts its client down.
  atexit.register(stop_watching)
