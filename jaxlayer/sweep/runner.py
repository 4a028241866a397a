"""The layer-contribution sweep: base evaluation, full RL, RL on each block alone, resumable.

`run_sweep(config)` plans one run per (seed, base | full | block k | group of blocks) (seeds
config.seed, config.seed + 1, ... sweep.seeds of them; blocks sweep.layers; groups of blocks
trained together sweep.groups), skips every run whose result is already on disk, runs the
others (one after another, or as Ray tasks: the launcher, jaxlayer.sweep.launchers), records
each the moment it finishes, and writes the report (jaxlayer.sweep.report) at the end.

Successive halving (sweep.halving_steps, e.g. "15,30") makes the sweep cheaper than L + 1 whole
runs: every block (and group) trains to the first rung's RL step and is evaluated there, with
full RL at the same step; the best sweep.halving_keep of them by score go on to the next rung,
and so on to train.steps. A run resumes from its own checkpoint at each rung, so a block that
reaches train.steps ends as one trained without stopping would.

The training and evaluation are injected (defaults: `default_train_fn`, jaxlayer.rl.train;
`default_eval_fn`), so the sweep machinery does not depend on how they are done:

    train_fn(config, *, layers, seed, workdir, progress_position[, stop_at]) -> Mapping
        layers: None for full-parameter RL, else the block indices to train ([k], or a
          group's blocks).
        workdir: an empty (or, after a kill, partly filled) directory for this run; a
          trainer that checkpoints there can resume from it.
        progress_position: the tqdm `position` for the run's own progress bar.
        stop_at (passed only for a rung of successive halving): stop after this RL step of
          the train.steps-long run, keeping what a later call resumes from.
        Returns "model" (the trained model, handed to eval_fn as is), "reward_curve" (mean
        training reward per step, a sequence of floats) and optionally "checkpoint_dir"
        (where trained weights were written: removed once the result is recorded for block
        and group runs unless sweep.keep_checkpoints), "cost" (numbers for any of
        store.COST_KEYS but train_seconds, which the sweep measures) and "devices" (what it
        trained on, `devices_of`: the report warns when runs' differ).
    eval_fn(config, *, model, seed, progress_position) -> Mapping
        model: None for the base checkpoint at config.model.path, else a train_fn "model".
        Returns "per_problem" (one score in [0, 1] per test problem, the same problems in
        the same order on every call) and optionally "metric" (default "pass@1") and
        "problems" (a fingerprint of the problems, evaluation.problems_fingerprint: a resume
        on other problems is refused); or, for a score over several tasks, "tasks": {task
        name: {"per_problem": ..., "metric": ..., "problems": ...}}, whose score is the mean of
        the tasks' scores (default_eval_fn's with eval.tasks set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_collections
from tqdm.auto import tqdm

import jaxlayer
from jaxlayer import distributed, locks, paths
from jaxlayer.progress import progress_bar
from jaxlayer.rl import selection
from jaxlayer.rl.config import check_known_keys, require_config
from jaxlayer.sweep import contribution, launchers, report, store
from jaxlayer.sweep.store import RunSpec
from jaxlayer.text import counted, decimals

if TYPE_CHECKING:
  import jax

TrainFn = Callable[..., Mapping[str, Any]]
EvalFn = Callable[..., Mapping[str, Any]]


# Config sections the sweep reads and the trainer does not: removed from each run's config.
SWEEP_SECTIONS = ("sweep", "eval")
COMPILE_CACHE = "compile_cache"  # in the sweep directory, unless compilation_cache_dir is set


def default_sweep_config() -> ml_collections.ConfigDict:
  """The sweep section of a config, every key with its default (configs/sweep_tiny.py sets dir)."""
  config = ml_collections.ConfigDict()
  config.dir = "runs/sweep"  # results, plots and report; a rerun resumes what is there
  config.layers = "all"  # "all", "0,3,7", "2-5", "0,2-4" or "none" (text, not a tuple)
  # Blocks trained together, a run per group: "3+4,10-12" (blocks 3 and 4; blocks 10, 11 and
  # 12), named selections ("mid5", "top5@SWEEP_DIR", "bottom5@SWEEP_DIR") or "adjacent" (every
  # pair k+(k+1)); "" for none.
  config.groups = ""
  config.seeds = 1  # runs per setting, seeds config.seed, config.seed + 1, ...
  # Successive halving: "15,30" trains every block (and group) 15 RL steps and evaluates it,
  # with full RL at 15 steps too; the best halving_keep of them by score go on to 30 steps,
  # the best of those to train.steps. "": every run trains to train.steps.
  config.halving_steps = ""
  config.halving_keep = 0.5  # fraction of the blocks (and of the groups) kept at each rung
  config.keep_checkpoints = False  # keep block and group runs' weights (full RL's are kept)
  config.force_new_dir = False  # sweep.dir holds a different sweep: use the next free dir-N
  config.launcher = "local"  # "local": one run after another here; "ray": runs as Ray tasks
  config.ray = launchers.default_ray_config()  # used by launcher="ray"
  return config


def training_config(config, *, layers: Sequence[int] | None, seed: int, workdir: Path):
  """The jaxlayer.rl config of one run: the sweep's, with train.layers, seed and run_dir set."""
  run_config = config.copy_and_resolve_references()
  with run_config.unlocked():
    for section in SWEEP_SECTIONS:
      if section in run_config:
        del run_config[section]
  run_config.train.layers = "all" if layers is None else "layers." + ",".join(map(str, layers))
  run_config.seed = seed
  run_config.run_dir = str(workdir)
  return run_config


def default_train_fn(config, *, layers, seed, workdir, progress_position, stop_at=None):
  """Full-parameter (layers None) or blocks-only RL with jaxlayer.rl.train, resumable in
  workdir."""
  from jaxlayer.rl import checkpoint, memory
  from jaxlayer.rl import train as rl_train

  run_config = training_config(config, layers=layers, seed=seed, workdir=workdir)
  result = rl_train.train(run_config, position=progress_position, leave=False, stop_at=stop_at)
  if result.stop_requested is not None:  # the run is whole: the sweep scores it when it goes on
    raise rl_train.TrainingInterrupted(
        f"stopped by {rl_train.STOP_SIGNALS[result.stop_requested]} during the last step of the "
        f"run in {workdir}, which finished.", result.stop_requested)
  plan = rl_train.plan(run_config)
  return {"model": result.model, "reward_curve": result.reward_history,
          "checkpoint_dir": str(Path(workdir) / checkpoint.CHECKPOINT_DIR),
          "cost": training_cost(result, memory.estimate(plan).peak),
          "devices": devices_of(plan.mesh)}


def devices_of(mesh: jax.sharding.Mesh) -> str:
  """What a run trained on, e.g. '8 TPU v4 devices, mesh data=2 x fsdp=4 x tensor=1': its
  memory per device and seconds per step compare only with runs on the same."""
  axes = " x ".join(f"{axis}={size}" for axis, size in mesh.shape.items())
  return f"{counted(mesh.size, f'{mesh.devices.flat[0].device_kind} device')}, mesh {axes}"


def training_cost(result, memory_per_device: int) -> dict[str, float]:
  """What a run cost (store.COST_KEYS but the wall time): its trained parameters, optimizer
  state, estimated memory per device (jaxlayer memory's peak) and median seconds per step, the
  first (compiling) step left out when there are others."""
  steps = result.step_seconds[1:] or result.step_seconds
  return {"trained_params": result.trained_params,
          "optimizer_state_bytes": result.optimizer_state_bytes,
          "memory_per_device_bytes": memory_per_device,
          "seconds_per_step": statistics.median(steps) if steps else None}


def default_eval_fn(config, *, model, seed, progress_position):
  """What `jaxlayer eval` scores, on the first eval.num_problems test problems of each task
  (jaxlayer.evaluation): task.name by eval.metric, or each task of eval.tasks by its metric
  (the "tasks" form of the module docstring); the base checkpoint at config.model.path when
  model is None. The mean@k sampling seed is `seed`."""
  from jaxlayer import evaluation, models
  from jaxlayer.rl import train

  if model is None:
    model, _ = models.from_pretrained(config.model.path, dtype=config.model.dtype,
                                      mesh=train.config_mesh(config.mesh))
  tokenizer = models.load_tokenizer(config.model.path)
  scored = {}
  for name, metric in _scored_tasks(config).items():
    result = evaluation.evaluate_from_config(config, model, tokenizer, task_name=name, seed=seed,
                                             progress_position=progress_position)
    scored[name] = {"per_problem": result.per_problem[metric], "metric": metric,
                    "problems": result.problems}
  return {"tasks": scored} if _scores_in_tasks_form(config) else scored.popitem()[1]


def _scored_tasks(config) -> dict[str, str]:
  """The tasks that default_eval_fn scores, each with the metric scoring it
  (evaluation.task_metric): task.name (or the environment) alone unless eval.tasks is set."""
  from jaxlayer import evaluation

  return {name: evaluation.task_metric(config, name) for name in evaluation.task_names(config)}


def _scores_in_tasks_form(config) -> bool:
  """Whether default_eval_fn returns the "tasks" form: eval.tasks names a task other than
  task.name (an environment, scored by its episodes, has no eval.tasks)."""
  from jaxlayer import evaluation

  return (evaluation.env_config(config) is None
          and list(_scored_tasks(config)) != [config.task.name])


def _tasks_metric(task_metrics: Mapping[str, str]) -> str:
  """result.json's "metric" of a run scored on tasks (the "tasks" form), e.g. 'mean of math
  pass@1, amc mean@32' ('gsm8k pass@1' for one task)."""
  tasks = ", ".join(f"{name} {metric}" for name, metric in task_metrics.items())
  return f"mean of {tasks}" if len(task_metrics) > 1 else tasks


def expected_metric(config) -> str:
  """result.json's "metric" of every run that default_eval_fn scores with this config."""
  if _scores_in_tasks_form(config):
    return _tasks_metric(_scored_tasks(config))
  return next(iter(_scored_tasks(config).values()))


def model_num_layers(model_path: str) -> int:
  """Number of decoder blocks of the checkpoint at model_path (reads only config.json)."""
  from jaxlayer.models.config import ModelConfig
  from jaxlayer.models.hub import resolve_model_dir

  return ModelConfig.from_json_file(resolve_model_dir(model_path) / "config.json").num_layers


def _check_eval_fits(config, model_dir: Path | None) -> None:
  """Every eval task's test prompts, with eval.max_new_tokens, fit the model's positions
  (evaluation.check_eval_fits), checked from the checkpoint's tokenizer and config.json.
  model_dir: the checkpoint's directory (None: config.model.path's, resolved here)."""
  from jaxlayer import evaluation, models
  from jaxlayer.models.config import ModelConfig
  from jaxlayer.models.hub import resolve_model_dir

  model_dir = model_dir or resolve_model_dir(config.model.path)
  model_config = ModelConfig.from_json_file(model_dir / "config.json")
  evaluation.check_eval_fits(config, models.load_tokenizer(model_dir), model_config)


def model_fingerprint(model_path: str) -> str:
  """models.weights_fingerprint of the checkpoint at model_path, wherever it is stored."""
  from jaxlayer import models
  from jaxlayer.models.hub import resolve_model_dir

  return models.weights_fingerprint(resolve_model_dir(model_path))


def parse_layers(value: str | int | Sequence[int] | None, num_layers: int) -> list[int]:
  """config.sweep.layers -> sorted block indices.

  Accepts "all" (or None / ""), an int, "0,3,7", ranges "2-5" (inclusive) and mixes
  ("0,2-4"), a tuple / list of ints, or "none" (a sweep of groups of blocks only). Every index
  must be a block of the model.
  """
  if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
    return list(range(num_layers))
  if isinstance(value, str) and value.strip().lower() == "none":
    return []
  if isinstance(value, int) and not isinstance(value, bool):
    indices = [value]
  elif isinstance(value, str):
    indices = [i for token in value.split(",")
               for i in _block_range(token, "layers", value, "0,3,7 or 'all'")]
  elif isinstance(value, Sequence) and all(isinstance(i, int) for i in value):
    indices = list(value)
  else:
    raise ValueError(f"sweep.layers={value!r}: expected 'all', '0,3,7' or a tuple of ints.")
  if not indices:
    raise ValueError(f"sweep.layers={value!r} selects no block.")
  return sorted(set(_check_blocks(indices, "layers", num_layers)))


def parse_groups(value: str | Sequence[Sequence[int]] | None, num_layers: int,
                 model_dir: selection.ModelDir = None) -> list[tuple[int, ...]]:
  """config.sweep.groups -> the groups of blocks to train together, each sorted, in order.

  Accepts "" (or None: no group), "3+4,10-12" (a group per comma; blocks joined by + or
  ranges, and named selections of blocks: "mid5", the paper's Only-B5 "top5@SWEEP_DIR",
  Only-W5 "bottom5@SWEEP_DIR", "mid3+20"), "adjacent" among them (every pair k, k + 1) or a
  tuple of tuples of ints. A group needs two or more blocks of the model. model_dir: the
  model's checkpoint, which a group ranked by a sweep must be of (selection.ModelDir).
  """
  if value is None or (isinstance(value, str) and not value.strip()):
    return []
  if isinstance(value, str):
    groups = []
    for entry in value.split(","):
      if entry.strip().lower() == "adjacent":
        groups += [(k, k + 1) for k in range(num_layers - 1)]
        continue
      groups.append([i for part in entry.split("+") for i in (
          selection.named_blocks(part.strip(), num_layers, model_dir)
          or _block_range(part, "groups", value, "3+4,10-12, mid5 or 'adjacent'"))])
  elif isinstance(value, Sequence) and all(
      isinstance(g, Sequence) and all(isinstance(i, int) for i in g) for g in value):
    groups = [list(g) for g in value]
  else:
    raise ValueError(f"sweep.groups={value!r}: expected '3+4,10-12', 'adjacent' or a tuple of "
                     "tuples of block indices.")
  unique = []
  for group in groups:
    blocks = tuple(sorted(set(_check_blocks(group, "groups", num_layers))))
    if len(blocks) < 2:
      raise ValueError(f"sweep.groups={value!r}: the group {list(blocks)} has one block; a "
                       "single block's run belongs in sweep.layers.")
    if blocks not in unique:
      unique.append(blocks)
  return unique


def _block_range(token: str, key: str, value, example: str) -> list[int]:
  """"3" -> [3], "2-5" -> [2, 3, 4, 5]; anything else is an error naming sweep.<key>."""
  start, dash, end = token.strip().partition("-")
  try:
    first, last = (int(start), int(end)) if dash else (int(token), int(token))
  except ValueError:
    raise ValueError(f"sweep.{key}={value!r}: {token.strip()!r} is not a block index or a range "
                     f"like 2-5; write e.g. --config.sweep.{key}={example}.") from None
  if first > last:
    raise ValueError(f"sweep.{key}={value!r}: the range {token.strip()!r} runs backwards; write "
                     f"it {last}-{first}.")
  return list(range(first, last + 1))


def _check_blocks(indices: Sequence[int], key: str, num_layers: int) -> Sequence[int]:
  outside = sorted({i for i in indices if not 0 <= i < num_layers})
  if outside:
    raise ValueError(f"sweep.{key} names {', '.join(map(str, outside))}, beyond the model's "
                     f"{counted(num_layers, 'block')} (numbered 0-{num_layers - 1}).")
  return indices


def run_seeds(config) -> list[int]:
  """config.sweep.seeds (a count n) -> seeds config.seed, config.seed + 1, ... (n of them)."""
  count, first = config.sweep.seeds, config.get("seed", 0)
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise ValueError(f"sweep.seeds={count!r}: give the number of seeds per run, an int >= 1.")
  return list(range(first, first + count))


def parse_halving(value: str | Sequence[int] | None, train_steps: int) -> list[int]:
  """config.sweep.halving_steps -> the rungs' RL steps, rising, each below train.steps.

  Accepts "" (or None: no halving), "15,30" or a tuple of ints.
  """
  if value is None or (isinstance(value, str) and not value.strip()):
    return []
  try:
    rungs = ([int(token) for token in value.split(",")] if isinstance(value, str)
             else [int(step) for step in value])
  except (TypeError, ValueError):
    raise ValueError(f"sweep.halving_steps={value!r}: give the RL steps at which runs are "
                     "evaluated and the weaker ones stopped, e.g. "
                     "--config.sweep.halving_steps=15,30.") from None
  if any(b <= a for a, b in zip(rungs, rungs[1:])) or not 1 <= rungs[0] or (
      rungs[-1] >= train_steps):
    raise ValueError(f"sweep.halving_steps={value!r}: the rungs must rise from 1 and stay below "
                     f"train.steps={train_steps} (where the kept runs end), e.g. "
                     f"{max(1, train_steps // 4)},{max(2, train_steps // 2)}.")
  return rungs


def halving_keep(sweep_config) -> float:
  """config.sweep.halving_keep, checked: the fraction of runs a rung keeps, in (0, 1]."""
  keep = sweep_config.get("halving_keep", 0.5)
  if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
    raise ValueError(f"sweep.halving_keep={keep!r}: give the fraction of runs each rung keeps, "
                     "a number in (0, 1] (0.5 halves them).")
  return float(keep)


def kept_count(count: int, keep: float) -> int:
  """How many of `count` runs go on past a rung: the best keep of them, at least one (of
  more than none)."""
  return min(count, max(1, math.ceil(count * keep - 1e-9)))


def _trained(spec: RunSpec) -> int | tuple[int, ...] | None:
  """A block run's block, a group run's blocks (how sweep.layers and sweep.groups name them)."""
  return spec.layer if spec.kind == "layer" else spec.blocks


def plan_runs(layers: Sequence[int], seeds: Sequence[int],
              groups: Sequence[tuple[int, ...]] = (), stop_at: int | None = None,
              base: bool = True) -> list[RunSpec]:
  """Seed by seed: base, full, each block, then each group of blocks, so a partial multi-seed
  sweep is already whole for its first seeds. stop_at: the runs of a halving rung (the base,
  which trains nothing, belongs to the first stage only: base=False for the others)."""
  plan = []
  for seed in seeds:
    plan += [RunSpec("base", seed)] if base else []
    plan += [RunSpec("full", seed, stop_at=stop_at)]
    plan += [RunSpec("layer", seed, layer, stop_at=stop_at) for layer in layers]
    plan += [RunSpec("group", seed, blocks=blocks, stop_at=stop_at) for blocks in groups]
  return plan


def best_at_rung(candidates: Sequence, kind: str, results: Mapping[RunSpec, dict],
                 keep: float) -> list:
  """The candidates (blocks, or groups of blocks) that go on past a rung: the best `keep` of
  them by score, mean over seeds (ties: the lower block index), in their order. `results` holds
  the rung's planned runs alone (every candidate on the same seeds; a result of other seeds or
  another rung in the sweep directory is never among them), so this is their order by C
  (contribution.relative_improvement), defined too where C is not (full RL at the base's score).
  """
  def mean_score(candidate) -> float:
    scores = [r["score"] for spec, r in results.items()
              if spec.kind == kind and _trained(spec) == candidate]
    return sum(scores) / len(scores)

  ranked = sorted(candidates, key=lambda c: (-mean_score(c), c))
  kept = set(ranked[:kept_count(len(candidates), keep)])
  return [c for c in candidates if c in kept]


def choose_at_rung(sweep_dir: Path, stop_at: int, layers: Sequence[int],
                   groups: Sequence[tuple[int, ...]], results: Mapping[RunSpec, dict],
                   keep: float) -> tuple[list[int], list[tuple[int, ...]]]:
  """(the blocks, the groups) that go on past the rung at stop_at: the best `keep` of them
  (best_at_rung), but a choice the rung made before (store.RUNG_CHOICES) stands for the blocks
  and groups it chose among, since those it stopped lost their checkpoints: a sweep resumed
  with more seeds (or more blocks, or another halving_keep) trains on the ones that went on,
  and none that stopped from step 0, unless the record is removed. Records the choice (with
  that of blocks and groups new to the rung, chosen by best_at_rung among all)."""
  best = best_at_rung(layers, "layer", results, keep) + best_at_rung(groups, "group", results,
                                                                      keep)
  candidates = {spec.unit: _trained(spec) for spec in results if spec.kind in ("layer", "group")}
  earlier = store.rung_choice(sweep_dir, stop_at) if distributed.is_primary() else None
  earlier = json.loads(distributed.from_primary(json.dumps(earlier)))
  went_on, stopped = (set(earlier["went_on"]), set(earlier["stopped"])) if earlier else ((), ())
  going = {unit for unit, trained in candidates.items()
           if unit in went_on or (trained in best and unit not in stopped)}
  on_again = sorted(unit for unit in going if candidates[unit] not in best)
  stopped_again = sorted(unit for unit, trained in candidates.items()
                         if trained in best and unit not in going)
  if on_again or stopped_again:
    chosen = "; ".join(f"{', '.join(units)} {verb}" for units, verb in
                       ((on_again, "went on"), (stopped_again, "stopped")) if units)
    distributed.warn_once(
        f"rung at {stop_at} RL steps: {chosen} there before, and do so again though the scores "
        "with the runs since rank them otherwise: the runs stopped there lost their "
        "checkpoints, and those that went on trained past it. To choose again by every run's "
        f"score, remove {sweep_dir / store.RUNG_CHOICES} (a stopped run that then goes on "
        "trains again from step 0) and run the sweep again.")
  if distributed.is_primary():
    store.record_rung_choice(sweep_dir, stop_at, went_on=sorted({*went_on, *going}),
                             stopped=sorted({*stopped, *candidates} - going - {*went_on}))
  kept = [trained for unit, trained in candidates.items() if unit in going]
  return [layer for layer in layers if layer in kept], [group for group in groups if group in kept]


def _default_identity(num_layers: int) -> dict:
  """The sweep identity of a config left at every default (training, eval and sweep keys)."""
  from jaxlayer import evaluation  # imports jax and the tasks: only when a sweep starts
  from jaxlayer.rl.config import default_config

  config = default_config()
  config.eval = evaluation.default_eval_config()
  config.sweep = default_sweep_config()
  return store.sweep_identity(_config_dict(config), num_layers)


def _config_dict(config) -> dict:
  return config.copy_and_resolve_references().to_dict()


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
  return [float(v) if math.isfinite(float(v)) else None for v in values]


def _task_scores(scored: Mapping[str, Any], spec: RunSpec, where: str) -> dict[str, Any]:
  """One task's {"per_problem", "metric", "problems"} from eval_fn, checked -> its "metric",
  "problems", "score" (the mean over its problems), "score_se", "num_problems" and
  "per_problem"."""
  per_problem = scored.get("per_problem")
  if per_problem is None or len(per_problem) == 0:
    raise ValueError(f"run {spec.name}: eval_fn's {where}'per_problem' must be a non-empty list "
                     f"of scores, one per test problem; got {type(per_problem).__name__}.")
  per_problem = [float(s) for s in per_problem]
  if not all(math.isfinite(s) for s in per_problem):
    raise ValueError(f"run {spec.name}: eval_fn returned a NaN or inf per-problem score "
                     f"({where}'per_problem').")
  problems = scored.get("problems")
  if problems is not None and not isinstance(problems, str):
    raise ValueError(f"run {spec.name}: eval_fn's {where}'problems' must be a string (a "
                     f"fingerprint of the problems scored); got {type(problems).__name__}.")
  return {"metric": str(scored.get("metric", "pass@1")), "problems": problems,
          "score": sum(per_problem) / len(per_problem),
          "score_se": contribution.standard_error(per_problem),
          "num_problems": len(per_problem), "per_problem": per_problem}


def run_scores(output: Mapping[str, Any], spec: RunSpec) -> dict[str, Any]:
  """eval_fn's output -> result.json's "metric", "score", "score_se", "num_problems" and
  "per_problem" (one task); or, from the "tasks" form, the score over tasks (the mean of the
  tasks' scores, with the standard error of that mean: contribution.standard_error_of_mean), the
  problems of all of them, a metric naming each task's, and "tasks": each task's own."""
  forms = [key for key in ("per_problem", "tasks") if isinstance(output, Mapping) and key in output]
  if len(forms) != 1:
    got = f"keys {sorted(output)}" if isinstance(output, Mapping) else type(output).__name__
    raise ValueError(f"run {spec.name}: eval_fn must return a mapping with either 'per_problem' "
                     "(a list of scores, one per test problem) or 'tasks' ({task name: "
                     f"{{'per_problem': ..., 'metric': ...}}}}); got {got}.")
  if forms == ["per_problem"]:
    return _task_scores(output, spec, "")
  tasks = output["tasks"]
  if not isinstance(tasks, Mapping) or not tasks or not all(
      isinstance(task, Mapping) for task in tasks.values()):
    raise ValueError(f"run {spec.name}: eval_fn's 'tasks' must map each task's name to its "
                     f"{{'per_problem': [...], 'metric': ...}}; got {tasks!r:.80}.")
  scored = {str(name): _task_scores(task, spec, f"tasks[{name!r}]")
            for name, task in tasks.items()}
  return {"metric": _tasks_metric({name: task["metric"] for name, task in scored.items()}),
          "score": sum(task["score"] for task in scored.values()) / len(scored),
          "score_se": contribution.standard_error_of_mean(
              [task["score_se"] for task in scored.values()]),
          "num_problems": sum(task["num_problems"] for task in scored.values()),
          "tasks": scored}


def _check_cost(cost: Any, spec: RunSpec, train_seconds: float) -> dict[str, float | None]:
  """train_fn's "cost" -> every store.COST_KEYS entry (None where it gave none)."""
  if not isinstance(cost, Mapping):
    raise ValueError(f"run {spec.name}: train_fn's 'cost' must be a mapping; got "
                     f"{type(cost).__name__}.")
  unknown = sorted(set(cost) - set(store.COST_KEYS) | set(cost) & {"train_seconds"})
  if unknown:
    raise ValueError(f"run {spec.name}: train_fn's 'cost' has unknown key(s) {unknown}; it may "
                     f"give {[k for k in store.COST_KEYS if k != 'train_seconds']}.")
  checked = {"train_seconds": train_seconds}
  for key in store.COST_KEYS:
    value = cost.get(key, checked.get(key))
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
      raise ValueError(f"run {spec.name}: train_fn's cost {key}={value!r} is not a finite number.")
    checked[key] = value
  return checked


def _remove_checkpoint(checkpoint_dir: str | None, workdir: Path) -> None:
  """Deletes a block or group run's trained weights, but only inside the run's own directory.

  The directory is renamed to a hidden `.NAME.removing` first, then deleted: a sweep killed
  while deleting leaves no half checkpoint that the run, started again, would take for its
  latest one. The next removal of the run's checkpoint deletes such a leftover.
  """
  if not checkpoint_dir:
    return
  path = Path(checkpoint_dir).resolve()
  if not path.is_relative_to(workdir.resolve()):
    if path.exists():
      distributed.warn_once(f"left {path} in place: it lies outside the run directory "
                            f"{workdir}.")
    return
  doomed = path.with_name(f".{path.name}.removing")
  shutil.rmtree(doomed, ignore_errors=True)  # left by a sweep killed while removing
  if path.exists():
    path.rename(doomed)
    shutil.rmtree(doomed)


def execute_run(spec: RunSpec, config, sweep_dir: Path, train_fn: TrainFn,
                eval_fn: EvalFn, on_cluster: bool = False) -> dict:
  """Trains (unless spec is the base) and evaluates one run; returns its result, unrecorded.

  Runs wherever the launcher puts it (this process, a Ray worker); `record_run` writes the
  result, and the sweep then removes the checkpoint that the result names if it goes
  (`_remove_checkpoints`). on_cluster (a Ray worker): a block or group run removes its
  checkpoint itself once scored, where it wrote it, as the sweep's process may not see this
  node's disk. Its training and evaluation compile into the config's compilation_cache_dir
  (`_with_compile_cache`).
  """
  from jaxlayer.rl import train as rl_train

  with rl_train.compilation_cache_in(config.get("compilation_cache_dir")):
    return _execute_run(spec, config, sweep_dir, train_fn, eval_fn, on_cluster)


def _execute_run(spec: RunSpec, config, sweep_dir: Path, train_fn: TrainFn,
                 eval_fn: EvalFn, on_cluster: bool) -> dict:
  """execute_run within its compilation cache."""
  # (A link to a missing target put there by hand is named, not a bare FileExistsError.)
  workdir = paths.local_path(store.run_dir(sweep_dir, spec) / "train",
                             f"run {spec.name}'s directory")
  curve, checkpoint_dir, model, train_seconds, cost, devices = [], None, None, 0.0, None, None
  if spec.kind != "base":
    resumed = workdir.is_dir() and any(workdir.iterdir())
    # The run's directories this call makes (outermost first); lexists: a link is the user's.
    # On several hosts process 0 makes them and the others wait: had another made them first,
    # process 0 would have kept them after a failure below.
    made = [path for path in (workdir.parent, workdir) if not os.path.lexists(path)]
    if distributed.is_primary():
      workdir.mkdir(parents=True, exist_ok=True)
    distributed.sync(f"jaxlayer: {spec.name} run directory made")
    start = time.perf_counter()
    rung = {} if spec.stop_at is None else {"stop_at": spec.stop_at}
    try:
      trained = train_fn(config, layers=spec.trained_blocks, seed=spec.seed, workdir=workdir,
                         progress_position=1, **rung)
    except BaseException:
      if made and distributed.is_primary() and not any(workdir.iterdir()):
        # It failed before writing anything (a bad model found late, a Ctrl-C while the model
        # loads): nothing to resume, so the directories it made go, its time with them.
        with contextlib.suppress(OSError):  # (not empty: written meanwhile)
          for path in reversed(made):
            path.rmdir()
      else:  # an interrupted call's time counts too: the run resumes from its checkpoint
        store.add_train_seconds(sweep_dir, spec, time.perf_counter() - start, resumed)
      raise
    train_seconds = store.add_train_seconds(sweep_dir, spec, time.perf_counter() - start,
                                            resumed)
    if not isinstance(trained, Mapping) or "model" not in trained:
      raise ValueError(f"run {spec.name}: train_fn must return a mapping with 'model' (and "
                       f"'reward_curve'); got {type(trained).__name__}.")
    model = trained["model"]
    curve = _finite_or_none(trained.get("reward_curve", ()))
    checkpoint_dir = trained.get("checkpoint_dir")
    checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir else None  # (a Path: JSON)
    cost = _check_cost(trained.get("cost", {}), spec, train_seconds)
    devices = trained.get("devices")
    if devices is not None and not isinstance(devices, str):
      raise ValueError(f"run {spec.name}: train_fn's 'devices' must be a string naming what the "
                       f"run trained on; got {type(devices).__name__}.")

  start = time.perf_counter()
  evaluated = eval_fn(config, model=model, seed=spec.seed, progress_position=1)
  eval_seconds = time.perf_counter() - start
  scores = run_scores(evaluated, spec)
  scored_run_goes = (spec.kind in ("layer", "group") and spec.stop_at is None
                     and not config.sweep.keep_checkpoints)
  if on_cluster and scored_run_goes:  # (a result lost in flight then trains the run again)
    _remove_checkpoint(checkpoint_dir, workdir)
  return {
      "run": spec.name, "kind": spec.kind, "layer": spec.layer, "seed": spec.seed,
      "blocks": spec.trained_blocks, "stop_at": spec.stop_at,
      # Trained weights that go once the result is recorded (`_remove_checkpoints`): a block or
      # group run's unless kept, a rung's if the run stops there.
      **({"checkpoint_dir": checkpoint_dir} if spec.stop_at is not None or scored_run_goes
         else {}),
      **{key: scores[key] for key in ("score", "score_se", "num_problems", "metric")},
      "train_seconds": train_seconds, "eval_seconds": eval_seconds,
      "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jaxlayer_version": jaxlayer.__version__,  # (what graded it: _note_other_versions)
      "cost": cost, "devices": devices, "reward_curve": curve,
      **{key: scores[key] for key in ("per_problem", "problems", "tasks") if key in scores},
  }


def record_run(sweep_dir: Path, spec: RunSpec, result: dict,
               expected_num_problems: int | None) -> None:
  """Writes a run's result.json atomically (on several hosts: process 0), after checking it was
  scored on the sweep's test set."""
  if expected_num_problems is not None and result["num_problems"] != expected_num_problems:
    raise ValueError(
        f"run {spec.name} was evaluated on {result['num_problems']} problems but the sweep's "
        f"earlier runs on {expected_num_problems}: every run must be scored on the same test set "
        "(check eval.num_problems, or start a new sweep directory).")
  if distributed.is_primary():
    store.write_json_atomic(store.result_path(sweep_dir, spec), result)


def _check_done_runs_metric(config, sweep_dir: Path, done_results: Sequence[dict]) -> None:
  """Before any run: the runs already in sweep_dir were scored by the metric default_eval_fn
  scores this config's by. A sweep begun before jaxlayer's sweeps scored eval.tasks scored
  task.name alone with eval.tasks set: its runs must not mix with scores over the tasks."""
  metric = expected_metric(config)
  if not done_results or done_results[0]["metric"] == metric:
    return
  earlier = done_results[0]
  before = (" (task.name alone: a sweep begun before sweeps scored eval.tasks)"
            if "tasks" not in earlier and _scores_in_tasks_form(config) else "")
  raise ValueError(
      f"this sweep is scored by {metric!r} but the runs in {sweep_dir} by "
      f"{earlier['metric']!r}{before}: their scores do not mix. Start a new sweep with "
      "--config.sweep.force_new_dir=True or --config.sweep.dir=NEW_DIR; the results there are "
      "kept.")


def _check_done_runs_problems(config, sweep_dir: Path, done_results: Sequence[dict]) -> None:
  """Before any run: the runs already in sweep_dir were scored on the test problems that
  default_eval_fn scores this config's on (their fingerprints; results from before jaxlayer
  recorded them pass). The same settings give other problems where a data file was edited
  since, or a dataset has a new revision: their scores do not mix. Collective: each host reads
  its own data files."""
  from jaxlayer import evaluation

  with distributed.failing_together("Checking the runs' test problems"):
    if not done_results or evaluation.env_config(config) is not None:  # (episodes: settings)
      return
    num_problems = evaluation.eval_settings(config)["num_problems"]
    expected = {name: evaluation.problems_fingerprint(evaluation.eval_problems(
                    evaluation.config_task(config, name), num_problems))
                for name in _scored_tasks(config)}
    for result in done_results:  # (scored in the form this config is: _check_done_runs_metric)
      recorded = ({name: task.get("problems") for name, task in result["tasks"].items()}
                  if "tasks" in result else {next(iter(expected)): result.get("problems")})
      changed = [name for name, problems in recorded.items()
                 if problems is not None and problems != expected[name]]
      if changed:
        raise ValueError(
            f"the test problems of {', '.join(map(repr, changed))} are not those the runs in "
            f"{sweep_dir} were scored on ({result['run']}, for one): a data file edited since, "
            "or a dataset's new revision? Their scores do not mix with new runs'. Resume with "
            "the problems they were scored on, or start a new sweep with "
            "--config.sweep.force_new_dir=True or --config.sweep.dir=NEW_DIR; the results "
            "there are kept.")


def _note_other_versions(sweep_dir: Path, done_results: Sequence[dict]) -> None:
  """Notes the results in sweep_dir that another jaxlayer version recorded (or one from before
  results named theirs): where the grading changed between the two, those runs are scored by
  the old rules and the runs to come by the new."""
  others = [r.get("jaxlayer_version") for r in done_results
            if r.get("jaxlayer_version") != jaxlayer.__version__]
  if not others:
    return
  versions = ", ".join(sorted({version for version in others if version}))
  unnamed = "a version from before results named theirs" if None in others else ""
  distributed.warn_once(
      f"resuming {sweep_dir}: jaxlayer {' or '.join(filter(None, (versions, unnamed)))} "
      f"recorded {counted(len(others), 'result')} there, not this jaxlayer "
      f"({jaxlayer.__version__}): where grading changed in between, those runs keep the old "
      "rules' scores and the runs to come get the new ones. To score every run with this "
      "version, sweep into a new directory (--config.sweep.dir=NEW_DIR); to score one run again "
      "here, remove its runs/RUN/result*.json (a block's or group's run then trains again, "
      "from its checkpoint where sweep.keep_checkpoints kept it).")


def run_sweep(config, *, train_fn: TrainFn | None = None, eval_fn: EvalFn | None = None,
              num_layers: int | None = None, command: str | None = None,
              dry_run: bool = False) -> Path:
  """Runs (or resumes) the sweep described by `config`; returns the sweep directory.

  config: an ml_collections config with sections model (path), task, train, eval and
    sweep (`default_sweep_config`: dir, layers, seeds, ..., launcher); see
    configs/sweep_tiny.py. sweep.launcher picks where the runs execute
    (jaxlayer.sweep.launchers: "local", one after another here, or "ray").
  train_fn / eval_fn: see the module docstring; default to jaxlayer's RL and evaluation.
  num_layers: the model's block count; when None, read from the checkpoint's config.json,
    and the fingerprint of its weights is recorded (a sweep directory takes its base model
    found at another path by it, and topK@ / bottomK@ of this sweep refuse another model's
    weights). Given, no checkpoint is read and no fingerprint recorded: the sweep directory
    then takes its model by model.path, and its topK@ selections check the block count alone.
  command: the command line that started the sweep (or resumed it with its base model at a
    new place), quoted in the report for rerunning.
  dry_run: check every setting, print what would run and how much of it is done, and return
    the directory it would use, running and writing nothing. Of a hub model it fetches the
    config and tokenizer alone, which its checks read: the weights' fingerprint is not
    taken, and an existing sweep directory's base model is compared by model.path.
  On several hosts (jaxlayer.distributed) every process runs the sweep's runs together with the
  local launcher; process 0 writes the sweep directory's files.
  """
  require_config(config, ("model", "train", "sweep"), "configs/sweep_tiny.py's get_config()")
  check_known_keys(config.sweep, default_sweep_config(), "sweep")
  config.sweep.dir = os.fspath(paths.local_path(config.sweep.dir, "sweep.dir"))  # ~ expanded
  plan_training, evaluating = train_fn is None, eval_fn is None
  train_fn = train_fn or default_train_fn
  if evaluating:
    from jaxlayer import evaluation

    evaluation.eval_settings(config)  # bad eval settings fail before the sweep directory is made
    eval_fn = default_eval_fn
  fingerprint, model_dir = None, None
  if num_layers is None:
    from jaxlayer.models.hub import TOKENIZER_FILES, resolve_model_dir

    with distributed.failing_together("Finding the model"):  # every host must have it
      # A local checkpoint's weights are at hand; a hub model's are fetched, not for a dry run.
      with_weights = not dry_run or paths.local_path(config.model.path, "model.path").is_dir()
      model_dir = (resolve_model_dir(config.model.path) if with_weights else
                   resolve_model_dir(config.model.path,
                                     hub_files=["config.json", *TOKENIZER_FILES]))
      num_layers = model_num_layers(str(model_dir))
      if with_weights:
        fingerprint = model_fingerprint(str(model_dir))
  if evaluating:
    with distributed.failing_together("Checking the evaluation"):
      _check_eval_fits(config, model_dir)
  layers = parse_layers(config.sweep.layers, num_layers)
  groups = parse_groups(config.sweep.get("groups"), num_layers, model_dir)
  if not layers and not groups:
    raise ValueError("sweep.layers='none' and sweep.groups is empty: there is nothing to train. "
                     "Name blocks (--config.sweep.layers=0,3,7) or groups of blocks "
                     "(--config.sweep.groups=3+4).")
  seeds = run_seeds(config)
  rungs = parse_halving(config.sweep.get("halving_steps"), config.train.steps)
  keep = halving_keep(config.sweep)
  launch = launchers.get_launcher(config.sweep)
  if config.sweep.launcher != "local" and distributed.is_multiprocess():
    raise ValueError(f"sweep.launcher={config.sweep.launcher!r} sends the runs to a cluster from "
                     "one driver process, but this is one process of a multi-host run: start the "
                     "sweep on one machine, or use sweep.launcher='local' to run it on all hosts.")
  if plan_training and config.sweep.launcher == "local":
    with distributed.failing_together("Checking the runs' settings"):
      _check_training_settings(config, layers, groups, model_dir)
  config_dict = _config_dict(config)
  manifest = {"identity": store.sweep_identity(config_dict, num_layers), "config": config_dict,
              "command": command, store.FINGERPRINT: fingerprint}
  if dry_run:
    return _dry_run(config, manifest, num_layers, layers, groups, seeds, rungs, keep,
                    evaluating)
  # Its runs' checkpoints go there; checked before anything is written there.
  distributed.check_shared_directory(config.sweep.dir, "sweep.dir")
  sweep_dir = store.open_sweep_dir(config.sweep.dir, manifest, config.sweep.force_new_dir,
                                   defaults=_default_identity(num_layers))
  # One sweep writes a sweep directory at a time; its runs lock their own directories too.
  with locks.exclusive(sweep_dir, "sweep.dir", enabled=distributed.is_primary()):
    # The temporary files of the report's and results' writers killed while writing.
    distributed.remove_temporary_leftovers(sweep_dir,
                                           *sorted((sweep_dir / store.RUNS).glob("*/")))
    if distributed.is_primary():
      store.record_model_path(sweep_dir, manifest)
    done_results = store.load_results(sweep_dir) + store.load_rung_results(sweep_dir)
    if evaluating:
      _check_done_runs_metric(config, sweep_dir, done_results)
      _check_done_runs_problems(config, sweep_dir, done_results)
    _note_other_versions(sweep_dir, done_results)
    _check_rungs_are_ahead(_rung_runs(layers, seeds, groups, rungs), sweep_dir)
    stage = _Stage(
        launch=launch, sweep_dir=sweep_dir, sweep_config=config.sweep,
        run_fn=functools.partial(execute_run, config=_with_compile_cache(config, sweep_dir),
                                 sweep_dir=sweep_dir.absolute(), train_fn=train_fn,
                                 eval_fn=eval_fn, on_cluster=config.sweep.launcher != "local"),
        expected_num_problems=done_results[0]["num_problems"] if done_results else None)
    total = _announce(sweep_dir, config, layers, groups, seeds, rungs, keep,
                      distributed.warn_once)
    with progress_bar(total=total, desc="sweep", unit="run", position=0, dynamic_ncols=True,
                      disable=not distributed.is_primary()) as bar:
      for index, stop_at in enumerate([*rungs, None]):
        specs = plan_runs(layers, seeds, groups, stop_at, base=index == 0)
        if distributed.is_primary():  # sweep.json, if any, leaves out the runs from here on
          store.mark_unfinished(sweep_dir, command)
        results = stage.run(specs, bar)
        if stop_at is not None:
          kept_layers, kept_groups = choose_at_rung(sweep_dir, stop_at, layers, groups, results,
                                                    keep)
          stopped = [spec for spec in results if spec.kind in ("layer", "group")
                     and _trained(spec) not in kept_layers + kept_groups]
          _remove_checkpoints(stopped, results, config.sweep, sweep_dir)
          units = sorted({s.unit for s in stopped})
          distributed.warn_once(f"rung at {stop_at} RL steps: {', '.join(units) or 'no run'} "
                                f"{'stop' if len(units) > 1 else 'stops'} here.")
          layers, groups = kept_layers, kept_groups
    if distributed.is_primary():
      report.write_report(sweep_dir)
      store.mark_finished(sweep_dir)
    distributed.sync("jaxlayer: sweep report written")
  return sweep_dir


def _dry_run(config, manifest: dict, num_layers: int, layers: Sequence[int],
             groups: Sequence[tuple[int, ...]], seeds: Sequence[int], rungs: Sequence[int],
             keep: float, evaluating: bool) -> Path:
  """run_sweep's dry run, after its checks: the directory the sweep would use (refused as a
  real run would be), what would run and how much of it is done; reads only. evaluating: the
  runs are scored by default_eval_fn."""
  sweep_dir, new = store.choose_sweep_dir(Path(config.sweep.dir), manifest,
                                          config.sweep.force_new_dir,
                                          _default_identity(num_layers))
  _announce(sweep_dir, config, layers, groups, seeds, rungs, keep, distributed.write_once)
  first = plan_runs(layers, seeds, groups, rungs[0] if rungs else None, base=True)
  if not new:
    _check_rungs_are_ahead(_rung_runs(layers, seeds, groups, rungs), sweep_dir)
    done_results = store.load_results(sweep_dir) + store.load_rung_results(sweep_dir)
    if evaluating:
      _check_done_runs_metric(config, sweep_dir, done_results)
      _check_done_runs_problems(config, sweep_dir, done_results)
    _note_other_versions(sweep_dir, done_results)
  done = 0 if new else sum(store.is_done(sweep_dir, spec) for spec in first)
  # A hub model's weights, which a dry run does not fetch, are not compared with the sweep's.
  by_path = not new and manifest[store.FINGERPRINT] is None and store.load_manifest(
      sweep_dir).get(store.FINGERPRINT) is not None
  distributed.write_once("dry run: " + ("a new sweep directory" if new else
                                        f"it resumes the sweep there, {done} of its "
                                        f"{len(first)} runs"
                                        + (" of the first rung" if rungs else "") + " done")
                         + (" (its base model compared by model.path alone: the weights were "
                            "not read)" if by_path else "")
                         + ". Every setting is checked; nothing was run or written.")
  return sweep_dir


def _announce(sweep_dir: Path, config, layers: Sequence[int], groups: Sequence[tuple[int, ...]],
              seeds: Sequence[int], rungs: Sequence[int], keep: float,
              write: Callable[[str], None]) -> int:
  """Writes what the sweep will run with `write` (distributed.warn_once, a note on stderr, where
  the sweep runs; write_once, stdout, for a dry run, which reports it); returns the number of
  runs (with successive halving, the runs of every rung)."""
  counts = [a + b for a, b in zip(_rung_counts(len(layers), len(rungs), keep),
                                  _rung_counts(len(groups), len(rungs), keep))]
  total = len(seeds) * (1 + sum(1 + count for count in counts))
  write(f"sweep into {sweep_dir}: {config.model.path}, the base model, full RL, "
        f"{counted(len(layers), 'block')} alone"
        + (f", {counted(len(groups), 'group')} of blocks" if groups else "")
        + f"; {counted(len(seeds), 'seed')}: {total} runs of up to {config.train.steps} "
        f"RL steps ({config.train.algorithm}).")
  if rungs:
    steps = [*rungs, config.train.steps]
    # Each run stops at the rung after which it is no longer kept; full RL trains to the end.
    rl_steps = len(seeds) * (steps[-1] + sum(
        (count - kept) * step for count, kept, step in zip(counts, counts[1:] + [0], steps)))
    write(f"successive halving: {' -> '.join(map(str, counts))} blocks and groups trained to "
          f"steps {', '.join(map(str, steps))}; {rl_steps:,} RL steps in all, "
          f"{rl_steps / (len(seeds) * (1 + counts[0]) * steps[-1]):.0%} of a sweep without "
          "halving.")
  return total


def _check_training_settings(config, layers: Sequence[int], groups: Sequence[tuple[int, ...]],
                             model_dir: Path | None) -> None:
  """Plans the training of every run (jaxlayer.rl.train.plan: settings, selection, mesh; the
  model's config.json only), so that a bad train setting fails before the sweep directory is
  made, not after the base model's evaluation. Not with a cluster launcher: planning takes
  this process's devices (a TPU host's), which the cluster's workers may need. model_dir: the
  checkpoint's directory, which the plans read instead of resolving model.path again (a dry
  run's hub model: its config and tokenizer alone); None: model.path's."""
  from jaxlayer.rl import train as rl_train

  for blocks in [None, *([layer] for layer in layers), *groups]:
    run_config = training_config(config, layers=blocks, seed=config.seed,
                                 workdir=Path(config.sweep.dir))
    if model_dir is not None:
      run_config.model.path = str(model_dir)
    rl_train.plan(run_config)


def _with_compile_cache(config, sweep_dir: Path):
  """The config the runs get: unless compilation_cache_dir is set, XLA's compiled programs are
  kept in SWEEP_DIR/compile_cache, so that a run whose programs an earlier run compiled (the
  same block with another seed, or at a later rung of successive halving; the evaluation)
  loads them instead of compiling again."""
  if "compilation_cache_dir" not in config or config.compilation_cache_dir:
    return config
  run_config = config.copy_and_resolve_references()
  run_config.compilation_cache_dir = str(sweep_dir.absolute() / COMPILE_CACHE)
  return run_config


def _rung_counts(count: int, num_rungs: int, keep: float) -> list[int]:
  """The number of blocks (or groups) trained to each rung and then to train.steps."""
  counts = [count]
  for _ in range(num_rungs):
    counts.append(kept_count(counts[-1], keep))
  return counts


def _rung_runs(layers: Sequence[int], seeds: Sequence[int], groups: Sequence[tuple[int, ...]],
               rungs: Sequence[int]) -> list[RunSpec]:
  """The runs of every rung, were every block and group to reach every rung."""
  return [spec for stop_at in rungs for spec in plan_runs(layers, seeds, groups, stop_at,
                                                          base=False)]


def _check_rungs_are_ahead(specs: Sequence[RunSpec], sweep_dir: Path) -> None:
  """No rung is run for a run already trained past it, to train.steps or to a later rung
  (halving added to a sweep, or its steps changed): its checkpoints are past the rung, or
  gone. specs: the runs of every rung, checked before any runs."""
  past = [spec for spec in specs if not store.is_done(sweep_dir, spec) and any(
      step is None or step > spec.stop_at for step in store.evaluated_steps(sweep_dir, spec))]
  if past:
    stop_at = min(spec.stop_at for spec in past)
    used = sorted({r["stop_at"] for r in store.load_rung_results(sweep_dir)})
    raise ValueError(
        f"sweep.halving_steps: {', '.join(s.final.name for s in past if s.stop_at == stop_at)} "
        f"in {sweep_dir} already trained past step {stop_at} without a result there, and a run "
        "cannot go back to a rung. Rerun with the halving steps of its results "
        f"(--config.sweep.halving_steps={','.join(map(str, used)) or repr('')}), or start a new "
        "sweep with --config.sweep.dir=NEW_DIR; the results here are kept either way.")


def _remove_checkpoints(specs: Sequence[RunSpec], results: Mapping[RunSpec, dict],
                        sweep_config, sweep_dir: Path) -> None:
  """Removes the checkpoints that the runs' recorded results name, unless
  sweep.keep_checkpoints: a block or group run's once it is scored (a run trained to
  train.steps), a rung's that successive halving stops the run at. Only after the result is on
  disk: a sweep stopped in between finds the run done, not to be trained again, and removes its
  checkpoint then."""
  if not sweep_config.keep_checkpoints and distributed.is_primary():
    for spec in specs:
      _remove_checkpoint(results[spec].get("checkpoint_dir"),
                         store.run_dir(sweep_dir, spec) / "train")
  distributed.sync("jaxlayer: recorded runs' checkpoints removed")


@dataclasses.dataclass
class _Stage:
  """Runs a list of runs with the sweep's launcher (one stage: the whole sweep, or a rung of
  successive halving), recording each result the moment it is in."""

  launch: launchers.Launcher
  run_fn: Callable[[RunSpec], dict]
  sweep_dir: Path
  sweep_config: Any
  expected_num_problems: int | None  # the sweep's test-set size, once a run is scored

  def run(self, specs: Sequence[RunSpec], bar: tqdm) -> dict[RunSpec, dict]:
    """Every spec's result (read back for runs already done), spec -> result."""
    # Process 0 reads them for every host: another may not see a result written a moment ago
    # (an NFS client's late listing), and would run it again while process 0 goes on.
    with distributed.failing_together("Reading the finished runs' results"):
      done = {spec.name: store.read_json(store.result_path(self.sweep_dir, spec))
              for spec in specs
              if distributed.is_primary() and store.is_done(self.sweep_dir, spec)}
    done = json.loads(distributed.from_primary(json.dumps(done)))
    results = {spec: done[spec.name] for spec in specs if spec.name in done}
    if results:
      distributed.warn_once(f"resuming {self.sweep_dir}: {len(results)} of {len(specs)} runs"
                            f"{_stage_name(specs)} already done.")
      bar.update(len(results))
      # Those of a sweep stopped between recording a run and removing its checkpoint.
      _remove_checkpoints([spec for spec in results if spec.stop_at is None], results,
                          self.sweep_config, self.sweep_dir)
    unfinished = [spec for spec in specs if spec not in results]
    if not unfinished:
      return results
    restarted = [spec.name for spec in unfinished if _checkpoint_gone(self.sweep_dir, spec)]
    if restarted:
      distributed.warn_once(
          f"training from step 0 again, the checkpoints of their earlier rungs gone: "
          f"{', '.join(restarted)} (successive halving removes those of the runs it stops; "
          "--config.sweep.keep_checkpoints=True keeps them).")
    with contextlib.closing(self.launch(list(unfinished), self.run_fn,
                                        self.sweep_config)) as launched:
      bar.set_postfix_str(unfinished[0].name)
      for spec, result in launched:
        record_run(self.sweep_dir, spec, result, self.expected_num_problems)
        self.expected_num_problems = result["num_problems"]
        results[spec] = result
        if spec.stop_at is None:  # (a rung's checkpoint stays for the next rung to resume)
          _remove_checkpoints([spec], results, self.sweep_config, self.sweep_dir)
        unfinished.remove(spec)
        distributed.write_once(f"{spec.name}: {_scored(result)} (train "
                               f"{result['train_seconds']:.1f} s, eval "
                               f"{result['eval_seconds']:.1f} s)")
        bar.set_postfix_str(unfinished[0].name if unfinished else "")
        bar.update(1)
    return results


def _checkpoint_gone(sweep_dir: Path, spec: RunSpec) -> bool:
  """Whether the run of spec was evaluated at an earlier rung and its checkpoint is gone since
  (halving stopped it there, and was removed since or chose again): it trains from step 0
  again."""
  rungs = [store.read_json(path)
           for path in store.run_dir(sweep_dir, spec).glob("result-step*.json")]
  return any(rung.get("checkpoint_dir") and not Path(rung["checkpoint_dir"]).exists()
             for rung in rungs if spec.stop_at is None or rung["stop_at"] < spec.stop_at)


def _scored(result: dict) -> str:
  """A run's score as its line says it: 'pass@1 0.4000 ± 0.0775', or over tasks 'score 0.4500
  ± 0.0474 (math pass@1 0.4000, amc mean@32 0.5000)'."""
  score = f"{result['score']:.4f} ± {decimals(result['score_se'], 4)}"
  if "tasks" not in result:
    return f"{result['metric']} {score}"
  return f"score {score} (" + ", ".join(f"{name} {task['metric']} {task['score']:.4f}"
                                       for name, task in result["tasks"].items()) + ")"


def _stage_name(specs: Sequence[RunSpec]) -> str:
  stop_at = max((spec.stop_at or 0 for spec in specs), default=0)  # (the base has none)
  return f" of the rung at {stop_at} steps" if stop_at else ""
