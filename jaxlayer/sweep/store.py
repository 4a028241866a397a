"""The sweep directory on disk: manifest, one result file per finished run, atomic writes.

    SWEEP_DIR/
      manifest.json          "identity" (every setting that decides what a score means:
                             the config less NOT_IDENTITY, plus the model's block count),
                             the full config, the command line that started the sweep (or
                             resumed it with its base model at a new place), the base
                             model's weights fingerprint (models.weights_fingerprint)
      runs/<run>/result.json one finished run (written last, atomically: its presence
                             is what "done" means on resume)
      runs/<run>/result-stepN.json  the same run evaluated after N RL steps, a rung of
                             successive halving (sweep.halving_steps)
      runs/<run>/train/      the train function's working directory (shared by the rungs)
      halving.json           successive halving's choice at each rung (RUNG_CHOICES)
      compile_cache/         XLA's compiled programs, shared by the runs (unless the config's
                             compilation_cache_dir puts them elsewhere)
      sweep.json sweep.csv contribution.png curves.png report.md   (jaxlayer.sweep.report)
      unfinished.json        while a sweep runs, and after it stopped before writing its report
                             (interrupted, or an error): the command that started it. The
                             report files are then those of the sweep before, if any: they
                             leave out the runs since (blocks, groups or seeds added).

Run names: `base-seed0`, `full-seed0`, `layer07-seed0`, `group03+04-seed0` (blocks 3 and 4
trained together); a rung of successive halving: `layer07-seed0-step15`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from jaxlayer import distributed, paths

# What a trained run cost, in its result.json's "cost" (None where the train function did not
# say): the parameters it trained, their optimizer state (whole, over all devices), the
# estimated memory per device, the median seconds per RL step and the training's wall time.
COST_KEYS = ("trained_params", "optimizer_state_bytes", "memory_per_device_bytes",
             "seconds_per_step", "train_seconds")
MANIFEST = "manifest.json"
FINGERPRINT = "model_fingerprint"  # manifest.json's models.weights_fingerprint of model.path
RESULT = "result.json"
UNFINISHED = "unfinished.json"
# The choice of successive halving at each rung, {"15": {"went_on": ["layer00", ...],
# "stopped": ["layer01", ...]}} (RunSpec.unit), written before the stopped runs' checkpoints
# go: a choice made stands when the sweep is resumed with more seeds, blocks or groups.
RUNG_CHOICES = "halving.json"
RUNS = "runs"
# In a run's directory: the wall time of its training so far, summed over the calls that trained
# it (an interrupted call, the rungs of successive halving), so that a resumed run's
# train_seconds is the whole run's: the time it took, which counts the steps that an interrupted
# call trained after its last checkpoint and the resuming call trains again, once per call.
TRAIN_SECONDS = "train_seconds.json"
# Config entries that do not change what a score means; any other difference between two
# configs means a different experiment, whose results never mix in one sweep directory.
# (train.layers, seed and run_dir are set per run by the sweep; rollout.prompts_per_call,
# eval.batch_size and the replicate_params keys only batch or place the same samples
# differently (evaluation.evaluate: the same samples at any batch_size), and
# train.micro_batch_size and train.remat how an update's gradient is computed, as for a run
# (rl.config.RESUMABLE_KEYS): a sweep resumed on fewer devices may need them to fit, one on a
# wider mesh a micro-batch its data x fsdp shards divide.) eval.tasks and eval.task_options
# decide what a sweep scores, as they do for `jaxlayer eval`. Eval settings that cannot change
# a score are left out too (unused_eval_settings).
NOT_IDENTITY = ("sweep", "seed", "run_dir", "compilation_cache_dir", "mesh", "checkpoint",
                "logging", "train.layers", "train.micro_batch_size", "train.remat",
                "rollout.prompts_per_call", "rollout.replicate_params", "eval.batch_size",
                "eval.replicate_params")


def unused_eval_settings(eval_config: dict) -> set[str]:
  """Keys of an eval section that cannot change its scores: mean@k's sampling settings when
  nothing is scored by mean@k, neither eval.num_samples nor an eval.tasks entry NAME:mean@K
  (pass@1 is greedy)."""
  from jaxlayer import evaluation  # (it imports the sweep)

  sampled = eval_config.get("num_samples") or evaluation.sampled_task_entries(eval_config)
  return set() if sampled else {"temperature", "top_p"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One unit of a sweep: evaluate the base, or train (all blocks, one block or a group of
  blocks together) then evaluate."""

  kind: str  # "base" | "full" | "layer" | "group"
  seed: int
  layer: int | None = None  # kind "layer"
  blocks: tuple[int, ...] | None = None  # kind "group", sorted
  # A rung of successive halving: train to this RL step (of train.steps) and evaluate there.
  stop_at: int | None = None

  @property
  def name(self) -> str:
    rung = "" if self.stop_at is None else f"-step{self.stop_at}"
    return f"{self.unit}-seed{self.seed}{rung}"

  @property
  def unit(self) -> str:
    """What the run trains, over seeds and rungs: full, layer07, group03+04 (or base)."""
    if self.kind == "layer":
      return f"layer{self.layer:02d}"
    if self.kind == "group":
      return f"group{group_name(self.blocks, '{:02d}')}"
    return self.kind

  @property
  def final(self) -> RunSpec:
    """The run trained to train.steps whose rung this is (itself when it is no rung)."""
    return dataclasses.replace(self, stop_at=None)

  @property
  def trained_blocks(self) -> list[int] | None:
    """The blocks this run trains; None for all parameters (full RL) and for the base."""
    return {"layer": [self.layer], "group": list(self.blocks or ())}.get(self.kind)


def group_name(blocks, block_format: str = "{}") -> str:
  """Blocks trained together, as the sweep writes them: 3+4 (run names: 03+04)."""
  return "+".join(block_format.format(block) for block in blocks)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`.

  A reader (or a sweep restarted after a kill) sees the old file or the new one, never
  half of one. NaN / inf are refused: undefined values are stored as null.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  paths.write_text_atomic(path, _json_text(obj))


def _json_text(obj: Any) -> str:
  return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def read_json(path: str | os.PathLike) -> Any:
  with open(path) as f:
    return json.load(f)


def mark_unfinished(sweep_dir: Path, command: str | None) -> None:
  """Records that the sweep in sweep_dir runs until mark_finished, with the command to rerun."""
  write_json_atomic(sweep_dir / UNFINISHED, {"command": command})


def mark_finished(sweep_dir: Path) -> None:
  """The sweep wrote its report of every run: sweep.json is current."""
  (sweep_dir / UNFINISHED).unlink(missing_ok=True)


def check_finished(sweep_dir: Path, use: str) -> None:
  """Raises ValueError, for `use` of its sweep.json (a selection, a comparison), when the sweep
  in sweep_dir was started again and has not written its report since: its sweep.json (when
  there is one) ranks the runs of the sweep before, not the ones added since."""
  path = sweep_dir / UNFINISHED
  if not path.is_file():
    return
  command = read_json(path)["command"]
  rerun = (f"run `{command}` again" if command else
           "run the same sweep again (the same config and sweep.dir)")
  raise ValueError(
      f"{use}: the sweep in {sweep_dir} was started again (to add blocks, groups or seeds, or to "
      "resume it) and has not finished: its sweep.json, if any, is that of the sweep before and "
      f"leaves out the runs since. Finish the sweep: {rerun}; it skips the finished runs and "
      "writes the report of them all.")


def rung_choice(sweep_dir: Path, stop_at: int) -> dict | None:
  """The recorded choice at the rung at stop_at ({"went_on": units, "stopped": units}), or None
  where the rung has chosen nothing yet."""
  path = Path(sweep_dir) / RUNG_CHOICES
  return read_json(path).get(str(stop_at)) if path.is_file() else None


def record_rung_choice(sweep_dir: Path, stop_at: int, went_on: list[str],
                       stopped: list[str]) -> None:
  """Records the choice at the rung at stop_at in RUNG_CHOICES, beside the other rungs'."""
  path = Path(sweep_dir) / RUNG_CHOICES
  choices = read_json(path) if path.is_file() else {}
  write_json_atomic(path, {**choices, str(stop_at): {"went_on": went_on, "stopped": stopped}})


def run_dir(sweep_dir: Path, spec: RunSpec) -> Path:
  """The run's directory, which its rungs share (so each rung resumes the one before)."""
  return Path(sweep_dir) / RUNS / spec.final.name


def result_path(sweep_dir: Path, spec: RunSpec) -> Path:
  rung = RESULT if spec.stop_at is None else f"result-step{spec.stop_at}.json"
  return run_dir(sweep_dir, spec) / rung


def add_train_seconds(sweep_dir: Path, spec: RunSpec, seconds: float, resumed: bool) -> float:
  """Adds a training call's wall time to the run's TRAIN_SECONDS (which a run trained from
  scratch starts anew); returns the run's total."""
  path = run_dir(sweep_dir, spec) / TRAIN_SECONDS
  total = seconds + (read_json(path) if resumed and path.is_file() else 0.0)
  if distributed.is_primary():
    write_json_atomic(path, total)
  return total


def evaluated_steps(sweep_dir: Path, spec: RunSpec) -> list[int | None]:
  """The RL steps at which the run of spec has a result, at any rung (result-stepN.json) or at
  train.steps (result.json: None)."""
  steps = []
  for path in run_dir(sweep_dir, spec).glob("result*.json"):
    rung = re.fullmatch(r"result-step(\d+)\.json", path.name)
    if rung or path.name == RESULT:
      steps.append(int(rung[1]) if rung else None)
  return steps


def is_done(sweep_dir: Path, spec: RunSpec) -> bool:
  return result_path(sweep_dir, spec).is_file()


def load_results(sweep_dir: str | os.PathLike) -> list[dict]:
  """Every finished run's result.json in the sweep directory, in run-name order."""
  runs = Path(sweep_dir) / RUNS
  return [read_json(p) for p in sorted(runs.glob(f"*/{RESULT}"))]


def load_rung_results(sweep_dir: str | os.PathLike) -> list[dict]:
  """Every result of a successive-halving rung (a run evaluated before train.steps)."""
  runs = Path(sweep_dir) / RUNS
  return [read_json(p) for p in sorted(runs.glob("*/result-step*.json"))]


def load_manifest(sweep_dir: str | os.PathLike) -> dict:
  path = Path(sweep_dir) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no {MANIFEST}); run "
                            "`jaxlayer sweep --config ...` to make one.")
  if path.stat().st_size == 0:  # paths.create_text's claim (a file system without hard links)
    raise ValueError(f"{path} is empty: a sweep is creating {sweep_dir} at this moment, or one "
                     "was killed while creating it. Run the command again in a minute; if no "
                     f"sweep runs there, remove the empty {MANIFEST} first.")
  return read_json(path)


def sweep_identity(config_dict: dict, num_layers: int) -> dict:
  """The part of a config that must match for two runs' scores to be comparable."""
  identity = json.loads(json.dumps(config_dict))  # tuples and lists compare equal after this
  for dotted in NOT_IDENTITY:
    *parents, key = dotted.split(".")
    section = identity
    for parent in parents:
      section = section.get(parent, {})
    section.pop(key, None)
  eval_config = identity.get("eval", {})
  for key in unused_eval_settings(eval_config):
    eval_config.pop(key, None)
  return {"num_layers": num_layers, **identity}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat


def identity_differences(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
  """`key: old -> new` for every leaf that differs between two identities.

  defaults: the identity of an all-defaults config. A key that `old` lacks (written before
  the key existed) is no difference while `new` holds its default value: a new key's default
  keeps the behaviour of the versions without it.
  """
  old_flat, new_flat = _flatten(old), _flatten(new)
  defaults_flat = _flatten(defaults or {})
  missing = object()
  for key in set(new_flat) - set(old_flat):
    if key in defaults_flat and new_flat[key] == defaults_flat[key]:
      old_flat[key] = new_flat[key]
  return [f"{key}: {old_flat.get(key, '(absent)')!r} -> {new_flat.get(key, '(absent)')!r}"
          for key in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(key, missing) != new_flat.get(key, missing)]


def _next_free_dir(sweep_dir: Path) -> Path:
  index = 2
  while (candidate := sweep_dir.with_name(f"{sweep_dir.name}-{index}")).exists():
    index += 1
  return candidate


# How many directories a new sweep tries before it gives up, where sweeps started at the same
# moment create the ones it chooses first (each such sweep takes one).
CREATE_TRIES = 10


def open_sweep_dir(sweep_dir: str | os.PathLike, manifest: dict, force_new_dir: bool,
                   defaults: dict | None = None) -> Path:
  """Creates the sweep directory, or reopens an existing one whose identity matches.

  manifest: written as manifest.json; its "identity" entry is what must match (keys the
  existing one lacks match while they hold their value in `defaults`, see
  identity_differences). With force_new_dir, a directory that already holds a sweep is left
  alone and the sweep goes to the first free `<dir>-2`, `<dir>-3`, ... Returns the directory
  to use. The first manifest.json is created, never replaced: where another sweep, started at
  the same moment, created it first, the directory is chosen again with that sweep's manifest
  there (the same identity resumes it, another is refused or, with force_new_dir, goes to the
  next free directory). On several hosts process 0 chooses and creates the directory, and the
  others take its choice (a host's own listing may be late, as an NFS client's is) once they
  see its manifest.json there; a host that does not stops every process. A reopened sweep's
  moved base model is recorded by record_model_path, under the sweep's lock.
  """
  given = Path(sweep_dir)
  with distributed.failing_together("Creating the sweep directory"):
    if distributed.is_primary():
      sweep_dir, new = choose_sweep_dir(given, manifest, force_new_dir, defaults)
      if new:
        sweep_dir = _create_sweep_dir(given, sweep_dir, manifest, force_new_dir, defaults)
  sweep_dir = Path(distributed.from_primary(os.fspath(sweep_dir)))
  with distributed.failing_together("Opening the sweep directory"):
    if not distributed.sees_in_time((sweep_dir / MANIFEST).is_file):
      raise ValueError(
          f"Process 0 chose the sweep directory {sweep_dir}, but this host does not see its "
          f"{MANIFEST} after {distributed.SHARED_WAIT_S:g} s: every host must mount the "
          "directory that sweep.dir names (NFS, such as Filestore). Mount it on this host and "
          "run the same command again; nothing was run.")
  return sweep_dir


def _create_sweep_dir(given: Path, chosen: Path, manifest: dict, force_new_dir: bool,
                      defaults: dict | None) -> Path:
  """open_sweep_dir's creation of the directory `chosen` for sweep.dir `given`, on process 0;
  returns the directory to use."""
  sweep_dir = chosen
  for _ in range(CREATE_TRIES):
    try:
      with paths.naming_an_unwritable_directory(sweep_dir, "sweep.dir"):
        sweep_dir.mkdir(parents=True, exist_ok=True)
        paths.create_text(sweep_dir / MANIFEST, _json_text(manifest))
      return sweep_dir
    except FileExistsError:  # another sweep's: choose with it there
      sweep_dir, new = choose_sweep_dir(given, manifest, force_new_dir, defaults)
      if not new:
        return sweep_dir
  raise ValueError(
      f"Sweeps started at the same moment as this one took each of the {CREATE_TRIES} "
      f"directories it chose for sweep.dir={str(given)!r}. Run the same command again, or give "
      "this sweep a directory of its own (--config.sweep.dir=NEW_DIR).")


def choose_sweep_dir(sweep_dir: Path, manifest: dict, force_new_dir: bool,
                     defaults: dict | None) -> tuple[Path, bool]:
  """(the directory open_sweep_dir uses, whether it must be created); reads only. Raises
  ValueError where sweep_dir holds another sweep (without force_new_dir) or other files."""
  # One listing decides: a look for manifest.json followed by a listing saw a directory that
  # another sweep created in between as one with its files but no manifest.
  listed = set(sweep_dir.iterdir()) if sweep_dir.is_dir() else set()
  if sweep_dir / MANIFEST in listed and (sweep_dir / MANIFEST).is_file():
    if force_new_dir:
      sweep_dir = _next_free_dir(sweep_dir)
    else:
      existing = load_manifest(sweep_dir)
      # Judged by today's rules: the identity is derived again from the stored config.
      old = sweep_identity(existing["config"], existing["identity"]["num_layers"])
      new, weights_differ, moved_from = _compare_base_model(existing, old, manifest)
      differences = identity_differences(old, new, defaults) + weights_differ
      if differences:
        raise ValueError(
            f"{sweep_dir} holds a sweep with different settings, so its results cannot be "
            "mixed with this one's:\n  " + "\n  ".join(differences) +
            "\nPick another directory (--config.sweep.dir=NEW_DIR), or pass "
            "--config.sweep.force_new_dir=True to write to the next free "
            f"{sweep_dir.name}-N; the existing results are kept either way.")
      if moved_from:
        distributed.warn_once(f"jaxlayer: {sweep_dir} resumes with its base model at "
                              f"{manifest['config']['model']['path']} (it was at {moved_from}; "
                              "the same weights).")
      return sweep_dir, False
  # (The mark of distributed.check_shared_directory is that of a sweep on several hosts checking
  # the directory at this moment. A manifest's temporary file is that of a sweep creating the
  # directory at this moment, which creating the manifest decides between (open_sweep_dir), or
  # of one killed while creating it: the sweep's lock removes it, as it does the other files'
  # killed writers' ones.)
  elif {path for path in listed - {sweep_dir / distributed.SHARED_MARK}
        - set(paths.temporary_leftovers(sweep_dir))
        if not paths.is_temporary_file(path, MANIFEST)}:
    raise ValueError(f"{sweep_dir} exists, is not empty and holds no sweep ({MANIFEST} is "
                     "missing): pick an empty or new directory with --config.sweep.dir=DIR.")
  return sweep_dir, True


def record_model_path(sweep_dir: Path, manifest: dict) -> None:
  """Points manifest.json at the base model's new place (choose_sweep_dir accepted the same
  weights there) and records the command that resumed it there, which the report quotes for
  rerunning (the first one names the old place), so the next resume needs no note. Called
  under the sweep directory's lock: a sweep refused because another one runs there changes
  nothing."""
  existing = load_manifest(sweep_dir)
  model_path = manifest["config"]["model"]["path"]
  if existing["config"]["model"]["path"] == model_path:
    return
  existing["config"]["model"]["path"] = model_path
  existing["identity"]["model"]["path"] = model_path
  existing["command"] = manifest["command"]
  write_json_atomic(sweep_dir / MANIFEST, existing)


def _compare_base_model(existing: dict, old: dict,
                        manifest: dict) -> tuple[dict, list[str], str | None]:
  """(the new identity to compare with the sweep's `old` one, the difference of the base
  model's weights if they differ, the base model's old path if it moved).

  Where both manifests hold a fingerprint it decides: the same weights at another path are the
  sweep's model (a new machine, a moved directory), so model.path is no difference; other
  weights are another model, wherever they are. Manifests written before jaxlayer recorded a
  fingerprint compare model.path as any other setting.
  """
  new = manifest["identity"]
  recorded, found = existing.get(FINGERPRINT), manifest.get(FINGERPRINT)
  if None in (recorded, found):
    return new, [], None
  if recorded != found:
    return new, [f"the base model's weights: fingerprint {recorded!r} -> {found!r} (another "
                 "model than the one the sweep started with)"], None
  old_path = old["model"]["path"]
  if new["model"]["path"] == old_path:
    return new, [], None
  return {**new, "model": {**new["model"], "path": old_path}}, [], old_path
