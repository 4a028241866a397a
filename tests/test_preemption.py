"""A preemption notice (SIGTERM) to one host of a two-host `jaxlayer train`.

Ctrl-C and SIGTERM on one process are tested in test_train.py; here two local processes with 2
CPU devices each, joined by `jax.distributed`, train on one 4-device mesh.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

from jaxlayer.assets import TINY_ARITH
from jaxlayer.rl import checkpoint, metrics
from tests import multihost
from tests.multihost import ROOT


def _metrics_steps(run_dir: Path) -> list[int]:
  path = run_dir / metrics.METRICS_FILE
  return [json.loads(line)["step"] for line in path.open()] if path.exists() else []


LATE_LISTING_ON_PROCESS_1 = ("import os; from jaxlayer.rl import checkpoint\n"
                             "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                             "  checkpoint.Checkpointer.latest_step = lambda self: None\n")


def test_a_notice_to_one_host_stops_all_after_one_step_with_a_checkpoint(tmp_path):
  """JAX's preemption service names a step both hosts reach; both save a checkpoint there and
  exit with status 143, as SIGTERM alone would have. The same command resumes from it, and a
  notice to the other host stops it again. There process 1 lists the checkpoints as none (as
  an NFS client may for a minute after another host wrote them): it started anew while
  process 0 resumed, and the two parted ways; now every host resumes process 0's latest."""
  run = tmp_path / "run"
  # The attempts after the first load their compiled programs from the first one's cache.
  args = ["train", "--config", str(ROOT / "configs" / "grpo_arithmetic.py"),
          f"--config.model.path={TINY_ARITH}", f"--config.run_dir={run}",
          "--config.train.layers=layers.1", "--config.train.steps=100000",
          "--config.train.batch_size=8", "--config.train.group_size=4",
          "--config.rollout.max_new_tokens=4", "--config.checkpoint.every=100000",
          "--config.logging.tensorboard=False", "--config.logging.progress=False",
          f"--config.compilation_cache_dir={tmp_path / 'xla_cache'}"]
  stopped_at = []
  for attempt, (notified, setup) in enumerate(((1, ""), (0, LATE_LISTING_ON_PROCESS_1))):
    env = multihost.worker_env(num_processes=2, devices_per_process=2)
    logs = [open(tmp_path / f"attempt{attempt}-{p}.log", "w+") for p in (0, 1)]
    code = f"import sys; from jaxlayer import cli\n{setup}cli.main(sys.argv[1:])"
    workers = [subprocess.Popen(multihost.python_command(code, *args),
                                env={**env, "JAX_PROCESS_ID": str(p)}, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
               for p, log in enumerate(logs)]
    try:
      started = (stopped_at or [0])[-1]
      deadline = time.monotonic() + 300
      while len(_metrics_steps(run)) < started + 2:  # two steps trained in this attempt
        assert all(w.poll() is None for w in workers), "a process ended before its notice"
        assert time.monotonic() < deadline, "no training step within 300 s"
        time.sleep(0.2)
      workers[notified].send_signal(signal.SIGTERM)
      codes = [w.wait(timeout=120) for w in workers]
    finally:
      for w in workers:
        w.kill()
    texts = []
    for log in logs:
      log.seek(0)
      texts.append(log.read())
    assert codes == [143, 143], texts
    steps = _metrics_steps(run)
    assert steps == list(range(1, len(steps) + 1))  # resumed where the last attempt stopped
    assert checkpoint.Checkpointer(run).all_steps() == [*stopped_at, steps[-1]]
    assert (f"stopped by SIGTERM after step {steps[-1]} of 100000, with a checkpoint there"
            in texts[0]), texts[0]
    stopped_at.append(steps[-1])
  assert stopped_at[0] >= 2 and stopped_at[1] >= stopped_at[0] + 2
