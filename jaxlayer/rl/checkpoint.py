"""Run directories: Orbax checkpoints of the trained leaves, and merging them back into the base.

A run directory holds
  config.json        the full training config (ml_collections), written at the start
  run.json           the base model's path and fingerprint (`models.weights_fingerprint`), the
                     trained parameters' paths, shapes and peak learning rates, the training
                     problems' count and fingerprints (problems_record), the jaxlayer version
                     that trained it (that started or last resumed it)
  checkpoints/STEP/  params (trainable leaves only: the frozen ones are the base checkpoint's),
                     optimizer (optimizer state and RNG key), meta (step, data position)
  metrics.jsonl, tensorboard/, samples.jsonl   (jaxlayer.rl.metrics)
Checkpoints are written synchronously and committed atomically by Orbax, so a run killed at
any moment leaves its previous checkpoints intact. On several hosts every process calls save and
restore (Orbax writes each array's shards from the hosts that hold them, the metadata once, on
a directory all hosts mount, e.g. NFS); the JSON files are written by process 0.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

import jaxlayer
from jaxlayer import distributed, locks, models, paths
from jaxlayer.models.hf_mapping import TRANSPOSE, apply_transform, jax_to_hf_name
from jaxlayer.models.hub import (STAGING_PREFIX, holds_weights, hub_id_of_snapshot,
                                 is_checkpoint_file, resolve_model_dir)
from jaxlayer.models.sharding import param_sharding
from jaxlayer.text import counted

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PARTS = ("params", "optimizer", "meta")  # the directories of checkpoints/STEP/
# A sweep's run (jaxlayer.sweep.store): SWEEP/runs/RUN holds its results and its training run
# in train/, whose checkpoints the sweep removes once it is scored (unless it keeps them).
SWEEP_RUN_TRAIN_DIR = "train"
SWEEP_RESULTS = "result*.json"
SWEEP_MANIFEST = "manifest.json"  # SWEEP/manifest.json (jaxlayer.sweep.store.MANIFEST)


def _abstract(tree):
  """Shapes, dtypes and shardings of a pytree, for restoring onto the same devices."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores the training state of one run (keeps the newest `keep`).

  writer: the run's training, which holds the run directory's lock. It deletes the unfinished
  checkpoints (`STEP.orbax-checkpoint-tmp`) that a killed run left; a reader (export, eval)
  leaves them, as they may be a running training's checkpoint in the making. Orbax itself
  deletes one only when the same step is saved again, which a run resumed with another
  checkpoint.every, or never resumed, does not do. They are deleted here, before the manager
  starts, not by Orbax's cleanup_tmp_directories: that runs in a thread which close() does not
  wait for, so a run that stopped at once (a missing data file) printed the thread's traceback
  at exit ("cannot schedule new futures after shutdown"). A writer that saved nothing (a run
  that failed before its first checkpoint) removes on close the checkpoints directory it made,
  when it is still empty: it leaves no empty directory behind, never one that holds anything,
  and never one it found (an empty one the user made, a link to another disk).
  """

  def __init__(self, run_dir: str | os.PathLike, keep: int = 3, writer: bool = False):
    if keep < 1:
      raise ValueError(f"checkpoint.keep must be >= 1, got {keep}.")
    self.directory = Path(run_dir).absolute() / CHECKPOINT_DIR
    # Whether this writer makes the directory (the manager does), which close() then removes
    # if it stays empty; lexists: a link to a directory, even a missing one, is the user's.
    self._made_directory = (writer and distributed.is_primary()
                            and not os.path.lexists(self.directory))
    if writer and distributed.is_primary():
      for unfinished in self.directory.glob(f"*{ocp.path.atomicity.TMP_DIR_SUFFIX}*"):
        shutil.rmtree(unfinished, ignore_errors=True)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, params: dict, optimizer: dict, meta: dict[str, Any]) -> None:
    """params: trainable leaves {path: array}; optimizer: {"opt_state": ..., "rng": key}.

    On a full disk the unfinished checkpoint is deleted (it would hold the space the next
    attempt needs) and DiskFullError raised; the earlier checkpoints are untouched."""
    try:
      with paths.naming_a_full_disk(self.directory / str(step)):
        self._manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), optimizer=ocp.args.StandardSave(optimizer),
            meta=ocp.args.JsonSave(meta)))
    except paths.DiskFullError:
      if distributed.is_primary():
        for unfinished in self.directory.glob(f"{step}{ocp.path.atomicity.TMP_DIR_SUFFIX}*"):
          shutil.rmtree(unfinished, ignore_errors=True)
      raise

  def restore(self, step: int, params: dict, optimizer: dict) -> tuple[dict, dict, dict]:
    """(params, optimizer, meta) of `step`, laid out like the given templates."""
    restored = self._restore(step, params=ocp.args.StandardRestore(_abstract(params)),
                             optimizer=ocp.args.StandardRestore(_abstract(optimizer)),
                             meta=ocp.args.JsonRestore())
    return restored.params, restored.optimizer, restored.meta

  def restore_params(self, step: int, params: dict) -> dict:
    """Only the trained leaves of `step` (what export and evaluation need)."""
    return self._restore(step, params=ocp.args.StandardRestore(_abstract(params))).params

  def _restore(self, step: int, **items):
    """Orbax's restore of `items`; a checkpoint it cannot read (one that a killed process was
    deleting, a damaged disk) raises ValueError naming it and what to do, one deleted since its
    step was listed (by a run still training there) FileNotFoundError."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:
      if not (self.directory / str(step)).is_dir():
        raise FileNotFoundError(
            f"checkpoint {self.directory / str(step)} was deleted while it was being read: a run "
            "still training there keeps only its newest checkpoints (checkpoint.keep). Try "
            "again, which takes the latest one, or pass the step of one it keeps.") from err
      raise self._unreadable(step, _orbax_reason(err)) from err

  def check_parts(self, step: int) -> None:
    """Raises restore's ValueError when checkpoint `step` lacks a part, or holds one empty (a
    copy cut short, a directory emptied by hand): a run finds it before it loads its model, and
    never takes it for a finished run's last checkpoint."""
    missing = [part for part in CHECKPOINT_PARTS
               if not any((self.directory / str(step) / part).glob("*"))]
    if missing:
      raise self._unreadable(step, f"it holds no {', '.join(missing)}")

  def _unreadable(self, step: int, reason: str) -> ValueError:
    """The error for checkpoint `step`, which cannot be read for `reason`, with the fix."""
    others = [other for other in self.all_steps() if other < step]
    then = (f"the run then goes on from checkpoint {max(others)}" if others else
            "it is the run's only checkpoint, so the run then starts anew")
    return ValueError(
        f"checkpoint {self.directory / str(step)} cannot be read ({reason}). If a process was "
        f"killed while writing or deleting it, or the disk is damaged, delete that directory: "
        f"{then}.")

  def close(self) -> None:
    self._manager.close()
    if self._made_directory:
      with contextlib.suppress(OSError):  # not empty (written meanwhile) or already gone
        self.directory.rmdir()  # removes an empty directory only


def _orbax_reason(err: Exception) -> str:
  """Why Orbax could not restore, in a line: its message without the spec that TensorStore
  appends (dozens of lines), its end kept where it is long (the cause comes last), and the
  array it was reading named."""
  text = str(err).strip()
  if not text:
    return type(err).__name__
  reason = re.split(r" See full TensorStore details|\s*\[tensorstore_spec", text)[0]
  reason = reason.splitlines()[0].rstrip(".")
  if len(reason) > 300:
    reason = "..." + reason[-300:]
  array = (re.search(r'"([^"/]+)/\.z(?:array|attrs)"', text)
           or re.search(r"'driver': 'ocdbt',.*?'path': '([^'/]+)/?'", text, flags=re.DOTALL))
  return f"{reason}; array {array.group(1)}" if array else reason


def write_run_files(run_dir: Path, config: ml_collections.ConfigDict, base_model: str,
                    trainable: Mapping[str, Sequence[int]],
                    learning_rates: Mapping[str, float] | None = None,
                    problems: dict | None = None) -> None:
  """config.json and run.json (by the primary process only); base_model: the model's local
  directory; trainable: path -> shape; learning_rates: path -> peak rate of the trained leaves
  (train.lr_groups resolved); problems: the training problems' problems_record."""
  if not distributed.is_primary():
    return
  run_dir.mkdir(parents=True, exist_ok=True)
  paths.write_text_atomic(run_dir / CONFIG_FILE, config.to_json(indent=2))
  run = {"base_model": base_model, "base_fingerprint": models.weights_fingerprint(base_model),
         "jaxlayer_version": jaxlayer.__version__, "trainable": list(trainable),
         "shapes": {path: list(shape) for path, shape in trainable.items()}}
  if learning_rates is not None:
    run["learning_rates"] = dict(learning_rates)
  if problems is not None:
    run["train_problems"] = problems
  paths.write_text_atomic(run_dir / RUN_FILE, json.dumps(run, indent=2))


def problems_record(prompts: Sequence[str], answers: Sequence[str],
                    grading_data: Sequence[Any]) -> dict:
  """{"count", "fingerprint", "grading_fingerprint"} of the training problems in the order a run
  draws from: of their prompts as the model reads them and answers, and of what else grades them
  (grading_data: each one's Task.grading_data, a code task's tests). A checkpoint's data position
  counts into them, so a resume on other problems (a data file edited since, a dataset's new
  revision) would go on with problems the run never saw in its order, or grade them otherwise."""
  digest = hashlib.sha256(json.dumps([list(prompts), list(answers)]).encode())
  grading = hashlib.sha256(json.dumps(list(grading_data), sort_keys=True, default=str).encode())
  return {"count": len(prompts), "fingerprint": digest.hexdigest()[:16],
          "grading_fingerprint": grading.hexdigest()[:16]}


def check_problems(run_dir: str | os.PathLike, record: dict | None, step: int) -> None:
  """Raises ValueError when the training problems of `record` (problems_record) are not those
  the run in `run_dir` trained on: each part its run.json records is compared (runs written
  before jaxlayer recorded them pass, those before it recorded grading_fingerprint are checked
  without it)."""
  trained_on = read_run_files(run_dir)[1].get("train_problems")
  if trained_on is None or record is None:
    return
  changed = [key for key, value in record.items() if key in trained_on and trained_on[key] != value]
  if not changed:
    return
  graded_otherwise = changed == ["grading_fingerprint"]
  counts = (f"{counted(trained_on['count'], 'problem')} then, {record['count']} now"
            if "count" in changed else
            f"{counted(record['count'], 'problem')}, " + (
                "what grades them changed (a code task's tests, say)" if graded_otherwise else
                "their prompts or answers changed"))
  raise ValueError(
      f"run_dir {run_dir} trained on other training problems than the task gives now ({counts}: "
      "a data file edited since, or a dataset with a new revision?). Its checkpoint at step "
      f"{step} goes on at a position in its problems, which would now "
      f"{'be graded otherwise' if graded_otherwise else 'name others'}. Resume with the data the "
      "run trained on, or start a new run_dir.")


def check_base_model(run_dir: str | os.PathLike, run: dict, model_dir: str | os.PathLike) -> None:
  """Raises ValueError when the model in `model_dir` is not the base model the run trained
  (its weights differ from run.json's fingerprint; runs written before jaxlayer recorded one
  pass)."""
  recorded = run.get("base_fingerprint")
  if recorded is None or models.weights_fingerprint(model_dir) == recorded:
    return
  where = Path(run["base_model"])  # still there where a hub id moved on to another revision
  kept = (where.is_dir() and where.resolve() != Path(model_dir).resolve()
          and (where / "config.json").is_file() and holds_weights(where)
          and models.weights_fingerprint(where) == recorded)
  raise ValueError(
      f"The model in {model_dir} is not the base model run {run_dir} was trained on "
      f"({where} when it was written): its weights differ. " +
      (f"That model is still in {where} (a hub id now names another revision, say): pass that "
       "directory." if kept else "Pass the model the run was trained on, wherever it is now."))


def read_run_files(run_dir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, dict]:
  run_dir = paths.local_path(run_dir, "run_dir")
  if not (run_dir / RUN_FILE).is_file():
    problem = ("does not exist" if not run_dir.exists() else
               f"is not a jaxlayer run directory (no {RUN_FILE})")
    raise FileNotFoundError(sweep_run_hint(run_dir) or (
        f"{run_dir} {problem}: pass the run_dir a `jaxlayer train` run wrote."))
  config = ml_collections.ConfigDict(_read_run_file(run_dir / CONFIG_FILE))
  return config, _read_run_file(run_dir / RUN_FILE)


def _read_run_file(path: Path) -> dict:
  """A run directory's JSON file; ValueError naming it when it is none (cut short, damaged)."""
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise ValueError(
        f"{path} cannot be read ({err}): it was cut short or damaged (a machine that crashed "
        "while writing it, a disk error). Put back a copy of it, or train in a new run_dir."
    ) from None


def sweep_run_hint(path: str | os.PathLike) -> str | None:
  """What to pass instead of a sweep directory or one of its runs' (SWEEP/runs/RUN), whose
  training run is RUN/train; None for any other path."""
  path = Path(path)
  if (path / SWEEP_MANIFEST).is_file():
    return (f"{path} is a sweep directory, not a run directory: the training run of each of "
            f"its runs is {path / 'runs' / 'RUN' / SWEEP_RUN_TRAIN_DIR}; pass one of those.")
  train_dir = path / SWEEP_RUN_TRAIN_DIR
  if not (train_dir / RUN_FILE).is_file():
    return None
  return (f"{path} is a sweep's run directory, not a run directory: its training run is "
          f"{train_dir}; pass that.")


def listed_steps(run_dir: str | os.PathLike) -> list[int]:
  """The steps of the finished checkpoints in run_dir as this host lists them, as Orbax's
  CheckpointManager does but without starting one (that waits for every host). Not collective:
  another host may list them late (see checkpoint_step)."""
  directory = Path(run_dir) / CHECKPOINT_DIR
  if not directory.is_dir():  # (not created: this only reads)
    return []
  return sorted(metadata.step
                for metadata in ocp.path.step.standard_name_format().find_all(directory))


def checkpoint_step(run_dir: str | os.PathLike, step: int | None = None) -> int:
  """`step` (default: the latest) if run_dir holds a checkpoint of it, else an error saying why
  not. Reads only: a missing checkpoints directory is not created. On several hosts process
  0's listing decides for all: another host may list the checkpoints late (an NFS client's
  cache, up to a minute after the run saved one), and would load another checkpoint's part of
  the weights. Collective."""
  return _checkpoint_step(run_dir, read_run_files(run_dir)[0], step)


def _checkpoint_step(run_dir: str | os.PathLike, config: ml_collections.ConfigDict,
                     step: int | None) -> int:
  """checkpoint_step of the run in run_dir, whose config.json holds `config`."""
  run_dir = Path(run_dir)
  available = json.loads(distributed.from_primary(json.dumps(listed_steps(run_dir))))
  if not available and list(run_dir.parent.glob(SWEEP_RESULTS)):  # scored by a sweep
    raise FileNotFoundError(
        f"Run {run_dir} has no checkpoint: the sweep removed them once the run was scored (it "
        "keeps only full RL's unless --config.sweep.keep_checkpoints=True). To get these "
        "weights, sweep these blocks into a new --config.sweep.dir with that option.")
  if not available:
    raise FileNotFoundError(f"Run {run_dir} has no checkpoint yet (it saves every "
                            f"{counted(config.checkpoint.every, 'step')}).")
  step = max(available) if step is None else step
  if step not in available:
    raise ValueError(f"Run {run_dir} has no checkpoint for step {step}; available: "
                     f"{sorted(available)}.")
  return step


def run_base_model(run_dir: str | os.PathLike, base_model: str | None = None) -> str:
  """Where the base model of the run in `run_dir` is: `base_model` where given (it moved), else
  the directory its run.json names; where that is gone and was a Hugging Face cache's snapshot
  of a hub id (HF_CACHE/models--ORG--NAME/snapshots/REVISION: the cache moved, or the run was
  copied to another machine), that hub id, found in this machine's cache or fetched again."""
  if base_model is not None:
    return base_model
  return _recorded_base_model(run_dir, read_run_files(run_dir)[1]["base_model"])


def _recorded_base_model(run_dir: str | os.PathLike, recorded: str) -> str:
  """Where the base model that the run in run_dir recorded in `recorded` (its run.json's
  base_model) is now (run_base_model)."""
  if Path(recorded).is_dir():
    return recorded
  hub_id = hub_id_of_snapshot(recorded)
  if hub_id is not None:
    return hub_id
  raise FileNotFoundError(
      f"Run {run_dir} was trained on the base model in {recorded} (its {RUN_FILE}), which is "
      "not there any more: give the base model's directory or hub id with --base-model "
      "(library: base_model=).")


def load_trained_model(run_dir: str | os.PathLike, step: int | None = None,
                       mesh: jax.sharding.Mesh | None = None, base_model: str | None = None,
                       dtype: str | None = None):
  """(model, loaded): the run's base model with the trained leaves of `step` (default: the
  latest checkpoint) in place of the base values, in `dtype` (default: the run's model.dtype;
  "float32" keeps all of a bfloat16 run's float32 trained leaves). loaded says what, as
  eval.json records it: {"base_model": its directory or hub id, "step": the checkpoint's,
  "trained": the trained leaves' paths}; the model's ModelConfig is model.config.

  base_model: the base model's directory or hub id, where it is no longer where the run was
  trained (run.json's `base_model`), e.g. a run copied from another machine.
  """
  config, run = read_run_files(run_dir)  # once, for all that follows
  with distributed.failing_together("Finding the run's base model"):  # every host needs it
    if base_model is None:
      base_model = _recorded_base_model(run_dir, run["base_model"])
    check_base_model(run_dir, run, resolve_model_dir(base_model))
  step = _checkpoint_step(run_dir, config, step)
  checkpointer = Checkpointer(run_dir, keep=max(int(config.checkpoint.keep), 1))
  try:
    model, _ = models.from_pretrained(base_model, dtype=dtype or config.model.dtype, mesh=mesh)
    base = models.named_params(model)
    _check_fits(base, run, base_model, run_dir)
    trained = checkpointer.restore_params(step, {path: base[path] for path in run["trainable"]})
  finally:
    checkpointer.close()
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  for path, var in flat:
    name = models.path_str(path)
    if name in trained:
      var.set_value(trained[name])
  nnx.update(model, nnx.from_flat_state(flat))
  return model, {"base_model": base_model, "step": step, "trained": run["trainable"]}


def _check_fits(base: dict, run: dict, base_model: str, run_dir) -> None:
  """Raises ValueError when the base model lacks a trained leaf or holds it in another shape
  (runs of jaxlayer before run.json recorded the shapes are checked for the paths only)."""
  shapes = run.get("shapes", {})
  misfits = [f"{path}: {tuple(shapes[path])} in the run, {base[path].shape} in the model"
             if path in base else f"{path}: not in the model"
             for path in run["trainable"]
             if path not in base or (path in shapes and tuple(shapes[path]) != base[path].shape)]
  if misfits:
    raise ValueError(f"The base model {base_model} does not fit run {run_dir} ({misfits[0]}; "
                     f"{len(misfits)} of its {len(run['trainable'])} trained parameters differ): "
                     "give the model the run was trained on (--base-model).")


def _export_dir_files(out_dir: Path, base_model: str) -> list[str]:
  """The names in out_dir (its lock and the staging directories of exports aside); raises
  unless all of them are files an export writes, and out_dir is not the run's base model.
  Anything else is the user's, never mixed in with an export or removed."""
  base_dir = Path(base_model).expanduser()
  if base_dir.is_dir() and base_dir.resolve() == out_dir.resolve():
    raise FileExistsError(f"{out_dir} is the run's base model, which the export is made from: "
                          "choose another directory.")
  held = out_dir.iterdir() if out_dir.is_dir() else []
  names = sorted(path.name for path in held
                 if path.name != locks.LOCK_FILE and not path.name.startswith(STAGING_PREFIX))
  others = [name for name in names if not is_checkpoint_file(name)]
  if others:
    raise FileExistsError(
        f"{out_dir} holds files other than a Hugging Face checkpoint's ({', '.join(others[:3])}"
        f"{', ...' if len(others) > 3 else ''}): give a new or empty directory.")
  return names


def _check_export_dir(out_dir: Path, overwrite: bool, base_model: str) -> None:
  """Raises unless export may write into out_dir: a new or empty directory, or, with overwrite,
  a previous export (_export_dir_files)."""
  names = _export_dir_files(out_dir, base_model)
  if names and not overwrite:
    held = ("a checkpoint" if "config.json" in names else
            "an export that did not finish (it has no config.json, which is written last)")
    raise FileExistsError(f"{out_dir} already holds {held}; pass overwrite=True (--overwrite) to "
                          "replace it, or choose another directory.")


def export(run_dir: str | os.PathLike, out_dir: str | os.PathLike, step: int | None = None,
           dtype: str | None = None, overwrite: bool = False,
           base_model: str | None = None) -> Path:
  """Writes a Hugging Face checkpoint: the base model with the run's trained leaves merged in,
  in `dtype` (default: the run's). The model is loaded over all devices (every host's, on
  several hosts). out_dir must be new, empty, or (with overwrite) a previous export, which
  the new one replaces whole; that is checked before the model loads. dtype float16
  (models.save_pretrained) is written from the model in float32. A second export (or an
  evaluation) into out_dir while this one runs is refused (jaxlayer.locks: out_dir/.jaxlayer.lock
  while it runs); the staging directory a killed export left in out_dir goes.
  """
  out_dir = paths.local_path(out_dir, "--out")
  base = base_model or read_run_files(run_dir)[1]["base_model"]
  with distributed.failing_together("Checking the output directory"):
    _export_dir_files(out_dir, base)  # (before a lock file goes into a directory not ours)
  with locks.exclusive(out_dir, "--out", enabled=distributed.is_primary(), tidy=True):
    with distributed.failing_together("Checking the output directory"):
      _check_export_dir(out_dir, overwrite, base)
    model, _ = load_trained_model(run_dir, step, mesh=models.make_mesh(), base_model=base_model,
                                  dtype="float32" if dtype == "float16" else dtype)
    return models.save_pretrained(model, out_dir, dtype=dtype, overwrite=overwrite)


def trained_weights_at_base(run_dir: str | os.PathLike, step: int, dtype: str,
                            base_model: str | None = None) -> tuple[int, int, int]:
  """(rounded back, changed, trained): how many of the run's trained weights at checkpoint `step`
  rounding to `dtype` (as an export in it does) returns to their base model's values, of how many
  the run changed (in float32, as it trained them, from the base in its model.dtype), of how many
  it trains. Weights the run left as they were are no rounding loss. The trained leaves are read
  over all devices, laid out as the model's: call it on every host, each of which gets the same
  counts.
  """
  config, run = read_run_files(run_dir)
  base_dir = resolve_model_dir(run_base_model(run_dir, base_model))
  names = {path: jax_to_hf_name(path) for path in run["trainable"]}
  start_dtype = jnp.dtype(config.model.dtype)  # (a bfloat16 run starts from the base rounded)
  stored = models.stored_shapes(base_dir, [name for name, _ in names.values()])
  shapes = {path: tuple(reversed(stored[name])) if transform == TRANSPOSE else stored[name]
            for path, (name, transform) in names.items()}
  mesh = models.make_mesh()
  shardings = {path: param_sharding(path, shape, mesh) for path, shape in shapes.items()}
  checkpointer = Checkpointer(run_dir, keep=max(int(config.checkpoint.keep), 1))
  try:
    trained = checkpointer.restore_params(step, {
        path: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=shardings[path])
        for path, shape in shapes.items()})
  finally:
    checkpointer.close()
  rounded_back = changed = 0
  # One base tensor at a time in host memory (all of a 7B model's, in float32, are ~28 GB).
  for path, (_, tensor) in zip(names, models.stored_tensors(
      base_dir, [name for name, _ in names.values()])):
    value = apply_transform(tensor, names[path][1]).astype(start_dtype).astype(np.float32)
    base_value = jax.make_array_from_callback(value.shape, shardings[path], value.__getitem__)
    back, moved = _rounded_back_and_changed(trained.pop(path), base_value, dtype)
    rounded_back, changed = rounded_back + int(back), changed + int(moved)
  return rounded_back, changed, sum(math.prod(shape) for shape in shapes.values())


@functools.partial(jax.jit, static_argnames="dtype")
def _rounded_back_and_changed(trained: jax.Array, base: jax.Array,
                              dtype: str) -> tuple[jax.Array, jax.Array]:
  """(how many of the `trained` values differ from `base`'s but not in `dtype`, how many differ);
  both replicated, so that every host can read them."""
  changed = trained != base
  rounded_back = changed & (trained.astype(dtype) == base.astype(dtype))
  return jnp.count_nonzero(rounded_back), jnp.count_nonzero(changed)
