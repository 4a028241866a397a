"""Local multi-host runs for the tests: several Python processes joined by `jax.distributed`."""

import os
import socket
from pathlib import Path

from tests.conftest import TEST_XLA_FLAGS

ROOT = Path(__file__).parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def worker_env(num_processes: int, devices_per_process: int) -> dict[str, str]:
  """The environment of a process of such a run (JAX_PROCESS_ID is the caller's to add): this
  one's without its JAX and XLA settings, a fresh coordinator port when there are several. Its
  devices are CPU devices on any machine (processes cannot share a GPU's)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process} "
             + TEST_XLA_FLAGS, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
             JAX_PLATFORMS="cpu")  # hosts of CPU devices, also on a GPU machine
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{free_port()}",
               JAX_NUM_PROCESSES=str(num_processes))
  return env
