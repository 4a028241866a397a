"""End-to-end training runs on tiny random models: learning, freezing, resuming, divergence,
bad configs, DAPO batch assembly, metrics files."""

import dataclasses
import gc
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from jaxlayer import assets, locks, models, tasks
from jaxlayer.rl import advantages, checkpoint, metrics, train
from jaxlayer.rl.config import default_config
from jaxlayer.tasks.arithmetic import ArithmeticTask


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """Runs with the same shapes share compiled code through JAX's persistent cache."""
  return str(tmp_path_factory.mktemp("xla_cache"))


@dataclasses.dataclass(kw_only=True)
class EvenFirstByteTask(ArithmeticTask):
  """Arithmetic prompts; reward 1 when the completion's first byte is even, whatever the sum.
  A random model earns it often: the small runs below learn from every step
  (on arithmetic, the tiny random model earns nothing, and only float noise would move it)."""

  name = "even_first_byte"

  def reward_components(self, problems, completions):
    return {"correct": [float(bool(c) and c.encode()[0] % 2 == 0) for c in completions]}


@pytest.fixture(scope="module", autouse=True)
def even_first_byte_registered():
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(tasks.TASKS, EvenFirstByteTask.name, EvenFirstByteTask)
    yield


def small_config(model_dir, run_dir, compile_cache, **train_overrides):
  """4 steps of 16 responses (4 prompts x 4) of EvenFirstByteTask, 2 PPO epochs x 2
  mini-batches of 2 micro-batches, KL on."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(model_dir), str(run_dir)
  cfg.compilation_cache_dir = compile_cache
  cfg.task.name = EvenFirstByteTask.name
  cfg.task.options.update(max_value=9, operators="+", num_train=64, num_test=8,
                          reward_weights={"correct": 1.0})
  cfg.train.update(layers="layers.1", steps=4, learning_rate=1e-2, group_size=4, batch_size=16,
                   mini_batch_size=8, micro_batch_size=4, ppo_epochs=2, kl_beta=0.01)
  cfg.train.update(train_overrides)
  cfg.rollout.update(max_new_tokens=3, max_prompt_tokens=16)
  cfg.mesh.num_devices = 1
  cfg.checkpoint.update(every=2, keep=2)
  cfg.logging.progress = False
  return cfg


def learning_config(model_dir, run_dir, compile_cache):
  """12 steps of 128 responses (16 prompts x 8), 2 new tokens, every parameter, high rate."""
  cfg = small_config(model_dir, run_dir, compile_cache, layers="all", steps=12,
                     learning_rate=3e-2, group_size=8, batch_size=128, mini_batch_size=None,
                     micro_batch_size=None, ppo_epochs=1, kl_beta=0.0)
  cfg.task.name = "arithmetic"
  cfg.task.options.update(num_train=200, reward_weights={"correct": 1.0, "format": 0.5})
  cfg.rollout.max_new_tokens = 2
  cfg.checkpoint.every = 12
  return cfg


@dataclasses.dataclass(kw_only=True)
class StartsWithTask(ArithmeticTask):
  """Arithmetic prompts; reward 1 when the completion starts with `token`, whatever the sum."""

  token: str = "j"

  def reward_components(self, problems, completions):
    return {"correct": [float(c.startswith(self.token)) for c in completions]}


def test_trivial_reward_is_learned_in_a_few_steps(tiny_qwen2_dir, tmp_path, compile_cache):
  # "j" is one of ~300 tokens: a random model starts near 1/300 per response.
  result = train.train(learning_config(tiny_qwen2_dir, tmp_path / "run", compile_cache),
                       task=StartsWithTask(num_train=200, num_test=8, max_value=9, operators="+"))
  rewards = result.reward_history
  assert len(rewards) == 12 and np.mean(rewards[:3]) < 0.05
  assert np.mean(rewards[-3:]) > 0.5


def test_arithmetic_reward_rises(tiny_qwen2_dir, tmp_path, compile_cache):
  """One-digit sums, reward = correct + 0.5 * format (the first line is an integer)."""
  result = train.train(learning_config(tiny_qwen2_dir, tmp_path / "run", compile_cache))
  rows = metrics.read_metrics(tmp_path / "run")
  rewards = [row["reward"] for row in rows]
  assert rewards == result.reward_history
  assert np.mean(rewards[:3]) < 0.05
  assert np.mean(rewards[-3:]) > 4 * np.mean(rewards[:3]) + 0.1
  assert np.mean([row["reward/format"] for row in rows[-3:]]) > 0.3


@pytest.fixture(scope="module")
def uninterrupted(tiny_qwen2_dir, tmp_path_factory, compile_cache):
  run_dir = tmp_path_factory.mktemp("uninterrupted")
  return train.train(small_config(tiny_qwen2_dir, run_dir, compile_cache))


def _params(model):
  return {k: np.asarray(v) for k, v in models.named_params(model).items()}


def test_only_selected_leaves_change_and_optimizer_state_is_theirs(uninterrupted, tiny_qwen2_dir):
  base = _params(models.from_pretrained(tiny_qwen2_dir)[0])
  trained = _params(uninterrupted.model)
  block = {k for k in base if k.startswith("layers.1.")}
  for path in base:
    if path in block:
      assert not np.array_equal(trained[path], base[path]), f"{path} did not change"
    else:
      assert trained[path].tobytes() == base[path].tobytes(), f"frozen {path} changed"
  _, run = checkpoint.read_run_files(uninterrupted.run_dir)
  assert set(run["trainable"]) == block
  # The checkpoint holds the trained leaves only, and Adam moments for exactly those.
  import orbax.checkpoint as ocp

  step_dir = uninterrupted.run_dir / checkpoint.CHECKPOINT_DIR / "4"
  saved_params = ocp.StandardCheckpointer().metadata(step_dir / "params").item_metadata
  assert set(saved_params) == block
  optimizer = ocp.StandardCheckpointer().metadata(step_dir / "optimizer").item_metadata
  leaves = [(tuple(getattr(k, "key", None) for k in path), leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(optimizer)]
  is_moment = lambda path: path[-2:-1] in (("mu",), ("nu",))  # noqa: E731
  moments = {path[-1]: shape for path, shape in leaves if is_moment(path)}
  assert moments == {path: base[path].shape for path in block}
  other_arrays = [shape for path, shape in leaves if not is_moment(path)]
  assert all(shape in ((), (2,)) for shape in other_arrays)  # step counts and the RNG key


def test_result_counts_the_trained_parameters_their_optimizer_state_and_step_times(
    uninterrupted, tiny_qwen2_dir):
  import orbax.checkpoint as ocp

  base = _params(models.from_pretrained(tiny_qwen2_dir)[0])
  assert uninterrupted.trained_params == sum(
      value.size for path, value in base.items() if path.startswith("layers.1."))
  step_dir = uninterrupted.run_dir / checkpoint.CHECKPOINT_DIR / "4"
  saved = ocp.StandardCheckpointer().metadata(step_dir / "optimizer").item_metadata["opt_state"]
  assert uninterrupted.optimizer_state_bytes == sum(
      math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(saved))
  assert uninterrupted.optimizer_state_bytes > 2 * 4 * uninterrupted.trained_params  # Adam
  assert uninterrupted.step_seconds == [
      row["seconds_per_step"] for row in metrics.read_metrics(uninterrupted.run_dir)]


def test_resumed_run_ends_like_an_uninterrupted_one(uninterrupted, tiny_qwen2_dir, tmp_path,
                                                   compile_cache):
  class Killed(Exception):
    pass

  def kill_at_step_3(step, _):
    if step == 3:  # after the step-2 checkpoint, before the step-4 one
      raise Killed

  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  with pytest.raises(Killed):
    train.train(cfg, on_step=kill_at_step_3)
  assert checkpoint.Checkpointer(tmp_path / "run").all_steps() == [2]
  assert len(metrics.read_metrics(tmp_path / "run")) == 3

  resumed = train.train(cfg)
  assert resumed.step == 4
  expected, got = _params(uninterrupted.model), _params(resumed.model)
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
  assert resumed.reward_history == uninterrupted.reward_history
  assert len(resumed.step_seconds) == 4  # the steps before the kill are read from metrics.jsonl
  assert [r["step"] for r in metrics.read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_a_run_in_steady_state_compiles_nothing_new_and_leaves_no_device_arrays(
    tiny_qwen2_dir, tmp_path, compile_cache):
  """Long runs and sweeps (many runs in one process) must not grow: the steps after the first
  lower no program (every step's shapes are the first's, checkpoints included), keep-last-k
  bounds the checkpoints, and once train's result is dropped nothing of the run stays on the
  devices."""
  steps_done, lowered_at = [0], []  # lowered_at: the step during which each program was lowered

  def note_lowering(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
      lowered_at.append(steps_done[0] + 1)

  gc.collect()
  arrays_before = len(jax.live_arrays())
  jax.monitoring.register_event_duration_secs_listener(note_lowering)
  try:
    result = train.train(small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=6),
                         on_step=lambda step, _: steps_done.__setitem__(0, step))
  finally:
    jax.monitoring.unregister_event_duration_listener(note_lowering)
  assert lowered_at and set(lowered_at) == {1}
  assert checkpoint.Checkpointer(result.run_dir).all_steps() == [4, 6]  # checkpoint.keep=2
  del result
  gc.collect()
  assert len(jax.live_arrays()) <= arrays_before


def test_a_run_stopped_early_resumes_on_the_whole_runs_schedule(tiny_qwen2_dir, tmp_path,
                                                                compile_cache, monkeypatch, capsys):
  """stop_at (successive halving's rungs) and Ctrl-C stop with a checkpoint, but the cosine
  schedule is the 4-step run's: stopping and resuming ends where the run without a stop does.
  Another train.steps would change that schedule: refused, with the way to go on."""
  def config(name, steps=4):
    return small_config(tiny_qwen2_dir, tmp_path / name, compile_cache, lr_schedule="cosine",
                        steps=steps)

  whole = train.train(config("whole"))
  stopped = train.train(config("stopped"), stop_at=3)
  assert stopped.step == 3 and len(stopped.reward_history) == 3
  assert checkpoint.Checkpointer(tmp_path / "stopped").all_steps() == [2, 3]
  assert stopped.reward_history == whole.reward_history[:3]
  with pytest.raises(ValueError, match="holds a checkpoint at step 3, past step 2"):
    train.train(config("stopped"), stop_at=2)
  files = _files(tmp_path / "stopped")
  with pytest.raises(ValueError, match=r"train.steps=6: run_dir .*stopped holds a 4-step run on "
                     r"train.lr_schedule='cosine', .* from step 4 on. To train it further, "
                     r"resume with its own --config.train.steps=4\.$"):
    train.train(config("stopped", steps=6))
  assert _files(tmp_path / "stopped") == files
  resumed = train.train(config("stopped"), stop_at=10)  # beyond train.steps: the run's end
  assert resumed.step == 4 and resumed.reward_history == whole.reward_history
  with pytest.raises(ValueError, match=r"train.steps=5: .* from step 5 on. To train it further, "
                     r"export it \(jaxlayer export --run .*stopped --out HF_DIR\) and start a new "
                     r"run from it \(--config.model.path=HF_DIR\)"):
    train.check_resume(train.plan(config("stopped", steps=5)))
  expected, got = _params(whole.model), _params(resumed.model)
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)

  # Ctrl-C (SIGINT) or SIGTERM (a preemption notice) during step 1 stops after it, with a
  # checkpoint there (checkpoint.every is 2), and the run resumes to the same end. A second
  # Ctrl-C stops at once, without one.
  def send(signum, times):
    return lambda step, metrics: [signal.raise_signal(signum) for _ in range(times) if step == 1]

  handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
  for signum, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
    with pytest.raises(train.TrainingInterrupted,
                       match=rf"stopped by {name} after step 1 of 4, with a checkpoint") as stop:
      train.train(config(name), on_step=send(signum, times=1))
    assert stop.value.signum == signum
    assert checkpoint.Checkpointer(tmp_path / name).all_steps() == [1]
    resumed = train.train(config(name))
    assert resumed.reward_history == whole.reward_history
    got = _params(resumed.model)
    for path in expected:
      np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
  # One during the last step: the run ends as planned, says so, and tells its caller (a sweep
  # stops before its next run).
  capsys.readouterr()
  ended = train.train(config("last_step"), stop_at=1, on_step=send(signal.SIGTERM, times=1))
  assert ended.step == 1 and checkpoint.Checkpointer(tmp_path / "last_step").all_steps() == [1]
  assert ended.stop_requested == signal.SIGTERM and whole.stop_requested is None
  assert capsys.readouterr().err.endswith(
      "SIGTERM: the step under way was the last one: the run is finished, with the checkpoint "
      f"of step 1 in {tmp_path / 'last_step'}.\n")
  # A Ctrl-C while the model loads (where Python may drop a KeyboardInterrupt inside a garbage-
  # collection callback of JAX) stops before the first step, with nothing trained.
  loading = train._Trainer.__init__

  def interrupted_while_loading(self, *args):
    loading(self, *args)
    signal.raise_signal(signal.SIGINT)

  with monkeypatch.context() as patch:
    patch.setattr(train._Trainer, "__init__", interrupted_while_loading)
    with pytest.raises(KeyboardInterrupt) as interrupted:  # (not the whole test session)
      train.train(config("ctrl_c_loading"))
  assert isinstance(interrupted.value, train.TrainingInterrupted)
  assert str(interrupted.value) == "stopped by Ctrl-C before step 1 of 4, before training anything."
  assert not (tmp_path / "ctrl_c_loading" / "run.json").exists()
  assert checkpoint.Checkpointer(tmp_path / "ctrl_c_loading").all_steps() == []
  with pytest.raises(KeyboardInterrupt) as interrupted:
    train.train(config("ctrl_c_twice"), on_step=send(signal.SIGINT, times=2))
  assert not isinstance(interrupted.value, train.TrainingInterrupted)
  assert checkpoint.Checkpointer(tmp_path / "ctrl_c_twice").all_steps() == []
  # Both signals are as they were outside training.
  assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_a_run_dir_holding_a_config_json_no_run_wrote_is_refused(tiny_qwen2_dir, tmp_path,
                                                                 compile_cache):
  """run_dir set to a model directory (its own model.path, say) or to one holding a user's
  config.json: the run wrote its config.json over that one (the model then failed to load,
  its config gone) before it said anything. Refused before anything is written there."""
  import shutil

  model_dir = tmp_path / "model"
  shutil.copytree(tiny_qwen2_dir, model_dir)
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text('{"learning_rate": 3}')
  for run_dir in (model_dir, other):
    before = _files(run_dir)
    with pytest.raises(ValueError) as error:
      train.train(small_config(model_dir, run_dir, compile_cache))
    assert str(error.value) == (
        f"run_dir {run_dir} holds a config.json that no jaxlayer run wrote (a model's?), which "
        "a run would write over: choose a new or empty run_dir.")
    assert _files(run_dir) == before and not (run_dir / locks.LOCK_FILE).exists()

def test_on_several_hosts_the_preemption_steps_rise_across_runs(monkeypatch):
  """JAX stops every host one step past the highest it was told of, so the steps told must rise
  for the whole process: a notice between two runs of a sweep then stops the second run after
  its first step, whatever step it resumed from. (Two real hosts: test_preemption.py.)"""
  told = []
  monkeypatch.setattr(train.distributed, "is_multiprocess", lambda: True)
  monkeypatch.setattr(train.multihost_utils, "reached_preemption_sync_point",
                      lambda step: told.append(step) or step == told[0] + 3)
  stops = []
  for steps in (2, 3):  # two runs, the second (resumed, or a sweep's next) of three steps
    with train.stop_requests() as stop_signal:
      stops += [stop_signal() for _ in range(steps)]
  assert told == sorted(set(told)) and len(told) == 5
  assert stops == [None, None, None, signal.SIGTERM, None]


def test_kl_reference_is_the_base_value_of_the_trained_leaves_only(tiny_qwen2_dir, tmp_path):
  trainer = train._Trainer(train.plan(small_config(tiny_qwen2_dir, tmp_path / "run", None)), None)
  base = _params(models.from_pretrained(tiny_qwen2_dir)[0])
  assert set(trainer.ref_params) == {k for k in base if k.startswith("layers.1.")}
  for path, value in trainer.ref_params.items():
    np.testing.assert_array_equal(value, base[path])
    assert value.unsafe_buffer_pointer() != trainer.params[path].unsafe_buffer_pointer()
  assert train._Trainer(train.plan(small_config(tiny_qwen2_dir, tmp_path / "run", None,
                                                kl_beta=0.0)), None).ref_params is None


def test_remat_and_micro_batches_reach_the_update_step(tiny_qwen2_dir, tmp_path, monkeypatch):
  built = []
  monkeypatch.setattr(train.rl_step, "make_update_step", lambda *a, **k: built.append(k))
  for remat in (False, True):
    train._Trainer(train.plan(small_config(tiny_qwen2_dir, tmp_path / f"run{remat}", None,
                                           remat=remat)), None)
  assert [(k["remat"], k["micro_batches"]) for k in built] == [(False, 2), (True, 2)]


MESH_OF_A_FRESH_PROCESS = """
from jaxlayer.rl import train
from jaxlayer.rl.config import default_config
config = default_config()
config.mesh.num_devices, config.mesh.data = 3, 3
mesh = train.config_mesh(config.mesh)
print(dict(mesh.shape), mesh.devices.flat[0].platform)
"""


def test_mesh_num_devices_makes_cpu_devices_before_jax_starts(monkeypatch):
  """A fresh process (no XLA_FLAGS) on a CPU gets mesh.num_devices CPU devices; in this one,
  whose JAX has started, asking for more devices than exist names the fix."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-c", MESH_OF_A_FRESH_PROCESS], env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split("\n")[-2] == "{'data': 3, 'fsdp': 1, 'tensor': 1} cpu"
  config = default_config()
  eight_cpus = [types.SimpleNamespace(platform="cpu")] * 8  # (JAX may run on a GPU here)
  monkeypatch.setattr(jax, "devices", lambda *args, **kwargs: eight_cpus)
  config.mesh.num_devices = 9
  with pytest.raises(ValueError, match="num_devices=9 but 8 devices "
                     "exist.*XLA_FLAGS=--xla_force_host_platform_device_count"):
    train.config_mesh(config.mesh)
  one = eight_cpus[:1]
  monkeypatch.setattr(jax, "devices", lambda *args, **kwargs: one)
  config.mesh.num_devices = 2
  with pytest.raises(ValueError, match=r"num_devices=2 but 1 device exists \(cpu\)"):
    train.config_mesh(config.mesh)
  # A run of 8 GPUs resumed on a machine with 2: no CPU devices to make, the way on is the mesh.
  two_gpus = [types.SimpleNamespace(platform="gpu")] * 2
  monkeypatch.setattr(jax, "devices", lambda *args, **kwargs: two_gpus)
  config.mesh.num_devices = 8
  with pytest.raises(ValueError, match=r"num_devices=8 but 2 devices exist \(gpu\)\. Set "
                     r"mesh.num_devices=0 to use them all, and mesh axes whose product is 2 \(a "
                     r"run may resume on another mesh\); `jaxlayer memory` sizes a larger mesh "
                     r"when run with JAX_PLATFORMS=cpu \(it makes that many CPU devices\)\.$"):
    train.config_mesh(config.mesh)


@pytest.mark.parametrize("devices,batch,mini,micro,expected", [
    (1, 16, None, None, 4),  # whole-batch update of whole groups
    (1, 16, 8, 4, 4),  # mini-batches take whole groups
    (1, 16, None, 2, 1),  # micro-batches of half groups
    (1, 12, 6, None, 1),  # mini-batches of one and a half groups
    pytest.param(8, 32, None, None, 4, marks=pytest.mark.eight_devices),  # a group each
    # 4 groups over 8 devices would split groups between devices.
    pytest.param(8, 16, None, None, 1, marks=pytest.mark.eight_devices),
    pytest.param(8, 64, None, 32, 4, marks=pytest.mark.eight_devices),
])
def test_prompts_are_shared_where_every_device_holds_whole_groups(tiny_qwen2_dir, tmp_path,
                                                                  devices, batch, mini, micro,
                                                                  expected):
  cfg = small_config(tiny_qwen2_dir, tmp_path, None, batch_size=batch, mini_batch_size=mini,
                     micro_batch_size=micro)
  cfg.mesh.num_devices = devices
  assert train.shared_prompt_group(train.plan(cfg)) == expected


def test_mini_batches_take_whole_groups_in_a_random_order(tiny_qwen2_dir, tmp_path):
  trainer = train._Trainer(train.plan(small_config(tiny_qwen2_dir, tmp_path, None)), None)
  orders = [trainer._mini_batch_order(16, 8, epoch) for epoch in (0, 1)]
  for order in orders:
    assert sorted(order) == list(range(16))
    groups = order.reshape(4, 4)  # [groups, G]: a group's rows, in order
    np.testing.assert_array_equal(groups - groups[:, :1], np.tile(np.arange(4), (4, 1)))
    assert (groups[:, 0] % 4 == 0).all()
  assert not np.array_equal(orders[0], orders[1])
  np.testing.assert_array_equal(trainer._mini_batch_order(16, 16, 0), np.arange(16))
  rows = trainer._mini_batch_order(12, 6, 0)  # mini-batches of 1.5 groups: rows at random
  assert sorted(rows) == list(range(12)) and not np.array_equal(rows % 4, np.arange(12) % 4)


def test_each_epoch_of_training_prompts_is_a_fresh_shuffle_of_every_problem():
  """Data positions 0-9 are epoch 0, 10-19 epoch 1, ...: each epoch takes every problem once,
  in an order of its own; a run resumed at a data position goes on with the same order."""
  order = train._problem_order(10, seed=3, position=0, count=30)
  epochs = [order[i:i + 10] for i in (0, 10, 20)]
  assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) == 3
  assert train._problem_order(10, seed=3, position=7, count=8) == order[7:15]
  assert train._problem_order(10, seed=4, position=0, count=10) != epochs[0]


def test_the_learning_rate_schedule_counts_optimizer_updates_as_transformers_trainer_does(
    tiny_qwen2_dir, tmp_path):
  """4 RL steps of 4 updates each (2 epochs x 2 mini-batches), 1 warm-up step: the cosine
  schedule of a 16-update run with 4 warm-up updates, as get_cosine_schedule_with_warmup sets
  it per optimizer step. A constant gradient makes each AdamW update -lr (m / sqrt(v) = 1)."""
  import torch
  import transformers

  plan = train.plan(small_config(tiny_qwen2_dir, tmp_path, None, lr_schedule="cosine",
                                 warmup_steps=1))
  assert plan.updates_per_step == 4
  tx = train.plan_optimizer(plan)
  shapes = train.param_shapes(plan.model_config)
  params = {path: jax.numpy.zeros(shapes[path]) for path in plan.selection.trainable}
  grads = jax.tree.map(jax.numpy.ones_like, params)
  state, rates = tx.init(params), []
  for _ in range(16):
    updates, state = tx.update(grads, state, params)
    rates.append(-float(updates[plan.selection.trainable[0]].ravel()[0]))
  torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
  reference = transformers.get_cosine_schedule_with_warmup(
      torch_optimizer, num_warmup_steps=4, num_training_steps=16).lr_lambdas[0]
  assert rates == pytest.approx([1e-2 * reference(u) for u in range(16)], rel=1e-4, abs=1e-9)


def test_mini_batched_update_of_shared_prompts_equals_the_plain_one(tiny_qwen2_dir, tmp_path,
                                                                    monkeypatch):
  """Two PPO epochs of two mini-batches each, with KL: the passes that run each prompt once
  give the parameters of the passes over whole rows (to float rounding)."""
  trained = {}
  for shared in (True, False):
    if not shared:
      monkeypatch.setattr(train, "shared_prompt_group", lambda plan: 1)
    plan = train.plan(small_config(tiny_qwen2_dir, tmp_path / str(shared), None))
    assert train.shared_prompt_group(plan) == (4 if shared else 1)
    trainer = train._Trainer(plan, None)
    base = {k: np.asarray(v) for k, v in trainer.params.items()}
    metrics = trainer.run_step()[0]
    trained[shared] = metrics, {k: np.asarray(v) for k, v in trainer.params.items()}
  (shared, shared_params), (plain, plain_params) = trained[True], trained[False]
  assert shared["reward"] == plain["reward"]
  assert shared["loss"] == pytest.approx(plain["loss"], rel=1e-5, abs=1e-7)
  assert shared["kl"] == pytest.approx(plain["kl"], rel=1e-4, abs=1e-8)
  for k in plain_params:
    assert not np.array_equal(plain_params[k], base[k])
    # Adam scales the gradients' rounding up where they are small: 1e-5 is ~1e-3 of a step.
    np.testing.assert_allclose(shared_params[k], plain_params[k], rtol=1e-4, atol=1e-5)


@pytest.mark.eight_devices
def test_replicated_rollout_params_decode_per_device_and_change_nothing(tiny_qwen2_dir, tmp_path,
                                                                       decode_loops):
  """rollout.replicate_params on an fsdp mesh of 2 devices: each device decodes its 8 rows in
  its own loop (one loop of 16 rows without it); samples, metrics and update are the same,
  and the trained leaves stay split as they train."""
  runs = {}
  for replicate in (False, True):
    cfg = small_config(tiny_qwen2_dir, tmp_path / f"run{replicate}", None, steps=1,
                       ppo_epochs=1)
    cfg.mesh.num_devices = 2
    cfg.rollout.replicate_params = replicate
    trainer = train._Trainer(train.plan(cfg), None)
    runs[replicate] = trainer.run_step()[0], {k: np.asarray(v) for k, v in trainer.params.items()}
    assert trainer.params["layers.1.mlp.up_proj.kernel"].sharding.spec[0] == "fsdp"
  assert decode_loops == [16, 8]
  (plain, plain_params), (replicated, replicated_params) = runs[False], runs[True]
  assert replicated["reward"] == plain["reward"]
  assert replicated["kl"] == pytest.approx(plain["kl"], rel=1e-4)
  assert replicated["loss"] == pytest.approx(plain["loss"], rel=1e-5, abs=1e-7)
  for k in plain_params:
    np.testing.assert_allclose(replicated_params[k], plain_params[k], rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_different_experiment(uninterrupted, tiny_qwen2_dir, compile_cache):
  cfg = small_config(tiny_qwen2_dir, uninterrupted.run_dir, compile_cache, layers="layers.0")
  with pytest.raises(ValueError, match=r"different config \(train.layers: 'layers.1' -> "
                     r"'layers.0'\).*new run_dir"):
    train.train(cfg)


def test_a_run_resumes_with_its_base_model_found_elsewhere_but_not_with_another_model(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache, capsys):
  """A run and its base model moved (a new VM): model.path may change when the weights are the
  same (run.json's fingerprint); another model is refused, at a new path or at the same one."""
  run_dir, moved, other = tmp_path / "run", tmp_path / "moved", tmp_path / "other"
  shutil.copytree(uninterrupted.run_dir, run_dir)
  shutil.copytree(tiny_qwen2_dir, moved)
  changed, _ = models.from_pretrained(tiny_qwen2_dir)  # the same shapes, one weight changed
  changed.final_norm.scale.set_value(changed.final_norm.scale.get_value().at[0].add(1e-3))
  models.save_pretrained(changed, other)
  run_file = (run_dir / checkpoint.RUN_FILE).read_text()
  with pytest.raises(ValueError, match=f"The model in {other} is not the base model run "
                     f"{run_dir} was trained on .*its weights differ"):
    train.train(small_config(other, run_dir, compile_cache, steps=5))
  assert (run_dir / checkpoint.RUN_FILE).read_text() == run_file
  assert checkpoint.Checkpointer(run_dir).all_steps() == [2, 4]

  assert train.train(small_config(moved, run_dir, compile_cache, steps=5)).step == 5
  assert f"resuming {run_dir} with its base model at {moved}" in capsys.readouterr().err
  assert json.loads((run_dir / checkpoint.RUN_FILE).read_text())["base_model"] == str(moved)
  shutil.rmtree(moved)
  shutil.copytree(other, moved)  # other weights where the run's base model was
  with pytest.raises(ValueError, match=f"The model in {moved} is not the base model"):
    train.train(small_config(moved, run_dir, compile_cache, steps=6))


def test_resume_refuses_a_selection_that_now_means_other_blocks_and_writes_nothing(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache):
  """topK@SWEEP follows its sweep's ranking: the same string may select other blocks than the
  checkpoints hold (here run.json says the run trained block 0). Before, run.json was rewritten
  and Orbax's restore failed, leaving a run that could no longer be exported."""
  run_dir = tmp_path / "run"
  shutil.copytree(uninterrupted.run_dir, run_dir)
  run = json.loads((run_dir / checkpoint.RUN_FILE).read_text())
  run["trainable"] = [p.replace("layers.1.", "layers.0.") for p in run["trainable"]]
  (run_dir / checkpoint.RUN_FILE).write_text(json.dumps(run))
  before = {name: (run_dir / name).read_text() for name in ("run.json", "config.json")}
  with pytest.raises(ValueError, match=r"holds checkpoints of layers.0, but train.layers="
                     r"layers.1 now selects layers.1 .*new run_dir"):
    train.train(small_config(tiny_qwen2_dir, run_dir, compile_cache, steps=5))
  assert {name: (run_dir / name).read_text() for name in before} == before


def test_resume_refuses_learning_rate_groups_that_now_mean_other_blocks(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache):
  """Boost-BK (train.lr_groups=topK@SWEEP=RATE) follows its sweep's ranking too: here run.json
  says block 1 trained at 2e-2, where the same config now gives it 1e-2. Before, the resume
  loaded the model and sampled a step, then failed in optax with a TypeError."""
  run_dir = tmp_path / "run"
  shutil.copytree(uninterrupted.run_dir, run_dir)
  run = json.loads((run_dir / checkpoint.RUN_FILE).read_text())
  assert run["learning_rates"] == {path: 1e-2 for path in run["trainable"]}
  run["learning_rates"] = {path: 2e-2 for path in run["trainable"]}
  (run_dir / checkpoint.RUN_FILE).write_text(json.dumps(run))
  before = _files(run_dir)
  with pytest.raises(ValueError, match=r"trained at other learning rates than train.lr_groups="
                     r"'' gives now \(layers.1 0.02 -> 0.01; a topK@ .*new run_dir"):
    train.train(small_config(tiny_qwen2_dir, run_dir, compile_cache, steps=5))
  assert _files(run_dir) == before


@pytest.mark.parametrize("sweep_is", ["deleted", "unfinished"])
def test_a_finished_run_of_a_sweeps_ranking_needs_the_sweep_no_more(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache, capsys, sweep_is):
  """train.layers=top1@SWEEP_DIR after the sweep directory was deleted, or started again and
  not finished: the finished run is finished (it failed on the missing or unfinished sweep);
  one that must train on names its blocks."""
  import jaxlayer.sweep.strategies  # noqa: F401  (topK@SWEEP_DIR)
  from jaxlayer import cli
  from jaxlayer.sweep import store

  run_dir, gone = tmp_path / "run", tmp_path / "sweep"
  if sweep_is == "unfinished":
    gone.mkdir()
    (gone / "sweep.json").write_text("{}")  # (refused before it is read)
    store.mark_unfinished(gone, "jaxlayer sweep --config sweep_config.py")
  shutil.copytree(uninterrupted.run_dir, run_dir)
  stored = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  stored["train"]["layers"] = f"top1@{gone}"  # it ranked block 1 first (the run trained it)
  stored["run_dir"] = str(run_dir)  # (the config file below reads it)
  (run_dir / checkpoint.CONFIG_FILE).write_text(json.dumps(stored))
  before = _files(run_dir)
  config = small_config(tiny_qwen2_dir, run_dir, compile_cache, layers=f"top1@{gone}")
  assert train.train(config).step == 4
  config_file = tmp_path / "run_config.py"
  config_file.write_text(
      "import json\nimport ml_collections\n\n\ndef get_config():\n  return "
      f"ml_collections.ConfigDict(json.loads(open({str(run_dir / 'config.json')!r}).read()))\n")
  cli.main(["train", "--config", str(config_file)])
  assert capsys.readouterr() == ("", f"jaxlayer train: {run_dir} is already finished at step 4: "
                                 "nothing to train. To train it further, raise "
                                 "--config.train.steps above 4.\n")
  cause = "sweep.json does not exist" if sweep_is == "deleted" else "has not finished"
  with pytest.raises(SystemExit, match=(
      rf"{cause}.* The run in {run_dir} is at step 4 of 6, so it needs that sweep to train on; "
      rf"it trained block 1, as its {run_dir / 'run.json'} records: put the sweep back \(or "
      r"finish it\), or train those blocks in a new run_dir.$")):
    cli.main(["train", "--config", str(config_file), "--config.train.steps=6"])
  assert _files(run_dir) == before


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_checkpoints_directory(
    tiny_qwen2_dir, tmp_path, compile_cache):
  """A paper config without its data files stopped at once and left an empty checkpoints/."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  missing = str(tmp_path / "missing.jsonl")
  cfg.task.name, cfg.task.options = "gsm8k", {"data_files": {"train": missing, "test": missing}}
  with pytest.raises(FileNotFoundError, match="data file for split .* not found"):
    train.train(cfg)
  assert not (tmp_path / "run" / checkpoint.CHECKPOINT_DIR).exists()


@pytest.mark.parametrize("found", ["nothing", "empty directory", "link to another disk",
                                   "directory with notes"])
def test_a_run_that_fails_before_writing_leaves_only_what_it_found(tiny_qwen2_dir, tmp_path,
                                                                   compile_cache, found):
  """A run that stopped before writing anything (here a missing data file) left its new run
  directory holding only .jaxlayer.lock, as did `jaxlayer train`'s check of the run before it
  starts. Now the directory it made goes; one the user made (empty, a link to another disk, one
  holding a file) stays as it was, without the lock file."""
  run_dir = tmp_path / "run"
  if found == "empty directory":
    run_dir.mkdir()
  elif found == "link to another disk":
    (tmp_path / "big_disk").mkdir()
    run_dir.symlink_to(tmp_path / "big_disk")
  elif found == "directory with notes":
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
  cfg = small_config(tiny_qwen2_dir, run_dir, compile_cache)
  assert train.check_resume(train.plan(cfg)) == 0
  missing = str(tmp_path / "missing.jsonl")
  cfg.task.name, cfg.task.options = "gsm8k", {"data_files": {"train": missing, "test": missing}}
  with pytest.raises(FileNotFoundError, match="data file for split .* not found"):
    train.train(cfg)
  if found == "nothing":
    assert not os.path.lexists(run_dir)
  else:
    assert run_dir.is_dir() and run_dir.is_symlink() == (found == "link to another disk")
    expected = ["notes.txt"] if found == "directory with notes" else []
    assert sorted(path.name for path in run_dir.iterdir()) == expected


def test_a_run_removes_the_temporary_files_that_killed_writers_left(tiny_qwen2_dir, tmp_path,
                                                                    compile_cache,
                                                                    writers_leftovers):
  """A run killed (SIGKILL) while replacing config.json, run.json, metrics.jsonl or a plot left
  the temporary file in the run directory for good. Now the run started again removes those of
  ended processes of its host; a running writer's, another host's and other names stay."""
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  removed, kept = writers_leftovers(run_dir)
  assert train.check_resume(train.plan(small_config(tiny_qwen2_dir, run_dir, compile_cache))) == 0
  assert sorted(run_dir.iterdir()) == kept


def _files(run_dir):
  """Every file of a run directory but its lock: {relative path: (bytes, modification time)}."""
  return {str(path.relative_to(run_dir)): (path.read_bytes(), path.stat().st_mtime_ns)
          for path in sorted(run_dir.rglob("*"))
          if path.is_file() and path.name != locks.LOCK_FILE}


def test_finished_run_is_not_retrained_and_left_as_it_was(uninterrupted, tiny_qwen2_dir,
                                                         compile_cache):
  """train.steps at or below the steps done: the run is returned as it is, and nothing in its
  directory is written (config.json kept train.steps=4; before, it took the 2)."""
  before = _files(uninterrupted.run_dir)
  assert train.check_resume(train.plan(small_config(tiny_qwen2_dir, uninterrupted.run_dir,
                                                    compile_cache, steps=2))) == 4
  for steps in (4, 2):
    result = train.train(small_config(tiny_qwen2_dir, uninterrupted.run_dir, compile_cache,
                                      steps=steps))
    assert result.step == 4 and result.metrics == {}
    assert result.reward_history == uninterrupted.reward_history
    expected, got = _params(uninterrupted.model), _params(result.model)
    for path in expected:
      np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
  assert _files(uninterrupted.run_dir) == before


@pytest.mark.parametrize("damage", ["an empty step past the end", "the last step's params gone"])
def test_a_checkpoint_emptied_by_hand_is_named_not_taken_for_a_finished_run(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache, damage):
  """A copy of a run cut short, or a step directory emptied by hand: `jaxlayer train` said the
  run was finished at that step (loading nothing), and only an export then named the damage."""
  run_dir = tmp_path / "run"
  shutil.copytree(uninterrupted.run_dir, run_dir)
  checkpoints = run_dir / checkpoint.CHECKPOINT_DIR
  if damage == "an empty step past the end":
    (checkpoints / "6").mkdir()
    damaged, missing, before = checkpoints / "6", "params, optimizer, meta", 4
  else:
    shutil.rmtree(checkpoints / "4" / "params")
    damaged, missing, before = checkpoints / "4", "params", 2
  with pytest.raises(ValueError, match=re.escape(
      f"checkpoint {damaged} cannot be read (it holds no {missing}). If a process was killed "
      "while writing or deleting it, or the disk is damaged, delete that directory: the run then "
      f"goes on from checkpoint {before}.")):
    train.check_resume(train.plan(small_config(tiny_qwen2_dir, run_dir, compile_cache)))


def test_export_writes_the_trained_model_for_transformers(uninterrupted, tmp_path):
  import torch
  import transformers

  out = checkpoint.export(uninterrupted.run_dir, tmp_path / "hf")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  ids = np.array([[5, 17, 42, 9, 88, 120]])
  with torch.no_grad():
    hf_logits = hf_model(torch.tensor(ids)).logits.numpy()
  ours = np.asarray(uninterrupted.model(ids))
  np.testing.assert_allclose(hf_logits, ours, atol=1e-4, rtol=1e-4)
  assert (out / "tokenizer.json").is_file()


def test_a_bfloat16_run_trains_and_checkpoints_float32_leaves(tiny_qwen2_dir, tmp_path,
                                                             compile_cache):
  import orbax.checkpoint as ocp

  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=2,
                     learning_rate=1e-6)
  cfg.model.dtype = "bfloat16"
  result = train.train(cfg)
  step_dir = result.run_dir / checkpoint.CHECKPOINT_DIR / "2"
  saved = ocp.StandardCheckpointer().metadata(step_dir / "params").item_metadata
  assert {np.dtype(leaf.dtype) for leaf in saved.values()} == {np.dtype(np.float32)}
  moments = jax.tree.leaves(
      ocp.StandardCheckpointer().metadata(step_dir / "optimizer").item_metadata["opt_state"])
  assert {np.dtype(leaf.dtype) for leaf in moments if len(leaf.shape) > 1} == {
      np.dtype(np.float32)}
  # The float32 leaves moved by up to ~lr per update (8 updates: 2 steps x 2 epochs x 2
  # mini-batches) from the bfloat16 base; rounded to bfloat16 (the model that samples, and the
  # default export) most are where they were.
  base = _params(models.from_pretrained(tiny_qwen2_dir, dtype="bfloat16")[0])
  exported = checkpoint.export(result.run_dir, tmp_path / "f32", dtype="float32")
  unrounded = _params(models.from_pretrained(exported)[0])
  rounded = _params(checkpoint.load_trained_model(result.run_dir)[0])
  for path in saved:
    moved = np.abs(unrounded[path] - base[path].astype(np.float32))
    assert np.mean(moved > 0) > 0.95 and np.median(moved) < 8e-6, path
    assert np.mean(rounded[path] == base[path]) > 0.9, path
  # Exported in float32, the frozen leaves are the base checkpoint's own values.
  original = _params(models.from_pretrained(tiny_qwen2_dir)[0])
  frozen = set(original) - set(saved)
  assert all(unrounded[path].tobytes() == original[path].tobytes() for path in frozen)


@dataclasses.dataclass(kw_only=True)
class CountingTask(ArithmeticTask):
  """Grades every completion 0.5 and counts the rollouts it graded."""

  calls: list = dataclasses.field(default_factory=list)

  def reward_components(self, problems, completions):
    if list(completions) != [""]:  # not check_reward_weights's probe before training
      self.calls.append(1)
    return {"correct": [0.5] * len(completions)}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_qwen2_dir, tmp_path,
                                                                   compile_cache, monkeypatch):
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  cfg.checkpoint.every = 1
  task = CountingTask(num_train=64, num_test=8, max_value=9, operators="+")
  # NaN advantages on the third rollout (a reward that is NaN is refused as the user's error
  # before it reaches the loss: tests/test_tasks.py).
  real_estimator = advantages.get_estimator

  def poisoned_estimator(name):
    estimator = real_estimator(name)
    return lambda *args, **kwargs: estimator(*args, **kwargs) * (
        math.nan if len(task.calls) == 3 else 1.0)

  monkeypatch.setattr(advantages, "get_estimator", poisoned_estimator)
  # Counted from 1 as the step is (the first mini-batch of step 3's first epoch).
  with pytest.raises(train.TrainingDiverged, match=r"diverged at step 3 \(epoch 1 of 2, mini-batch "
                     r"1 of 2\): loss=nan.*last good checkpoint is kept"):
    train.train(cfg, task=task)
  assert checkpoint.Checkpointer(tmp_path / "run").all_steps() == [1, 2]
  model, _ = checkpoint.load_trained_model(tmp_path / "run")
  assert all(np.isfinite(v).all() for v in _params(model).values())
  assert [r["step"] for r in metrics.read_metrics(tmp_path / "run")] == [1, 2]


def _tensorboard_scalars(run_dir):
  """Tag -> [(step, value)] from the run's TensorBoard event files (TFRecord framing)."""
  from tensorboardX.proto import event_pb2

  scalars = {}
  for file in sorted((run_dir / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*")):
    data = file.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_training_prompts_follow_the_task_template_and_system_prompt(tiny_qwen2_dir, tmp_path,
                                                                     compile_cache):
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=1)
  cfg.task.update(template="Q: {question} =", system_prompt="Answer.")
  cfg.rollout.max_prompt_tokens = 40
  train.train(cfg)
  task = tasks.get_task(cfg.task.name, **cfg.task.options)
  expected = {f"Answer.\nQ: {p.prompt} =" for p in task.train_problems()}
  samples = (tmp_path / "run" / metrics.SAMPLES_FILE).read_text().splitlines()
  assert samples and {json.loads(s)["prompt"] for s in samples} <= expected


def test_metrics_files(uninterrupted):
  rows = metrics.read_metrics(uninterrupted.run_dir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for key in ("reward", "accuracy", "kl", "entropy", "response_length", "seconds_per_step",
              "loss", "grad_norm", "reward/correct"):
    assert all(math.isfinite(r[key]) for r in rows), key
  assert rows[-1]["kl"] > 0.0  # the policy has left the reference
  scalars = _tensorboard_scalars(uninterrupted.run_dir)
  assert [step for step, _ in scalars["reward"]] == [1, 2, 3, 4]
  np.testing.assert_allclose([v for _, v in scalars["reward"]], [r["reward"] for r in rows],
                             rtol=1e-6)
  samples = (uninterrupted.run_dir / metrics.SAMPLES_FILE).read_text().splitlines()
  assert len(samples) == 8 and {"prompt", "completion", "reward"} <= set(json.loads(samples[0]))


# --- configuration errors: raised before any weight is loaded or anything compiled ----------

@pytest.mark.parametrize("overrides, message", [
    ({"train.layers": "layers.2"}, r"block 2 is out of range; the model has 2 blocks, layers.0 "
     r"to layers.1"),
    ({"train.layers": "layers.1.atn"}, r"'layers.1.atn' matches no parameter"),
    ({"train.algorithm": "ppo"}, r"train.algorithm: unknown algorithm 'ppo'; registered: \['dapo', "
     r"'dr_grpo', 'gigpo', 'grpo'\]\. .*algorithms.ALGORITHMS\['ppo'\] = Algorithm\(\.\.\.\)"),
    ({"train.aggregation": "mean"}, r"Unknown loss aggregation 'mean'"),
    ({"train.group_size": 1, "train.batch_size": 8, "train.mini_batch_size": 8},
     r"group_size=1.*at least 2 responses"),
    ({"train.batch_size": 18}, r"batch_size=18 responses do not split into groups of "
     r"train.group_size=4"),
    ({"train.mini_batch_size": 5}, r"mini_batch_size=5 must divide train.batch_size=16"),
    ({"train.micro_batch_size": 3}, r"micro_batch_size=3 must divide the update batch of 8"),
    pytest.param({"mesh.num_devices": 0, "mesh.fsdp": -1, "train.batch_size": 12,
                  "train.mini_batch_size": 12, "train.micro_batch_size": None},
                 r"12 responses .* does not split over the mesh's 8 data x fsdp shards",
                 marks=pytest.mark.eight_devices),
    ({"task.name": "arithmetc"}, r"task.name: unknown task 'arithmetc' \(did you mean "
     r"'arithmetic'\?\)"),
    ({"model.dtype": "auto"}, r"model.dtype='auto' is for evaluating; a run names the dtype it "
     r"trains in: 'float32' or 'bfloat16' \(the checkpoint's is 'float32'\)\."),
    ({"rollout.temperature": 0.0}, r"temperature > 0"),
    ({"train.lr_groups": "layers.0=1e-5"}, r"train.layers='layers.1' leaves frozen"),
    ({"train.learning_rate": -1e-5}, r"train.learning_rate=-1e-05: .* must be > 0"),
    ({"train.learning_rate": 0.0}, r"train.learning_rate=0.0: .* must be > 0"),
    ({"train.learning_rate": float("nan")}, r"train.learning_rate=nan: .* must be > 0"),
    ({"train.layers": "all", "train.lr_groups": "layers.0=-1e-5"},
     r"lr_groups item 'layers.0=-1e-5': a learning rate must be > 0"),
    ({"train.warmup_steps": 4}, r"warmup_steps=4: .* 0 to train.steps - 1 = 3 RL steps"),
    ({"train.warmup_steps": -1}, r"warmup_steps=-1: .* 0 to train.steps - 1"),
    ({"train.steps": 2, "train.warmup_steps": 2}, r"train.steps - 1 = 1 RL step \(a longer"),
    ({"train.adam_b1": 1.0}, r"train.adam_b1=1.0: a moment decay lies in \[0, 1\)"),
    ({"train.adam_b2": -0.5}, r"train.adam_b2=-0.5: a moment decay lies in \[0, 1\)"),
    ({"train.adam_eps": 0.0}, r"train.adam_eps=0.0 must be > 0"),
    ({"train.weight_decay": -0.1}, r"train.weight_decay=-0.1 must be >= 0"),
    ({"train.max_grad_norm": -1.0}, r"train.max_grad_norm=-1.0 must be >= 0 \(0: no clipping"),
    ({"train.advantage_eps": -1e-6}, r"train.advantage_eps=-1e-06 must be >= 0"),
    ({"train.dynamic_sampling_max_rounds": 0}, r"dynamic_sampling_max_rounds must be >= 1"),
    ({"rollout.max_prompt_tokens": 0}, r"rollout.max_prompt_tokens must be >= 1, got 0"),
    # The shortest prompts, "1+2=" (one-digit operands), are 4 tokens of a byte each.
    ({"rollout.max_prompt_tokens": 2}, r"Every training prompt is longer than "
     r"rollout.max_prompt_tokens=2 tokens \(or empty\): raise the limit to at least 4, the "
     r"shortest prompt's length\.$"),
    ({"checkpoint.keep": 0}, r"checkpoint.keep must be >= 1 .*got 0"),
    ({"logging.eval_every": -1}, r"logging.eval_every=-1: give the RL steps between"),
    # Evaluations on 500 test problems (the eval section's default) of a task that has 8.
    ({"logging.eval_every": 2}, r"num_problems=500 but task .* has only 8 test problems"),
])
def test_bad_configs_fail_before_loading_or_compiling(overrides, message, tiny_qwen2_dir,
                                                      tmp_path, monkeypatch):
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the config was checked"))
  monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before checking"))
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None)
  for key, value in overrides.items():
    section, name = key.split(".")
    cfg[section][name] = value
  with pytest.raises(ValueError, match=message):
    train.train(cfg)


@pytest.mark.parametrize("seed", [-1, True])
def test_a_seed_that_is_no_integer_at_least_0_fails_before_loading(seed, tiny_qwen2_dir,
                                                                    tmp_path, monkeypatch):
  # -1 failed after the model loaded, at the first data order, with numpy's "expected
  # non-negative integer".
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the config was checked"))
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.seed = seed
  with pytest.raises(ValueError, match=re.escape(
      f"seed={seed!r}: give an integer >= 0 (it seeds the data order, the sampling and the "
      "mini-batch order).")):
    train.train(cfg)


class _ModelLoaded(Exception):
  """Raised in place of loading the model: what a test checks came before."""


def test_fewer_training_problems_than_a_steps_prompts_are_warned_of(tiny_qwen2_dir, tmp_path,
                                                                    capsys, monkeypatch):
  """A train split smaller than a step's prompts repeated problems within every step, silently.
  Now the run says so, with the counts and the fix, before it loads the model."""
  def loaded(*args, **kwargs):
    raise _ModelLoaded

  monkeypatch.setattr(models, "from_pretrained", loaded)
  plan = train.plan(small_config(tiny_qwen2_dir, tmp_path / "run", None))  # 4 prompts a step
  warning = ("jaxlayer: 3 training problems to train on, fewer than the 4 prompts of a step "
             "(train.batch_size=16 / train.group_size=4), so every step repeats problems: give "
             "more training problems, or a train.batch_size of at most 12.\n")
  for num_train, printed in ((3, warning), (4, "")):
    with pytest.raises(_ModelLoaded):
      train._Trainer(plan, ArithmeticTask(num_train=num_train, num_test=8, max_value=9))
    assert capsys.readouterr() == ("", printed)  # (a warning: stdout is a command's results')


@pytest.mark.eight_devices
def test_an_update_batch_the_mesh_cannot_split_names_a_mesh_of_the_same_devices_that_can(
    tiny_qwen2_dir, tmp_path):
  """A run of 12-response updates (batch and mini-batch, which a resumed run may not change)
  moved to 8 devices, whose default mesh (fsdp over all 8) cannot split them: the error names
  a mesh of those 8 devices that can, and the run plans on it."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, batch_size=12, mini_batch_size=12,
                     micro_batch_size=None)
  cfg.mesh.num_devices = 8
  with pytest.raises(ValueError, match=r"make it a multiple of 8 \(a resumed run may change "
                     r"train.micro_batch_size only\), or split the 8 devices so that it does: "
                     r"mesh.data=1 mesh.fsdp=4 mesh.tensor=2\.$"):
    train.plan(cfg)
  cfg.mesh.update(data=1, fsdp=4, tensor=2)
  assert dict(train.plan(cfg).mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}


def test_a_second_compilation_cache_directory_is_the_one_written(tmp_path):
  """JAX opens its persistent cache once per process: a notebook's second sweep (another
  compilation_cache_dir) wrote its compiled programs into the first sweep's directory."""
  settings = {"jax_persistent_cache_min_compile_time_secs": 0,
              "jax_persistent_cache_min_entry_size_bytes": -1}
  before = {name: getattr(jax.config, name)
            for name in [*settings, "jax_compilation_cache_dir"]}
  try:
    for name, value in settings.items():
      jax.config.update(name, value)
    for scale in (2.0, 3.0):  # another program for each directory
      directory = tmp_path / f"cache_{scale}"
      train.use_compilation_cache(str(directory))
      jax.jit(lambda x, scale=scale: x * scale + 1)(np.ones(3, np.float32)).block_until_ready()
      assert directory.is_dir() and any(directory.iterdir())
  finally:
    for name, value in before.items():
      if name != "jax_compilation_cache_dir":
        jax.config.update(name, value)
    train.use_compilation_cache(before["jax_compilation_cache_dir"])


def test_a_run_compiles_into_its_cache_and_gives_the_process_its_own_back(tmp_path,
                                                                         monkeypatch):
  """A notebook's later cells compiled into the run's compilation_cache_dir (and warned at every
  compilation once that directory was deleted)."""
  from jaxlayer import assets

  own = jax.config.jax_compilation_cache_dir
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.compilation_cache_dir = str(tmp_path / "xla_cache")
  seen = []

  def loading(*args, **kwargs):
    seen.append(jax.config.jax_compilation_cache_dir)
    raise MemoryError("out of memory while loading")

  monkeypatch.setattr(models, "from_pretrained", loading)
  with pytest.raises(MemoryError):
    train.train(cfg)
  assert seen == [cfg.compilation_cache_dir]
  assert jax.config.jax_compilation_cache_dir == own


@pytest.mark.parametrize("config, error", [
    ({"model": {"path": "DIR"}}, r"config must be an ml_collections ConfigDict.*got dict"),
    (None, r"config must be an ml_collections ConfigDict.*got NoneType"),
])
def test_a_config_that_is_no_configdict_is_a_clear_error(config, error):
  """It used to fail with "'dict' object has no attribute 'train'"."""
  with pytest.raises(TypeError, match=error):
    train.train(config)


@pytest.mark.parametrize("section, key, error", [
    ("train", "layer", r"config key train.layer is no jaxlayer setting \(nothing would read "
     r"it\); did you mean train.layers\? Every key and its default: docs/configuration.md."),
    (None, "eval_every", r"config key eval_every .*; did you mean logging.eval_every\?"),
    ("train", "zzzz", r"config key train.zzzz is no jaxlayer setting \(nothing would read "
     r"it\)\. Every key"),
])
def test_a_config_key_that_nothing_reads_is_a_clear_error(tmp_path, section, key, error):
  """A key misspelt in a config file (`config.train.layer = "layers.1"`) was added to the config
  and ignored: the run trained every block."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.task.options.max_value = 9  # (a task's options are the task's to check)
  (cfg[section] if section else cfg)[key] = "layers.1"
  with pytest.raises(ValueError, match=error):
    train.plan(cfg)
  assert not (tmp_path / "run").exists()


def test_a_task_that_is_no_task_object_is_a_clear_error(tmp_path):
  """train(cfg, task="arithmetic") failed deep in the run with "'str' object has no attribute
  'train_problems'"."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  with pytest.raises(TypeError, match=re.escape(
      "task must be a jaxlayer Task, got str: make one with tasks.get_task('arithmetic').")):
    train.train(cfg, task="arithmetic")
  assert not (tmp_path / "run").exists()


def test_a_run_dir_another_process_writes_is_refused_and_left_as_it_was(
    tiny_qwen2_dir, tmp_path, monkeypatch, capsys, held_by_another_process):
  from pathlib import Path

  from jaxlayer import cli

  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')  # the other run's
  held_by_another_process(run_dir)
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("loaded a model into a run_dir in use"))
  with pytest.raises(locks.DirectoryInUseError, match=r"in use: .*choose another run_dir"):
    train.train(small_config(tiny_qwen2_dir, run_dir, None))
  config_file = Path(__file__).parents[1] / "configs" / "grpo_arithmetic.py"
  with pytest.raises(SystemExit, match=r"^jaxlayer train: .*run is in use: .*another run_dir"):
    cli.main(["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
              f"--config.run_dir={run_dir}"])
  assert capsys.readouterr().out == ""  # before the run's header, and no curves drawn
  assert sorted(p.name for p in run_dir.iterdir()) == [locks.LOCK_FILE, "metrics.jsonl"]
  assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_summary_says_step_for_one_and_steps_for_more(tiny_qwen2_dir, tmp_path):
  for steps, said in ((1, "1 RL step of"), (2, "2 RL steps of")):
    summary = train.plan(small_config(tiny_qwen2_dir, tmp_path, None, steps=steps)).summary()
    assert f"; grpo, {said} 16 responses; run directory {tmp_path}" in summary


def test_summary_names_the_blocks_of_a_named_selection_and_of_each_learning_rate_group(tmp_path):
  """Only-B2, Mid-3 and Boost-B2 on the 8-block model: the header said 'top2@DIR' or 'all' and
  left the user to find which blocks (and which rates) that meant."""
  import jaxlayer.sweep.strategies  # noqa: F401  (topK@SWEEP_DIR)

  scores = {0: 0.40, 1: 0.36, 2: 0.38, 3: 0.35, 4: 0.41, 5: 0.37, 6: 0.34, 7: 0.35}
  (tmp_path / "sweep.json").write_text(json.dumps({
      "num_layers": 8, "s_base": 0.34, "s_full": 0.41,
      "layers": [{"layer": k, "score": s, "contribution": (s - 0.34) / 0.07}
                 for k, s in scores.items()]}))
  header = lambda **train_cfg: train.plan(  # noqa: E731
      small_config(assets.TINY_ARITH, tmp_path / "run", None, **train_cfg)).summary()
  assert header(layers=f"top2@{tmp_path}").startswith(f"top2@{tmp_path} (blocks 0, 4) of ")
  assert header(layers="mid3").startswith("mid3 (blocks 2, 3, 4) of ")  # (8 - 3) // 2 = 2
  boost = header(layers="all", learning_rate=3e-5, lr_groups=f"top2@{tmp_path}=6e-5")
  assert boost.startswith("all of ")
  assert "(100.0%), learning rate 3e-05, 6e-05 for blocks 0, 4; grpo" in boost
  assert "learning rate" not in header(layers="layers.1")


def test_a_run_takes_the_ranking_of_a_sweep_of_its_own_weights_only(tmp_path):
  """top2@DIR of a sweep of another 8-block model trained the blocks that model ranked: only
  the block count was checked. The sweep's manifest.json records its weights' fingerprint."""
  import jaxlayer.sweep.strategies  # noqa: F401  (topK@SWEEP_DIR)

  (tmp_path / "sweep.json").write_text(json.dumps({"model": "other-model", "num_layers": 8,
                                                   "s_base": 0.3, "s_full": 0.4,
                                                   "layers": [{"layer": k, "score": 0.3 + k / 100,
                                                               "contribution": k / 10}
                                                              for k in range(8)]}))
  config = small_config(assets.TINY_ARITH, tmp_path / "run", None, layers=f"top2@{tmp_path}")
  manifest = {"model_fingerprint": models.weights_fingerprint(assets.TINY_ARITH)}
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  assert train.plan(config).summary().startswith(f"top2@{tmp_path} (blocks 6, 7) of ")
  (tmp_path / "manifest.json").write_text(json.dumps({"model_fingerprint": "0123456789abcdef"}))
  with pytest.raises(ValueError, match=r"that sweep measured the blocks of other-model \(weights "
                     r"fingerprint 0123456789abcdef\), but this model, .*tiny-arith, has other "
                     r"weights"):
    train.plan(config)


def test_missing_model_path_and_run_dir_are_named(tmp_path):
  cfg = default_config()
  with pytest.raises(ValueError, match=r"--config.model.path=DIR"):
    train.plan(cfg)
  cfg.model.path = str(tmp_path)
  with pytest.raises(ValueError, match=r"--config.run_dir=DIR"):
    train.plan(cfg)


# --- DAPO: dynamic sampling, overlong filtering and penalty -----------------------------------

def _fake_round(group_rewards, group_size=4, length=5):
  """Synthetic rollouts: one reward list per group; odd rows hit the length limit."""
  rewards = np.asarray([r for group in group_rewards for r in group], np.float64)
  rows = len(rewards)
  lengths = np.where(np.arange(rows) % 2, length, 2)
  return train._Rollouts(
      problem_indices=list(range(len(group_rewards))),
      tokens=np.full((rows, length), 7, np.int32),
      logprobs=np.full((rows, length), -1.0, np.float32),
      mask=np.arange(length)[None] < lengths[:, None], truncated=lengths == length,
      rewards=rewards, components={"correct": rewards})


@pytest.mark.parametrize("max_rounds, expected_rewards, expected_weights", [
    # rounds 1 and 2 give 3 groups with a signal, round 3 none, round 4 two more: 4 taken
    (4, [[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], [1, 1, 1, 1]),
    # out of rounds after 2: the 3 groups with a signal, then one without it at weight 0
    (2, [[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1]], [1, 1, 1, 0]),
])
def test_dapo_dynamic_sampling_fills_the_batch_with_groups_that_have_a_signal(
    tiny_qwen2_dir, tmp_path, max_rounds, expected_rewards, expected_weights):
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, algorithm="dapo", kl_beta=None,
                     dynamic_sampling_max_rounds=max_rounds)
  cfg.rollout.max_new_tokens = 5
  trainer = train._Trainer(train.plan(cfg), None)
  assert trainer.plan.algorithm.dynamic_sampling and trainer.plan.loss.clip_eps_high == 0.28
  # DAPO's soft overlong penalty is the task's own reward component, over the last 20%.
  assert (trainer.task.overlong_max_length, trainer.task.overlong_cache_length) == (5, 1)
  rounds = iter([
      [[1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]],
      [[0, 0, 0, 1], [0, 0, 0, 0], [2, 2, 2, 2], [0, 0, 0, 0]],
      [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
      [[1, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
  ])
  trainer._sample_round = lambda key: _fake_round(next(rounds))
  batch, weights, sampled = trainer._collect(jax.random.PRNGKey(0))
  assert batch.rewards.reshape(4, 4).tolist() == expected_rewards
  assert weights.tolist() == expected_weights
  assert len(sampled.rewards) == 16 * max_rounds  # every sampled response counts in the metrics

  arrays = trainer._make_batch(batch, weights)
  # token-level weights: zero for the zero-weight group; the responses' own masks otherwise
  np.testing.assert_array_equal(arrays["response_mask"],
                                batch.mask * np.repeat(weights, 4)[:, None])
  # the zero-weight group stands in for a group not found: no response of the batch, so no
  # per-response normaliser counts it
  np.testing.assert_array_equal(arrays["is_response"], np.repeat(weights, 4))
  np.testing.assert_allclose(arrays["advantages"][:4, 0], [-0.5, 1.5, -0.5, -0.5], rtol=1e-5)


def test_dynamic_sampling_keeps_groups_by_accuracy_not_by_the_total_reward(tiny_qwen2_dir,
                                                                           tmp_path):
  """DAPO (Yu et al. 2025, eq. 11; veRL's recipe: filter_groups.metric=acc) keeps a group when
  0 < (correct responses) < G. Group 0 is all correct and group 1 all wrong, but their total
  rewards differ through the soft overlong penalty and a format reward: no accuracy signal,
  so both are dropped; groups 2 and 3 have one."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, algorithm="dapo", kl_beta=None,
                     dynamic_sampling_max_rounds=2)
  cfg.rollout.max_new_tokens = 5
  trainer = train._Trainer(train.plan(cfg), None)
  correct = np.asarray([[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1]], np.float64)
  shaping = np.asarray([[0, -1, 0, -1], [0.1, 0, 0.1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  first = _fake_round((correct + shaping).tolist())
  first.components = {"correct": correct.reshape(-1)}
  rounds = iter([first, _fake_round([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0] * 4])])
  trainer._sample_round = lambda key: next(rounds)
  batch, weights, _ = trainer._collect(jax.random.PRNGKey(0))
  assert batch.rewards.reshape(4, 4).tolist() == [[0, 1, 0, 0], [1, 1, 0, 1], [1, 0, 0, 0],
                                                  [0, 0, 1, 1]]
  assert weights.tolist() == [1, 1, 1, 1]


def test_overlong_filtering_drops_truncated_responses_from_the_loss(tiny_qwen2_dir, tmp_path):
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, algorithm="dapo", kl_beta=None,
                     overlong_filtering=True, dynamic_sampling=False,
                     overlong_buffer_fraction=0.0)
  trainer = train._Trainer(train.plan(cfg), None)
  assert trainer.task.overlong_max_length is None
  rollouts = _fake_round([[0, 1, 0, 0]] * 4)
  arrays = trainer._make_batch(rollouts, np.ones(4))
  assert (arrays["response_mask"][rollouts.truncated] == 0).all()
  np.testing.assert_array_equal(arrays["response_mask"][~rollouts.truncated],
                                rollouts.mask[~rollouts.truncated])
  # A filtered response is still one of the batch's responses (TRL's mask_truncated_completions
  # keeps its row in the 'grpo' / 'dr_grpo' means): the normalisers count it.
  assert rollouts.truncated.any() and (arrays["is_response"] == 1).all()


def test_with_overlong_filtering_a_group_of_truncated_responses_only_is_no_signal(
    tiny_qwen2_dir, tmp_path):
  """Its rewards may differ, but every response is filtered out of the loss: dynamic sampling
  replaces it, instead of counting an empty group as a full one."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, algorithm="dapo", kl_beta=None,
                     overlong_filtering=True, dynamic_sampling_max_rounds=2)
  cfg.rollout.max_new_tokens = 5
  trainer = train._Trainer(train.plan(cfg), None)
  first = _fake_round([[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]])
  first.truncated[:4] = True  # the first group hit the length limit in every response
  rounds = iter([first, _fake_round([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])])
  trainer._sample_round = lambda key: next(rounds)
  batch, weights, _ = trainer._collect(jax.random.PRNGKey(0))
  assert batch.rewards.reshape(4, 4).tolist() == [[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0],
                                                  [0, 1, 1, 1]]
  assert weights.tolist() == [1, 1, 1, 1]
  arrays = trainer._make_batch(batch, weights)
  assert (arrays["response_mask"].reshape(4, -1).sum(axis=1) > 0).all()

def test_a_step_whose_groups_all_lack_a_signal_makes_no_update_and_logs_no_update_metrics(
    tiny_qwen2_dir, tmp_path, capsys):
  """DAPO out of sampling rounds with no group left: nothing to learn from, so the weights stay
  as they are and the step logs no loss, entropy or ratio (not zeros that read as measured)."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", None, algorithm="dapo", kl_beta=None,
                     dynamic_sampling_max_rounds=1)
  cfg.rollout.max_new_tokens = 5
  trainer = train._Trainer(train.plan(cfg), None)
  rounds = iter([[[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], [[1, 1, 1, 1]] * 4])
  trainer._sample_round = lambda key: _fake_round(next(rounds))
  learned, _ = trainer.run_step()
  assert learned["entropy"] > 0 and learned["ratio_mean"] > 0
  before = {k: np.asarray(v) for k, v in trainer.params.items()}
  result, _ = trainer.run_step()
  assert result["batch_groups_weighted"] == 0.0
  assert not {"loss", "entropy", "ratio_mean", "grad_norm"} & set(result)
  assert "step 2: every group was dropped" in capsys.readouterr().err
  for k, value in trainer.params.items():
    np.testing.assert_array_equal(np.asarray(value), before[k], err_msg=k)

# --- the command line -------------------------------------------------------------------------

def test_cli_train_then_export(tiny_qwen2_dir, tmp_path, capsys, monkeypatch):
  """The issue's command line, as is (all 8 test devices, fsdp), again on the finished run,
  resumed for one more step, then `jaxlayer export`."""
  from pathlib import Path

  from jaxlayer import cli

  config_file = Path(__file__).parents[1] / "configs" / "grpo_arithmetic.py"
  run_dir, hf_dir = tmp_path / "out", tmp_path / "hf"
  command = ["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
             "--config.train.layers=layers.1", f"--config.run_dir={run_dir}",
             "--config.logging.eval_every=1", "--config.eval.num_problems=4",
             "--config.eval.batch_size=4"]
  cli.main([*command, "--config.train.steps=2"])
  printed, notes = capsys.readouterr()  # its results; its plan and notes, beside the bars
  import transformers

  hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
  capsys.readouterr()  # (its loading bar)
  trained = sum(p.numel() for p in hf.model.layers[1].parameters())
  total = sum(p.numel() for p in hf.parameters())
  assert notes.startswith(
      f"jaxlayer train: layers.1 of {tiny_qwen2_dir}: {trained:,} of {total:,} parameters "
      f"({trained / total:.1%}); grpo, 2 RL steps of 64 responses; run directory {run_dir}\n")
  assert (f"  metrics: {run_dir / 'metrics.jsonl'}; tensorboard --logdir "
          f"{run_dir / 'tensorboard'}\n") in notes  # (once written)
  rows = metrics.read_metrics(run_dir)
  tests = [r["eval/arithmetic/pass@1"] for r in rows]  # evaluated after each step
  assert printed == (f"training curves: {run_dir / 'training.png'}\n"
                          f"trained 2 steps; mean reward {rows[0]['reward']:z.3f} at step 1, "
                          f"{rows[1]['reward']:z.3f} at step 2\n"
                          f"test arithmetic/pass@1: {tests[0]:.3f} at step 1, {tests[1]:.3f} at "
                          f"step 2\nexport the trained model: jaxlayer export --run {run_dir} "
                          "--out HF_DIR\n")
  assert [r["step"] for r in metrics.read_metrics(run_dir)] == [1, 2]
  assert checkpoint.Checkpointer(run_dir).all_steps() == [2]

  # The finished run, again with as many steps or fewer: one line, nothing loaded or written
  # (the last command's train.layers wins).
  finished = _files(run_dir)
  with monkeypatch.context() as patch:
    patch.setattr(models, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    for steps, asked in ((2, ""), (1, " (train.steps=1)")):
      cli.main([*command, f"--config.train.steps={steps}"])
      assert capsys.readouterr() == (
          "", f"jaxlayer train: {run_dir} is already finished at step 2{asked}: nothing to "
          "train. To train it further, raise --config.train.steps above 2.\n")
  # A refused resume says why, and nothing else: no header, no curves drawn again.
  with pytest.raises(SystemExit, match=r"^jaxlayer train: run_dir .* holds checkpoints of a run "
                     r"with a different config \(train.layers: 'layers.1' -> 'layers.0'\)"):
    cli.main([*command, "--config.train.steps=3", "--config.train.layers=layers.0"])
  assert capsys.readouterr().out == ""
  assert _files(run_dir) == finished
  # Killed after its last checkpoint, before it drew its curves: they are drawn now.
  plot, logged = run_dir / "training.png", (run_dir / "metrics.jsonl").stat().st_mtime_ns
  os.utime(plot, ns=(logged - 10**9, logged - 10**9))
  cli.main([*command, "--config.train.steps=2"])
  assert capsys.readouterr() == (
      f"training curves: {plot}\n", f"jaxlayer train: {run_dir} is already finished at step 2: "
      "nothing to train. To train it further, raise --config.train.steps above 2.\n")
  assert plot.stat().st_mtime_ns > logged
  cli.main([*command, "--config.train.steps=3"])
  printed, notes = capsys.readouterr()
  rows = metrics.read_metrics(run_dir)
  assert "resuming from step 2 of 3\n" in notes
  assert printed.split("\n")[:2] == [f"training curves: {run_dir / 'training.png'}",
                                     f"trained 1 step; mean reward {rows[0]['reward']:z.3f} at "
                                     f"step 1, {rows[2]['reward']:z.3f} at step 3"]
  assert checkpoint.Checkpointer(run_dir).all_steps() == [2, 3]

  cli.main(["export", "--run", str(run_dir), "--out", str(hf_dir)])
  base = _params(models.from_pretrained(tiny_qwen2_dir)[0])
  exported = _params(models.from_pretrained(hf_dir)[0])
  trained = _params(checkpoint.load_trained_model(run_dir)[0])
  for path in base:
    np.testing.assert_array_equal(exported[path], trained[path], err_msg=path)
    if not path.startswith("layers.1."):
      np.testing.assert_array_equal(exported[path], base[path], err_msg=path)
  assert any(not np.array_equal(exported[p], base[p]) for p in base if p.startswith("layers.1."))
  with pytest.raises(SystemExit, match="already holds a checkpoint.*--overwrite"):
    cli.main(["export", "--run", str(run_dir), "--out", str(hf_dir)])


def test_a_full_disk_is_named_by_the_write_it_stopped_not_by_the_curves_after_it(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  """The disk filled while the run appended to metrics.jsonl; drawing training.png on the way
  out failed too, and that error, naming training.png, replaced the run's."""
  from pathlib import Path

  from jaxlayer import cli, paths, plots

  config_file = Path(__file__).parents[1] / "configs" / "grpo_arithmetic.py"
  run_dir = tmp_path / "run"

  def fills_the_disk(config, **kwargs):
    run_dir.mkdir()
    (run_dir / metrics.METRICS_FILE).write_text('{"step": 1, "reward": 0.5}\n')
    raise paths.DiskFullError(run_dir / metrics.METRICS_FILE)

  def cannot_draw(figure, path):
    raise paths.DiskFullError(path)

  monkeypatch.setattr(train, "train", fills_the_disk)
  monkeypatch.setattr(plots, "save_figure", cannot_draw)
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer train: no space left on the device to write {run_dir / metrics.METRICS_FILE}:")):
    cli.main(["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
              f"--config.run_dir={run_dir}"])


def test_cli_reports_config_errors(tiny_qwen2_dir, tmp_path):
  from pathlib import Path

  from jaxlayer import cli

  config_file = Path(__file__).parents[1] / "configs" / "grpo_arithmetic.py"
  with pytest.raises(SystemExit, match=r"jaxlayer train: .*block 9 is out of range"):
    cli.main(["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
              "--config.train.layers=layers.9", f"--config.run_dir={tmp_path}"])
  with pytest.raises(SystemExit, match=r"--config.train.layer: train has no key 'layer' "
                     r"\(its keys: .*, layers, .*\)"):
    cli.main(["train", "--config", str(config_file), "--config.train.layer=layers.1"])
  with pytest.raises(SystemExit,
                     match=r"--config.sweep.dir: sweep.\* settings are `jaxlayer sweep`'s"):
    cli.main(["train", "--config", str(config_file), "--config.sweep.dir=x"])
  with pytest.raises(SystemExit, match=r"--config.train.steps=abc: train.steps takes a whole "
                     r"number, not 'abc'"):
    cli.main(["train", "--config", str(config_file), "--config.train.steps=abc"])
  with pytest.raises(SystemExit, match=r"jaxlayer export: .*not a jaxlayer run directory"):
    cli.main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "hf")])


def test_cli_names_the_metrics_file_only_for_a_run_that_writes_it(tiny_qwen2_dir, tmp_path,
                                                                  capsys):
  """A run that fails before its first step (a missing data file) writes no metrics.jsonl:
  `jaxlayer train` names none."""
  from jaxlayer import cli

  config_file = tmp_path / "missing_data.py"
  config_file.write_text(
      "from jaxlayer.rl.config import default_config\n\n\n"
      "def get_config():\n"
      "  config = default_config()\n"
      "  config.task.name = 'gsm8k'\n"
      f"  config.task.options.data_files = {{'train': {str(tmp_path / 'missing.jsonl')!r}}}\n"
      "  return config\n")
  run_dir = tmp_path / "run"
  with pytest.raises(SystemExit, match="data file for split 'train' not found"):
    cli.main(["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
              "--config.train.layers=layers.1", f"--config.run_dir={run_dir}",
              "--config.rollout.max_prompt_tokens=16", "--config.rollout.max_new_tokens=8"])
  printed = capsys.readouterr().err
  assert printed.startswith("jaxlayer train: layers.1 of ")  # the run got as far as its plan
  assert not (run_dir / metrics.METRICS_FILE).exists()
  assert "metrics:" not in printed


def test_cli_resumes_a_run_on_a_relative_data_file_from_another_directory(tiny_qwen2_dir,
                                                                         tmp_path, capsys,
                                                                         monkeypatch):
  """A data file given relative to the current directory was recorded so: a resume from
  another directory read another file or none, and one given absolute was refused as another
  config. Now config.json records the absolute path, and a resume on data edited since is
  refused before `jaxlayer train` says it is resuming (it said so before loading the data)."""
  from jaxlayer import cli

  project = tmp_path / "project"
  (project / "data").mkdir(parents=True)
  data_file = project / "data" / "train.jsonl"
  records = [{"question": f"{n}+1?", "answer": f"#### {n + 1}"} for n in range(4)]
  data_file.write_text("".join(json.dumps(record) + "\n" for record in records))
  run_dir, command = _gsm8k_train_command(
      tmp_path, tiny_qwen2_dir, "config.task.options.data_files = {'train': 'data/train.jsonl'}")
  monkeypatch.chdir(project)
  cli.main([*command, "--config.train.steps=1"])
  recorded = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  assert recorded["task"]["options"]["data_files"] == {"train": str(data_file)}
  monkeypatch.chdir(tmp_path)  # which holds no data/train.jsonl
  capsys.readouterr()
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer train: data_files.train: {tmp_path / 'data' / 'train.jsonl'} not found. Run "
      f"{run_dir} trained on {data_file} (its config.json): give that file")):
    cli.main([*command, "--config.train.steps=2"])
  absolute = [*command, f"--config.task.options.data_files.train={data_file}"]
  assert train.check_resume(train.plan(cli.load_config(absolute[1:], "jaxlayer train"))) == 1
  # A run written before: its config.json holds the path as given, its run.json no fingerprint
  # of its problems. From its directory it resumes as it did.
  written = {name: (run_dir / name).read_text() for name in ("config.json", "run.json")}
  recorded["task"]["options"]["data_files"] = {"train": "data/train.jsonl"}
  (run_dir / "config.json").write_text(json.dumps(recorded))
  run = json.loads(written["run.json"])
  del run["train_problems"]
  (run_dir / "run.json").write_text(json.dumps(run))
  monkeypatch.chdir(project)
  assert train.check_resume(train.plan(cli.load_config(command[1:], "jaxlayer train"))) == 1
  for name, text in written.items():
    (run_dir / name).write_text(text)
  data_file.write_text(data_file.read_text().replace("#### 4", "#### 5"))  # an answer edited
  with pytest.raises(SystemExit, match="trained on other training problems"):
    cli.main([*absolute, "--config.train.steps=2"])
  assert "resuming" not in capsys.readouterr().out


def _gsm8k_train_command(tmp_path, model_dir, data_option: str) -> tuple:
  """(run_dir, the command line of `jaxlayer train` without its steps) of a one-block gsm8k run
  whose config file (in tmp_path) reads its data by `data_option`, a line of Python."""
  config_file = tmp_path / "gsm8k_data.py"
  config_file.write_text(
      "from jaxlayer.rl.config import default_config\n\n\n"
      "def get_config():\n"
      "  config = default_config()\n"
      "  config.task.name = 'gsm8k'\n"
      f"  {data_option}\n"
      "  return config\n")
  run_dir = tmp_path / "run"
  return run_dir, [
      "train", "--config", str(config_file), f"--config.model.path={model_dir}",
      "--config.train.layers=layers.1", f"--config.run_dir={run_dir}",
      "--config.train.batch_size=8", "--config.train.group_size=4",
      "--config.rollout.max_prompt_tokens=16", "--config.rollout.max_new_tokens=2",
      "--config.mesh.num_devices=1", "--config.logging.progress=False"]


def test_cli_resumes_a_run_on_a_relative_data_set_directory_from_another_directory(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  """A local data set directory (task.options.dataset) given relative to the current directory
  was recorded so, as data files were: a resume from another directory looked it up on the hub.
  Now config.json records its absolute path, and a missing one is named with it."""
  import datasets

  from jaxlayer import cli

  project = tmp_path / "project"
  records = [{"question": f"{n}+1?", "answer": f"#### {n + 1}"} for n in range(4)]
  datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(
      str(project / "gsm8k"))
  run_dir, command = _gsm8k_train_command(tmp_path, tiny_qwen2_dir,
                                          "config.task.options.dataset = 'gsm8k'")
  monkeypatch.chdir(project)
  cli.main([*command, "--config.train.steps=1"])
  recorded = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  assert recorded["task"]["options"]["dataset"] == str(project / "gsm8k")
  monkeypatch.chdir(tmp_path)  # which holds no gsm8k directory
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer train: dataset: gsm8k not found. Run {run_dir} trained on {project / 'gsm8k'} "
      "(its config.json): give that directory")):
    cli.main([*command, "--config.train.steps=2"])
  absolute = [*command, f"--config.task.options.dataset={project / 'gsm8k'}"]
  assert train.check_resume(train.plan(cli.load_config(absolute[1:], "jaxlayer train"))) == 1


def test_eval_task_options_data_files_are_recorded_absolute_as_task_options_are(
    tmp_path, monkeypatch):
  """eval.task_options' data files were recorded as given, where task.options' are made
  absolute: a resume or `jaxlayer eval` of the run's config.json from another directory read
  another file or none."""
  import ml_collections

  from jaxlayer import evaluation

  project = tmp_path / "project"
  (project / "data").mkdir(parents=True)
  (project / "data" / "test.jsonl").write_text(json.dumps({"question": "1+1?",
                                                           "answer": "#### 2"}) + "\n")
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.eval = evaluation.default_eval_config()
  cfg.eval.tasks = "arithmetic,gsm8k"
  cfg.eval.task_options = {"gsm8k": {"data_files": {"test": "data/test.jsonl"}}}
  monkeypatch.chdir(project)
  train.plan(cfg)
  recorded = ml_collections.ConfigDict(json.loads(cfg.to_json()))  # the run's config.json
  monkeypatch.chdir(tmp_path)  # which holds no data/test.jsonl
  gsm8k = evaluation.config_task(recorded, "gsm8k")
  assert [(p.prompt, p.answer) for p in gsm8k.test_problems()] == [("1+1?", "2")]


@pytest.mark.parametrize("name", ["grpo_arithmetic", "dr_grpo_arithmetic", "dapo_arithmetic"])
def test_shipped_configs_plan_on_a_tiny_model(name, tiny_qwen2_dir, tmp_path):
  from pathlib import Path

  from jaxlayer import cli

  config_file = Path(__file__).parents[1] / "configs" / f"{name}.py"
  cfg = cli.load_config(["--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
                         f"--config.run_dir={tmp_path}", "--config.train.layers=mid1"], name)
  planned = train.plan(cfg)
  assert planned.algorithm == train.algorithms.ALGORITHMS[name.split("_arith")[0]]
  assert {p.split(".")[1] for p in planned.selection.trainable} == {"0"}  # mid1 of 2 blocks


@pytest.mark.parametrize("name", ["grpo_arithmetic", "dr_grpo_arithmetic", "dapo_arithmetic",
                                  "gigpo_gridworld", "sweep_tiny"])
def test_shipped_configs_fit_the_shipped_models_context(name, tmp_path):
  from pathlib import Path

  from jaxlayer import assets, cli

  config_file = Path(__file__).parents[1] / "configs" / f"{name}.py"
  cfg = cli.load_config(["--config", str(config_file), f"--config.model.path={assets.TINY_ARITH}",
                         f"--config.run_dir={tmp_path}"], name)
  positions = train.plan(cfg).model_config.max_position_embeddings
  assert cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens <= positions == 64


def test_a_context_longer_than_the_models_is_refused_before_anything_is_written(tmp_path):
  """default_config() (1,024 prompt + 64 new tokens, for real models) on the shipped model,
  whose 64 positions it cannot fit: refused with both numbers and the keys to lower. Before,
  the first rollout failed, after the run directory was written."""
  from jaxlayer import assets

  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  with pytest.raises(ValueError, match=r"^rollout.max_prompt_tokens=1024 prompt tokens \+ "
                     r"rollout.max_new_tokens=64 = 1088 positions, beyond the model's "
                     r"max_position_embeddings=64: lower rollout.max_new_tokens or "
                     r"rollout.max_prompt_tokens \(longer training prompts are skipped\)\.$"):
    train.train(cfg)
  assert not (tmp_path / "run").exists()


def test_a_test_prompt_too_long_for_the_eval_fails_before_the_first_step(tmp_path, monkeypatch):
  """logging.eval_every with eval.max_new_tokens that a test prompt cannot fit: refused before
  the model loads. Before, it failed at the first evaluation, after a training step."""
  from jaxlayer import assets, evaluation, tasks

  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.logging.update(eval_every=1, progress=False)
  cfg.eval = evaluation.default_eval_config()
  cfg.eval.update(max_new_tokens=60, num_problems=4)
  tokenizer = models.load_tokenizer(assets.TINY_ARITH)
  problems = evaluation.eval_problems(evaluation.config_task(cfg, "arithmetic"), 4)
  longest = max(len(tokenizer(tasks.format_prompt(p, tokenizer, template=cfg.task.template))[
      "input_ids"]) for p in problems)
  monkeypatch.setattr(models, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
  with pytest.raises(ValueError, match=(
      rf"^the longest test prompt of task 'arithmetic' has {longest} tokens; with "
      rf"eval.max_new_tokens=60 that is {longest + 60} positions, beyond the model's "
      rf"max_position_embeddings=64: set eval.max_new_tokens to at most {64 - longest}\.$")):
    train.train(cfg)
  assert not (tmp_path / "run" / "run.json").exists()


def test_paper_config_matches_the_paper():
  from pathlib import Path

  from jaxlayer import cli, evaluation

  config_file = Path(__file__).parents[1] / "configs" / "paper_qwen3_grpo.py"
  cfg = cli.load_config(["--config", str(config_file)], "paper")
  assert (cfg.model.path, cfg.train.layers) == ("Qwen/Qwen3-1.7B-Base", "layers.10")
  assert (cfg.train.learning_rate, cfg.train.group_size, cfg.train.kl_beta) == (5e-6, 4, 0.001)
  assert cfg.train.batch_size // cfg.train.group_size == 512
  assert cfg.train.mini_batch_size // cfg.train.group_size == 128
  assert cfg.rollout.max_new_tokens == 3072
  # Its score: the mean of MATH-500, GSM8K, OlympiadBench (pass@1) and AMC (mean of 32 samples).
  names = evaluation.task_names(cfg)
  assert names == ["math", "gsm8k", "olympiadbench", "amc"]
  assert [evaluation.task_metric(cfg, name) for name in names] == ["pass@1"] * 3 + ["mean@32"]
  assert cfg.eval.num_problems == 0  # every problem of each


@pytest.mark.parametrize("size", ["4b", "8b"])
def test_qwen3_4b_and_8b_paper_configs_are_the_1p7b_setting_on_their_model_and_block(size):
  """The paper trains Qwen3-4B-Base and 8B-Base as Qwen3-1.7B-Base, its best block L16 of 36;
  the 8B model samples 8 prompts a generate call (memory only)."""
  from pathlib import Path

  from jaxlayer import cli

  config_file = str(Path(__file__).parents[1] / "configs" / "paper_qwen3_grpo.py")
  setting = cli.load_config(["--config", f"{config_file}:{size}"], "paper")
  qwen3_1p7b = cli.load_config(["--config", config_file], "paper")
  assert setting.model.path == f"Qwen/Qwen3-{size.upper()}-Base"
  assert setting.train.layers == "layers.16"
  assert setting.sweep.dir == f"runs/sweep_qwen3_{size}"
  assert setting.rollout.prompts_per_call == {"4b": 16, "8b": 8}[size]
  with qwen3_1p7b.unlocked():
    qwen3_1p7b.model.path, qwen3_1p7b.train.layers = setting.model.path, setting.train.layers
    qwen3_1p7b.sweep.dir = setting.sweep.dir
    qwen3_1p7b.rollout.prompts_per_call = setting.rollout.prompts_per_call
  assert setting.to_dict() == qwen3_1p7b.to_dict()


def test_dr_grpo_paper_config_matches_dr_grpos_own_settings(tiny_qwen2_dir, tmp_path):
  """configs/paper_qwen2p5_math_1p5b_dr_grpo.py against Dr. GRPO's code (understand-r1-zero's
  qwen2.5-math-1.5b.sh on oat), planned on a 28-block model of Qwen2.5-Math-1.5B's 4,096
  positions: 128 prompts x 8 samples, 128 responses per update (8 updates a step), lr 1e-6, no
  KL, clip 0.2, AdamW betas (0.9, 0.95), R - mean R, token sums over the constant 3,000
  (generate_max_length)."""
  from pathlib import Path

  from jaxlayer import cli, evaluation
  from jaxlayer.rl import losses

  config_file = Path(__file__).parents[1] / "configs" / "paper_qwen2p5_math_1p5b_dr_grpo.py"
  model_config = json.loads((tiny_qwen2_dir / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(
      {**model_config, "num_hidden_layers": 28, "max_position_embeddings": 4096}))
  cfg = cli.load_config(["--config", str(config_file), f"--config.model.path={tmp_path}",
                         f"--config.run_dir={tmp_path / 'run'}", "--config.mesh.num_devices=1"],
                        "paper")
  planned = train.plan(cfg)
  assert (planned.algorithm.advantage, planned.algorithm.dynamic_sampling) == ("dr_grpo", False)
  assert planned.loss == losses.LossConfig(aggregation="sequence-mean-token-sum-norm",
                                           clip_eps_low=0.2, clip_eps_high=0.2, kl_beta=0.0,
                                           max_response_length=3000)
  assert cfg.train.batch_size // cfg.train.group_size == 128 and cfg.train.group_size == 8
  assert planned.updates_per_step == 8 and planned.learning_rates() == {
      path: 1e-6 for path in planned.selection.trainable}
  assert {path.split(".")[1] for path in planned.selection.trainable} == {"14"}
  assert (cfg.train.lr_schedule, cfg.rollout.temperature, cfg.rollout.max_prompt_tokens) == (
      "constant", 1.0, 1024)
  # oat's adam_beta_1, adam_beta_2, l2 and max_norm.
  assert (cfg.train.adam_b1, cfg.train.adam_b2, cfg.train.weight_decay,
          cfg.train.max_grad_norm) == (0.9, 0.95, 0.0, 1.0)
  # oat's qwen_math template, as understand-r1-zero's train_zero_math.py writes it.
  assert tasks.format_prompt(tasks.Problem(prompt="1+1?", answer="2"), None,
                             template=cfg.task.template) == (
      "<|im_start|>system\nPlease reason step by step, and put your final answer within "
      "\\boxed{}.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n")
  assert evaluation.task_names(cfg) == ["math", "gsm8k", "olympiadbench", "amc"]


def test_r1_distill_paper_config_matches_the_paper(tmp_path):
  # The paper's R1-Distill-Qwen-7B run: GRPO on Skywork math with the settings it gives for its
  # GRPO runs, the model's chat template, reasoning-length responses and the paper's math score.
  from pathlib import Path

  from jaxlayer import cli, evaluation
  from tests import hf_fixtures

  config_file = Path(__file__).parents[1] / "configs" / "paper_r1_distill_qwen7b_grpo.py"
  cfg = cli.load_config(["--config", str(config_file)], "paper")
  assert cfg.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
  assert (cfg.train.algorithm, cfg.train.learning_rate, cfg.train.group_size,
          cfg.train.kl_beta) == ("grpo", 5e-6, 4, 0.001)
  assert (cfg.train.clip_eps_low, cfg.train.clip_eps_high) == (0.2, 0.2)
  assert cfg.train.batch_size // cfg.train.group_size == 512
  assert cfg.train.mini_batch_size // cfg.train.group_size == 128
  assert cfg.rollout.max_new_tokens >= 8192  # R1-Distill thinks long (the Qwen3 runs: 3,072)
  assert cfg.task.name == "math" and "skywork" in cfg.task.options.data_files["train"]
  names = evaluation.task_names(cfg)
  assert names == ["math", "gsm8k", "olympiadbench", "amc"]
  assert [evaluation.task_metric(cfg, name) for name in names] == ["pass@1"] * 3 + ["mean@32"]
  # Its prompts are what the model's own chat template writes (DeepSeek: no system prompt, the
  # instruction in the user turn), one BOS, and the generation prompt opens the thinking block.
  tokenizer = models.load_tokenizer(hf_fixtures.save_chat_model(tmp_path, "r1-distill-qwen"))
  problem = tasks.Problem(prompt="What is $2+3$?", answer="5")
  prompt = tasks.format_prompt(problem, tokenizer, **tasks.prompt_settings(cfg.task))
  assert prompt == tokenizer.apply_chat_template(
      [{"role": "user", "content": "What is $2+3$?\nPlease reason step by step, and put your "
        "final answer within \\boxed{}."}], tokenize=False, add_generation_prompt=True)
  assert tasks.opened_thinking(prompt) == "<think>\n"


def test_evaluations_during_training_score_the_model_of_that_step_and_change_nothing(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache):
  from jaxlayer import evaluation

  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  cfg.eval = evaluation.default_eval_config()
  cfg.eval.update(num_problems=8, batch_size=8, num_samples=2,  # pass@1 and mean@2
                  tasks=f"{EvenFirstByteTask.name}, arithmetic:mean@3")  # and their mean
  cfg.logging.eval_every = 2  # after steps 2 and 4 (checkpoint.every is 2)
  result = train.train(cfg)
  # The training is the run's without evaluations, bit for bit.
  assert result.reward_history == uninterrupted.reward_history
  expected, got = _params(uninterrupted.model), _params(result.model)
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
  rows = metrics.read_metrics(tmp_path / "run")
  keys = [f"eval/{EvenFirstByteTask.name}/{metric}" for metric in ("pass@1", "mean@2")]
  assert [r["step"] for r in rows if keys[0] in r] == [2, 4]
  tokenizer = models.load_tokenizer(tiny_qwen2_dir)
  for step in (2, 4):  # each step's scores are its checkpoint's, evaluated on their own
    model, _ = checkpoint.load_trained_model(tmp_path / "run", step=step)
    alone = evaluation.evaluate_from_config(cfg, model, tokenizer)
    assert [rows[step - 1][key] for key in keys] == [alone.scores["pass@1"],
                                                     alone.scores["mean@2"]]
    arithmetic = evaluation.evaluate_from_config(cfg, model, tokenizer, task_name="arithmetic")
    assert rows[step - 1]["eval/score"] == pytest.approx(
        (alone.scores["pass@1"] + arithmetic.scores["mean@3"]) / 2)
  assert [result.metrics[key] for key in keys] == [rows[3][key] for key in keys]
  titles = [ax.get_title() for ax in metrics.training_figure(rows, "run").axes]
  assert titles[:2] == ["reward", "test score"]


class _ThirdRightTask(EvenFirstByteTask):
  """EvenFirstByteTask by its name, grading every completion 0.3 (no 0 / 1 grade of 4 problems
  averages to it)."""

  def reward_components(self, problems, completions):
    return {"correct": [0.3] * len(completions)}


def test_evaluations_during_training_score_the_task_object_train_was_given(
    tiny_qwen2_dir, tmp_path, compile_cache):
  """They scored the task that config.task.name and task.options build, not train(task=...)."""
  from jaxlayer import evaluation

  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=1)
  cfg.eval = evaluation.default_eval_config()
  cfg.eval.update(num_problems=4, batch_size=4)
  cfg.logging.eval_every = 1
  given = _ThirdRightTask(max_value=9, operators="+", num_train=64, num_test=8,
                          reward_weights={"correct": 1.0})
  result = train.train(cfg, task=given)
  assert result.metrics[f"eval/{EvenFirstByteTask.name}/pass@1"] == pytest.approx(0.3)


def test_a_task_object_without_training_problems_is_named_by_its_own_name(tmp_path):
  """The error named config.task.name's task, not the one train was given."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.task.name = "countdown"
  with pytest.raises(ValueError, match=re.escape("Task 'arithmetic' has no training problems.")):
    train.train(cfg, task=tasks.get_task("arithmetic", num_train=0))


def test_evaluations_during_training_refuse_a_task_object_of_another_name(tmp_path):
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.task.name = EvenFirstByteTask.name
  cfg.logging.eval_every = 5
  with pytest.raises(ValueError, match=re.escape(
      "train(task=...) trains task 'arithmetic', but logging.eval_every scores "
      "task.name='even_first_byte': set config.task.name='arithmetic'")):
    train.train(cfg, task=tasks.get_task("arithmetic"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("every, due", [(3, [3, 6, 9, 10]), (5, [5, 10]), (0, [])])
def test_evaluations_during_training_come_every_n_steps_and_at_the_end(every, due):
  cfg = default_config()
  cfg.train.steps = 10
  cfg.logging.eval_every = every
  assert [step for step in range(1, 11) if train._evaluation_due(step, cfg)] == due


def test_the_progress_bar_shows_the_test_score_by_each_tasks_metric(tiny_qwen2_dir, tmp_path,
                                                                   compile_cache, monkeypatch,
                                                                   capsys):
  """The bar's test= is eval/score: the mean of each task's score by its own metric (here
  pass@1 for one, mean@3 for the other), not the first task's pass@1."""
  from jaxlayer import evaluation

  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=2)
  cfg.eval = evaluation.default_eval_config()
  cfg.eval.update(num_problems=8, tasks=f"{EvenFirstByteTask.name}, arithmetic:mean@3")
  cfg.logging.update(eval_every=2, progress=True)
  scored = {EvenFirstByteTask.name: {"pass@1": [0.0, 0.5]},
            "arithmetic": {"pass@1": [0.0, 0.0], "mean@3": [1.0, 0.0]}}

  def evaluate(config, model, tokenizer, *, task_name, progress_position, **_):
    per_problem = scored[task_name]
    return evaluation.EvalResult(
        task=task_name, num_problems=2, per_problem=per_problem, decoding={}, prompt={},
        generations=[], scores={k: float(np.mean(v)) for k, v in per_problem.items()})

  monkeypatch.setattr(evaluation, "evaluate_from_config", evaluate)
  result = train.train(cfg)
  assert result.metrics["eval/score"] == pytest.approx((0.25 + 0.5) / 2)
  assert "test=0.375" in capsys.readouterr().err


def test_a_compilation_cache_under_the_home_directory_is_written_there(tmp_path, monkeypatch):
  """Shells leave the ~ of --config.compilation_cache_dir=~/x as it is: JAX then wrote its
  compiled programs into a directory named '~' in the working directory."""
  from jaxlayer import assets

  monkeypatch.setenv("HOME", str(tmp_path))
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.compilation_cache_dir = "~/xla_cache"
  train.plan(cfg)
  assert cfg.compilation_cache_dir == str(tmp_path / "xla_cache")


def test_a_reward_weight_naming_no_component_fails_before_the_model_loads(tmp_path,
                                                                          monkeypatch):
  """Before, it failed after the model loaded and the first rollout ran."""
  from jaxlayer import assets

  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(assets.TINY_ARITH), str(tmp_path / "run")
  cfg.rollout.update(max_new_tokens=8, max_prompt_tokens=32)
  cfg.logging.progress = False
  cfg.task.options.reward_weights = {"corect": 1.0}
  graded = tasks.get_task("arithmetic").rewards(
      tasks.get_task("arithmetic").train_problems()[:1], [""], [0]).components
  monkeypatch.setattr(models, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
  with pytest.raises(ValueError, match=re.escape(
      f"task 'arithmetic': reward_weights names ['corect'], which it does not grade; its reward "
      f"components are {sorted(graded)} (task.options.reward_weights).")):
    train.train(cfg)
  assert not (tmp_path / "run" / "run.json").exists()


def test_a_ctrl_c_while_jaxlayer_train_checks_its_settings_stops_before_step_1(
    tiny_qwen2_dir, tmp_path, capsys, monkeypatch):
  """It raised a KeyboardInterrupt wherever the program was, which Python drops inside JAX's
  garbage-collection callbacks (the run then trained to the end); now it is recorded, and the
  run stops before its first step, as one asked while the model loads does."""
  from pathlib import Path

  from jaxlayer import cli

  planning, plans = train.plan, []

  def interrupted_while_planning(config):  # the CLI's check (train() plans again)
    plans.append(planning(config))
    if len(plans) == 1:
      signal.raise_signal(signal.SIGINT)
    return plans[-1]

  monkeypatch.setattr(train, "plan", interrupted_while_planning)
  handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
  config_file = Path(__file__).parents[1] / "configs" / "grpo_arithmetic.py"
  with pytest.raises(SystemExit) as stopped:
    cli.main(["train", "--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
              "--config.train.layers=layers.1", f"--config.run_dir={tmp_path / 'run'}",
              "--config.train.steps=2"])
  assert stopped.value.code == 128 + signal.SIGINT
  assert ("jaxlayer train: stopped by Ctrl-C before step 1 of 2, before training anything."
          in capsys.readouterr().err)
  assert checkpoint.Checkpointer(tmp_path / "run").all_steps() == []
  assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


@pytest.mark.eight_devices
def test_a_run_resumes_on_another_mesh_and_ends_like_an_uninterrupted_one(
    uninterrupted, tiny_qwen2_dir, tmp_path, compile_cache):
  """Trained to its step-2 checkpoint on 8 devices (data x fsdp x tensor = 2 x 2 x 2: every
  trained leaf split) and resumed on one, as after a move from a TPU slice to a workstation:
  the same samples and rewards, and the weights of the run trained on one device throughout."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  cfg.mesh.update(num_devices=8, data=2, fsdp=2, tensor=2)
  stopped = train.train(cfg, stop_at=2)
  kernel = stopped.model.layers[1].mlp.up_proj.kernel[...]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  cfg.mesh.update(num_devices=1, data=1, fsdp=-1, tensor=1)
  resumed = train.train(cfg)
  assert resumed.step == 4 and resumed.reward_history == uninterrupted.reward_history
  expected, got = _params(uninterrupted.model), _params(resumed.model)
  for path in expected:
    np.testing.assert_allclose(got[path], expected[path], rtol=1e-4, atol=1e-5, err_msg=path)


@dataclasses.dataclass(kw_only=True)
class GradedTextTask(ArithmeticTask):
  """Arithmetic prompts whose reward_components keep the texts they were given to grade."""

  graded: list = dataclasses.field(default_factory=list)

  def reward_components(self, problems, completions):
    self.graded.extend(completions)
    return {"correct": [0.0] * len(completions)}


def test_rollouts_are_graded_inside_the_thinking_their_prompt_opened(tmp_path, compile_cache):
  # R1-Distill's chat template opens the thinking block in the prompt: a response that never
  # closes it (a random model's 3 tokens) has given no answer yet, and is graded as "".
  from tests import hf_fixtures

  model_dir = hf_fixtures.save_chat_model(tmp_path / "model", "r1-distill-qwen")
  cfg = small_config(model_dir, tmp_path / "run", compile_cache, steps=1, kl_beta=0.0)
  cfg.task.use_chat_template = True
  cfg.rollout.max_prompt_tokens = 32
  task = GradedTextTask(num_train=64, num_test=8, max_value=9, operators="+")
  train.train(cfg, task=task)
  samples = [json.loads(line) for line in
             (tmp_path / "run" / metrics.SAMPLES_FILE).read_text().splitlines()]
  assert samples and all(s["prompt"].endswith("<｜Assistant｜><think>\n") for s in samples)
  assert not any("</think>" in s["completion"] for s in samples)
  assert len(task.graded) > 16 and set(task.graded) == {""}


@dataclasses.dataclass(kw_only=True)
class ArithmeticTaskWithTests(ArithmeticTask):
  """Arithmetic problems that carry a test in their metadata, as a code task's, for grading."""

  def train_problems(self):
    return [dataclasses.replace(problem, metadata={"tests": [f"assert {problem.answer}"]})
            for problem in super().train_problems()]


def test_a_run_resumes_only_on_the_training_problems_it_trained_on(tiny_qwen2_dir, tmp_path,
                                                                    compile_cache):
  """A checkpoint's data position counts into the run's problems: other problems (a data file
  edited since), or the same graded otherwise (a code task's tests), are refused before anything
  is written, the same ones resume."""
  cfg = small_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=1, ppo_epochs=1,
                     kl_beta=0.0)
  cfg.checkpoint.every = 1

  def arithmetic(operators):
    return ArithmeticTask(num_train=64, num_test=8, max_value=9, operators=operators)

  train.train(cfg, task=arithmetic("+"))
  run_file = tmp_path / "run" / checkpoint.RUN_FILE
  recorded = json.loads(run_file.read_text())["train_problems"]
  assert recorded["count"] == 64 and len(recorded["fingerprint"]) == 16
  written = {path: path.read_bytes() for path in (tmp_path / "run").glob("*.json*")}
  cfg.train.steps = 2
  with pytest.raises(ValueError, match=r"trained on other training problems than the task gives "
                     r"now \(64 problems, their prompts or answers changed: .* checkpoint at "
                     r"step 1 .* Resume with the data the run trained on"):
    train.train(cfg, task=arithmetic("-"))
  with pytest.raises(ValueError, match=r"\(64 problems then, 63 now"):
    train.train(cfg, task=ArithmeticTask(num_train=63, num_test=8, max_value=9, operators="+"))
  with pytest.raises(ValueError, match=r"\(64 problems, what grades them changed"):
    train.train(cfg, task=ArithmeticTaskWithTests(num_train=64, num_test=8, max_value=9,
                                                  operators="+"))
  assert {path: path.read_bytes() for path in written} == written
  assert checkpoint.Checkpointer(tmp_path / "run").all_steps() == [1]
  assert train.train(cfg, task=arithmetic("+")).step == 2
  # Finished, it trains on no problem: other problems now (a data file edited since) are no bar.
  assert train.train(cfg, task=arithmetic("-")).step == 2
