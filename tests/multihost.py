"""Local multi-host runs for the tests: several Python processes joined by `jax.distributed`."""

import os
import socket
import sys
from pathlib import Path

from tests.conftest import TEST_XLA_FLAGS

ROOT = Path(__file__).parents[1]

# The hosts have no PyTorch, as TPU VMs (jaxlayer needs none): transformers then does not import
# it, which saves each process ~1.5 s of CPU time.
WITHOUT_TORCH = ("import importlib.util\n"
                 "find_spec = importlib.util.find_spec\n"
                 "importlib.util.find_spec = lambda name, *args: (\n"
                 "    None if name == 'torch' else find_spec(name, *args))\n")


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


def python_command(code: str, *args: str) -> list[str]:
  """The command line of a host that runs the Python statements `code` with sys.argv[1:] `args`,
  on a host without PyTorch."""
  return [sys.executable, "-c", WITHOUT_TORCH + code, *args]
