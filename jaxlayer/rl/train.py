"""The RL loop: rollouts, rewards, advantages, compiled updates, checkpoints and metrics.

    from jaxlayer.rl.config import default_config
    from jaxlayer.rl.train import train
    config = default_config()
    config.model.path, config.run_dir = "Qwen/Qwen3-1.7B-Base", "runs/layer14"
    config.train.layers = "layers.14"
    result = train(config)   # resumes from run_dir's latest checkpoint if there is one

`plan(config)` checks everything that can be checked from the config and the model's
config.json (selection, algorithm, batch shapes, mesh) before any weight is loaded or any
code is compiled; `train` calls it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.experimental.compilation_cache import compilation_cache
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxlayer import distributed, locks, models, paths, sampling, tasks
from jaxlayer.models.hub import resolve_model_dir
from jaxlayer.rl import (advantages, algorithms, checkpoint, losses, metrics, multiturn, optimizer,
                         selection)
from jaxlayer.rl import step as rl_step
from jaxlayer.rl.config import RESUMABLE_KEYS, RESUMABLE_SECTIONS, require_config
from jaxlayer.progress import progress_bar
from jaxlayer.text import counted, unknown_name


class TrainingDiverged(RuntimeError):
  """The loss, the gradients or the parameters became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
  """A signal stopped the run after a whole step, with a checkpoint there to resume from.

  signum: the signal (SIGINT for Ctrl-C, SIGTERM for a scheduler's stop or preemption notice);
  a command line tool exits with status 128 + signum, as the signal alone would have.
  """

  def __init__(self, message: str, signum: int = signal.SIGINT):
    super().__init__(message)
    self.signum = signum


@dataclasses.dataclass(frozen=True)
class TrainPlan:
  """A validated config, resolved against the model's architecture."""

  config: ml_collections.ConfigDict
  model_dir: Path
  model_config: models.ModelConfig
  selection: selection.Selection
  algorithm: algorithms.Algorithm
  loss: losses.LossConfig
  mesh: jax.sharding.Mesh
  prompts_per_step: int
  mini_batch_size: int
  micro_batch_size: int

  @property
  def updates_per_step(self) -> int:
    return self.config.train.ppo_epochs * (self.config.train.batch_size // self.mini_batch_size)

  @property
  def prompts_per_call(self) -> int:
    """Prompts (env: seeds) of one rollout generate call: rollout.prompts_per_call, at most a
    step's (0: a step's)."""
    return min(self.config.rollout.prompts_per_call or self.prompts_per_step,
               self.prompts_per_step)

  def parameter_counts(self) -> tuple[int, int]:
    """(parameters the selection trains, parameters of the model), whole arrays."""
    sizes = {path: math.prod(shape) for path, shape in param_shapes(self.model_config).items()}
    return sum(sizes[path] for path in self.selection.trainable), sum(sizes.values())

  def learning_rates(self) -> dict[str, float]:
    """Each trained leaf's peak learning rate (train.learning_rate, or its train.lr_groups')."""
    chosen = self.selection
    return {path: chosen.learning_rates[chosen.groups[path]] for path in chosen.trainable}

  def summary(self) -> str:
    """One line on what the run trains, how, for how long and where it writes; the blocks a
    named selection (mid5, top5@SWEEP_DIR) and each train.lr_groups group stand for."""
    cfg = self.config
    trained, total = self.parameter_counts()
    unit = "episodes" if cfg.env.name else "responses"
    layers = str(cfg.train.layers)
    num_layers = self.model_config.num_layers
    if any(selection.named_blocks(term.strip(), num_layers, self.model_dir) is not None
           for term in layers.split(",")):
      layers += f" ({_parts_text(self.selection.trainable)})"
    rates = ""
    chosen = self.selection
    if len(chosen.learning_rates) > 1 or selection.DEFAULT_GROUP not in chosen.learning_rates:
      by_group = {name: [p for p in chosen.trainable if chosen.groups[p] == name]
                  for name in chosen.learning_rates}
      rates = ", learning rate " + ", ".join(
          f"{chosen.learning_rates[name]:g}"
          + ("" if name == selection.DEFAULT_GROUP else f" for {_parts_text(group_paths)}")
          for name, group_paths in by_group.items())
    return (f"{layers} of {cfg.model.path}: {trained:,} of {total:,} parameters "
            f"({trained / total:.1%}){rates}; {cfg.train.algorithm}, "
            f"{counted(cfg.train.steps, 'RL step')} of {cfg.train.batch_size} {unit}; run "
            f"directory {cfg.run_dir}")


def _parts_text(paths: Sequence[str]) -> str:
  """'blocks 0, 1, 4, embed': the blocks (and other top-level parts) that paths belong to."""
  blocks = sorted({int(p.split(".")[1]) for p in paths if p.startswith("layers.")})
  others = sorted({p.split(".")[0] for p in paths if not p.startswith("layers.")})
  named = ([f"{'block' if len(blocks) == 1 else 'blocks'} {', '.join(map(str, blocks))}"]
           if blocks else [])
  return ", ".join(named + others)


@dataclasses.dataclass
class TrainResult:
  """What `train` returns: the run, its last step's metrics and the trained model."""

  run_dir: Path
  step: int  # RL steps completed (resumed steps included)
  metrics: dict  # the last step's metrics ({} when nothing was left to do)
  reward_history: list[float]  # mean reward of every step of the run, oldest first
  step_seconds: list[float]  # wall time of every step of the run (the first compiles), oldest first
  trained_params: int  # parameters the selection trains (whole arrays, not one device's share)
  optimizer_state_bytes: int  # the optimizer state of the trained leaves, whole
  model: models.Qwen  # the base model with the trained leaves in place
  # The signal that asked the run to stop during its last step (it finished as planned): a
  # caller running more (a sweep's next run) stops too. None: none came.
  stop_requested: signal.Signals | None = None


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


@functools.cache  # building even an abstract model takes a while; a sweep plans each run twice
def param_shapes(model_config: models.ModelConfig) -> Mapping[str, tuple[int, ...]]:
  """Every parameter's path and shape, in model order, without allocating the model."""
  abstract = nnx.eval_shape(lambda: models.Qwen(model_config, rngs=nnx.Rngs(0)))
  return types.MappingProxyType({path: tuple(value.shape)
                                 for path, value in models.named_params(abstract).items()})


def _finished_run_selection(config: ml_collections.ConfigDict, param_paths: Sequence[str],
                            missing: selection.SelectionSourceMissing) -> selection.Selection:
  """The selection that run.json recorded for the run in config.run_dir, when that run is
  finished: it trains no more, so it needs no sweep of topK@SWEEP_DIR (`missing`) again.

  Raises `missing`, saying where the run's blocks are recorded, for a run that must still train
  (or no run).
  """
  run_dir = Path(config.run_dir)
  if not (run_dir / checkpoint.RUN_FILE).is_file():
    raise missing
  _, run = checkpoint.read_run_files(run_dir)
  recorded = run.get("learning_rates")  # trained path -> peak rate
  if recorded is None:  # a run written before jaxlayer recorded them
    raise missing
  trainable = tuple(path for path in param_paths if path in recorded)
  # This host's listing, not process 0's (checkpoint_step): plan() runs in a failing_together
  # block, where a collective would wait for hosts that failed before it. One that lists the
  # checkpoints late (an NFS client's cache) stops every host with this error, loading nothing.
  step = max(checkpoint.listed_steps(run_dir), default=0)
  if step < config.train.steps:
    raise selection.SelectionSourceMissing(
        f"{missing} The run in {run_dir} is at step {step} of {config.train.steps}, so it needs "
        f"that sweep to train on; it trained {_parts_text(trainable)}, as its "
        f"{run_dir / checkpoint.RUN_FILE} records: put the sweep back (or finish it), or train "
        "those blocks in a new run_dir.") from None
  default_rate = float(config.train.learning_rate)
  names = {rate: f"group{index}"
           for index, rate in enumerate(sorted(set(recorded.values()) - {default_rate}))}
  groups = {path: names.get(recorded[path], selection.DEFAULT_GROUP) for path in trainable}
  learning_rates = {name: rate for rate, name in names.items()}
  if selection.DEFAULT_GROUP in groups.values():
    learning_rates = {selection.DEFAULT_GROUP: default_rate, **learning_rates}
  return selection.Selection(
      trainable=trainable, frozen=tuple(path for path in param_paths if path not in recorded),
      groups=groups, learning_rates=learning_rates)


def plan(config: ml_collections.ConfigDict) -> TrainPlan:
  """Validates `config` (clear errors, nothing loaded or compiled) and resolves it."""
  require_config(config, ("model", "task", "train", "rollout"),
                 "jaxlayer.rl.config.default_config() or a configs/*.py get_config()")
  train_cfg, rollout = config.train, config.rollout
  _require(config.model.path is not None,
           "Set the model: --config.model.path=DIR (a Hugging Face directory or hub id).")
  _require(config.run_dir is not None,
           "Set the run directory: --config.run_dir=DIR (checkpoints and metrics go there).")
  _require(isinstance(config.seed, int) and not isinstance(config.seed, bool) and config.seed >= 0,
           f"seed={config.seed!r}: give an integer >= 0 (it seeds the data order, the sampling "
           "and the mini-batch order).")
  config.run_dir = os.fspath(paths.local_path(config.run_dir, "run_dir"))  # ~ expanded
  if config.get("compilation_cache_dir"):  # ~ expanded (JAX's cache also takes a gs:// URL)
    config.compilation_cache_dir = os.path.expanduser(config.compilation_cache_dir)
  _require(config.task.name in tasks.TASKS,
           "task.name: " + unknown_name("task", config.task.name, tasks.TASKS, "tasks.TASKS"))
  resolve_data_paths(config)
  model_dir = resolve_model_dir(config.model.path)
  model_config = models.ModelConfig.from_json_file(model_dir / "config.json")
  _require(config.model.dtype != models.AUTO_DTYPE,
           "model.dtype='auto' is for evaluating; a run names the dtype it trains in: "
           f"'float32' or 'bfloat16' (the checkpoint's is "
           f"{models.checkpoint_dtype(model_config.hf_config)!r}).")
  models.resolve_dtype(config.model.dtype)
  param_paths = tuple(param_shapes(model_config))
  try:
    chosen = selection.resolve(param_paths, model_config.num_layers, train_cfg.layers,
                               train_cfg.learning_rate,
                               selection.parse_lr_groups(train_cfg.lr_groups), model_dir)
  except selection.SelectionSourceMissing as missing:  # a topK@SWEEP_DIR whose sweep is gone
    chosen = _finished_run_selection(config, param_paths, missing)
  algorithm = algorithms.resolve_algorithm(
      train_cfg.algorithm, **{name: train_cfg.get(name) for name in algorithms.OVERRIDABLE
                              if name not in ("advantage",)})
  _check_env_algorithm(config, algorithm)

  group_size, batch_size = train_cfg.group_size, train_cfg.batch_size
  _require(group_size >= 2, f"train.group_size={group_size}: group-relative advantages need at "
           "least 2 responses per prompt; set train.group_size >= 2 (the paper uses 4 to 8).")
  _require(batch_size >= group_size and batch_size % group_size == 0,
           f"train.batch_size={batch_size} responses do not split into groups of "
           f"train.group_size={group_size}: make batch_size a multiple of group_size.")
  mini_batch_size = train_cfg.mini_batch_size or batch_size
  _require(0 < mini_batch_size <= batch_size and batch_size % mini_batch_size == 0,
           f"train.mini_batch_size={mini_batch_size} must divide train.batch_size={batch_size}.")
  micro_batch_size = train_cfg.micro_batch_size or mini_batch_size
  _require(0 < micro_batch_size <= mini_batch_size and mini_batch_size % micro_batch_size == 0,
           f"train.micro_batch_size={micro_batch_size} must divide the update batch of "
           f"{mini_batch_size} responses (train.mini_batch_size, or train.batch_size).")
  mesh = config_mesh(config.mesh)
  shards = models.batch_shards(mesh)
  # The most batch shards of these devices that split the update batch; tensor takes the rest.
  fitting = math.gcd(micro_batch_size, mesh.size)
  _require(micro_batch_size % shards == 0,
           f"The update batch of {micro_batch_size} responses (train.micro_batch_size, "
           f"train.mini_batch_size or train.batch_size) does not split over the mesh's {shards} "
           f"data x fsdp shards (mesh {dict(mesh.shape)}): make it a multiple of {shards} (a "
           "resumed run may change train.micro_batch_size only), or split the "
           f"{counted(mesh.size, 'device')} so that it does: mesh.data=1 mesh.fsdp={fitting} "
           f"mesh.tensor={mesh.size // fitting}.")
  for key in ("steps", "ppo_epochs", "dynamic_sampling_max_rounds"):
    _require(train_cfg[key] >= 1, f"train.{key} must be >= 1, got {train_cfg[key]}.")
  _check_optimizer_settings(train_cfg)
  _require(rollout.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1.")
  _require(rollout.max_prompt_tokens >= 1,
           f"rollout.max_prompt_tokens must be >= 1, got {rollout.max_prompt_tokens}.")
  # The longest prompt (env: context) the rollouts take and the longest response must fit.
  positions = rollout.max_prompt_tokens + rollout.max_new_tokens
  prompt, longer = (("context", "the oldest context tokens are cut") if config.env.name else
                    ("prompt", "longer training prompts are skipped"))
  _require(positions <= model_config.max_positions,
           f"rollout.max_prompt_tokens={rollout.max_prompt_tokens} {prompt} tokens + "
           f"rollout.max_new_tokens={rollout.max_new_tokens} = {positions} positions, beyond "
           f"the model's {model_config.max_positions_text}: "
           f"lower rollout.max_new_tokens or rollout.max_prompt_tokens ({longer}).")
  per_call = rollout.prompts_per_call
  _require(isinstance(per_call, int) and not isinstance(per_call, bool) and per_call >= 0,
           f"rollout.prompts_per_call={per_call!r}: give the prompts sampled per generate call, "
           "an int >= 0 (0: a whole step's prompts in one call).")
  _require(rollout.temperature > 0, f"rollout.temperature={rollout.temperature}: RL needs "
           "sampled responses and their log-probs; use a temperature > 0 (1.0 is usual).")
  _require(config.checkpoint.every >= 1, "checkpoint.every must be >= 1.")
  eval_every = config.logging.get("eval_every", 0)
  _require(isinstance(eval_every, int) and eval_every >= 0,
           f"logging.eval_every={eval_every!r}: give the RL steps between evaluations, an int "
           ">= 0 (0: never).")
  if eval_every:
    from jaxlayer import evaluation  # (it imports this module)

    evaluation.check_eval_config(config)
  _require(config.checkpoint.keep >= 1,
           f"checkpoint.keep must be >= 1 (the newest checkpoints kept), got "
           f"{config.checkpoint.keep}.")
  loss = losses.LossConfig(aggregation=algorithm.aggregation,
                           clip_eps_low=algorithm.clip_eps_low,
                           clip_eps_high=algorithm.clip_eps_high, kl_beta=algorithm.kl_beta,
                           max_response_length=rollout.max_new_tokens)
  return TrainPlan(config=config, model_dir=model_dir, model_config=model_config,
                   selection=chosen, algorithm=algorithm, loss=loss, mesh=mesh,
                   prompts_per_step=batch_size // group_size, mini_batch_size=mini_batch_size,
                   micro_batch_size=micro_batch_size)


def resolve_data_paths(config: ml_collections.ConfigDict) -> None:
  """Makes the data paths of the config's tasks absolute (~ expanded): those of task.options and
  of each task's eval.task_options, data_files and a dataset that is a local directory.
  config.json (and eval.json) record where the data is, not a path that a resume or `jaxlayer
  eval` from another directory would read elsewhere."""
  eval_options = config.get("eval", {}).get("task_options", {})
  for options in [config.task.options, *eval_options.values()]:
    if hasattr(options, "items"):  # (no mapping: evaluation's own error says so)
      _resolve_task_data_paths(options)


def _resolve_task_data_paths(options: ml_collections.ConfigDict) -> None:
  """Makes the paths of one task's options.data_files, and options.dataset where it is a local
  directory, absolute (~ expanded)."""
  dataset = options.get("dataset")
  if isinstance(dataset, str) and Path(dataset).expanduser().is_dir():
    options["dataset"] = os.fspath(Path(dataset).expanduser().absolute())
  files = options.get("data_files")
  if not hasattr(files, "items"):  # (none, or no mapping: the task's own error says so)
    return
  options["data_files"] = {split: os.fspath(Path(path).expanduser().absolute())
                           if isinstance(path, (str, os.PathLike)) else path
                           for split, path in files.items()}


# The signals that ask a run to stop after its current step: Ctrl-C, and the SIGTERM with which
# schedulers stop a job and cloud VMs announce a preemption (a grace period before the kill).
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


# The checker of the stop_requests context this process is in (one process, main thread).
_active_stop_requests: Callable[[], signal.Signals | None] | None = None


@contextlib.contextmanager
def stop_requests():
  """Within: a function, called after every training step, that returns the signal asking the
  run to stop after that step, with a checkpoint (None: go on).

  One process: the first SIGINT or SIGTERM asks; a second one acts at once, as it would
  without this handler. The handlers are set in the main thread only, and restored afterwards.
  Nested (`jaxlayer train` enters one before it checks the run's settings, `train` its own),
  the inner one reads the outer one's requests: a Ctrl-C before training begins is recorded,
  not raised as a KeyboardInterrupt that Python drops inside a garbage-collection callback of
  JAX, and stops the run before its first step. Several hosts: JAX's preemption service
  catches a SIGTERM on any host and names a step that all hosts reach
  (`multihost_utils.reached_preemption_sync_point`, called at every step); Ctrl-C acts at once
  there, since the hosts could not agree on a step for it.
  """
  if distributed.is_multiprocess():
    yield lambda: signal.SIGTERM if _reached_preemption_sync_point() else None
    return
  if threading.current_thread() is not threading.main_thread():
    yield lambda: None
    return
  global _active_stop_requests
  if _active_stop_requests is not None:
    yield _active_stop_requests
    return
  requested = []
  previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

  def restore():
    for signum, handler in previous.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)

  def request_stop(signum, frame):
    if requested:
      restore()
      handler = previous[signum]
      if callable(handler):  # with the frame it came in (the CLI's holds one in JAX's code)
        handler(signum, frame)
      else:
        signal.raise_signal(signum)
      return
    requested.append(signal.Signals(signum))
    tqdm.write(f"{STOP_SIGNALS[signum]}: stopping before the next step (a step under way ends "
               "first, with a checkpoint); again: stop at once, without one.", file=sys.stderr)

  def asked() -> signal.Signals | None:
    return requested[0] if requested else None

  for signum in STOP_SIGNALS:
    signal.signal(signum, request_stop)
  _active_stop_requests = asked
  try:
    yield _active_stop_requests
  finally:
    _active_stop_requests = None
    restore()


# JAX names the step to stop at as one past the highest step any host has reported, so the
# steps it is given must rise for the whole process: a notice that comes between two runs of a
# sweep then stops the next run after its first step, whatever step that run resumes from.
_preemption_checks = itertools.count(1)


def _reached_preemption_sync_point() -> bool:
  """Whether every host has reached the step to stop at after a preemption notice (called by
  every host at each of its training steps)."""
  try:
    return multihost_utils.reached_preemption_sync_point(next(_preemption_checks))
  except RuntimeError:  # the preemption service is off (jax_enable_preemption_service=False)
    return False


def _check_optimizer_settings(train_cfg: ml_collections.ConfigDict) -> None:
  """The optimizer's settings, each named with its fix (a NaN fails every check)."""
  _require(train_cfg.learning_rate > 0,
           f"train.learning_rate={train_cfg.learning_rate}: the AdamW peak rate must be > 0 "
           "(the paper's is 5e-6).")
  optimizer.learning_rate_schedule(1.0, schedule=train_cfg.lr_schedule, warmup_updates=0,
                                   total_updates=1)
  longest = train_cfg.steps - 1
  _require(0 <= train_cfg.warmup_steps < train_cfg.steps,
           f"train.warmup_steps={train_cfg.warmup_steps}: the warm-up takes 0 to "
           f"train.steps - 1 = {counted(longest, 'RL step')} (a longer one never "
           "reaches train.learning_rate).")
  for key in ("adam_b1", "adam_b2"):
    _require(0 <= train_cfg[key] < 1,
             f"train.{key}={train_cfg[key]}: a moment decay lies in [0, 1) (usual: adam_b1 "
             "0.9, adam_b2 0.999).")
  _require(train_cfg.adam_eps > 0, f"train.adam_eps={train_cfg.adam_eps} must be > 0 (it keeps "
           "AdamW from dividing by zero; default 1e-8).")
  for key, meaning in (("weight_decay", "0: none"), ("max_grad_norm", "0: no clipping"),
                       ("advantage_eps", "added to the group std")):
    _require((train_cfg[key] or 0) >= 0,  # None: as 0
             f"train.{key}={train_cfg[key]} must be >= 0 ({meaning}).")


def plan_optimizer(plan_: TrainPlan) -> optax.GradientTransformation:
  """The run's optimizer: AdamW over the selection's groups, the config's schedule."""
  train_cfg = plan_.config.train
  return optimizer.make_optimizer(
      plan_.selection.groups, plan_.selection.learning_rates, schedule=train_cfg.lr_schedule,
      warmup_updates=train_cfg.warmup_steps * plan_.updates_per_step,
      total_updates=train_cfg.steps * plan_.updates_per_step,
      weight_decay=train_cfg.weight_decay, b1=train_cfg.adam_b1, b2=train_cfg.adam_b2,
      eps=train_cfg.adam_eps, max_grad_norm=train_cfg.max_grad_norm)


def plan_update_step(plan_: TrainPlan, split: rl_step.SplitModel,
                     tx: optax.GradientTransformation, param_shardings: dict, opt_shardings):
  """The run's compiled update step (rl.step.make_update_step with the plan's loss,
  micro-batches, remat and shared prompts), its outputs laid out as the given shardings."""
  cfg = plan_.config
  return rl_step.make_update_step(
      split, tx, plan_.loss, cfg.rollout.temperature,
      micro_batches=plan_.mini_batch_size // plan_.micro_batch_size, remat=cfg.train.remat,
      group=shared_prompt_group(plan_), param_shardings=param_shardings,
      opt_shardings=opt_shardings)


def config_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The device mesh of a config's mesh section (data x fsdp x tensor over the first
  mesh.num_devices devices, 0: all of them, every host's on several hosts). On a CPU, a
  mesh.num_devices read before JAX starts makes that many CPU devices."""
  count = mesh_config.num_devices
  if count > 1 and not distributed.is_multiprocess():
    distributed.request_cpu_devices(count)
  devices = jax.devices()
  if count:
    platform = devices[0].platform
    fix = ("On a CPU, JAX makes that many devices only when mesh.num_devices is read before "
           "it starts (as `jaxlayer train` does); in a notebook, restart and set "
           f"XLA_FLAGS=--xla_force_host_platform_device_count={count} first." if platform == "cpu"
           else "Set mesh.num_devices=0 to use them all, and mesh axes whose product is "
           f"{len(devices)} (a run may resume on another mesh); `jaxlayer memory` sizes a larger "
           "mesh when run with JAX_PLATFORMS=cpu (it makes that many CPU devices).")
    _require(0 < count <= len(devices),
             f"mesh.num_devices={count} but {len(devices)} "
             f"{'device exists' if len(devices) == 1 else 'devices exist'} ({platform}). {fix}")
    _require(not distributed.is_multiprocess() or count == len(devices),
             f"mesh.num_devices={count}, but this run spans {jax.process_count()} hosts with "
             f"{len(devices)} devices in all, and every host works on the mesh: set "
             "mesh.num_devices=0 (all devices).")
    devices = devices[:count]
  return models.make_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor, devices=devices)


def shared_prompt_group(plan_: TrainPlan) -> int:
  """The `group` of the update's and the KL reference's passes: G where they run each prompt
  once for its G responses (rl.step's shared prompt), 1 where they run whole rows.

  A pass shares prompts when its micro-batches are consecutive whole groups (mini-batches
  take whole groups: `_Trainer._mini_batch_order`; multi-turn rows are turns) and every
  data-parallel shard holds whole groups: a group split over two devices would make the
  compiler gather the prompt's keys and values onto every device.
  """
  config = plan_.config
  group, micro = config.train.group_size, plan_.micro_batch_size
  shards = models.batch_shards(plan_.mesh)
  return group if not config.env.name and micro % (group * shards) == 0 else 1


def _check_env_algorithm(config: ml_collections.ConfigDict,
                         algorithm: algorithms.Algorithm) -> None:
  """An environment (env.name) trains with a multi-turn algorithm, a task with the others."""
  multi_turn = algorithm.advantage in algorithms.MULTI_TURN_ADVANTAGES
  if not config.env.name:
    _require(not multi_turn, f"train.algorithm={config.train.algorithm!r} trains an agent in a "
             "multi-turn environment: set env.name (e.g. --config.env.name=gridworld; see "
             "configs/gigpo_gridworld.py).")
    return
  _require(multi_turn, f"env.name={config.env.name!r} is a multi-turn environment: train it with "
           f"train.algorithm='gigpo' (got {config.train.algorithm!r}).")
  unsupported = [name for name, on in (("dynamic_sampling", algorithm.dynamic_sampling),
                                       ("overlong_filtering", algorithm.overlong_filtering),
                                       ("overlong_buffer_fraction",
                                        algorithm.overlong_buffer_fraction > 0)) if on]
  _require(not unsupported, f"{', '.join('train.' + name for name in unsupported)}: settings of "
           "single-turn tasks, not of environments; leave them unset with train.algorithm='gigpo'.")
  multiturn.env_settings(config)


def _flat_config(config: ml_collections.ConfigDict | dict) -> dict:
  data = json.loads(config.to_json()) if hasattr(config, "to_json") else config
  flat = {}

  def walk(prefix, node):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(f"{prefix}{key}.", value)
      else:
        flat[f"{prefix}{key}"] = value

  walk("", data)
  return flat


def _check_resumable(run_dir: Path, config: ml_collections.ConfigDict, model_dir: Path,
                     learning_rates: Mapping[str, float], step: int) -> str | None:
  """Raises ValueError when `config` may not resume the run in `run_dir` from `step`; returns
  where the run's base model was when it is elsewhere now (the same weights), else None.
  learning_rates: the trained leaves (path -> peak rate) that `config` selects."""
  stored, run = checkpoint.read_run_files(run_dir)
  trainable = list(learning_rates)
  old, new = _flat_config(stored), _flat_config(config)
  changed = sorted(k for k in set(old) | set(new)
                   if k not in RESUMABLE_KEYS
                   and not any(k.startswith(f"{section}.") for section in RESUMABLE_SECTIONS)
                   and old.get(k) != new.get(k))
  # Whatever model.path says, the base model must be the run's (its weights' fingerprint); one
  # found at another path (a new VM, a copied run) resumes the run.
  checkpoint.check_base_model(run_dir, run, model_dir)
  moved = "model.path" in changed and "base_fingerprint" in run
  if moved:
    changed.remove("model.path")
  for key in [key for key in changed if key.startswith(DATA_FILES_KEY) or key == DATASET_KEY]:
    if _data_file_moved(run_dir, run, key, old.get(key), new.get(key)):
      changed.remove(key)
  if changed:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
    raise ValueError(
        f"run_dir {run_dir} holds checkpoints of a run with a different config ({details}). "
        "Resume it with the same settings, or choose a new run_dir.")
  # The same train.layers may select other blocks now (topK@SWEEP follows the sweep's ranking).
  if set(trainable) != set(run["trainable"]):
    blocks = lambda paths: sorted({".".join(p.split(".")[:2]) for p in paths})  # noqa: E731
    raise ValueError(
        f"run_dir {run_dir} holds checkpoints of {', '.join(blocks(run['trainable']))}, but "
        f"train.layers={config.train.layers} now selects {', '.join(blocks(trainable))} (a "
        "topK@ / bottomK@ selection follows its sweep's latest ranking). Resume with the "
        "blocks the run trained, or choose a new run_dir.")
  # And its learning-rate groups (runs written before jaxlayer recorded them: unchecked).
  trained_at = run.get("learning_rates") or learning_rates
  moved_rates = {path: (trained_at[path], rate) for path, rate in learning_rates.items()
                 if trained_at[path] != rate}
  if moved_rates:
    by_block = {".".join(path.split(".")[:2]): rates for path, rates in moved_rates.items()}
    changes = ", ".join(f"{block} {before:g} -> {after:g}"
                        for block, (before, after) in by_block.items())
    raise ValueError(
        f"run_dir {run_dir} trained at other learning rates than train.lr_groups="
        f"{config.train.lr_groups!r} gives now ({changes}; a topK@ / bottomK@ group follows its "
        "sweep's latest ranking). Resume with the rates the run trained at, or choose a new "
        "run_dir.")
  planned, schedule = stored.train.steps, config.train.lr_schedule
  if (config.train.steps != planned and step < config.train.steps
      and schedule in optimizer.LENGTH_DEPENDENT_SCHEDULES):
    raise ValueError(
        f"train.steps={config.train.steps}: run_dir {run_dir} holds a {planned}-step run on "
        f"train.lr_schedule={schedule!r}, whose learning rates depend on train.steps; another "
        f"train.steps would change them from step {step + 1} on. To train it further, "
        f"{how_to_train_on(config, step)}.")
  return run["base_model"] if moved else None


# The keys of a run's data paths, which plan() makes absolute: its data files
# (task.options.data_files.SPLIT) and its data set where that is a local directory.
DATA_FILES_KEY = "task.options.data_files."
DATASET_KEY = "task.options.dataset"


def _data_file_moved(run_dir: Path, run: dict, key: str, recorded: str | None,
                     given: str | None) -> bool:
  """Whether the data file (or data set directory) `given` for `key` may stand for the one the
  run recorded: the same one, its relative path (as runs recorded it before plan() made it
  absolute) read from this directory, or one elsewhere now (a new VM, a copied run) where
  run.json fingerprints the training problems, which the resume then checks
  (checkpoint.check_problems). Raises FileNotFoundError, naming the recorded path, for a given
  one that is not there."""
  if recorded is None or given is None:
    return False
  if Path(recorded).expanduser().absolute() == Path(given):
    return True
  if "train_problems" not in run:
    return False
  kind, there = (("directory", Path(given).is_dir()) if key == DATASET_KEY else
                 ("file", Path(given).is_file()))
  if not there:
    raise FileNotFoundError(
        f"{key.removeprefix('task.options.')}: {given} not found. Run {run_dir} trained on "
        f"{recorded} (its {checkpoint.CONFIG_FILE}): give that {kind} (a relative path is read "
        "from the current directory).")
  return True


def how_to_train_on(config: ml_collections.ConfigDict, step: int) -> str:
  """How to train the run in config.run_dir, whose latest checkpoint is at `step`, further."""
  if config.train.lr_schedule not in optimizer.LENGTH_DEPENDENT_SCHEDULES:
    return f"raise --config.train.steps above {step}"
  planned = checkpoint.read_run_files(config.run_dir)[0].train.steps
  if step < planned:
    return f"resume with its own --config.train.steps={planned}"
  return (f"export it (jaxlayer export --run {config.run_dir} --out HF_DIR) and start a new run "
          f"from it (--config.model.path=HF_DIR): its train.lr_schedule="
          f"{config.train.lr_schedule!r} has ended")


def _holds_foreign_config(run_dir: Path) -> bool:
  """Whether run_dir holds a config.json that is no jaxlayer run's (a model directory's, say).
  A run's is a config with run_dir and train; one without run.json beside it is a run stopped
  before it wrote that (checkpoint.write_run_files)."""
  config_file = run_dir / checkpoint.CONFIG_FILE
  if not config_file.is_file() or (run_dir / checkpoint.RUN_FILE).is_file():
    return False
  try:
    stored = json.loads(config_file.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError):
    return True
  return not (isinstance(stored, dict) and {"run_dir", "train"} <= stored.keys())


@contextlib.contextmanager
def _opened_run(plan_: TrainPlan):
  """Holds the run directory (one directory that every host sees, locked against other
  processes) with its Checkpointer. Yields (checkpointer, the step of its latest checkpoint,
  0: none, where the run's base model was when it moved) once the config may resume it."""
  run_dir = Path(plan_.config.run_dir)
  in_sweep = checkpoint.sweep_run_hint(run_dir)  # a new run would go beside the sweep's files
  _require(in_sweep is None, f"run_dir={str(run_dir)!r}: {in_sweep}")
  _require(not _holds_foreign_config(run_dir),
           f"run_dir {run_dir} holds a {checkpoint.CONFIG_FILE} that no jaxlayer run wrote (a "
           "model's?), which a run would write over: choose a new or empty run_dir.")
  # One process writes a run directory at a time (the sweep's runs and a second `jaxlayer
  # train` alike); the lock goes with the process, however it ends. Tidy: a run that failed
  # before writing anything (a model path found wrong late, a Ctrl-C while the model loads)
  # leaves no directory holding only the lock file, unless the directory was there. Taken
  # before the hosts' check, which would make the directory itself.
  with locks.exclusive(run_dir, "run_dir", enabled=distributed.is_primary(), tidy=True):
    # The temporary files that a writer of config.json, run.json or metrics.jsonl killed left.
    distributed.remove_temporary_leftovers(run_dir)
    distributed.check_shared_directory(run_dir, "run_dir")
    checkpointer = checkpoint.Checkpointer(run_dir, keep=plan_.config.checkpoint.keep,
                                           writer=True)
    try:
      # Process 0's latest checkpoint: another host may list the directory late (an NFS client
      # caches a listing up to a minute), and would restore an older one, or none.
      latest = json.loads(distributed.from_primary(json.dumps(checkpointer.latest_step())))
      moved_from = None
      if latest is not None:
        with distributed.failing_together("Checking the run to resume"):
          if distributed.is_primary():  # (whose listing named it)
            checkpointer.check_parts(latest)
          moved_from = _check_resumable(run_dir, plan_.config, plan_.model_dir,
                                        plan_.learning_rates(), latest)
      yield checkpointer, latest or 0, moved_from
    finally:
      checkpointer.close()


def check_resume(plan_: TrainPlan) -> int:
  """The RL step `train` resumes the run directory from (0: a new run), checked as `train`
  checks it: ValueError when the config may not resume that run, or the directory is in use
  or not shared by every host. Loads no weights and leaves nothing behind (a new run's
  directory, which it makes to hold the lock, goes again)."""
  with _opened_run(plan_) as (_, start, _):
    return start


@functools.lru_cache(maxsize=4)
def _epoch_order(num_problems: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_problems)


def _problem_order(num_problems: int, seed: int, position: int, count: int) -> list[int]:
  """Problem indices at data positions position..position+count: a fresh shuffle each epoch."""
  return [int(_epoch_order(num_problems, seed, pos // num_problems)[pos % num_problems])
          for pos in range(position, position + count)]


@dataclasses.dataclass
class _Rollouts:
  """Responses of whole groups, row i*G+j = response j to prompt i (host numpy, the same on
  every process)."""

  problem_indices: list[int]  # [prompts]
  tokens: np.ndarray  # [N, R] int32
  logprobs: np.ndarray  # [N, R]
  mask: np.ndarray  # [N, R] bool
  truncated: np.ndarray  # [N] bool: hit max_new_tokens without an end-of-sequence token
  rewards: np.ndarray  # [N]
  components: dict[str, np.ndarray]  # name -> [N]

  def groups(self, keep: np.ndarray, group_size: int) -> _Rollouts:
    """The rollouts of the groups where keep [prompts] is True."""
    rows = np.repeat(keep, group_size)
    return _Rollouts(
        problem_indices=[i for i, k in zip(self.problem_indices, keep) if k],
        tokens=self.tokens[rows], logprobs=self.logprobs[rows], mask=self.mask[rows],
        truncated=self.truncated[rows], rewards=self.rewards[rows],
        components={k: v[rows] for k, v in self.components.items()})

  @staticmethod
  def concat(parts: Sequence[_Rollouts]) -> _Rollouts:
    return _Rollouts(
        problem_indices=[i for p in parts for i in p.problem_indices],
        tokens=np.concatenate([p.tokens for p in parts]),
        logprobs=np.concatenate([p.logprobs for p in parts]),
        mask=np.concatenate([p.mask for p in parts]),
        truncated=np.concatenate([p.truncated for p in parts]),
        rewards=np.concatenate([p.rewards for p in parts]),
        components={k: np.concatenate([p.components[k] for p in parts])
                    for k in parts[0].components})


def _with_reference(rows_of: Callable[[np.ndarray], dict[str, np.ndarray]],
                    reference: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
  return {**rows_of(rows), "ref_logprobs": reference[rows]}


class _Trainer:
  """One run: state on devices, the data position, and the step loop."""

  def __init__(self, plan_: TrainPlan, task: tasks.Task | None):
    self.plan = plan_
    cfg = plan_.config
    self.cfg = cfg
    self.run_dir = Path(cfg.run_dir)
    self.group_size = cfg.train.group_size
    # A multi-turn environment (env.name) or a single-turn task.
    self.env = multiturn.env_settings(cfg) if cfg.env.name else None
    # Contexts cut to rollout.max_prompt_tokens are warned of once per run, at the first
    # rollout that cuts any (the metric context_truncated tracks them at every step), and once
    # at the first evaluation (logging.eval_every) that cuts any.
    self.rollout_cut_contexts_warning = multiturn.CutContextsWarning(
        then=" Warned once: from here on the metric context_truncated tracks the share of "
             "contexts cut at each step.")
    self.eval_cut_contexts_warning = multiturn.CutContextsWarning(
        then=" Warned once for all the evaluations of this run (logging.eval_every).")
    self.problems_record = None  # a task's training problems (an environment's episodes: none)
    self.given_task = task  # train(task=...): scored for task.name by logging.eval_every
    if self.env is not None:
      if task is not None:
        raise ValueError(f"train(task=...) is for single-turn tasks, but env.name="
                         f"{cfg.env.name!r} is set.")
      self.env.check_env()
    else:
      self.task = task if task is not None else self._make_task()
    self.tokenizer = models.load_tokenizer(plan_.model_dir)
    self.stop_ids = models.stop_token_ids(plan_.model_dir, self.tokenizer)
    pad = self.tokenizer.pad_token_id
    self.pad_id = pad if pad is not None else (self.stop_ids[0] if self.stop_ids else 0)
    if self.env is None:
      self._encode_problems()
      self.task.check_reward_weights(self.problems[0])
    else:  # a context the chat template cannot write fails now, not at the first step
      self.env.context.render("", [], "", self.tokenizer)
    if cfg.logging.get("eval_every", 0):  # a test prompt too long fails now, not after a step
      from jaxlayer import evaluation  # (it imports this module)

      evaluation.check_eval_fits(cfg, self.tokenizer, plan_.model_config,
                                 own_task=self.given_task)

    model, _ = models.from_pretrained(plan_.model_dir, dtype=cfg.model.dtype, mesh=plan_.mesh)
    self.split, self.params = rl_step.split_model(model, plan_.selection.trainable)
    # The KL reference is the base value of the trained leaves only: the frozen rest is shared.
    self.ref_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p))(self.params) \
        if plan_.loss.kl_beta > 0 else None
    self.tx = plan_optimizer(plan_)
    self.opt_state, opt_shardings = rl_step.init_optimizer(self.tx, self.params, plan_.mesh)
    # A step with nothing to train on (every episode an environment error) skips its updates;
    # the learning-rate schedule moves on past them, as past a skipped one in rl.step.
    self.skip_step_updates = jax.jit(
        functools.partial(optimizer.advance_schedules, updates=plan_.updates_per_step),
        donate_argnums=0, out_shardings=opt_shardings)
    self.rng = jax.device_put(np.asarray(jax.random.PRNGKey(cfg.seed)),
                              NamedSharding(plan_.mesh, PartitionSpec()))
    self.step = 0
    self.data_position = 0
    self.update = plan_update_step(plan_, self.split, self.tx,
                                   {k: v.sharding for k, v in self.params.items()},
                                   opt_shardings)
    self.logprobs = (rl_step.make_logprob_fn(self.split, cfg.rollout.temperature,
                                             shared_prompt_group(plan_), plan_.mesh)
                     if self.ref_params is not None else None)
    self.batch_sharding = {n: models.batch_sharding(plan_.mesh, n) for n in (1, 2)}

  def _make_task(self) -> tasks.Task:
    options = dict(self.cfg.task.options)
    fraction = self.plan.algorithm.overlong_buffer_fraction
    if fraction > 0 and "overlong_max_length" not in options:
      # DAPO's soft overlong punishment, through the task's own reward component.
      max_new = self.cfg.rollout.max_new_tokens
      options.update(overlong_max_length=max_new,
                     overlong_cache_length=max(1, round(fraction * max_new)))
    return tasks.get_task(self.cfg.task.name, **options)

  def _encode_problems(self) -> None:
    problems = tasks.checked_problems(self.task, "train")
    if not problems:
      raise ValueError(f"Task {self.task.name!r} has no training problems.")
    settings = tasks.prompt_settings(self.cfg.task)
    texts = [tasks.format_prompt(p, self.tokenizer, **settings) for p in problems]
    encoded = tasks.encode_prompts(self.tokenizer, texts,
                                   use_chat_template=settings["use_chat_template"])
    limit = self.cfg.rollout.max_prompt_tokens
    keep = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= limit]
    if not keep:
      shortest = min((len(ids) for ids in encoded if ids), default=0)
      raise ValueError(f"Every training prompt is longer than rollout.max_prompt_tokens={limit} "
                       "tokens (or empty): raise the limit"
                       + (f" to at least {shortest}, the shortest prompt's length." if shortest
                          else "."))
    if len(keep) < len(problems):
      distributed.warn_once(f"jaxlayer: skipping {len(problems) - len(keep)} of "
                            f"{counted(len(problems), 'training prompt')} (longer than "
                            f"rollout.max_prompt_tokens={limit}, or empty).")
    per_step = self.plan.prompts_per_step
    if len(keep) < per_step:  # a step then takes a problem twice or more (_problem_order)
      distributed.warn_once(
          f"jaxlayer: {counted(len(keep), 'training problem')} to train on, fewer than the "
          f"{per_step} prompts of a step (train.batch_size={self.cfg.train.batch_size} / "
          f"train.group_size={self.group_size}), so every step repeats problems: give more "
          f"training problems, or a train.batch_size of at most {len(keep) * self.group_size}.")
    self.problems = [problems[i] for i in keep]
    self.prompt_ids = [encoded[i] for i in keep]
    self.prompt_texts = [texts[i] for i in keep]
    # What a checkpoint's data position indexes into: a resume checks it is the same.
    self.problems_record = checkpoint.problems_record(
        self.prompt_texts, [p.answer for p in self.problems],
        [self.task.grading_data(p) for p in self.problems])

  # --- state ------------------------------------------------------------------------------

  def restore(self, checkpointer: checkpoint.Checkpointer, step: int) -> None:
    params, opt, meta = checkpointer.restore(
        step, self.params, {"opt_state": self.opt_state, "rng": self.rng})
    self.params, self.opt_state, self.rng = params, opt["opt_state"], opt["rng"]
    self.step, self.data_position = meta["step"], meta["data_position"]

  def save(self, checkpointer: checkpoint.Checkpointer) -> None:
    checkpointer.save(self.step, self.params, {"opt_state": self.opt_state, "rng": self.rng},
                      {"step": self.step, "data_position": self.data_position})

  # --- one RL step --------------------------------------------------------------------------

  def _rollout_model(self) -> models.Qwen:
    """The model the rollouts sample from: the trained values on the training layout, or
    gathered whole onto every device (rollout.replicate_params)."""
    model = self.split.merge(self.params)
    return sampling.replicated(model) if self.cfg.rollout.replicate_params else model

  def _sample_round(self, key: jax.Array) -> _Rollouts:
    count = self.plan.prompts_per_step
    indices = _problem_order(len(self.problems), self.cfg.seed, self.data_position, count)
    self.data_position += count
    out = sampling.generate(
        self._rollout_model(), [self.prompt_ids[i] for i in indices],
        max_new_tokens=self.cfg.rollout.max_new_tokens, num_samples=self.group_size,
        temperature=self.cfg.rollout.temperature, eos_token_ids=self.stop_ids,
        seed=int(jax.random.randint(key, (), 0, 2**31 - 1)), pad_token_id=self.pad_id,
        prompts_per_call=self.plan.prompts_per_call)
    problems = [self.problems[i] for i in indices for _ in range(self.group_size)]
    opened = [tasks.opened_thinking(self.prompt_texts[i]) for i in indices
              for _ in range(self.group_size)]
    # Each process decodes and grades its share of the responses.
    graded = self.task.rewards_on_all_hosts(
        problems, lambda rows: [opened[r] + text for r, text in
                                zip(rows, self._decode(out.tokens[rows], out.lengths[rows]))],
        out.lengths.tolist())
    return _Rollouts(
        problem_indices=indices, tokens=out.tokens, logprobs=out.logprobs, mask=out.mask,
        truncated=np.asarray([reason == "length" for reason in out.finish_reasons]),
        rewards=np.asarray(graded.total, np.float64),
        components={k: np.asarray(v, np.float64) for k, v in graded.components.items()})

  def _decode(self, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    return self.tokenizer.batch_decode([row[:n] for row, n in zip(tokens, lengths)],
                                       skip_special_tokens=True)

  def _collect(self, key: jax.Array) -> tuple[_Rollouts, np.ndarray, _Rollouts]:
    """(the batch's rollouts, weight [prompts] 1 / 0 per group, everything sampled)."""
    wanted, sampled, kept, spare = self.plan.prompts_per_step, [], [], []
    dynamic = self.plan.algorithm.dynamic_sampling
    rounds = self.cfg.train.dynamic_sampling_max_rounds if dynamic else 1
    for round_index in range(rounds):
      part = self._sample_round(jax.random.fold_in(key, round_index))
      sampled.append(part)
      if not dynamic:
        return part, np.ones(wanted), part
      # DAPO's filter is on accuracy: 0 < correct responses < G (a group all right or all wrong
      # whose total rewards differ only by format or length shaping is dropped too); a task
      # without a "correct" component is filtered on its total reward.
      accuracy = part.components.get(tasks.SCORE_COMPONENT, part.rewards)
      signal = advantages.groups_with_signal(accuracy, self.group_size)
      if self.plan.algorithm.overlong_filtering:  # a group of truncated responses trains nothing
        signal &= ~part.truncated.reshape(-1, self.group_size).all(axis=1)
      kept.append(part.groups(signal, self.group_size))
      spare.append(part.groups(~signal, self.group_size))
      if sum(len(p.problem_indices) for p in kept) >= wanted:
        break
    # DAPO keeps sampling until the batch is full of groups with a learning signal; when the
    # round budget runs out, groups without one fill the batch at zero weight (static shapes).
    candidates = _Rollouts.concat(kept + spare)  # groups with a signal first
    have = sum(len(p.problem_indices) for p in kept)
    batch = candidates.groups(np.arange(len(candidates.problem_indices)) < wanted,
                              self.group_size)
    return batch, (np.arange(wanted) < have).astype(np.float64), _Rollouts.concat(sampled)

  def _make_batch(self, rollouts: _Rollouts, group_weights: np.ndarray,
                  rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The rl.step batch of these rows of the rollouts (default: all); group_weights [prompts].
    Shapes depend on all the rollouts only, so every process's rows fit together."""
    estimator = advantages.get_estimator(self.plan.algorithm.advantage)
    advantage = estimator(rollouts.rewards, self.group_size, eps=self.cfg.train.advantage_eps)
    group_prompts = [self.prompt_ids[i] for i in rollouts.problem_indices]
    prompt_len = sampling.bucket(max(len(p) for p in group_prompts))
    rows = np.arange(len(rollouts.rewards)) if rows is None else rows
    response_len = rollouts.tokens.shape[1]
    input_ids = np.full((len(rows), prompt_len + response_len), self.pad_id, np.int32)
    attention = np.zeros((len(rows), prompt_len + response_len), bool)
    for r, row in enumerate(rows):
      prompt = group_prompts[row // self.group_size]
      input_ids[r, prompt_len - len(prompt):prompt_len] = prompt
      attention[r, prompt_len - len(prompt):prompt_len] = True
    mask = rollouts.mask[rows]
    input_ids[:, prompt_len:] = np.where(mask, rollouts.tokens[rows], self.pad_id)
    attention[:, prompt_len:] = mask
    # A zero-weight group fills the batch in place of a group that dynamic sampling did not
    # find: no response of the batch, so the per-response normalisers do not count it.
    is_response = np.repeat(group_weights, self.group_size)[rows]  # [rows]
    weight = is_response
    if self.plan.algorithm.overlong_filtering:  # a response still, whose tokens carry no loss
      weight = weight * ~rollouts.truncated[rows]
    return {
        "input_ids": input_ids, "attention_mask": attention,
        "response_mask": (mask * weight[:, None]).astype(np.float32),
        "is_response": is_response.astype(np.float32),
        "old_logprobs": np.where(mask, rollouts.logprobs[rows], 0.0).astype(np.float32),
        "advantages": np.broadcast_to(advantage[rows, None], mask.shape).astype(np.float32),
    }

  def _device_batch(self, rows_of: Callable[[np.ndarray], dict[str, np.ndarray]],
                    rows: np.ndarray) -> dict[str, jax.Array]:
    """The batch of rollout rows `rows` on the mesh, split over its batch axes; rows_of(rows)
    builds host arrays. Each process builds and sends only the rows its devices hold."""
    mine = distributed.local_rows(self.batch_sharding[1], len(rows))
    return {k: distributed.rows_to_global(v, self.batch_sharding[v.ndim], len(rows))
            for k, v in rows_of(rows[mine]).items()}

  def _updates(self, rows_of: Callable[[np.ndarray], dict[str, np.ndarray]],
               size: int) -> dict[str, float]:
    """ppo_epochs passes over a batch of `size` rows (rows_of(rows) -> their host arrays)."""
    # batch_size / mini_batch_size updates per epoch, of equal row counts (a multi-turn
    # batch has a row per turn: gigpo_batch pads it to a whole number of mini-batches).
    mini = size * self.plan.mini_batch_size // self.cfg.train.batch_size
    if self.ref_params is not None:
      micro = mini * self.plan.micro_batch_size // self.plan.mini_batch_size
      reference = np.concatenate([
          distributed.to_host(self.logprobs(self.ref_params, self.split.frozen,
                                            self._device_batch(rows_of, np.arange(i, i + micro))))
          for i in range(0, size, micro)])  # [size, R], on every process
      rows_of = functools.partial(_with_reference, rows_of, reference)
    history = []
    for epoch in range(self.cfg.train.ppo_epochs):
      order = self._mini_batch_order(size, mini, epoch)
      for start in range(0, size, mini):
        mini_batch = self._device_batch(rows_of, order[start:start + mini])
        self.params, self.opt_state, result = self.update(
            self.params, self.opt_state, self.split.frozen, mini_batch)
        result = {k: float(v) for k, v in distributed.to_host(result).items()}
        finite = math.isfinite(result["loss"]) and math.isfinite(result["grad_norm"])
        if not finite or result["params_finite"] != 1.0:
          raise TrainingDiverged(
              f"Training diverged at step {self.step + 1} (epoch {epoch + 1} of "
              f"{self.cfg.train.ppo_epochs}, mini-batch {start // mini + 1} of {size // mini}): "
              f"loss={result['loss']}, grad_norm={result['grad_norm']}, "
              f"parameters finite: {bool(result['params_finite'] == 1.0)}. The run stopped "
              f"without saving; its last good checkpoint is kept in "
              f"{self.run_dir / checkpoint.CHECKPOINT_DIR}. "
              "Lower train.learning_rate, keep train.max_grad_norm on, or check the rewards.")
        history.append(result)
    # Mini-batches without a loss token made no update: their zeros are no measurement.
    updated = [h for h in history if h["loss_tokens"] > 0]
    if not updated:
      distributed.warn_once(f"jaxlayer: step {self.step + 1}: every group was dropped (no "
                            "learning signal, or every response truncated with overlong "
                            "filtering); no update.")
      return {}
    return {k: float(np.mean([h[k] for h in updated])) for k in updated[0]
            if k not in ("params_finite", "loss_tokens")}

  def _mini_batch_order(self, size: int, mini: int, epoch: int) -> np.ndarray:
    """The rows of an epoch in mini-batch order: a random order of whole groups, so that each
    mini-batch can run its prompts once (rl.step's shared prompt); rows in a random order
    where a mini-batch is not whole groups or rows are turns (multi-turn). One mini-batch:
    the rows as they are."""
    if size == mini:
      return np.arange(size)
    rng = np.random.default_rng([self.cfg.seed, self.step, epoch])
    group = self.group_size
    if self.env is not None or mini % group:
      return rng.permutation(size)
    return (rng.permutation(size // group)[:, None] * group + np.arange(group)).reshape(-1)

  def run_step(self) -> tuple[dict[str, float], list[dict]]:
    if self.env is not None:
      return self._run_env_step()
    start = time.perf_counter()
    self.rng, key = jax.random.split(self.rng)
    rollouts, group_weights, sampled = self._collect(key)
    update_metrics = self._updates(functools.partial(self._make_batch, rollouts, group_weights),
                                   len(rollouts.rewards))
    self.step += 1
    lengths = sampled.mask.sum(axis=1)
    result = {
        "reward": float(sampled.rewards.mean()),
        "reward_std": float(sampled.rewards.std()),
        **{f"reward/{k}": float(v.mean()) for k, v in sampled.components.items()},
        "response_length": float(lengths.mean()),
        "truncated_fraction": float(sampled.truncated.mean()),
        # Of every group sampled (all rounds of dynamic sampling): those whose total rewards,
        # which the advantages are of, differ.
        "groups_with_signal": float(advantages.groups_with_signal(
            sampled.rewards, self.group_size).mean()),
        "batch_groups_weighted": float(group_weights.mean()),
        **update_metrics,
        "seconds_per_step": time.perf_counter() - start,
    }
    if tasks.SCORE_COMPONENT in sampled.components:
      result["accuracy"] = float(sampled.components[tasks.SCORE_COMPONENT].mean())
    shown = min(self.cfg.logging.samples_per_step, len(sampled.rewards))
    completions = self._decode(sampled.tokens[:shown], lengths[:shown])
    samples = [{"prompt": self.prompt_texts[sampled.problem_indices[i // self.group_size]],
                "completion": completions[i], "reward": float(sampled.rewards[i])}
               for i in range(shown)]
    return result, samples

  def _run_env_step(self) -> tuple[dict[str, float], list[dict]]:
    """One GiGPO step: play batch_size episodes (group_size per seed), update on their turns."""
    start = time.perf_counter()
    self.rng, key = jax.random.split(self.rng)
    seeds = multiturn.train_seeds(self.cfg.seed, self.data_position, self.plan.prompts_per_step)
    self.data_position += len(seeds)
    rollouts = multiturn.play_episodes(
        self._rollout_model(), self.tokenizer, self.env.make_env, seeds,
        group_size=self.group_size, max_turns=self.env.max_turns,
        max_new_tokens=self.cfg.rollout.max_new_tokens, temperature=self.cfg.rollout.temperature,
        eos_token_ids=self.stop_ids, pad_token_id=self.pad_id,
        seed=int(jax.random.randint(key, (), 0, 2**31 - 1)), context=self.env.context,
        step_timeout_s=self.env.step_timeout_s,
        batch_rows=self.plan.prompts_per_call * self.group_size)
    rollout_seconds = time.perf_counter() - start
    multiturn.warn_of_env_errors([rollout.episode for rollout in rollouts], self.env.name,
                                 f"at step {self.step + 1}")
    self.rollout_cut_contexts_warning(
        [sample.context_truncated for rollout in rollouts for sample in rollout.samples],
        self.env.context.max_tokens)
    train_cfg = self.cfg.train
    micro_batches = self.plan.mini_batch_size // self.plan.micro_batch_size
    shards = models.batch_shards(self.plan.mesh)
    batch, stats = multiturn.gigpo_batch(
        rollouts, group_size=self.group_size, gamma=train_cfg.gigpo_gamma,
        omega=train_cfg.gigpo_omega, normalize=train_cfg.gigpo_normalize,
        epsilon=train_cfg.advantage_eps, max_new_tokens=self.cfg.rollout.max_new_tokens,
        pad_token_id=self.pad_id,
        num_mini_batches=train_cfg.batch_size // self.plan.mini_batch_size,
        row_multiple=micro_batches * shards)
    # Every process plays every episode: they must agree (deterministic environments).
    distributed.check_same(
        [batch[k] for k in sorted(batch)], "The multi-turn training batches",
        "Every host plays every episode itself, so environments must be deterministic given "
        "their seed and the actions (an env step that times out on one host only does this "
        "too: raise env.step_timeout_s).")
    if stats["trained_turns"]:
      update_metrics = self._updates(lambda rows: {k: v[rows] for k, v in batch.items()},
                                     len(batch["input_ids"]))
    else:  # every episode ended in an environment error: nothing to learn from
      update_metrics = {}
      self.opt_state = self.skip_step_updates(self.opt_state)
      distributed.warn_once(f"jaxlayer: step {self.step + 1}: every episode ended in an "
                            "environment error; no update (see the warning above).")
    self.step += 1
    result = {**multiturn.rollout_metrics(rollouts), **stats, **update_metrics,
              "rollout_seconds": rollout_seconds, "seconds_per_step": time.perf_counter() - start}
    samples = [multiturn.episode_record(r.episode)
               for r in rollouts[:self.cfg.logging.samples_per_step]]
    return result, samples


def _evaluation_due(step: int, config: ml_collections.ConfigDict) -> bool:
  """Whether logging.eval_every asks for an evaluation after `step`."""
  every = config.logging.get("eval_every", 0)
  return bool(every) and (step % every == 0 or step == config.train.steps)


def _evaluate(trainer: _Trainer, config: ml_collections.ConfigDict,
              position: int) -> tuple[dict[str, float], float]:
  """(the test scores of the model as trained so far, as metrics eval/TASK/METRIC (each task
  of jaxlayer.evaluation.task_names) and, with several tasks, eval/score (the mean of theirs,
  as `jaxlayer eval` scores them); the score: eval/score, or the one task's by its metric). It
  reads the training state and changes none of it."""
  from jaxlayer import evaluation  # (it imports this module)

  model = trainer.split.merge(trainer.params)
  results = [evaluation.evaluate_from_config(
      config, model, trainer.tokenizer, task_name=name, progress_position=position,
      cut_contexts_warning=trainer.eval_cut_contexts_warning, own_task=trainer.given_task)
      for name in evaluation.task_names(config)]
  scores = {f"eval/{result.task}/{metric}": value
            for result in results for metric, value in result.scores.items()}
  score = evaluation.overall_score(config, results)["value"]
  if len(results) > 1:
    scores["eval/score"] = score
  return scores, score


def _postfix(m: dict[str, float]) -> dict[str, str]:
  shown = {"reward": "reward", "acc": "accuracy", "succ": "success_rate",
           "turns": "episode_length", "env_err": "env_errors", "anchor": "anchor_group_size",
           "kl": "kl", "ent": "entropy", "len": "response_length", "s/step": "seconds_per_step"}
  return {label: f"{m[key]:.3g}" for label, key in shown.items() if key in m}


def warn_if_memory_short(plan_: TrainPlan) -> None:
  """Warns, before anything loads, when the run's estimated memory per device is more than the
  device has (where JAX reports it: GPUs, TPUs)."""
  from jaxlayer.rl import memory  # (it sizes plans of this module)

  if memory.device_limit() is None:
    return
  estimate = memory.estimate(plan_)
  if estimate.peak > estimate.device_limit:
    distributed.warn_once("jaxlayer: this run may not fit in device memory (estimated per "
                          f"device, as `jaxlayer memory` prints it):\n{estimate.table()}\nLower "
                          "rollout.prompts_per_call or train.micro_batch_size, set "
                          "train.remat=True, or use more devices.")


def _train_result(plan_: TrainPlan, trainer: _Trainer, last: dict, history: list[float],
                  step_seconds: list[float],
                  stop_requested: signal.Signals | None = None) -> TrainResult:
  return TrainResult(
      run_dir=trainer.run_dir, step=trainer.step, metrics=last, reward_history=history,
      step_seconds=step_seconds, trained_params=plan_.parameter_counts()[0],
      optimizer_state_bytes=rl_step.array_bytes(trainer.opt_state),
      model=trainer.split.merge(trainer.params), stop_requested=stop_requested)


def use_compilation_cache(directory: str | None) -> None:
  """Points JAX's persistent compilation cache at `directory`. JAX opens its cache once per
  process and then ignores a new jax_compilation_cache_dir, so a changed one reopens it (a
  notebook's second sweep wrote its compiled programs into the first sweep's directory)."""
  if jax.config.jax_compilation_cache_dir != directory:
    jax.config.update("jax_compilation_cache_dir", directory)
    compilation_cache.reset_cache()


@contextlib.contextmanager
def compilation_cache_in(directory: str | None):
  """Within: JAX's persistent compilation cache in `directory` (None: the process's own; a
  leading ~ is the home directory); afterwards the process's own again. A notebook's later cells
  would otherwise write their compiled programs into a run's or sweep's directory (and warn at
  every compilation once that directory is deleted)."""
  if not directory:
    yield
    return
  previous = jax.config.jax_compilation_cache_dir
  use_compilation_cache(os.path.expanduser(directory))
  try:
    yield
  finally:
    use_compilation_cache(previous)


def train(config: ml_collections.ConfigDict, *, task: tasks.Task | None = None,
          position: int = 0, leave: bool = True,
          on_step: Callable[[int, dict], None] | None = None,
          on_start: Callable[[int], None] | None = None,
          stop_at: int | None = None) -> TrainResult:
  """Trains as `config` says, resuming from the run directory's latest checkpoint.

  A run whose checkpoint is at train.steps or past it is finished: it is returned as it is,
  its run directory left untouched (how_to_train_on says how to go on). A resume may change
  train.steps unless the learning-rate schedule depends on it (cosine).

  task: a Task object to use instead of `config.task.name` / `options` (e.g. a custom reward);
    logging.eval_every scores it too, for task.name, which must then be its name.
  position, leave: the tqdm bar's line and whether it stays when done (nest it under a sweep
  bar with position=1, leave=False). on_step(step, metrics) runs after every step;
  on_start(step) once before the first, with the step the run starts from (0: a new run), when
  the model, the data and the checkpoint are loaded and checked.
  stop_at: stop after this RL step, with a checkpoint there, though the run is train.steps
  long (its learning-rate schedule is the whole run's): a later call resumes it, and the run
  ends as one trained without stopping would (the sweep's successive halving).
  Raises TrainingDiverged on a NaN / inf loss, gradient or parameter (the last good
  checkpoint stays on disk). Ctrl-C or SIGTERM (a preemption notice) stops the run after the
  step it is in, with a checkpoint there, and raises TrainingInterrupted (a KeyboardInterrupt);
  a second one stops at once. One during the last step lets the run finish, and the result's
  stop_requested names it.
  """
  if task is not None:
    tasks.require_task(task)
  with distributed.failing_together("Checking the run's settings"):
    plan_ = plan(config)
  if task is not None and config.logging.get("eval_every", 0) and task.name != config.task.name:
    raise ValueError(
        f"train(task=...) trains task {task.name!r}, but logging.eval_every scores task.name="
        f"{config.task.name!r}: set config.task.name={task.name!r} (registered: "
        "tasks.TASKS[NAME] = ITS_CLASS), or logging.eval_every=0 and score the result with "
        "evaluation.evaluate(result.model, tokenizer, task, ...).")
  _require(stop_at is None or (isinstance(stop_at, int) and stop_at >= 1),
           f"train(stop_at={stop_at!r}): give the RL step to stop after, an int >= 1 (or None).")
  warn_if_memory_short(plan_)
  run_dir = Path(config.run_dir)
  # The stop handlers are in place while the model loads too: a Ctrl-C there, which Python may
  # drop inside one of JAX's garbage-collection callbacks, would otherwise let the run go on.
  with (compilation_cache_in(config.compilation_cache_dir),
        _opened_run(plan_) as (checkpointer, start, moved_from),
        stop_requests() as stop_signal):
    logger = None
    try:
      steps = config.train.steps if stop_at is None else min(stop_at, config.train.steps)
      _require(stop_at is None or start <= stop_at,
               f"train(stop_at={stop_at}): {run_dir} holds a checkpoint at step {start}, past "
               f"step {stop_at}; stop later, or train in a new run_dir.")
      if moved_from is not None:
        distributed.warn_once(f"jaxlayer: resuming {run_dir} with its base model at "
                              f"{plan_.model_dir} (it was at {moved_from}; the same weights).")
      trainer = _Trainer(plan_, task)
      if 0 < start < steps:  # a resume that trains on (a finished run trains on no problem)
        with distributed.failing_together("Checking the run's training problems"):
          checkpoint.check_problems(run_dir, trainer.problems_record, start)
      if start:
        trainer.restore(checkpointer, start)
      logged = [row for row in metrics.read_metrics(run_dir) if row["step"] <= trainer.step]
      history = [row["reward"] for row in logged]
      step_seconds = [row["seconds_per_step"] for row in logged]
      if trainer.step >= steps:  # finished (train.steps at most the steps done): kept as it is
        return _train_result(plan_, trainer, {}, history, step_seconds)
      signum = stop_signal()
      if signum is not None:  # asked while the model loaded: no step has begun
        raise TrainingInterrupted(
            f"stopped by {STOP_SIGNALS[signum]} before step {start + 1} of {steps}, "
            + (f"with the checkpoint of step {start} in {run_dir}." if start else
               "before training anything."), signum)
      # Written once the checkpoint is restored: a resume that fails leaves the run as it was.
      checkpoint.write_run_files(run_dir, config, str(plan_.model_dir.resolve()),
                                 {path: value.shape for path, value in trainer.params.items()},
                                 plan_.learning_rates(), trainer.problems_record)
      logger = metrics.MetricsLogger(run_dir, tensorboard=config.logging.tensorboard,
                                     resume_step=trainer.step)
      if on_start is not None:
        on_start(trainer.step)
      last, tested = {}, {}  # tested: the bar's latest test score (logging.eval_every)
      shown = config.logging.progress and distributed.is_primary()  # one bar for all hosts
      with progress_bar(total=steps, initial=min(trainer.step, steps), position=position,
                        leave=leave, desc=f"train {config.train.layers}", disable=not shown,
                        dynamic_ncols=True) as bar:
        while trainer.step < steps:
          last, samples = trainer.run_step()
          if _evaluation_due(trainer.step, config):
            scores, score = _evaluate(trainer, config, position + 1)
            last = {**last, **scores}
            tested = {"test": f"{score:.3g}"}
          history.append(last["reward"])
          step_seconds.append(last["seconds_per_step"])
          logger.log(trainer.step, last)
          logger.log_samples(trainer.step, samples)
          saved = trainer.step % config.checkpoint.every == 0 or trainer.step == steps
          if saved:
            trainer.save(checkpointer)
          bar.update(1)
          bar.set_postfix({**_postfix(last), **tested})
          if on_step is not None:
            on_step(trainer.step, last)
          signum = stop_signal()
          if signum is not None and trainer.step < steps:
            if not saved:
              trainer.save(checkpointer)
            raise TrainingInterrupted(
                f"stopped by {STOP_SIGNALS[signum]} after step {trainer.step} of {steps}, with "
                f"a checkpoint there in {run_dir}.", signum)
      if signum is not None:  # asked during the last step, which ends the run as planned
        tqdm.write(f"{STOP_SIGNALS[signum]}: the step under way was the last one: the run is "
                   f"finished, with the checkpoint of step {trainer.step} in {run_dir}.",
                   file=sys.stderr)
      return _train_result(plan_, trainer, last, history, step_seconds, stop_requested=signum)
    finally:
      if logger is not None:
        logger.close()
