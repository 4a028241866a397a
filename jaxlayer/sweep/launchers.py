"""Where a sweep's runs execute: one after another in this process, or as tasks on a Ray cluster.

A launcher is `launch(specs, run_fn, sweep_config) -> iterator of (spec, result)`: it calls
`run_fn(spec)` (train and evaluate one run, return its result dict) for every spec, wherever
it likes, and yields each result as soon as it is in. The runner records each result the
moment it is yielded (an atomic result.json), so resume works the same whichever launcher
ran a sweep, and a sweep may be resumed with another launcher. Adding a launcher is one
function and one line in `LAUNCHERS`.

Ray (`sweep.launcher="ray"`, settings in `sweep.ray`, `default_ray_config`): every run is one
task reserving `num_cpus` CPUs, `num_gpus` GPUs and `num_tpus` of the custom resource "TPU"
(what Ray registers on a TPU VM: its chips). Each task runs in a fresh worker process
(`max_calls=1`), so JAX in one run never holds the accelerator of the next. A run whose worker
process dies (out of memory, a lost node) is run again up to `max_retries` times; an exception
raised by the run itself is not retried (it would fail again). A failed run does not stop the
others: the sweep raises at the end, naming it, and a restart runs only the runs not recorded.

Who writes the results: the driver. A task returns its result (a few kB: scores per problem,
reward curve) and the driver, this process, writes result.json atomically. Only one process ever
writes the sweep's results, nothing depends on a filesystem shared by the nodes, and a worker
killed mid-run leaves nothing half-written in the sweep directory; the price is that a result
still in flight when the driver dies is lost and its run redone on resume (its evaluation alone
where its checkpoint is kept: full RL's, a rung's). (The driver never starts JAX on an
accelerator, so on a TPU VM its chips stay free for the tasks.) Each run's working directory
(sweep_dir/runs/RUN/train: its checkpoints) is written by the worker, at the same absolute path
on its node, and a block or group run's checkpoint is removed there once the run is scored: on a
filesystem shared by the nodes a retried or resumed run continues from its checkpoints;
otherwise full RL's kept checkpoint, and a rung's that successive halving stops the run at, stay
on the node that ran it. Paths in the config (model.path, data files) must exist on every node.

A worker never runs the config file, so whatever the config file registered in this process
(an environment in jaxlayer.envs.ENVS, a task in jaxlayer.tasks.TASKS, an algorithm in
jaxlayer.rl.algorithms.ALGORITHMS and its estimator in jaxlayer.rl.advantages.ADVANTAGE_ESTIMATORS)
would be unknown there: each Ray task carries this process's registries, pickled (a class or
function by reference: its module must be importable on every node), and registers them in the
worker before the run.

When the sweep stops early (an error, Ctrl-C) the runs still in flight are cancelled and
their worker processes killed; a cluster the launcher started itself is shut down (one it
joined is left running, and one this process was already connected to is left connected).
"""

from __future__ import annotations

import numbers
import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ml_collections
from tqdm.auto import tqdm

from jaxlayer import envs, tasks, text
from jaxlayer.rl import advantages, algorithms
from jaxlayer.sweep.store import RunSpec

RunFn = Callable[[RunSpec], dict]
Launcher = Callable[[Sequence[RunSpec], RunFn, Any], Iterator[tuple[RunSpec, dict]]]


def default_ray_config() -> ml_collections.ConfigDict:
  """The sweep.ray section: the cluster and what each run reserves on it."""
  config = ml_collections.ConfigDict()
  # "": RAY_ADDRESS, else the cluster `ray start` made on this machine, else a private local
  # cluster for the sweep's duration; "local": always a private one; "HOST:PORT": that cluster.
  config.address = ""
  config.num_cpus = 1.0  # CPU cores reserved per run
  config.num_gpus = 0.0  # GPUs per run (Ray sets CUDA_VISIBLE_DEVICES, so JAX sees only these)
  config.num_tpus = 0  # TPU chips per run (Ray's custom resource "TPU")
  config.max_retries = 2  # reruns of a run whose worker process died (-1: no limit)
  return config


def local_launcher(specs: Sequence[RunSpec], run_fn: RunFn, sweep_config) -> Iterator:
  """Runs one after another in this process."""
  del sweep_config
  for spec in specs:
    yield spec, run_fn(spec)


def ray_task_options(ray_config) -> dict[str, Any]:
  """sweep.ray -> `ray.remote` options of each run's task; raises ValueError naming a bad key."""
  for key in ("num_cpus", "num_gpus", "num_tpus"):
    value = ray_config[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
      raise ValueError(f"sweep.ray.{key}={value!r}: give a number >= 0 of {key[4:]} per run.")
  retries = ray_config.max_retries
  if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
    raise ValueError(f"sweep.ray.max_retries={retries!r}: give an int >= 0 (-1: no limit).")
  if ray_config.num_cpus + ray_config.num_gpus + ray_config.num_tpus == 0:
    raise ValueError("sweep.ray reserves nothing per run (num_cpus, num_gpus and num_tpus all 0), "
                     "so Ray would start every run at once: reserve at least one CPU, GPU or TPU.")
  options = {"num_cpus": ray_config.num_cpus, "num_gpus": ray_config.num_gpus,
             "max_retries": retries, "max_calls": 1}
  if ray_config.num_tpus:
    options["resources"] = {"TPU": ray_config.num_tpus}
  return options


def import_ray():
  try:
    import ray
  except ImportError as err:
    raise ValueError(f"sweep.launcher='ray' needs Ray, which is not installed ({err}): "
                     "pip install 'jaxlayer[ray]', or use sweep.launcher=local.") from None
  return ray


def check_address_answers(address: str, timeout_s: float = 10.0) -> None:
  """Raises ValueError unless sweep.ray.address (or RAY_ADDRESS, when it is "") is one of Ray's
  words for a cluster found or made here, or a HOST:PORT that accepts connections: ray.init
  would retry an address nobody answers at for about a quarter of an hour."""
  source = "sweep.ray.address" if address else "RAY_ADDRESS"
  address = address or os.environ.get("RAY_ADDRESS", "")
  if address in ("", "local", "auto"):
    return
  host, colon, port = address.removeprefix("ray://").rpartition(":")
  if not (colon and host and port.isdigit()):
    raise ValueError(f"{source}={address!r}: give the head node as HOST:PORT (what `ray start "
                     "--head` printed, e.g. 10.0.0.2:6379), or 'local' for a private cluster.")
  try:
    socket.create_connection((host, int(port)), timeout=timeout_s).close()
  except OSError as err:
    raise ValueError(f"{source}={address!r}: no Ray cluster answers there ({err}); start one "
                     "(`ray start --head`) or use sweep.ray.address=local.") from None


def _connect(ray, address: str) -> None:
  """Joins (or starts) the cluster. ray.init sets a SIGTERM handler of its own, which exits with
  status 15 without a word: a handler this process had (`jaxlayer sweep`'s, which stops the
  sweep as Ctrl-C does) is put back."""
  sigterm = signal.getsignal(signal.SIGTERM)
  try:
    ray.init(address=address or None, log_to_driver=True)
  except ConnectionError as err:
    raise ValueError(f"sweep.ray.address={address!r}: could not join a Ray cluster there ({err}). "
                     "Start one (`ray start --head`); one that `ray start` made with token "
                     "authentication (it says so as it starts) takes a driver only with "
                     "RAY_AUTH_MODE=token set; or use sweep.ray.address=local.") from None
  if callable(sigterm) and signal.getsignal(signal.SIGTERM) is not sigterm:
    signal.signal(signal.SIGTERM, sigterm)


def _check_a_node_fits(ray, options: dict[str, Any]) -> None:
  """Raises ValueError if no live node could ever hold one run (Ray would wait forever)."""
  needed = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options.get("resources", {})}
  needed = {name: amount for name, amount in needed.items() if amount}
  nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
  if not any(all(node.get(name, 0) >= amount for name, amount in needed.items())
             for node in nodes):
    offered = [{k: v for k, v in node.items() if k in ("CPU", "GPU", "TPU")} for node in nodes]
    raise ValueError(f"each run asks Ray for {needed} (sweep.ray), but no node of the cluster "
                     f"has that much: its nodes offer {offered}. Lower sweep.ray.num_cpus / "
                     "num_gpus / num_tpus, or add a node that has them.")


class RunsFailed(RuntimeError):
  """Runs of a Ray sweep failed (each named with its error); the others are recorded."""


def _failure(ray, err: Exception) -> str:
  """A failed run's error in a line: the exception the run raised, else Ray's account of the
  worker's death."""
  if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, Exception):
    return f"{type(err.cause).__name__}: {err.cause}"
  return str(err)


# Registries a config file may add to, which the workers must share: kind of entry -> registry.
REGISTRIES: dict[str, dict[str, Any]] = {
    "environment": envs.ENVS, "task": tasks.TASKS, "algorithm": algorithms.ALGORITHMS,
    "advantage estimator": advantages.ADVANTAGE_ESTIMATORS}

# A registry entry as sent to the workers: (kind, name, the pickled entry).
PickledEntry = tuple[str, str, bytes]


def pickled_registries(ray) -> list[PickledEntry]:
  """Every entry of this process's REGISTRIES, pickled with Ray's cloudpickle."""
  return [(kind, name, ray.cloudpickle.dumps(entry))
          for kind, registry in REGISTRIES.items() for name, entry in registry.items()]


def register_entries(entries: Sequence[PickledEntry]) -> None:
  """Registers `pickled_registries`' entries in this process (a Ray worker); raises ImportError
  naming the entry and the module a worker cannot import."""
  for kind, name, pickled in entries:
    try:
      REGISTRIES[kind][name] = pickle.loads(pickled)
    except (ImportError, AttributeError) as err:
      raise ImportError(
          f"{kind} {name!r}, registered where the sweep was started, cannot be loaded on this Ray "
          f"worker ({type(err).__name__}: {err}): define it in a module of yours (not in the "
          "config file, which workers never run) importable on every node: installed, or its "
          "directory on PYTHONPATH where the node's Ray was started (`ray start`, or the "
          "sweep's own process for a private cluster).") from None


def _run_task(run_fn: RunFn, registry_entries: Sequence[PickledEntry], spec: RunSpec) -> dict:
  """A run in a Ray worker: with the driver's registries, and jaxlayer's warnings in one line as
  `jaxlayer sweep` prints its own (Ray passes the worker's lines on to the driver)."""
  register_entries(registry_entries)
  with text.warnings_in_one_line():
    return run_fn(spec)


def ray_launcher(specs: Sequence[RunSpec], run_fn: RunFn, sweep_config) -> Iterator:
  """Every run as a Ray task (see the module docstring); yields results as they finish."""
  ray = import_ray()
  options = ray_task_options(sweep_config.ray)
  connected_here = not ray.is_initialized()  # else: the caller's cluster, left as it is
  if connected_here:
    _connect(ray, sweep_config.ray.address)
  pending: dict[Any, RunSpec] = {}
  try:
    _check_a_node_fits(ray, options)
    task = ray.remote(**options)(_run_task)
    run_ref, registries_ref = ray.put(run_fn), ray.put(pickled_registries(ray))
    pending = {task.remote(run_ref, registries_ref, spec): spec for spec in specs}
    failures = []
    while pending:
      (ready,), _ = ray.wait(list(pending), num_returns=1)
      spec = pending.pop(ready)
      try:
        result = ray.get(ready)
      except ray.exceptions.RayError as err:
        # (with the run's traceback, as it happened)
        tqdm.write(f"{spec.name} failed: {err}", file=sys.stderr)
        failures.append(f"{spec.name}: {_failure(ray, err)}")
        continue
      yield spec, result
    if failures:
      raise RunsFailed(f"{text.counted(len(failures), 'run')} failed on Ray (the others are "
                       "recorded; once what failed is fixed, running the sweep again runs only "
                       "these):\n" + "\n".join(failures))
  finally:
    for ref in pending:
      ray.cancel(ref, force=True)
    if connected_here:
      ray.shutdown()  # stops a cluster started here; only disconnects from a running one


LAUNCHERS: dict[str, Launcher] = {"local": local_launcher, "ray": ray_launcher}


def get_launcher(sweep_config) -> Launcher:
  """The launcher named by sweep.launcher, its settings checked (before any run starts)."""
  name = sweep_config.launcher
  if name not in LAUNCHERS:
    raise ValueError(f"sweep.launcher={name!r}: choose one of {sorted(LAUNCHERS)}.")
  if name == "ray":
    ray = import_ray()
    ray_task_options(sweep_config.ray)
    if not ray.is_initialized():  # else the runs go to the cluster this process is connected to
      check_address_answers(sweep_config.ray.address)
  return LAUNCHERS[name]
