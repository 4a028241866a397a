"""Multi-host: joining the hosts, per-process rows, and two real local processes against one.

The two-process test starts two Python processes with 2 CPU devices each, joined by
`jax.distributed` (gloo collectives), that run a small `jaxlayer sweep`, then `export` and
`eval` of its trained run, on one 4-device mesh spread over both, and compares what they write
with one process holding all 4. (A preemption notice to one of two hosts: test_preemption.py.)
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from safetensors import safe_open

from jaxlayer import distributed, models
from jaxlayer.assets import TINY_ARITH
from jaxlayer.rl import checkpoint, metrics
from tests import multihost
from tests.multihost import ROOT


@pytest.fixture
def two_fake_processes(monkeypatch):
  """Devices 0-3 belong to process 0 and devices 4-7 to process 1."""
  monkeypatch.setattr(distributed, "_process_of", lambda device: device.id // 4)


@pytest.mark.eight_devices
@pytest.mark.parametrize("data,fsdp,tensor,expected", [
    (1, 8, 1, [np.arange(0, 8), np.arange(8, 16)]),  # rows split over all 8 devices
    (2, 4, 1, [np.arange(0, 8), np.arange(8, 16)]),  # one data slice per process
    (1, 2, 4, [np.arange(0, 8), np.arange(8, 16)]),  # tensor axis inside a process
    (1, 4, 2, [np.arange(0, 8), np.arange(8, 16)]),  # tensor axis inside a process
])
def test_local_rows_are_the_rows_the_process_devices_hold(two_fake_processes, data, fsdp, tensor,
                                                          expected):
  mesh = models.make_mesh(data, fsdp, tensor)
  sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  got = [distributed.local_rows(sharding, 16, process) for process in (0, 1)]
  for rows, want in zip(got, expected):
    np.testing.assert_array_equal(rows, want)
  # Whatever the mesh, the rows each device holds are among its process's rows.
  for device, index in sharding.devices_indices_map((16,)).items():
    held = np.arange(16)[index[0]]
    assert set(held) <= set(got[device.id // 4])


@pytest.mark.eight_devices
def test_local_rows_of_a_batch_replicated_over_processes(two_fake_processes):
  # A batch split over 'fsdp' only, with the processes along 'data': each holds every row.
  mesh = models.make_mesh(2, 4, 1)
  sharding = NamedSharding(mesh, PartitionSpec("fsdp"))
  for process in (0, 1):
    np.testing.assert_array_equal(distributed.local_rows(sharding, 8, process), np.arange(8))


@pytest.mark.parametrize("count,processes", [(10, 3), (3, 4), (8, 2), (1, 1)])
def test_work_share_covers_every_item_in_equal_blocks(count, processes):
  shares = [distributed.work_share(count, p, processes) for p in range(processes)]
  assert len({len(s) for s in shares}) == 1  # equal shapes, so they gather into one array
  together = np.concatenate(shares)
  np.testing.assert_array_equal(together[:count], np.arange(count))  # in order, each once
  assert (together[count:] == count - 1).all()  # the filler repeats the last item


def test_split_work_on_one_process_is_the_function_on_all_items():
  result = distributed.split_work(lambda rows: {"x": rows * 2.0, "y": [rows]}, 5)
  np.testing.assert_array_equal(result["x"], np.arange(5) * 2.0)
  np.testing.assert_array_equal(result["y"][0], np.arange(5))


def test_one_host_is_not_joined_and_is_primary(monkeypatch):
  for name in ("JAX_NUM_PROCESSES", "JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID",
               "TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_cloud_tpu_hosts", lambda: 1)
  assert distributed.initialize() is False
  assert not jax.distributed.is_initialized()
  assert distributed.is_primary() and not distributed.is_multiprocess()
  distributed.check_same([np.arange(3)], "anything")  # nothing to compare with
  distributed.sync("a barrier of one")


@pytest.mark.parametrize("env,message", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS is not set"),
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID are not set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID=2 is outside 0..1"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_incomplete_host_variables_are_named(monkeypatch, env, message):
  for name in ("JAX_NUM_PROCESSES", "JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=message):
    distributed.initialize()
  assert not jax.distributed.is_initialized()


def test_cli_reports_incomplete_host_variables(monkeypatch, tiny_qwen2_dir):
  from jaxlayer import cli

  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(SystemExit, match="jaxlayer: JAX_NUM_PROCESSES=2 asks for a multi-host run"):
    cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", "1+1="])


# The two-process run and its single-process reference: a sweep of block 1 (base, full RL,
# block 1) on the shipped tiny model (it answers a third of the problems, so groups carry a
# real learning signal), each run 2 steps of 32 responses on the arithmetic task with KL (the
# reference log-probs path, whose micro-batches of 4 groups give each device one, so it runs
# each prompt once), checkpointed and kept; then `export` and `eval` of its block-1 run. The
# default mesh (fsdp over all 4 devices) splits parameters and batches across the processes.
# One sweep covers what a separate `train` would, and `eval` reuses the programs the sweep
# compiled, which keeps this test a few minutes long.
OVERRIDES = ["--config.sweep.layers=1", "--config.sweep.keep_checkpoints=True",
             "--config.train.steps=2", "--config.train.batch_size=32",
             "--config.train.group_size=4", "--config.train.mini_batch_size=16",
             "--config.train.learning_rate=1e-3", "--config.train.kl_beta=0.01",
             "--config.rollout.max_new_tokens=4", "--config.checkpoint.every=1",
             "--config.logging.tensorboard=False", "--config.logging.progress=False",
             "--config.eval.num_problems=8", "--config.eval.num_samples=2",
             "--config.eval.max_new_tokens=3"]
SWEEP_CONFIG = ROOT / "configs" / "sweep_tiny.py"
TRAINED_RUN = Path("sweep", "runs", "layer01-seed0", "train")  # block 1's run in the sweep

WORKER = f"""
import sys
import time
from jaxlayer import cli
work, chunk = sys.argv[1:3]
overrides = sys.argv[3:]
cli.main(["sweep", "--config", "{SWEEP_CONFIG}", f"--config.sweep.dir={{work}}/sweep",
          f"--config.rollout.prompts_per_call={{chunk}}", *overrides])
run = f"{{work}}/{TRAINED_RUN}"
cli.main(["export", "--run", run, "--out", f"{{work}}/hf"])
cli.main(["eval", "--config", "{SWEEP_CONFIG}", "--model", run, "--out", f"{{work}}/eval",
          *[o for o in overrides if o.startswith("--config.eval.")]])
"""


def _run_workers(tmp_path, model_dir, num_processes, devices_per_process, chunk) -> Path:
  """Runs WORKER in num_processes joined processes; returns the directory it wrote to."""
  work = tmp_path / f"{num_processes}proc"
  args = multihost.python_command(WORKER, str(work), str(chunk),
                                  f"--config.model.path={model_dir}", *OVERRIDES)
  env = multihost.worker_env(num_processes, devices_per_process)
  logs = [open(tmp_path / f"{num_processes}proc-{p}.log", "w+") for p in range(num_processes)]
  workers = [subprocess.Popen(args, env={**env, "JAX_PROCESS_ID": str(p)}, cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT)
             for p, log in enumerate(logs)]
  try:
    codes = [w.wait(timeout=600) for w in workers]
  finally:
    for w in workers:
      w.kill()
  for p, (code, log) in enumerate(zip(codes, logs)):
    log.seek(0)
    assert code == 0, f"process {p} of {num_processes} failed:\n{log.read()[-5000:]}"
  return work


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("distributed")
  return (_run_workers(tmp_path, TINY_ARITH, 1, 4, chunk=0),
          _run_workers(tmp_path, TINY_ARITH, 2, 2, chunk=3))


def _trained_params(run_dir):
  model, _ = checkpoint.load_trained_model(run_dir)
  return {k: np.asarray(v) for k, v in models.named_params(model).items()}


def test_two_processes_train_like_one(one_and_two_processes):
  one, two = one_and_two_processes
  rows_one, rows_two = (metrics.read_metrics(work / TRAINED_RUN) for work in (one, two))
  assert [r["step"] for r in rows_two] == [1, 2]  # written once, by process 0
  assert all(r["groups_with_signal"] > 0 for r in rows_one)  # real gradients, not round-off
  for a, b in zip(rows_one, rows_two):
    # The same samples (every process draws every row's random stream) and rewards...
    assert a["reward"] == b["reward"] and a["response_length"] == b["response_length"]
    # ... and the same updates, up to the order of the cross-process sums.
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b["kl"], a["kl"], rtol=1e-3, atol=1e-6)
  assert checkpoint.Checkpointer(two / TRAINED_RUN).all_steps() == [1, 2]
  trained_one, trained_two = (_trained_params(work / TRAINED_RUN) for work in (one, two))
  base = {k: np.asarray(v)
          for k, v in models.named_params(models.from_pretrained(TINY_ARITH)[0]).items()}
  for path in base:
    if path.startswith("layers.1."):
      # Equal updates up to summation order. Adam divides by the gradient's own scale, so the
      # round-off of near-zero gradient entries can move a few weights visibly: compare the
      # difference with the update itself, typically and at worst. The key bias's gradient is
      # a sum of terms that nearly cancel (each query's score gradients sum to zero; only
      # RoPE's rotation keeps it from vanishing), so round-off is a larger share of it.
      moved, differ = (np.abs(trained_one[path] - base[path]),
                       np.abs(trained_two[path] - trained_one[path]))
      assert moved.max() > 0, path
      typical = 1e-2 if path.endswith("k_proj.bias") else 1e-3
      assert differ.mean() <= typical * moved.mean(), path
      assert differ.max() <= 0.05 * moved.max(), path
    else:
      np.testing.assert_array_equal(trained_two[path], base[path], err_msg=path)
      np.testing.assert_array_equal(trained_one[path], base[path], err_msg=path)
  samples_one, samples_two = ([json.loads(line) for line in (work / TRAINED_RUN /
                                                           metrics.SAMPLES_FILE).open()]
                              for work in (one, two))
  assert sorted({s["step"] for s in samples_two}) == [1, 2]
  assert len(samples_two) == len(samples_one)


def test_two_processes_export_and_evaluate_like_one(one_and_two_processes):
  one, two = one_and_two_processes
  exported = {k: np.asarray(v)
              for k, v in models.named_params(models.from_pretrained(two / "hf")[0]).items()}
  for path, value in _trained_params(two / TRAINED_RUN).items():
    np.testing.assert_array_equal(exported[path], value, err_msg=path)
  assert not list((two / "hf").glob(".jaxlayer-*"))  # no staging directory, nor lock, left
  report_one = json.loads((one / "eval" / "eval.json").read_text())
  report_two = json.loads((two / "eval" / "eval.json").read_text())
  assert report_two["tasks"]["arithmetic"]["num_problems"] == 8
  for metric, value in report_one["tasks"]["arithmetic"]["scores"].items():
    assert report_two["tasks"]["arithmetic"]["scores"][metric] == pytest.approx(value, abs=1e-6)


def test_two_processes_sweep_like_one(one_and_two_processes):
  one, two = one_and_two_processes
  sweeps = [json.loads((work / "sweep" / "sweep.json").read_text()) for work in (one, two)]
  for sweep in sweeps:
    assert [row["layer"] for row in sweep["layers"]] == [1]
  assert sweeps[1]["s_base"] == sweeps[0]["s_base"]
  assert sweeps[1]["s_full"] == pytest.approx(sweeps[0]["s_full"], abs=1e-9)
  assert sweeps[1]["layers"][0]["score"] == pytest.approx(sweeps[0]["layers"][0]["score"],
                                                          abs=1e-9)
  # What the runs cost: the trained parameters are the checkpoint file's (whole arrays, so the
  # same on one host or two), as is the optimizer state. (The memory per device differs: the
  # two runs generate in chunks of different sizes.)
  with safe_open(Path(TINY_ARITH) / "model.safetensors", "np") as f:
    sizes = {name: math.prod(f.get_slice(name).get_shape()) for name in f.keys()}
  costs = [(sweep["full_cost"], sweep["layers"][0]["cost"]) for sweep in sweeps]
  assert costs[0][0]["trained_params"] == sum(sizes.values())
  assert costs[0][1]["trained_params"] == sum(
      size for name, size in sizes.items() if name.startswith("model.layers.1."))
  for key in ("trained_params", "optimizer_state_bytes"):
    assert [cost[key] for cost in costs[1]] == [cost[key] for cost in costs[0]], key
  for full, block in costs:
    assert block["memory_per_device_bytes"] < full["memory_per_device_bytes"]
    assert full["seconds_per_step"] > 0 and block["seconds_per_step"] > 0
  written = sorted(str(p.relative_to(two / "sweep"))
                   for p in (two / "sweep").rglob("*") if p.is_file())
  for name in ("manifest.json", "sweep.json", "report.md", "contribution.png",
               "runs/base-seed0/result.json", "runs/full-seed0/result.json",
               "runs/layer01-seed0/result.json"):
    assert name in written, written
  assert not [name for name in written if ".tmp" in name]  # no half-written file left
  # One progress bar and one summary for all hosts: process 0 shows them, process 1 does not.
  logs = [(two.parent / f"2proc-{p}.log").read_text() for p in (0, 1)]
  shown_once = ["sweep:", "layer01-seed0: pass@1", "contribution plot:", "eval arithmetic",
                f"wrote {two / 'hf'}", "arithmetic (8 problems): pass@1", "written: "]
  assert [text for text in shown_once if text not in logs[0]] == [], logs[0]
  assert [text for text in shown_once if text in logs[1]] == [], logs[1]


def _two_homes(tmp_path) -> list[Path]:
  homes = [tmp_path / f"host{p}" for p in (0, 1)]
  for home in homes:
    home.mkdir()
  return homes


def _run_in_homes(homes: list[Path], argv: list[str], setup: str = "",
                  status: int = 1) -> list[str]:
  """`jaxlayer ARGV` in two joined processes, each in its own working directory (as two hosts
  with their own disks), after the Python statements `setup`; each must exit with `status`.
  Returns their outputs."""
  code = ("import sys; from jaxlayer import cli, distributed\n"
          "distributed.SHARED_WAIT_S = 1.0\n"  # not NFS: no need to wait
          f"{setup}\ncli.main(sys.argv[1:])")
  env = multihost.worker_env(num_processes=2, devices_per_process=2)
  workers = [subprocess.Popen(multihost.python_command(code, *argv),
                              env={**env, "JAX_PROCESS_ID": str(p)}, cwd=home,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p, home in enumerate(homes)]
  try:
    outputs = [w.communicate(timeout=300)[0] for w in workers]
  finally:
    for w in workers:
      w.kill()
  for worker, output in zip(workers, outputs):
    assert worker.returncode == status, output
  return outputs


def _sweep_argv(sweep_dir: Path, *overrides: str) -> list[str]:
  """`jaxlayer sweep` of block 1 on the tiny model, one RL step a run."""
  return ["sweep", "--config", str(SWEEP_CONFIG), f"--config.model.path={TINY_ARITH}",
          f"--config.sweep.dir={sweep_dir}", "--config.sweep.layers=1",
          "--config.train.steps=1", "--config.eval.num_problems=8", *overrides]


def test_sigterm_to_one_host_stops_a_command_without_training_steps(tmp_path):
  """`jaxlayer generate` (as eval and export) on two hosts: JAX's preemption service held a
  SIGTERM for a training step that never comes, and the command went on. Now the host that
  gets it stops with status 143, and the other with it."""
  setup = ("import os, pathlib, time; from jaxlayer import sampling\n"
           "distributed.STOP_GRACE_S = 1.0\n"
           "def generate(*args, **kwargs):\n"
           "  pathlib.Path('generating').touch()\n"
           "  for _ in range(1200):\n"
           "    time.sleep(0.1)\n"
           "sampling.generate = generate")
  code = ("import sys; from jaxlayer import cli, distributed\n"
          f"{setup}\ncli.main(sys.argv[1:])")
  homes = _two_homes(tmp_path)
  env = multihost.worker_env(num_processes=2, devices_per_process=2)
  workers = [subprocess.Popen(multihost.python_command(code, "generate", "--model",
                                                      str(TINY_ARITH), "--prompt", "12+34="),
                              env={**env, "JAX_PROCESS_ID": str(p)}, cwd=home,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p, home in enumerate(homes)]
  try:
    deadline = time.monotonic() + 120
    while not all((home / "generating").exists() for home in homes):
      assert all(w.poll() is None for w in workers), "a process ended before generating"
      assert time.monotonic() < deadline, "not generating within 120 s"
      time.sleep(0.2)
    workers[1].send_signal(signal.SIGTERM)
    outputs = [w.communicate(timeout=60)[0] for w in workers]
  finally:
    for w in workers:
      w.kill()
  assert [w.returncode for w in workers] == [143, 143], outputs
  assert "jaxlayer: stopped by SIGTERM" in outputs[1], outputs[1]
  assert "process 1 stopped on an error" in outputs[0], outputs[0]


@pytest.mark.parametrize("command,config,key,made_before", [
    ("train", "grpo_arithmetic.py", "run_dir", False),
    ("sweep", "sweep_tiny.py", "sweep.dir", False),
    ("train", "grpo_arithmetic.py", "run_dir", True)])
def test_a_run_dir_that_is_not_shared_by_the_hosts_is_refused_on_every_host(
    tmp_path, command, config, key, made_before):
  """Each process in its own working directory with a relative run_dir (sweep.dir): two
  directories, as with a path on each host's own disk. Every host would keep its part of each
  checkpoint, so both refuse before training, naming the host that could not see process 0's
  directory, and leave nothing there (a sweep wrote its manifest.json first; the check left the
  empty directory it made). A directory that was there stays."""
  homes = _two_homes(tmp_path)
  if made_before:
    (homes[0] / "run").mkdir()
  outputs = _run_in_homes(homes, [command, "--config", str(ROOT / "configs" / config),
                                  f"--config.model.path={TINY_ARITH}", f"--config.{key}=run",
                                  "--config.train.steps=1"])
  for output in outputs:
    assert (f"jaxlayer {command}: {key}='run' is not one directory that every host sees: "
            "process(es) [1] could not read what process 0 wrote there") in output, output
  if made_before:  # as it was: nothing trained or left
    assert sorted(p.name for p in (homes[0] / "run").iterdir()) == []
  else:
    assert not (homes[0] / "run").exists()
  assert not (homes[1] / "run").exists()


def test_a_run_dir_in_use_stops_every_host_with_the_error(tmp_path, held_by_another_process):
  """Only process 0 takes the run directory's lock. When another process holds it, process 1
  stops with process 0's error too, instead of going on to wait for process 0 in the next
  collective (a gloo timeout on CPU, longer on a TPU)."""
  run_dir = tmp_path / "run"
  holder = held_by_another_process(run_dir)
  outputs = _run_in_homes(_two_homes(tmp_path), [
      "train", "--config", str(ROOT / "configs" / "grpo_arithmetic.py"),
      f"--config.model.path={TINY_ARITH}", f"--config.run_dir={run_dir}",
      "--config.train.steps=1"])
  in_use = (f"{run_dir} is in use: jaxlayer process {holder.pid} on {socket.gethostname()} is "
            "writing there")
  assert f"jaxlayer train: {in_use}" in outputs[0], outputs[0]
  stopped = (f"jaxlayer train: Taking run_dir={str(run_dir)!r} failed on process(es) [0] of 2, "
             f"so every process stops; process 0: DirectoryInUseError: {in_use}")
  assert stopped in outputs[1], outputs[1]
  assert sorted(p.name for p in run_dir.iterdir()) == [".jaxlayer.lock"]


def test_a_model_only_one_host_has_stops_every_host_with_the_error(tmp_path):
  """model.path relative to each process's own working directory, and only process 0's holds
  the model: process 1 fails to find it, and process 0, instead of waiting for process 1 in
  its next collective (a gloo timeout after 30 s on CPU, longer on a TPU), stops as well,
  saying which process failed and why."""
  homes = _two_homes(tmp_path)
  shutil.copytree(TINY_ARITH, homes[0] / "model")
  outputs = _run_in_homes(homes, ["train", "--config",
                                  str(ROOT / "configs" / "grpo_arithmetic.py"),
                                  "--config.model.path=model", f"--config.run_dir={tmp_path}/run",
                                  "--config.train.steps=1"])
  missing = "FileNotFoundError: Model directory 'model' does not exist."
  assert "jaxlayer train: Model directory 'model' does not exist." in outputs[1], outputs[1]
  assert ("jaxlayer train: Checking the run's settings failed on process(es) [1] of 2, so every "
          f"process stops; process 1: {missing}") in outputs[0], outputs[0]
  assert not (tmp_path / "run").exists()


def test_a_finished_runs_check_stops_every_host_when_one_fails_before_it(tmp_path):
  """train.layers=top1@SWEEP_DIR whose sweep is gone, of a finished run: process 0 went on to
  list the run's checkpoints, a collective, while process 1, which had failed before it (its
  selection), waited for the others to say how they fared: a collective mismatch (gloo aborted
  both processes on CPU; a hang on a TPU). Now the listing is each host's own, and every host
  stops with process 1's error."""
  run = tmp_path / "run"
  hidden = json.loads((Path(TINY_ARITH) / "config.json").read_text())["hidden_size"]
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 1, "every": 1}})
  checkpoint.write_run_files(run, config, str(TINY_ARITH), {"final_norm.scale": (hidden,)},
                             learning_rates={"final_norm.scale": 1e-5})
  saver = checkpoint.Checkpointer(run)
  saver.save(1, {"final_norm.scale": jnp.ones((hidden,))},
             {"opt_state": {"count": jnp.zeros((), jnp.int32)}, "rng": jax.random.PRNGKey(0)},
             {"step": 1})
  saver.close()
  process_1_fails = ("import os; from jaxlayer.rl import selection\n"
                     "def resolve(*args, **kwargs): raise ValueError('no ranking here')\n"
                     "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                     "  selection.resolve = resolve\n")
  outputs = _run_in_homes(_two_homes(tmp_path), [
      "train", "--config", str(ROOT / "configs" / "grpo_arithmetic.py"),
      f"--config.model.path={TINY_ARITH}", f"--config.run_dir={run}", "--config.train.steps=1",
      f"--config.train.layers=top1@{tmp_path / 'gone'}"], process_1_fails)
  assert "jaxlayer train: no ranking here" in outputs[1], outputs[1]
  assert ("jaxlayer train: Checking the run's settings failed on process(es) [1] of 2, so every "
          "process stops; process 1: ValueError: no ranking here") in outputs[0], outputs[0]


def test_a_run_that_fails_before_writing_leaves_no_run_directory_on_several_hosts(tmp_path):
  """The hosts' check of run_dir made the directory before the run's lock did, so a run that
  then failed before writing anything (here its tokenizer fails to load) left it empty."""
  setup = ("from jaxlayer import models\n"
           "def load_tokenizer(*args, **kwargs): raise ValueError('the tokenizer is damaged')\n"
           "models.load_tokenizer = load_tokenizer")
  outputs = _run_in_homes(_two_homes(tmp_path), [
      "train", "--config", str(ROOT / "configs" / "grpo_arithmetic.py"),
      f"--config.model.path={TINY_ARITH}", f"--config.run_dir={tmp_path}/run",
      "--config.train.steps=1"], setup)
  for output in outputs:
    assert "jaxlayer train: the tokenizer is damaged" in output, output
  assert not (tmp_path / "run").exists()


def test_a_sweep_run_that_fails_before_writing_leaves_no_run_directory_on_several_hosts(
    tmp_path):
  """Every process made the run's directories, and process 0 removed them after a failure only
  if it had made them: here process 1 comes first (process 0 is late), and process 0 kept
  runs/full-seed0/train empty, with a train_seconds.json of the run that never trained.
  Started again where process 1 does not see the base's result (an NFS client's late
  listing), it evaluated the base again while process 0 went on to full RL; now both do."""
  setup = ("import os, time; from jaxlayer.rl import train; from jaxlayer.sweep import runner\n"
           "def failing(*args, **kwargs): raise ValueError('the weights are damaged')\n"
           "train.train = failing\n"
           "execute_run = runner.execute_run\n"
           "def late_on_process_0(*args, **kwargs):\n"
           "  if os.environ['JAX_PROCESS_ID'] == '0':\n"
           "    time.sleep(3)\n"
           "  return execute_run(*args, **kwargs)\n"
           "runner.execute_run = late_on_process_0")
  # The base's score as default_eval_fn gives it, without evaluating (compiling the sampler):
  # here the failed run's directories are at stake. The second command evaluates for real, as
  # process 1 would if it went back to the base.
  scored_without_evaluating = (
      "def default_eval_fn(config, **kwargs):\n"
      "  return {'per_problem': [1.0] * config.eval.num_problems, 'metric': 'pass@1'}\n"
      "runner.default_eval_fn = default_eval_fn\n")
  sweep_dir = tmp_path / "sweep"
  homes = _two_homes(tmp_path)
  argv = _sweep_argv(sweep_dir)
  for output in _run_in_homes(homes, argv, f"{setup}\n{scored_without_evaluating}"):
    assert "jaxlayer sweep: the weights are damaged" in output, output
  assert sorted(p.name for p in (sweep_dir / "runs").iterdir()) == ["base-seed0"]  # scored
  late_listing = ("from jaxlayer.sweep import store\n"
                  "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                  "  store.is_done = lambda sweep_dir, spec: False\n")
  outputs = _run_in_homes(homes, argv, f"{setup}\n{late_listing}")
  for output in outputs:
    assert "jaxlayer sweep: the weights are damaged" in output, output
  assert f"resuming {sweep_dir}: 1 of 3 runs already done." in outputs[0], outputs[0]


# _run_in_homes's setup that stops a sweep once its directory is open, naming it on each host.
STOP_IN_THE_SWEEP_DIR = (
    "from jaxlayer.sweep import store\n"
    "def load_results(directory): raise ValueError(f'stopped in {directory}')\n"
    "store.load_results = load_results\n")


def _hidden_from_process_1(manifest: Path) -> str:
  """_run_in_homes's setup where process 1 does not see the file `manifest` (as an NFS client
  whose listing is late)."""
  return ("import os; from pathlib import Path\n"
          "if os.environ['JAX_PROCESS_ID'] == '1':\n"
          f"  hidden = Path({str(manifest)!r})\n"
          "  is_file, iterdir = Path.is_file, Path.iterdir\n"
          "  Path.is_file = lambda path: path != hidden and is_file(path)\n"
          "  Path.iterdir = lambda path: (p for p in iterdir(path) if p != hidden)\n")


def test_every_host_opens_the_sweep_directory_that_process_0_chose(tmp_path):
  """With force_new_dir, next to a sweep in `sweep`: process 1's listing does not show its
  manifest.json yet (as an NFS client's may not), and another sweep creates `sweep-2` between
  process 0's choice and its creation of it. Each host chose its directory alone: process 1
  chose `sweep` (it wrote its part of the sweep there), and process 0 stopped both with "run the
  same command again" rather than go to `sweep-3`. Now process 0 chooses for all: both open
  `sweep-3`."""
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  (sweep_dir / "manifest.json").write_text('{"identity": "an earlier sweep\'s"}')
  another_sweep_first = (
      "choose = store.choose_sweep_dir\n"
      "def choose_then_another_sweep_creates(*args):\n"
      "  store.choose_sweep_dir = choose\n"
      "  chosen = choose(*args)\n"
      "  chosen[0].mkdir()\n"
      "  (chosen[0] / 'manifest.json').write_text('{\"identity\": \"another sweep\\'s\"}')\n"
      "  return chosen\n"
      "if os.environ['JAX_PROCESS_ID'] == '0':\n"
      "  store.choose_sweep_dir = choose_then_another_sweep_creates\n")
  outputs = _run_in_homes(_two_homes(tmp_path),
                          _sweep_argv(sweep_dir, "--config.sweep.force_new_dir=True"),
                          _hidden_from_process_1(sweep_dir / "manifest.json")
                          + STOP_IN_THE_SWEEP_DIR + another_sweep_first)
  for output in outputs:
    assert f"jaxlayer sweep: stopped in {tmp_path}/sweep-3\n" in output, output
  assert json.loads((tmp_path / "sweep-3" / "manifest.json").read_text())["config"]["sweep"][
      "force_new_dir"]


def test_a_host_that_does_not_see_the_new_sweep_directory_stops_every_host(tmp_path):
  """Process 1 does not see the manifest.json that process 0 created (a host that mounts
  another directory there): it waited for nothing and went on to write its part of the sweep
  into a directory without it. Now it stops every host, naming the directory."""
  sweep_dir = tmp_path / "sweep"
  outputs = _run_in_homes(_two_homes(tmp_path), _sweep_argv(sweep_dir),
                          _hidden_from_process_1(sweep_dir / "manifest.json")
                          + STOP_IN_THE_SWEEP_DIR)
  unseen = (f"Process 0 chose the sweep directory {sweep_dir}, but this host does not see its "
            "manifest.json after 1 s: every host must mount the directory that sweep.dir names")
  assert f"jaxlayer sweep: {unseen}" in outputs[1], outputs[1]
  assert ("jaxlayer sweep: Opening the sweep directory failed on process(es) [1] of 2, so every "
          f"process stops; process 1: ValueError: {unseen}") in outputs[0], outputs[0]


@pytest.mark.parametrize("command", ["sweep", "train", "eval"])
def test_each_host_removes_the_temporary_files_of_its_killed_writers(tmp_path, dead_pid,
                                                                     command):
  """A writer killed on the host that is process 1 now (process 0 of the command before) left
  its temporary file there: only process 0 removed killed writers' files, those of its own host,
  so this one stayed for good. Now each host removes its own; a running writer's stays."""
  directory = tmp_path / "out"
  directory.mkdir()
  name = {"sweep": "manifest.json", "train": "run.json", "eval": "eval.json"}[command]
  killed, running = (directory / f".{name}.{pid}@other-host.k2x_9abc.tmp"
                     for pid in (dead_pid, os.getpid()))
  for path in (killed, running):
    path.write_text("x")
  argv, stop = {
      "sweep": (_sweep_argv(directory), STOP_IN_THE_SWEEP_DIR),
      "train": (["train", "--config", str(ROOT / "configs" / "grpo_arithmetic.py"),
                 f"--config.model.path={TINY_ARITH}", f"--config.run_dir={directory}",
                 "--config.train.steps=1"],
                "from jaxlayer import models\n"  # (the first thing loaded once run_dir is open)
                "def load_tokenizer(*args, **kwargs): raise ValueError('stopped')\n"
                "models.load_tokenizer = load_tokenizer\n"),
      "eval": (["eval", "--config", str(SWEEP_CONFIG), "--model", str(TINY_ARITH), "--out",
                str(directory)],
               "from jaxlayer import evaluation\n"
               "def load_model(*args, **kwargs): raise ValueError('stopped')\n"
               "evaluation.load_model = load_model\n")}[command]
  on_other_host = ("import os, socket\n"
                   "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                   "  socket.gethostname = lambda: 'other-host'\n")
  for output in _run_in_homes(_two_homes(tmp_path), argv, on_other_host + stop):
    assert f"jaxlayer {command}: stopped" in output, output
  assert not killed.exists() and running.exists()


def test_a_run_directory_only_one_host_has_is_refused_on_every_host(tmp_path):
  """`jaxlayer eval --model run`, where only process 0's working directory holds the run: the
  other process would load `run` as a Hugging Face model and the two would part ways."""
  homes = _two_homes(tmp_path)
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 1, "every": 1}})
  checkpoint.write_run_files(homes[0] / "run", config, str(TINY_ARITH), {"final_norm.scale": [1]})
  outputs = _run_in_homes(homes, ["eval", "--config", str(ROOT / "configs" / "sweep_tiny.py"),
                                  "--model", "run", "--out", str(tmp_path / "eval")])
  for output in outputs:
    assert ("jaxlayer eval: The kinds of model found at run (a jaxlayer run directory, or not) "
            "differ between processes (process 0 and process(es) [1])") in output, output
  assert not (tmp_path / "eval").exists()


def test_every_host_loads_the_checkpoint_that_process_0_lists_last(tmp_path):
  """`jaxlayer export` of a run whose checkpoint 5 process 1 does not list yet (an NFS client's
  late listing, right after the run saved it): process 1 loaded its part of the weights from
  checkpoint 3, and the export mixed the two. Now every host loads checkpoint 5."""
  model, _ = models.from_pretrained(TINY_ARITH)
  path = "layers.1.mlp.up_proj.kernel"  # split over the devices of both processes
  shape = models.named_params(model)[path].shape
  run = tmp_path / "run"
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 1}})
  checkpoint.write_run_files(run, config, str(TINY_ARITH), {path: shape})
  saver = checkpoint.Checkpointer(run)
  for step in (3, 5):
    saver.save(step, {path: jnp.full(shape, float(step))},
               {"opt_state": {"count": jnp.zeros((), jnp.int32)}, "rng": jax.random.PRNGKey(0)},
               {"step": step})
  saver.close()
  late_listing = ("import os; from jaxlayer.rl import checkpoint\n"
                  "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                  "  checkpoint.listed_steps = lambda run_dir: [3]\n")
  # (bfloat16: every host also reads the checkpoint again to count what rounding undid.)
  outputs = _run_in_homes(_two_homes(tmp_path), ["export", "--run", str(run), "--out",
                                                 str(tmp_path / "hf"), "--dtype", "bfloat16"],
                          late_listing, status=0)
  assert f"wrote {tmp_path / 'hf'}: step 5 of {run}" in outputs[0], outputs[0]
  assert f"in bfloat16, 0.0% of the {np.prod(shape):,} weights the run changed" in outputs[0]
  [(_, exported)] = models.stored_tensors(tmp_path / "hf", ["model.layers.1.mlp.up_proj.weight"])
  assert (exported == 5.0).all()


@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_on_one_host_alone_stops_every_host_with_its_status(tmp_path, failing):
  """`jaxlayer generate` where sampling raises on one process only (as a full disk on process
  0, or a reward function failing on one host's share): the other, inside the computation that
  needs the failed one, is stopped with the same status and the error's name, instead of
  waiting for it until JAX's shutdown barrier times out (5 minutes) and aborts."""
  setup = ("import os; from jaxlayer import sampling; distributed.STOP_GRACE_S = 1.0\n"
           f"if os.environ['JAX_PROCESS_ID'] == '{failing}':\n"
           "  def generate(*args, **kwargs): raise RuntimeError('no space left on this host')\n"
           "  sampling.generate = generate")
  outputs = _run_in_homes(_two_homes(tmp_path),
                          ["generate", "--model", str(TINY_ARITH), "--prompt", "12+34="], setup)
  assert "RuntimeError: no space left on this host" in outputs[failing], outputs[failing]
  other = 1 - failing
  assert (f"jaxlayer: process {failing} stopped on an error (RuntimeError: no space left on this "
          f"host), so process {other} stops too, instead of waiting for it.") in outputs[other], (
              outputs[other])


def test_a_shared_directory_that_is_a_broken_link_is_named_on_several_hosts(tmp_path,
                                                                              monkeypatch):
  """check_shared_directory made the directory with os.makedirs, which raised a bare
  FileExistsError for a link to a missing target; now every process raises the CLI's error
  (here one process stands for the hosts), before any collective of the check."""
  monkeypatch.setattr(distributed, "is_multiprocess", lambda: True)
  monkeypatch.setattr(distributed, "_gather_exact", lambda rows, count: rows[:count])
  link, target = tmp_path / "run", tmp_path / "unmounted"
  link.symlink_to(target)
  target = os.path.realpath(target)  # (tmp_path may be under a link itself)
  with pytest.raises(ValueError, match=re.escape(
      f"run_dir={str(link)!r} is a link to {target}, which does not exist: create {target}, "
      "point the link at a directory, or give another directory.")):
    distributed.check_shared_directory(link, "run_dir")
  assert not os.path.lexists(target)


def test_a_host_whose_file_system_shows_the_mark_late_still_sees_a_shared_directory(
    tmp_path, monkeypatch):
  """An NFS client may show a new file seconds after another host wrote it: a process other
  than 0 looks again and again (SHARED_WAIT_S), and the directory is shared all the same. Here
  this process is process 1 of 2, whose collectives hand it process 0's token and its own
  answer, and process 0's mark shows 0.3 s after the barrier."""
  token = np.arange(16, dtype=np.uint8)  # process 0's
  mark = tmp_path / distributed.SHARED_MARK

  def barrier(name):
    threading.Timer(0.3, mark.write_text, [bytes(token).hex()]).start()

  monkeypatch.setattr(distributed, "is_multiprocess", lambda: True)
  monkeypatch.setattr(distributed, "is_primary", lambda: False)
  monkeypatch.setattr(distributed, "sync", barrier)
  monkeypatch.setattr(distributed.multihost_utils, "broadcast_one_to_all", lambda x: token)
  monkeypatch.setattr(distributed, "_gather_exact", lambda rows, count: rows)  # this one's
  distributed.check_shared_directory(tmp_path, "run_dir")
