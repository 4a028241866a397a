"""The sweep runner with injected fake runs: planning, recording, resume, config checks, CLI."""

import errno
import json
import os
import re
import shutil
import socket
import stat
from pathlib import Path

import jax
import pytest

import jaxlayer
from jaxlayer import assets, cli, distributed, locks, models, paths
from jaxlayer.models.hub import resolve_model_dir
from jaxlayer.rl import selection
from jaxlayer.rl.config import default_config
from jaxlayer.sweep import compare, report, runner, store
from jaxlayer.sweep.store import RunSpec
from tests.sweep_fakes import (NUM_PROBLEMS, REPO, FakeRL, FakeTasksRL, make_config,
                               write_model_config)

NUM_LAYERS = 4
BLOCKS = {0: 14, 1: 26, 2: 20, 3: 10}  # solved problems per block (base 12, full 24)


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
  """The plots are tested in test_report.py; here they would only cost time."""
  monkeypatch.setattr(report, "plot_contribution", lambda sweep, path: path.touch())
  monkeypatch.setattr(report, "plot_curves", lambda results, num_layers, title, path: path.touch())


def _run(config, fake, num_layers=NUM_LAYERS):
  return runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=num_layers)


def test_every_run_is_trained_evaluated_and_recorded(tmp_path):
  fake = FakeRL(BLOCKS, seed_shift=1)
  sweep_dir = _run(make_config(tmp_path / "sweep", seeds=2), fake)

  expected_train = [(None, s) for s in range(2)] + [((k,), s) for s in range(2) for k in BLOCKS]
  assert sorted(fake.train_calls, key=str) == sorted(expected_train, key=str)
  assert len(fake.eval_calls) == 2 * (2 + NUM_LAYERS)
  assert [m for m, _ in fake.eval_calls].count(None) == 2  # the base, once per seed
  for spec in runner.plan_runs(range(NUM_LAYERS), range(2)):
    result = store.read_json(store.result_path(sweep_dir, spec))
    trained = "full" if spec.kind == "full" else spec.layer
    model = None if spec.kind == "base" else (trained, spec.seed)
    assert result["score"] == fake.correct(model, spec.seed) / NUM_PROBLEMS
    assert (result["kind"], result["layer"], result["seed"]) == (spec.kind, spec.layer, spec.seed)
    assert len(result["per_problem"]) == result["num_problems"] == NUM_PROBLEMS
    assert len(result["reward_curve"]) == (0 if spec.kind == "base" else fake.steps)
  assert (sweep_dir / "sweep.json").is_file()


def test_a_sweep_dir_that_cannot_be_made_is_named_with_the_fix(tmp_path, monkeypatch):
  """sweep.dir under a read-only mount: making it ended the sweep in an OSError traceback."""
  sweep_dir = tmp_path / "read-only" / "sweep"
  mkdir = Path.mkdir

  def read_only(path, *args, **kwargs):
    if path == sweep_dir:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return mkdir(path, *args, **kwargs)

  monkeypatch.setattr(Path, "mkdir", read_only)
  with pytest.raises(ValueError, match=re.escape(
      f"sweep.dir={str(sweep_dir)!r} cannot be written (Read-only file system: {sweep_dir}); "
      "jaxlayer writes there. Mount it read-write, or give another sweep.dir (a copy of this "
      "one on a disk you can write, to go on from what it holds).")):
    _run(make_config(sweep_dir), FakeRL(BLOCKS))
  assert not sweep_dir.exists()


def test_plan_goes_seed_by_seed_base_full_then_blocks_then_groups():
  plan = runner.plan_runs([1, 3], [0, 1], [(2, 5)])
  assert [s.name for s in plan] == ["base-seed0", "full-seed0", "layer01-seed0", "layer03-seed0",
                                    "group02+05-seed0",
                                    "base-seed1", "full-seed1", "layer01-seed1", "layer03-seed1",
                                    "group02+05-seed1"]
  assert [s.trained_blocks for s in plan[:5]] == [None, None, [1], [3], [2, 5]]


def test_interrupted_sweep_resumes_and_reruns_only_the_unfinished_runs(tmp_path):
  config = make_config(tmp_path / "sweep", seeds=2)
  interrupted = FakeRL(BLOCKS, interrupt_on_train_call=3)  # full, block 0, then Ctrl-C in block 1
  with pytest.raises(KeyboardInterrupt):
    _run(config, interrupted)
  done = store.load_results(tmp_path / "sweep")
  assert sorted(r["run"] for r in done) == ["base-seed0", "full-seed0", "layer00-seed0"]
  before = {r["run"]: store.result_path(tmp_path / "sweep", _spec(r)).read_bytes() for r in done}
  assert not (tmp_path / "sweep" / "sweep.json").exists()

  resumed = FakeRL(BLOCKS)
  _run(config, resumed)
  total_train, total_eval = 2 * (1 + NUM_LAYERS), 2 * (2 + NUM_LAYERS)
  assert len(resumed.train_calls) == total_train - 2  # full-seed0 and block 0 seed 0 are done
  assert len(resumed.eval_calls) == total_eval - 3
  assert ((0,), 0) not in resumed.train_calls and (None, 0) not in resumed.train_calls
  assert ((1,), 0) in resumed.train_calls  # the interrupted run starts again
  for run, content in before.items():  # nothing finished was rewritten
    assert store.result_path(tmp_path / "sweep", _spec(_parse(run))).read_bytes() == content
  assert len(store.load_results(tmp_path / "sweep")) == total_eval

  again = FakeRL(BLOCKS)
  _run(config, again)  # a finished sweep runs nothing
  assert again.train_calls == [] and again.eval_calls == []


def test_a_sweep_removes_the_temporary_files_that_killed_writers_left(tmp_path,
                                                                      writers_leftovers):
  """A sweep killed (SIGKILL) while writing its report or a run's result.json left the temporary
  file for good. Now the sweep started again removes those of ended processes of its host, in its
  directory and in its runs'; a running writer's, another host's and other names stay."""
  config = make_config(tmp_path / "sweep")
  sweep_dir = _run(config, FakeRL(BLOCKS))
  run_dir = store.run_dir(sweep_dir, RunSpec("layer", layer=2, seed=0))
  left = [writers_leftovers(directory) for directory in (sweep_dir, run_dir)]
  _run(config, FakeRL(BLOCKS))
  for removed, kept in left:
    assert not any(os.path.lexists(path) for path in removed)
    assert all(os.path.lexists(path) for path in kept)


def test_an_extended_sweep_ranks_nothing_until_it_finishes(tmp_path):
  """A finished sweep of blocks 0 and 3, extended to blocks 1 and 2 and interrupted after block
  1: topK@ and `jaxlayer compare` read the old sweep.json, which ranked block 0 first though
  block 1's result was there. Now they are refused until the sweep finishes; nothing is lost."""
  sweep_dir = tmp_path / "sweep"
  _run(make_config(sweep_dir, layers="0,3"), FakeRL(BLOCKS))
  assert runner.parse_groups(f"top2@{sweep_dir}", NUM_LAYERS) == [(0, 3)]
  refused = make_config(sweep_dir, layers="all")
  refused.train.learning_rate *= 3
  with pytest.raises(ValueError, match="holds a sweep with different settings"):
    _run(refused, FakeRL(BLOCKS))
  assert runner.parse_groups(f"top2@{sweep_dir}", NUM_LAYERS) == [(0, 3)]  # it ran nothing
  extended = make_config(sweep_dir, layers="all")
  with pytest.raises(KeyboardInterrupt):  # block 1, then Ctrl-C in block 2
    runner.run_sweep(extended, train_fn=FakeRL(BLOCKS, interrupt_on_train_call=2).train,
                     eval_fn=FakeRL(BLOCKS).eval, num_layers=NUM_LAYERS,
                     command="jaxlayer sweep --config.sweep.layers=all")
  assert store.is_done(sweep_dir, RunSpec("layer", 0, layer=1))
  unfinished = (rf"the sweep in {sweep_dir} was started again \(to add blocks, groups or seeds, "
                r"or to resume it\) and has not finished: its sweep.json, if any, is that of the "
                r"sweep before and leaves out the runs since. Finish the sweep: run `jaxlayer "
                r"sweep --config.sweep.layers=all` again; it skips the finished runs")
  with pytest.raises(selection.SelectionSourceMissing,
                     match=rf"Selection 'top2@{sweep_dir}': {unfinished}"):
    runner.parse_groups(f"top2@{sweep_dir}", NUM_LAYERS)
  with pytest.raises(ValueError, match=rf"Comparing {sweep_dir}: {unfinished}"):
    compare.compare_sweep_dirs(sweep_dir, sweep_dir, tmp_path / "compare")

  resumed = FakeRL(BLOCKS)
  _run(extended, resumed)
  assert resumed.train_calls == [((2,), 0)]  # block 1's result was kept
  assert runner.parse_groups(f"top2@{sweep_dir}", NUM_LAYERS) == [(1, 2)]  # 26 and 20 solved
  assert not (sweep_dir / store.UNFINISHED).exists()


def test_a_run_interrupted_before_writing_leaves_only_what_it_found(tmp_path):
  """A Ctrl-C in a run's training before it wrote anything left runs/RUN holding an empty
  train/ and the interrupted call's train_seconds.json, which the next call starts anew. Now
  the directories the call made go; an empty train/ that was there stays."""
  config = make_config(tmp_path / "sweep")
  run_dir = tmp_path / "sweep" / "runs" / "layer01-seed0"
  with pytest.raises(KeyboardInterrupt):  # full, block 0, then Ctrl-C in block 1
    _run(config, FakeRL(BLOCKS, interrupt_on_train_call=3))
  assert (tmp_path / "sweep" / "runs" / "layer00-seed0" / store.RESULT).is_file()
  assert not run_dir.exists()
  (run_dir / "train").mkdir(parents=True)
  with pytest.raises(KeyboardInterrupt):  # block 1 again, first
    _run(config, FakeRL(BLOCKS, interrupt_on_train_call=1))
  assert sorted(path.name for path in run_dir.iterdir()) == ["train", store.TRAIN_SECONDS]
  assert list((run_dir / "train").iterdir()) == []
  resumed = FakeRL(BLOCKS)
  _run(config, resumed)
  assert resumed.train_calls[0] == ((1,), 0)
  assert store.read_json(run_dir / store.RESULT)["run"] == "layer01-seed0"


def test_a_run_directory_that_is_a_broken_link_is_named(tmp_path):
  """A link to a missing target put by hand as a run's directory raised a bare FileExistsError
  when the run made its train/ there; now the error names the run, the link and the fixes."""
  config = make_config(tmp_path / "sweep")
  with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the full run: the sweep has begun
    _run(config, FakeRL(BLOCKS, interrupt_on_train_call=1))
  link, target = tmp_path / "sweep" / "runs" / "layer01-seed0", tmp_path / "elsewhere"
  link.symlink_to(target)
  target = os.path.realpath(target)  # (tmp_path may be under a link itself)
  with pytest.raises(ValueError, match=re.escape(
      f"run layer01-seed0's directory={str(link / 'train')!r} is inside {link}, which is a link "
      f"to {target}, which does not exist: create {target}, point the link at a directory")):
    _run(config, FakeRL(BLOCKS))
  assert link.is_symlink() and not os.path.lexists(target)


def _parse(run: str) -> dict:
  kind, seed = run.split("-seed")
  if kind.startswith("layer"):
    return {"kind": "layer", "layer": int(kind[5:]), "seed": int(seed)}
  return {"kind": kind, "layer": None, "seed": int(seed)}


def _spec(result: dict) -> RunSpec:
  return RunSpec(result["kind"], result["seed"], result["layer"])


def test_adding_blocks_and_seeds_reuses_finished_runs(tmp_path):
  first = FakeRL(BLOCKS)
  _run(make_config(tmp_path / "sweep", layers="0,1"), first)
  assert len(first.train_calls) == 3
  second = FakeRL(BLOCKS)
  _run(make_config(tmp_path / "sweep", layers="all", seeds=2), second)
  assert sorted(second.train_calls, key=str) == sorted(
      [((2,), 0), ((3,), 0), (None, 1)] + [((k,), 1) for k in BLOCKS], key=str)


def test_single_block_checkpoints_are_removed_unless_kept_full_rl_kept(tmp_path):
  _run(make_config(tmp_path / "drop", layers="1"), FakeRL(BLOCKS))
  assert not (tmp_path / "drop/runs/layer01-seed0/train/checkpoint").exists()
  assert (tmp_path / "drop/runs/full-seed0/train/checkpoint/weights.bin").is_file()
  config = make_config(tmp_path / "keep", layers="1")
  config.sweep.keep_checkpoints = True
  _run(config, FakeRL(BLOCKS))
  assert (tmp_path / "keep/runs/layer01-seed0/train/checkpoint/weights.bin").is_file()
  _run(make_config(tmp_path / "keep", layers="1,2"), FakeRL(BLOCKS))  # resumed, not keeping
  assert (tmp_path / "keep/runs/layer01-seed0/train/checkpoint/weights.bin").is_file()
  assert not (tmp_path / "keep/runs/layer02-seed0/train/checkpoint").exists()


def test_a_checkpoint_outside_the_runs_directory_is_left_in_place(tmp_path, capsys):
  """A train_fn may name any checkpoint_dir: only one inside the run's own directory goes."""
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  (outside / "weights.bin").write_text("mine")
  fake = FakeRL(BLOCKS)

  def train_elsewhere(config, **kwargs):
    return {**fake.train(config, **kwargs), "checkpoint_dir": str(outside)}

  runner.run_sweep(make_config(tmp_path / "sweep", layers="1"), train_fn=train_elsewhere,
                   eval_fn=fake.eval, num_layers=NUM_LAYERS)
  assert (outside / "weights.bin").read_text() == "mine"
  assert f"left {outside} in place: it lies outside the run directory" in capsys.readouterr().err


class _Killed(BaseException):
  """A SIGKILL: nothing after it runs, no handler sees it."""


def test_a_sweep_killed_while_removing_a_checkpoint_leaves_no_half_of_it(tmp_path, monkeypatch):
  config = make_config(tmp_path / "sweep", layers="1")
  checkpoint = tmp_path / "sweep/runs/layer01-seed0/train/checkpoint"
  fake = FakeRL(BLOCKS)

  def train_two_files(config, **kwargs):  # a checkpoint of several files, like Orbax's
    trained = fake.train(config, **kwargs)
    (Path(trained["checkpoint_dir"]) / "meta.json").write_text("{}")
    return trained

  def killed_midway(path, ignore_errors=False):  # deletes one file, then the process dies
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []
    if files:
      files[0].unlink()
      raise _Killed

  monkeypatch.setattr(runner.shutil, "rmtree", killed_midway)
  with pytest.raises(_Killed):
    runner.run_sweep(config, train_fn=train_two_files, eval_fn=fake.eval, num_layers=NUM_LAYERS)
  # Orbax would take a half-deleted step directory for the run's latest checkpoint.
  assert not checkpoint.exists()
  assert store.is_done(tmp_path / "sweep", RunSpec("layer", 0, 1))  # recorded before

  monkeypatch.undo()
  resumed = FakeRL(BLOCKS)
  _run(config, resumed)
  assert resumed.train_calls == []
  assert sorted(os.listdir(checkpoint.parent)) == []  # the leftover went


def test_a_sweep_killed_after_recording_a_block_removes_its_checkpoint_on_resume_untrained(
    tmp_path, monkeypatch):
  """A block's result is written before its checkpoint goes: a sweep killed in between resumes
  with the block done (it removed the checkpoint first: one killed in between trained it again)."""
  config = make_config(tmp_path / "sweep", layers="1")
  checkpoint = tmp_path / "sweep/runs/layer01-seed0/train/checkpoint"

  def killed_before_removing(checkpoint_dir, workdir):
    if checkpoint_dir:  # (None: there is nothing to remove)
      raise _Killed

  monkeypatch.setattr(runner, "_remove_checkpoint", killed_before_removing)
  with pytest.raises(_Killed):
    _run(config, FakeRL(BLOCKS))
  assert (checkpoint / "weights.bin").is_file()
  assert store.read_json(tmp_path / "sweep/runs/layer01-seed0/result.json")["score"] == 26 / 40

  monkeypatch.undo()
  resumed = FakeRL(BLOCKS)
  _run(config, resumed)
  assert resumed.train_calls == [] and resumed.eval_calls == []
  assert not checkpoint.exists()
  assert (tmp_path / "sweep/runs/full-seed0/train/checkpoint/weights.bin").is_file()


def test_changed_settings_are_refused_and_force_new_dir_starts_beside(tmp_path):
  _run(make_config(tmp_path / "sweep", layers="0"), FakeRL(BLOCKS))
  manifest = (tmp_path / "sweep/manifest.json").read_text()
  changed = make_config(tmp_path / "sweep", layers="0")
  old_rate = changed.train.learning_rate
  changed.train.learning_rate = old_rate * 3
  changed.task.name = "countdown"
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError) as error:
    _run(changed, fake)
  assert (f"task.name: 'arithmetic' -> 'countdown'\n  train.learning_rate: {old_rate!r} -> "
          f"{old_rate * 3!r}\n") in str(error.value)
  assert "force_new_dir" in str(error.value)
  assert fake.train_calls == [] and fake.eval_calls == []

  changed.sweep.force_new_dir = True
  new_dir = _run(changed, fake)
  assert new_dir == tmp_path / "sweep-2"
  assert len(fake.train_calls) == 2
  assert (tmp_path / "sweep/manifest.json").read_text() == manifest
  assert len(store.load_results(tmp_path / "sweep")) == 3


def test_settings_that_do_not_change_scores_may_change_on_resume(tmp_path):
  """Among them those a sweep resumed on another mesh may need, as a run resumed there may
  change them: the micro-batch (one that the new mesh's data x fsdp shards divide, or smaller
  to fit fewer devices) and remat; and eval.batch_size, lowered to fit the evaluation (the same
  samples at any batch_size)."""
  _run(make_config(tmp_path / "sweep", layers="0"), FakeRL(BLOCKS))
  config = make_config(tmp_path / "sweep", layers="0,1")
  config.checkpoint.every = 3
  config.logging.progress = False
  config.mesh.fsdp = 1
  config.train.micro_batch_size = 4
  config.train.remat = True
  config.rollout.prompts_per_call = 2
  config.rollout.replicate_params = True
  config.eval.replicate_params = False
  config.eval.batch_size = 2
  config.compilation_cache_dir = str(tmp_path / "xla")
  fake = FakeRL(BLOCKS)
  _run(config, fake)
  assert fake.train_calls == [((1,), 0)]


def test_runs_share_a_compilation_cache_in_the_sweep_directory_unless_one_is_set(tmp_path):
  seen = []

  class CacheSeen(FakeRL):
    def train(self, config, **kwargs):
      seen.append(config.compilation_cache_dir)
      return super().train(config, **kwargs)

  config = make_config(tmp_path / "sweep", layers="0")
  _run(config, CacheSeen(BLOCKS))
  assert seen == [str((tmp_path / "sweep" / "compile_cache").absolute())] * 2
  assert config.compilation_cache_dir is None  # the caller's config is left alone
  config.update(compilation_cache_dir=str(tmp_path / "xla"))
  config.sweep.update(dir=str(tmp_path / "other"))
  _run(config, CacheSeen(BLOCKS))
  assert seen[2:] == [str(tmp_path / "xla")] * 2


def test_a_run_evaluates_in_the_sweeps_compilation_cache_and_gives_the_process_its_own_back(
    tmp_path):
  """The evaluations compiled into the sweep's cache only after a training run had set it, and a
  notebook's later cells went on compiling into it (warning at each compilation once the
  sweep directory was deleted)."""
  own = jax.config.jax_compilation_cache_dir
  seen = []

  class CacheSeen(FakeRL):
    def eval(self, config, **kwargs):
      seen.append(jax.config.jax_compilation_cache_dir)
      return super().eval(config, **kwargs)

  _run(make_config(tmp_path / "sweep", layers="0"), CacheSeen(BLOCKS))
  assert seen == [str((tmp_path / "sweep" / "compile_cache").absolute())] * 3  # base, full, 0
  assert jax.config.jax_compilation_cache_dir == own


def test_a_compilation_cache_under_the_home_directory_is_the_one_the_evaluations_use(
    tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  seen = []

  class CacheSeen(FakeRL):
    def eval(self, config, **kwargs):
      seen.append(jax.config.jax_compilation_cache_dir)
      return super().eval(config, **kwargs)

  config = make_config(tmp_path / "sweep", layers="0")
  config.compilation_cache_dir = "~/xla_cache"
  _run(config, CacheSeen(BLOCKS))
  assert seen == [str(tmp_path / "xla_cache")] * 3


def test_a_key_added_since_the_sweep_began_matches_at_its_default(tmp_path):
  """A sweep directory written before train.gigpo_normalize existed reopens while the key keeps
  its default ("std", the old behaviour), and is refused when it changes."""
  _run(make_config(tmp_path / "sweep", layers="0"), FakeRL(BLOCKS))
  manifest_path = tmp_path / "sweep/manifest.json"
  manifest = json.loads(manifest_path.read_text())
  del (manifest["identity"]["train"]["gigpo_normalize"],
       manifest["config"]["train"]["gigpo_normalize"])
  manifest_path.write_text(json.dumps(manifest))
  fake = FakeRL(BLOCKS)
  _run(make_config(tmp_path / "sweep", layers="0,1"), fake)
  assert fake.train_calls == [((1,), 0)]

  changed = make_config(tmp_path / "sweep", layers="0,1")
  changed.train.gigpo_normalize = "none"
  with pytest.raises(ValueError, match=r"train.gigpo_normalize: '\(absent\)' -> 'none'"):
    _run(changed, FakeRL(BLOCKS))


def _run_on_model(sweep_dir, model_dir, fake, layers="0", command=None):
  """A sweep that reads its model (block count, weights fingerprint) from model_dir."""
  return runner.run_sweep(make_config(sweep_dir, layers=layers, model_path=str(model_dir)),
                          train_fn=fake.train, eval_fn=fake.eval, command=command)


def test_a_moved_base_model_resumes_its_sweep_and_another_model_is_refused(tmp_path, capsys):
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  command = f"jaxlayer sweep --config.model.path={model_dir}"
  sweep_dir = _run_on_model(tmp_path / "sweep", model_dir, FakeRL(BLOCKS), command=command)
  manifest = (sweep_dir / "manifest.json").read_text()
  assert json.loads(manifest)["model_fingerprint"] == models.weights_fingerprint(model_dir)

  moved = model_dir.rename(tmp_path / "moved")
  capsys.readouterr()
  fake = FakeRL(BLOCKS)
  command = f"jaxlayer sweep --config.model.path={moved} --config.sweep.layers=0,1"
  _run_on_model(sweep_dir, moved, fake, layers="0,1", command=command)
  assert fake.train_calls == [((1,), 0)]  # the finished runs count
  assert (f"jaxlayer: {sweep_dir} resumes with its base model at {moved} (it was at {model_dir}; "
          "the same weights).\n") in capsys.readouterr().err
  # The manifest (and so the report) names the new place and the command that resumed the
  # sweep there; the next resume there says nothing and keeps that command.
  moved_manifest = json.loads((sweep_dir / "manifest.json").read_text())
  expected = json.loads(manifest)
  expected["config"]["model"]["path"] = expected["identity"]["model"]["path"] = str(moved)
  expected["command"] = command
  assert moved_manifest == expected
  assert json.loads((sweep_dir / "sweep.json").read_text())["model"] == str(moved)
  assert str(model_dir) not in (sweep_dir / "report.md").read_text()
  assert f"`{command}`" in (sweep_dir / "report.md").read_text()
  manifest = (sweep_dir / "manifest.json").read_text()
  _run_on_model(sweep_dir, moved, FakeRL(BLOCKS), layers="0,1", command="jaxlayer sweep again")
  assert "resumes with its base model" not in capsys.readouterr().err
  assert (sweep_dir / "manifest.json").read_text() == manifest

  other = write_model_config(tmp_path / "other", num_layers=NUM_LAYERS, weights_seed=1)
  write_model_config(model_dir, num_layers=NUM_LAYERS, weights_seed=1)  # replaced in place
  for path in (other, model_dir):
    fake = FakeRL(BLOCKS)
    with pytest.raises(ValueError, match=r"the base model's weights: fingerprint '[0-9a-f]{16}' "
                       r"-> '[0-9a-f]{16}' \(another model than the one the sweep started with"):
      _run_on_model(sweep_dir, path, fake, layers="0,1,2")
    assert fake.train_calls == [] and fake.eval_calls == []
  assert (sweep_dir / "manifest.json").read_text() == manifest


def test_a_sweep_of_a_hub_id_records_the_id_and_resumes_after_the_cache_moved(
    hub_model, tmp_path, monkeypatch, capsys):
  """The manifest names the hub id (not the snapshot it resolved to) with the snapshot's weights
  fingerprint, so the same id resumes the sweep wherever the Hugging Face cache is."""
  from huggingface_hub import constants

  snapshot = resolve_model_dir(hub_model)
  sweep_dir = _run_on_model(tmp_path / "sweep", hub_model, FakeRL({0: 14}))
  manifest = json.loads((sweep_dir / "manifest.json").read_text())
  assert manifest["config"]["model"]["path"] == manifest["identity"]["model"]["path"] == hub_model
  assert manifest["model_fingerprint"] == models.weights_fingerprint(snapshot)
  assert json.loads((sweep_dir / "sweep.json").read_text())["model"] == hub_model

  moved = Path(constants.HF_HUB_CACHE).rename(tmp_path / "moved_cache")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(moved))
  capsys.readouterr()
  fake = FakeRL({0: 14, 1: 26})
  _run_on_model(sweep_dir, hub_model, fake, layers="0,1")
  assert fake.train_calls == [((1,), 0)]  # the finished runs count
  assert "resumes with its base model" not in capsys.readouterr().err


def test_top_k_of_a_sweep_ranks_the_blocks_of_its_own_model_only(tmp_path):
  """topK@DIR of a sweep of another model with as many blocks was accepted (only the block
  count was checked), training blocks ranked on other weights; the sweep's own model, moved,
  still matches; a sweep given num_layers recorded no fingerprint and checks the count alone."""
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  profiled = _run_on_model(tmp_path / "profile", model_dir, FakeRL(BLOCKS), layers="all")
  moved = model_dir.rename(tmp_path / "moved")
  assert runner.parse_groups(f"top2@{profiled}", NUM_LAYERS, moved) == [(1, 2)]  # C: 1 > 2
  other = write_model_config(tmp_path / "other", num_layers=NUM_LAYERS, weights_seed=1)
  for term in (f"top2@{profiled}", f"bottom2@{profiled}"):
    with pytest.raises(ValueError, match=(
        rf"Selection '{term}': that sweep measured the blocks of {model_dir} \(weights fingerprint "
        rf"[0-9a-f]{{16}}\), but this model, {other}, has other weights \(fingerprint "
        rf"[0-9a-f]{{16}}\) with as many blocks, .* Use a sweep of this model \(`jaxlayer sweep "
        rf"--config.model.path={other} ...`\), or train the model the sweep measured.")):
      runner.parse_groups(term, NUM_LAYERS, other)
  unfingerprinted = runner.run_sweep(make_config(tmp_path / "library", layers="all"),
                                     train_fn=FakeRL(BLOCKS).train, eval_fn=FakeRL(BLOCKS).eval,
                                     num_layers=NUM_LAYERS)
  assert runner.parse_groups(f"top2@{unfingerprinted}", NUM_LAYERS, other) == [(1, 2)]


def test_a_sweep_from_before_fingerprints_resumes_only_at_its_model_path(tmp_path):
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  sweep_dir = _run_on_model(tmp_path / "sweep", model_dir, FakeRL(BLOCKS))
  manifest_path = sweep_dir / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  del manifest["model_fingerprint"]
  manifest_path.write_text(json.dumps(manifest))
  fake = FakeRL(BLOCKS)
  _run_on_model(sweep_dir, model_dir, fake, layers="0,1")
  assert fake.train_calls == [((1,), 0)]
  moved = model_dir.rename(tmp_path / "moved")
  with pytest.raises(ValueError, match=f"model.path: '{model_dir}' -> '{moved}'"):
    _run_on_model(sweep_dir, moved, FakeRL(BLOCKS), layers="0,1")


@pytest.mark.parametrize("num_samples, tasks", [(0, ""), (2, ""), (0, "arithmetic, countdown"),
                                                (0, "arithmetic, countdown : mean@2")])
def test_sampling_settings_matter_only_when_the_eval_samples(tmp_path, num_samples, tasks):
  """A task of eval.tasks scored by mean@K samples too (its temperature was left out of what a
  score means)."""
  config = make_config(tmp_path / "sweep", layers="0")
  config.eval.update(num_samples=num_samples, temperature=1.0, tasks=tasks)
  _run(config, FakeRL(BLOCKS))
  config.eval.temperature = 0.7
  if num_samples or "mean@" in tasks:  # mean@k: a different temperature is a different score
    with pytest.raises(ValueError, match=r"eval.temperature: 1.0 -> 0.7"):
      _run(config, FakeRL(BLOCKS))
  else:  # greedy pass@1 only: the temperature is never used
    _run(config, FakeRL(BLOCKS))


@pytest.mark.parametrize("key, value, difference", [
    ("tasks", "arithmetic,countdown", "eval.tasks: '' -> 'arithmetic,countdown'"),
    ("task_options", {"countdown": {"seed": 1}}, r"eval.task_options.countdown.seed: "
                                                 r"'\(absent\)' -> 1"),
])
def test_eval_tasks_and_their_options_decide_what_a_score_means(tmp_path, key, value,
                                                                difference):
  """A sweep scores them (they were `jaxlayer eval`'s alone, and could change on resume)."""
  config = make_config(tmp_path / "sweep", layers="0")
  config.eval.tasks = "arithmetic,countdown" if key == "task_options" else ""
  _run(config, FakeRL(BLOCKS))
  config.eval[key] = value
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError, match=difference):
    _run(config, fake)
  assert fake.train_calls == [] and fake.eval_calls == []


def test_a_sweep_begun_before_sweeps_scored_eval_tasks_is_not_resumed_over_them(
    tmp_path, monkeypatch):
  """Its runs were scored on task.name alone though eval.tasks was set: the next ones, scored
  over the tasks, would have mixed with them (after training, at the report). Nothing runs,
  nothing is written; the dry run says so too."""
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  config = make_config(tmp_path / "sweep", layers="0", model_path=str(model_dir))
  config.eval.tasks = "arithmetic,countdown"
  monkeypatch.setattr(runner, "default_eval_fn", FakeRL(BLOCKS).eval)  # as sweeps scored then
  sweep_dir = runner.run_sweep(config, train_fn=FakeRL(BLOCKS).train)
  files = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
  fake = FakeTasksRL(BLOCKS)
  monkeypatch.setattr(runner, "default_eval_fn", fake.eval)
  config.sweep.layers = "0,1"
  for dry_run in (True, False):
    with pytest.raises(ValueError, match=(
        r"^this sweep is scored by 'mean of arithmetic pass@1, countdown pass@1' but the runs "
        f"in {sweep_dir} by 'pass@1' \\(task.name alone: a sweep begun before sweeps scored "
        r"eval.tasks\): their scores do not mix. Start a new sweep with "
        r"--config.sweep.force_new_dir=True or --config.sweep.dir=NEW_DIR; the results there "
        r"are kept.$")):
      runner.run_sweep(config, train_fn=fake.train, dry_run=dry_run)
  assert fake.train_calls == [] and fake.eval_calls == []
  assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == files


def test_a_sweep_resumed_over_results_of_another_jaxlayer_says_so_once(tmp_path, capsys,
                                                                         monkeypatch):
  """Its results name the jaxlayer that scored them; a resume over another version's (or older
  ones, which name none) keeps them, as they were, and says how many with the fix."""
  config = make_config(tmp_path / "sweep", layers="0,1")
  monkeypatch.setattr(jaxlayer, "__version__", "0.1.0.dev1")
  sweep_dir = _run(config, FakeRL(BLOCKS))
  results = sorted(sweep_dir.glob("runs/*/result.json"))
  assert {store.read_json(path)["jaxlayer_version"] for path in results} == {"0.1.0.dev1"}
  for path in results[:2]:  # base-seed0, full-seed0: from before results named their version
    result = store.read_json(path)
    del result["jaxlayer_version"]
    store.write_json_atomic(path, result)
  monkeypatch.setattr(jaxlayer, "__version__", "0.1.0.dev2")
  files = {path: path.read_bytes() for path in results}
  capsys.readouterr()
  for dry_run in (True, False):
    fake = FakeRL(BLOCKS)
    runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=NUM_LAYERS,
                     dry_run=dry_run)
    assert fake.train_calls == [] and fake.eval_calls == []
    notes = [line for line in capsys.readouterr().err.splitlines() if "recorded" in line]
    assert notes == [
        f"resuming {sweep_dir}: jaxlayer 0.1.0.dev1 or a version from before results named "
        "theirs recorded 4 results there, not this jaxlayer (0.1.0.dev2): where grading changed "
        "in between, those runs keep the old rules' scores and the runs to come get the new "
        "ones. To score every run with this version, sweep into a new directory "
        "(--config.sweep.dir=NEW_DIR); to score one run again here, remove its "
        "runs/RUN/result*.json (a block's or group's run then trains again, from its checkpoint "
        "where sweep.keep_checkpoints kept it)."]
  assert {path: path.read_bytes() for path in results} == files


def test_a_sweep_resumed_on_other_test_problems_is_refused_before_any_run(tmp_path,
                                                                          monkeypatch):
  """The same settings give other test problems where a data file was edited since or a dataset
  has a new revision: the runs to come were scored on them and mixed with the runs before."""
  from jaxlayer import evaluation

  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  config = make_config(tmp_path / "sweep", layers="0", model_path=str(model_dir))
  config.eval.num_problems = NUM_PROBLEMS
  fake = FakeRL(BLOCKS)

  def scored_as_default_eval_fn_records(config, **kwargs):
    problems = evaluation.eval_problems(evaluation.config_task(config, config.task.name),
                                        NUM_PROBLEMS)
    return {**fake.eval(config, **kwargs), "problems": evaluation.problems_fingerprint(problems)}

  monkeypatch.setattr(runner, "default_eval_fn", scored_as_default_eval_fn_records)
  sweep_dir = runner.run_sweep(config, train_fn=fake.train)
  config.sweep.layers = "0,1"
  task_class = type(evaluation.config_task(config, config.task.name))
  test_problems = task_class.test_problems
  monkeypatch.setattr(task_class, "test_problems", lambda task: test_problems(task)[::-1])
  files = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
  for dry_run in (True, False):
    with pytest.raises(ValueError, match=(
        f"^the test problems of 'arithmetic' are not those the runs in {sweep_dir} were scored "
        r"on \(base-seed0, for one\): a data file edited since, or a dataset's new revision\? "
        "Their scores do not mix with new runs'")):
      runner.run_sweep(config, train_fn=fake.train, dry_run=dry_run)
  assert len(fake.train_calls) == 2  # the first sweep's
  assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == files
  monkeypatch.setattr(task_class, "test_problems", test_problems)  # the same problems: resumed
  runner.run_sweep(config, train_fn=fake.train)
  assert fake.train_calls[2:] == [((1,), 0)]


@pytest.mark.parametrize("output, message", [
    ({"scores": [1.0]}, r"either 'per_problem' .* or 'tasks' .*; got keys \['scores'\]\.$"),
    ({"per_problem": [1.0], "tasks": {}}, r"got keys \['per_problem', 'tasks'\]"),
    ({"tasks": {}}, r"'tasks' must map each task's name to its \{'per_problem'"),
    ({"tasks": {"a": {"per_problem": []}}}, r"tasks\['a'\]'per_problem' must be a non-empty"),
    ({"tasks": {"a": {"per_problem": [float("nan")]}}}, r"NaN or inf .*\(tasks\['a'\]"),
])
def test_an_eval_fn_output_of_neither_form_is_a_clear_error(output, message):
  with pytest.raises(ValueError, match=r"^run base-seed0: eval_fn.*" + message):
    runner.run_scores(output, RunSpec("base", 0))


def test_a_non_sweep_directory_is_not_written_into(tmp_path):
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes/todo.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty and holds no sweep"):
    _run(make_config(tmp_path / "notes"), FakeRL(BLOCKS))


def test_a_directory_listing_only_the_hosts_mark_is_a_new_sweep_directory(tmp_path):
  """The mark of check_shared_directory: a sweep on several hosts checks the directory at this
  moment."""
  (tmp_path / "sweep").mkdir()
  (tmp_path / "sweep" / distributed.SHARED_MARK).write_text("token")
  _run(make_config(tmp_path / "sweep"), FakeRL(BLOCKS))
  assert (tmp_path / "sweep" / store.MANIFEST).is_file()


def test_a_sweep_killed_writing_its_first_manifest_starts_again_there(tmp_path, dead_pid):
  """Its directory holds only the temporary file of the manifest: a new sweep directory, and
  the file goes; a file of the user's makes it a directory of another kind."""
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  leftover = sweep_dir / f".{store.MANIFEST}.{dead_pid}@{socket.gethostname()}.k2x_9abc.tmp"
  leftover.write_text('{"identity": ')
  _run(make_config(sweep_dir), FakeRL(BLOCKS))
  assert (sweep_dir / store.MANIFEST).is_file() and not leftover.exists()
  # So does one that a killed writer of any other file left (a report's: sweep.json).
  other_file = tmp_path / "other-file"
  other_file.mkdir()
  leftover = other_file / f".sweep.json.{dead_pid}@{socket.gethostname()}.k2x_9abc.tmp"
  leftover.write_text('{"layers": ')
  _run(make_config(other_file), FakeRL(BLOCKS))
  assert (other_file / store.MANIFEST).is_file() and not leftover.exists()
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "notes.tmp").write_text("x")
  with pytest.raises(ValueError, match="not empty and holds no sweep"):
    _run(make_config(tmp_path / "notes"), FakeRL(BLOCKS))


@pytest.mark.parametrize("host", ["this", "other-host"])
def test_a_sweep_finding_another_creating_its_directory_is_not_refused_for_its_file(tmp_path,
                                                                                    host):
  """The temporary file of another sweep's manifest (a running process's, or another host's)
  made the directory one of another kind ("holds no sweep"); it is a sweep directory being
  created, and creating the manifest decides which sweep takes it (here the other never gets
  to it: this one does)."""
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  host = socket.gethostname() if host == "this" else host
  creating = sweep_dir / f".{store.MANIFEST}.{os.getpid()}@{host}.k2x_9abc.tmp"
  creating.write_text('{"identity": ')
  fake = FakeRL(BLOCKS)
  assert _run(make_config(sweep_dir, layers="0"), fake) == sweep_dir
  assert len(fake.train_calls) == 2
  assert creating.exists()  # (the lock removes only the files of ended processes of its host)


@pytest.fixture
def in_between(monkeypatch):
  """in_between(action): `action()` runs once, between the next sweep's choice of its directory
  and its creation of it (as another sweep, started at the same moment, that came first)."""
  choose = store.choose_sweep_dir

  def set_action(action):
    def choose_then_act(*args):
      monkeypatch.setattr(store, "choose_sweep_dir", choose)
      chosen = choose(*args)
      action()
      return chosen

    monkeypatch.setattr(store, "choose_sweep_dir", choose_then_act)

  return set_action


def test_a_sweep_that_finds_its_directory_just_created_by_another_sees_that_sweep(tmp_path,
                                                                                 monkeypatch):
  """choose_sweep_dir looked for manifest.json, then listed the directory: another sweep that
  created the directory in between (here one of the same settings, which runs there whole)
  made it "not empty" and holding "no sweep". One listing now decides: this sweep resumes it."""
  sweep_dir = tmp_path / "sweep"
  choose, is_dir = store.choose_sweep_dir, Path.is_dir

  def is_dir_once_another_sweep_ran(path):
    if path == sweep_dir:
      monkeypatch.setattr(Path, "is_dir", is_dir)
      _run(make_config(sweep_dir, layers="0"), FakeRL(BLOCKS))
    return is_dir(path)

  def choose_while_another_sweep_creates(*args):
    monkeypatch.setattr(store, "choose_sweep_dir", choose)
    monkeypatch.setattr(Path, "is_dir", is_dir_once_another_sweep_ran)
    return choose(*args)

  monkeypatch.setattr(store, "choose_sweep_dir", choose_while_another_sweep_creates)
  fake = FakeRL(BLOCKS)
  assert _run(make_config(sweep_dir, layers="0,1"), fake) == sweep_dir
  assert fake.train_calls == [((1,), 0)]  # the other sweep trained full RL and block 0


def test_a_sweep_never_replaces_the_manifest_of_one_started_at_the_same_moment(tmp_path,
                                                                               in_between):
  """Two sweeps of different settings into one new directory: both found it new, and the one
  that wrote its manifest.json second replaced the first one's, so one sweep's runs filled a
  directory that described the other. Now the first manifest is created, never replaced: the
  sweep that comes second is refused as by a directory that held the other sweep before."""
  sweep_dir = tmp_path / "sweep"
  other = make_config(sweep_dir, layers="0")
  other.train.learning_rate *= 3
  in_between(lambda: _run(other, FakeRL(BLOCKS)))
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError, match="holds a sweep with different settings"):
    _run(make_config(sweep_dir, layers="0"), fake)
  assert fake.train_calls == [] and fake.eval_calls == []
  manifest = store.load_manifest(sweep_dir)
  assert manifest["config"]["train"]["learning_rate"] == other.train.learning_rate


def test_a_sweep_started_at_the_same_moment_as_one_of_its_settings_resumes_it(tmp_path,
                                                                             in_between):
  """(The sweeps' lock then lets one of them write there at a time.) The manifest stays the
  first sweep's: here its eval.batch_size, which does not change the scores."""
  sweep_dir = tmp_path / "sweep"
  other = make_config(sweep_dir, layers="0")
  other.eval.batch_size = 2
  in_between(lambda: _run(other, FakeRL(BLOCKS)))
  fake = FakeRL(BLOCKS)
  assert _run(make_config(sweep_dir, layers="0,1"), fake) == sweep_dir
  assert fake.train_calls == [((1,), 0)]  # the other sweep trained full RL and block 0
  assert store.load_manifest(sweep_dir)["config"]["eval"]["batch_size"] == 2


def test_a_sweep_forced_into_a_new_directory_takes_the_next_free_one_when_another_came_first(
    tmp_path, in_between):
  sweep_dir = tmp_path / "sweep"
  other = make_config(sweep_dir, layers="0")
  other.train.learning_rate *= 3
  in_between(lambda: _run(other, FakeRL(BLOCKS)))
  config = make_config(sweep_dir, layers="0")
  config.sweep.force_new_dir = True
  fake = FakeRL(BLOCKS)
  assert _run(config, fake) == tmp_path / "sweep-2"
  assert len(fake.train_calls) == 2  # full RL and block 0, beside the other sweep's
  for directory, rate in ((sweep_dir, other.train.learning_rate),
                          (tmp_path / "sweep-2", config.train.learning_rate)):
    assert store.load_manifest(directory)["config"]["train"]["learning_rate"] == rate
    assert len(store.load_results(directory)) == 3


def test_a_sweep_forced_into_a_new_directory_gives_up_once_others_took_ten(tmp_path,
                                                                           monkeypatch):
  """Each directory it chooses, another sweep creates first: it tries store.CREATE_TRIES."""
  create_text = paths.create_text

  def another_sweep_first(path, text):
    create_text(path, '{"identity": "another sweep\'s"}\n')
    create_text(path, text)

  monkeypatch.setattr(paths, "create_text", another_sweep_first)
  config = make_config(tmp_path / "sweep")
  config.sweep.force_new_dir = True
  with pytest.raises(ValueError, match=re.escape(
      "Sweeps started at the same moment as this one took each of the 10 directories it chose "
      f"for sweep.dir={str(tmp_path / 'sweep')!r}. Run the same command again, or give this "
      "sweep a directory of its own (--config.sweep.dir=NEW_DIR).")):
    _run(config, FakeRL(BLOCKS))
  assert {p.name for p in tmp_path.iterdir()} == {"sweep", *(f"sweep-{i}" for i in range(2, 11))}


def test_an_empty_manifest_is_named_with_the_fix(tmp_path):
  """What a sweep creating its directory on a file system without hard links shows for a
  moment (paths.create_text), or leaves when it is killed then."""
  (tmp_path / "sweep").mkdir()
  (tmp_path / "sweep" / store.MANIFEST).touch()
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path}/sweep/manifest.json is empty: a sweep is creating {tmp_path}/sweep at this "
      "moment, or one was killed while creating it. Run the command again in a minute; if no "
      "sweep runs there, remove the empty manifest.json first.")):
    _run(make_config(tmp_path / "sweep"), FakeRL(BLOCKS))


def test_runs_scored_on_a_different_number_of_problems_are_refused(tmp_path):
  config = make_config(tmp_path / "sweep", layers="0")
  _run(config, FakeRL(BLOCKS))
  config.sweep.layers = "0,1"
  with pytest.raises(ValueError, match="on 50 problems but the sweep's earlier runs on 40"):
    _run(config, FakeRL(BLOCKS, num_problems=50))
  assert not store.is_done(tmp_path / "sweep", RunSpec("layer", 0, 1))


@pytest.mark.parametrize("value, expected", [
    ("all", [0, 1, 2, 3, 4, 5, 6, 7]), ("0,3,7", [0, 3, 7]), (" 7, 3 ,0,3", [0, 3, 7]),
    ("2-4", [2, 3, 4]), ("0,5-6", [0, 5, 6]), ((1, 6), [1, 6]), (4, [4])])
def test_layer_lists(value, expected):
  assert runner.parse_layers(value, 8) == expected


@pytest.mark.parametrize("value, message", [
    ("0,9", r"names 9, beyond the model's 8 blocks \(numbered 0-7\)"),
    ("0,8-9", r"names 8, 9, beyond"), ("1,x", "'x' is not a block index"),
    ((1, 2.5), "expected 'all'"), ("-1", "'-1' is not a block index"),
    ("0,5-2", "the range '5-2' runs backwards; write it 2-5")])  # it swept block 0 alone
def test_bad_layer_lists_name_the_problem(value, message):
  with pytest.raises(ValueError, match=message):
    runner.parse_layers(value, 8)


def test_a_block_beyond_a_one_block_model_is_counted_right():
  with pytest.raises(ValueError, match=r"names 1, beyond the model's 1 block \(numbered 0-0\)"):
    runner.parse_layers("1", 1)  # it said "has 1 blocks"


def test_a_training_config_given_to_the_sweep_is_a_clear_error(tmp_path):
  """A training config (no sweep section) used to fail with AttributeError: "'sweep'"."""
  config = default_config()
  config.model.path = assets.TINY_ARITH
  with pytest.raises(ValueError, match=r"config has no sweep section: start from configs/sweep"):
    runner.run_sweep(config)
  with pytest.raises(TypeError, match=r"must be an ml_collections ConfigDict.*got dict"):
    runner.run_sweep({"sweep": {"dir": str(tmp_path)}})


def test_a_sweep_key_that_nothing_reads_is_a_clear_error(tmp_path):
  """A key misspelt in a config file's sweep section was ignored: sweep.seed = 3 ran one seed."""
  config = make_config(tmp_path / "sweep")
  config.sweep.seed = 3
  with pytest.raises(ValueError, match=r"config key sweep.seed is no jaxlayer setting \(nothing "
                     r"would read it\); did you mean sweep.seeds\?"):
    runner.run_sweep(config)
  del config.sweep.seed
  config.sweep.ray.num_gpu = 1.0
  with pytest.raises(ValueError, match=r"sweep.ray.num_gpu .*; did you mean sweep.ray.num_gpus\?"):
    runner.run_sweep(config)
  assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("value, expected", [
    ("", []), ("3+4", [(3, 4)]), ("6+1, 2-4", [(1, 6), (2, 3, 4)]), ("4+3,3+4", [(3, 4)]),
    ("adjacent", [(k, k + 1) for k in range(7)]), (((5, 2), (0, 1, 7)), [(2, 5), (0, 1, 7)]),
    ("mid3", [(2, 3, 4)]), ("mid2+7,0+mid2", [(3, 4, 7), (0, 3, 4)]),
    ("mid3,adjacent", [(2, 3, 4)] + [(k, k + 1) for k in range(7)])])
def test_group_lists(value, expected):
  assert runner.parse_groups(value, 8) == expected


@pytest.mark.parametrize("value, message", [
    ("3", r"the group \[3\] has one block.*sweep.layers"), ("3+3", "has one block"),
    ("3+x", "sweep.groups='3\\+x': 'x' is not a block index"),
    ("2+8", r"sweep.groups names 8, beyond the model's 8 blocks \(numbered 0-7\)"),
    (3, "expected '3\\+4"),
    ("6-4", "the range '6-4' runs backwards; write it 4-6")])  # it said "the group [] has one"
def test_bad_group_lists_name_the_problem(value, message):
  with pytest.raises(ValueError, match=message):
    runner.parse_groups(value, 8)


def test_groups_name_the_best_and_worst_blocks_of_a_finished_sweep(tmp_path):
  """The paper's Only-B2 and Only-W2 as groups of one sweep, ranked by another's C."""
  profiled = _run(make_config(tmp_path / "profile"), FakeRL(BLOCKS))  # C: 1 > 2 > 0 > 3
  assert runner.parse_groups(f"top2@{profiled},bottom2@{profiled}", NUM_LAYERS) == [(1, 2),
                                                                                    (0, 3)]
  with pytest.raises(ValueError, match="choose k between 1 and 4"):
    runner.parse_groups(f"top5@{profiled}", NUM_LAYERS)
  with pytest.raises(ValueError, match=r"groups='mid1': the group \[1\] has one block"):
    runner.parse_groups("mid1", NUM_LAYERS)


def test_groups_of_blocks_train_together_after_the_single_blocks(tmp_path):
  fake = FakeRL({**BLOCKS, (1, 2): 30, (0, 3): 5})
  config = make_config(tmp_path / "sweep", layers="2")
  config.sweep.groups = "1+2,0+3"
  sweep_dir = _run(config, fake)
  assert fake.train_calls == [(None, 0), ((2,), 0), ((1, 2), 0), ((0, 3), 0)]
  result = store.read_json(sweep_dir / "runs" / "group01+02-seed0" / "result.json")
  assert (result["kind"], result["blocks"], result["layer"]) == ("group", [1, 2], None)
  assert result["score"] == 30 / NUM_PROBLEMS
  assert store.read_json(sweep_dir / "runs" / "layer02-seed0" / "result.json")["blocks"] == [2]

  config.sweep.update(layers="none", groups="1+2,2+3")  # blocks 2+3 are new: only they train
  fake = FakeRL({**BLOCKS, (2, 3): 11})
  _run(config, fake)
  assert fake.train_calls == [((2, 3), 0)]
  config.sweep.groups = ""
  with pytest.raises(ValueError, match="sweep.layers='none' and sweep.groups is empty"):
    _run(config, fake)


# Successive halving on BLOCKS, rungs at 15 and 30 of 60 steps. After 15 steps block 3 leads
# and blocks 0 and 1 tie (the lower index goes on); after 30 block 0 leads. Groups: 2+3 leads.
RUNG_CORRECT = {("full", 15): 16, (0, 15): 15, (1, 15): 15, (2, 15): 12, (3, 15): 17,
                ((0, 1), 15): 20, ((2, 3), 15): 22,
                ("full", 30): 20, (0, 30): 18, (3, 30): 16, ((2, 3), 30): 25}


def _halving_config(sweep_dir):
  config = make_config(sweep_dir)  # train.steps = 60
  config.sweep.update(groups="0+1,2+3", halving_steps="15,30", halving_keep=0.5)
  return config


def test_halving_trains_every_block_to_the_first_rung_and_only_the_best_further(tmp_path,
                                                                               capsys):
  fake = FakeRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT)
  sweep_dir = _run(_halving_config(tmp_path / "sweep"), fake)
  assert ("successive halving: 6 -> 3 -> 2 blocks and groups trained to steps 15, 30, 60; 255 RL "
          "steps in all, 61% of a sweep without halving.") in capsys.readouterr().err
  assert fake.train_calls == (
      [(None, 0, 15)] + [((k,), 0, 15) for k in range(4)] + [((0, 1), 0, 15), ((2, 3), 0, 15)]
      + [(None, 0, 30), ((0,), 0, 30), ((3,), 0, 30), ((2, 3), 0, 30)]
      + [(None, 0), ((0,), 0), ((2, 3), 0)])
  runs = sweep_dir / "runs"
  rung = store.read_json(runs / "layer03-seed0" / "result-step15.json")
  assert (rung["run"], rung["stop_at"], rung["score"]) == ("layer03-seed0-step15", 15, 17 / 40)
  assert len(rung["reward_curve"]) == 15
  assert not (runs / "layer03-seed0" / "result.json").exists()
  assert store.read_json(runs / "layer00-seed0" / "result.json")["score"] == 14 / NUM_PROBLEMS
  # Stopped runs lose their checkpoints as finished ones do; full RL keeps its own.
  for run in ("layer01", "layer02", "layer03", "group00+01", "layer00", "group02+03"):
    assert not (runs / f"{run}-seed0" / "train" / "checkpoint").exists(), run
  assert (runs / "full-seed0" / "train" / "checkpoint" / "weights.bin").is_file()

  halving = store.read_json(sweep_dir / "sweep.json")["halving"]
  assert [r["steps"] for r in halving["rungs"]] == [15, 30] and halving["final_steps"] == 60
  first = halving["rungs"][0]
  assert first["s_full"] == 16 / NUM_PROBLEMS
  # C at a rung is measured against full RL at the same step: (17 - 12) / (16 - 12).
  assert [l["contribution"] for l in first["layers"]] == pytest.approx([0.75, 0.75, 0, 1.25])
  assert [l["went_on"] for l in first["layers"]] == [True, False, False, True]
  assert [g["went_on"] for g in first["groups"]] == [False, True]
  second = halving["rungs"][1]
  assert [(l["layer"], l["went_on"]) for l in second["layers"]] == [(0, True), (3, False)]
  assert second["layers"][0]["contribution"] == pytest.approx((18 - 12) / (20 - 12))
  # Full RL, block 0 and group 2+3 train 60 steps; blocks 1 and 2 and group 0+1 stop at 15,
  # block 3 at 30: 255 RL steps against 7 x 60.
  assert (halving["rl_steps"], halving["rl_steps_without_halving"]) == (255, 420)
  assert first["rank_correlation_with_final"] is None  # one block reached the end

  markdown = (sweep_dir / "report.md").read_text()
  assert "trained: 6 to step 15 -> 3 to step 30 -> 2 to step 60 (train.steps)" in markdown
  assert "255 RL steps (all runs and seeds), 61% of the 420" in markdown
  # Block 0 alone trained to the end: not named the worst block as well as the best.
  assert "Best: block 0 (C = 0.17, score 0.350); the only block trained to the end." in markdown
  assert "| full RL | 0.400 / 1 | 0.500 / 1 | 0.600 / 1 |" in markdown
  assert "| block 3 | 0.425 / 1.25 | 0.400 / 0.50 | - |" in markdown
  assert "| blocks 2+3 | 0.550 / 2.50 | 0.625 / 1.62 | 0.400 / 0.33 |" in markdown


def test_an_interrupted_halving_sweep_resumes_at_its_rung(tmp_path):
  config = _halving_config(tmp_path / "sweep")
  interrupted = FakeRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT,
                       interrupt_on_train_call=9)  # block 0, the second run of the rung at 30
  with pytest.raises(KeyboardInterrupt):
    _run(config, interrupted)
  resumed = FakeRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT)
  _run(config, resumed)
  assert resumed.train_calls == [((0,), 0, 30), ((3,), 0, 30), ((2, 3), 0, 30),
                                 (None, 0), ((0,), 0), ((2, 3), 0)]
  assert len(resumed.eval_calls) == 6


class _SeedOneRanksOtherwise(FakeRL):
  """With seed 1, block 1 leads the rung at 15 steps and block 0 trails every block."""

  def correct(self, model, seed: int) -> int:
    if seed == 1 and model is not None and model[-1] == 15 and model[0] in (0, 1):
      return {0: 5, 1: 30}[model[0]]
    return super().correct(model, seed)


def test_a_halving_sweep_given_more_seeds_keeps_its_rungs_choice(tmp_path, capsys):
  """Seeds added to a halving sweep ranked its rung again: block 2, stopped there with seed 0
  (its checkpoint gone), went on and trained from step 0, and block 0's finished run of seed 0
  was dropped from those that reached the end."""
  config = make_config(tmp_path / "sweep")
  config.sweep.update(halving_steps="15", halving_keep=0.5)
  rung_correct = {("full", 15): 16, (0, 15): 16, (1, 15): 15, (2, 15): 12, (3, 15): 11}
  _run(config, _SeedOneRanksOtherwise(BLOCKS, rung_correct=rung_correct))  # 0 and 1 go on
  config.sweep.seeds = 2  # over both seeds the rung's best are blocks 1 and 2
  fake = _SeedOneRanksOtherwise(BLOCKS, rung_correct=rung_correct)
  sweep_dir = _run(config, fake)
  assert fake.train_calls == ([(None, 1, 15)] + [((k,), 1, 15) for k in range(4)]
                              + [(None, 1), ((0,), 1), ((1,), 1)])
  assert ("rung at 15 RL steps: layer00 went on; layer02 stopped there before, and do so again "
          "though the scores with the runs since rank them otherwise: the runs stopped there "
          "lost their checkpoints, and those that went on trained past it. To choose again by "
          f"every run's score, remove {sweep_dir / 'halving.json'} (a stopped run that then goes "
          "on trains again from step 0) and run the sweep again.") in capsys.readouterr().err
  sweep = store.read_json(sweep_dir / "sweep.json")
  assert [(l["layer"], l["seeds"]) for l in sweep["layers"]] == [(0, [0, 1]), (1, [0, 1])]
  (sweep_dir / "halving.json").unlink()  # chosen again over both seeds: block 2 goes on
  fake = _SeedOneRanksOtherwise(BLOCKS, rung_correct=rung_correct)
  _run(config, fake)
  assert fake.train_calls == [((2,), 0), ((2,), 1)]


def test_runs_that_halving_stopped_say_they_train_from_step_0_when_they_go_on(tmp_path, capsys):
  """Halving removed from a finished sweep: the blocks it stopped at the rung (their
  checkpoints gone) trained to the end from step 0 without a word."""
  config = make_config(tmp_path / "sweep")
  config.sweep.update(halving_steps="15", halving_keep=0.5)
  _run(config, FakeRL(BLOCKS, rung_correct=RUNG_CORRECT))  # blocks 1 and 2 stop at 15
  config.sweep.halving_steps = ""
  fake = FakeRL(BLOCKS)
  capsys.readouterr()
  _run(config, fake)
  assert fake.train_calls == [((1,), 0), ((2,), 0)]
  assert ("training from step 0 again, the checkpoints of their earlier rungs gone: "
          "layer01-seed0, layer02-seed0 (successive halving removes those of the runs it stops; "
          "--config.sweep.keep_checkpoints=True keeps them).") in capsys.readouterr().err


def test_halving_added_to_a_finished_sweep_is_refused_before_any_run(tmp_path):
  _run(make_config(tmp_path / "sweep", layers="0,1"), FakeRL(BLOCKS))
  before = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*.json")}
  config = make_config(tmp_path / "sweep", layers="0,1,2")
  config.sweep.halving_steps = "15"
  fake = FakeRL(BLOCKS, rung_correct=RUNG_CORRECT)
  with pytest.raises(ValueError, match="full-seed0, layer00-seed0, layer01-seed0 in .* already "
                     "trained past step 15 without a result there, .* Rerun with the halving "
                     "steps of its results \\(--config.sweep.halving_steps=''\\)"):
    _run(config, fake)
  assert fake.train_calls == []
  assert {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*.json")} == before


def test_a_rung_moved_below_the_steps_a_run_reached_is_refused_before_any_run(tmp_path):
  """A halving sweep (rungs at 15 and 30) stopped in its last stage, resumed with its second rung
  at 20 and a second seed: the rung at 15 of the new seed trained, then runs past step 30 (or,
  stopped there, without a checkpoint) went back to step 20, which a real trainer refuses to
  resume to and one without the checkpoint trains again from step 0."""
  config = _halving_config(tmp_path / "sweep")
  with pytest.raises(KeyboardInterrupt):  # the twelfth training: full RL to train.steps
    _run(config, FakeRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT,
                        interrupt_on_train_call=12))
  before = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*.json")}
  config.sweep.update(halving_steps="15,20", seeds=2)
  fake = FakeRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT)
  for dry_run in (True, False):
    with pytest.raises(ValueError, match=(
        "full-seed0, layer00-seed0, layer03-seed0, group02\\+03-seed0 in .* already trained past "
        "step 20 without a result there, .*--config.sweep.halving_steps=15,30\\)")):
      runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=NUM_LAYERS,
                       dry_run=dry_run)
  assert fake.train_calls == []
  assert {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*.json")} == before


def test_the_best_at_a_rung_are_ranked_by_their_mean_over_seeds():
  def result(layer, seed, score):
    return RunSpec("layer", seed, layer, stop_at=5), {"score": score}
  results = dict([result(0, 0, 0.5), result(1, 0, 0.4), result(2, 0, 0.0),
                  result(0, 1, 0.1), result(1, 1, 0.4), result(2, 1, 0.3)])
  assert runner.best_at_rung([0, 1, 2], "layer", results, keep=0.5) == [0, 1]  # 0.3, 0.4, 0.15
  assert runner.best_at_rung([0, 1, 2], "layer", results, keep=0.3) == [1]
  # The best keep of them, rounded up: 0.5 of 5 keeps 3, 0.25 of 10 keeps 3, 0.2 of 3 keeps 1.
  assert [runner.kept_count(n, keep) for n, keep in
          [(8, 0.5), (7, 0.5), (1, 0.5), (3, 1 / 3), (5, 1.0), (28, 0.5), (5, 0.5), (3, 0.2),
           (10, 0.25)]] == [4, 4, 1, 1, 5, 14, 3, 1, 3]


@pytest.mark.parametrize("steps, keep, message", [
    ("30,15", 0.5, "must rise from 1 and stay below train.steps=60"),
    ("0,10", 0.5, "must rise from 1"),
    ("60", 0.5, "below train.steps=60 .where the kept runs end., e.g. 15,30"),
    ("a", 0.5, "sweep.halving_steps='a': give the RL steps"),
    ("15", 0.0, "sweep.halving_keep=0.0: .* in \\(0, 1\\]"), ("15", 1.5, "halving_keep=1.5"),
    ("15", -0.5, "halving_keep=-0.5")])
def test_bad_halving_settings_fail_before_any_run(tmp_path, steps, keep, message):
  config = make_config(tmp_path / "sweep")
  config.sweep.update(halving_steps=steps, halving_keep=keep)
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError, match=message):
    _run(config, fake)
  assert fake.train_calls == [] and not (tmp_path / "sweep").exists()


def test_bad_seed_count_is_refused(tmp_path):
  with pytest.raises(ValueError, match="sweep.seeds=0"):
    _run(make_config(tmp_path / "sweep", seeds=0), FakeRL(BLOCKS))


@pytest.mark.parametrize("overrides, message", [
    ({"warmup_steps": 60}, r"train.warmup_steps=60: the warm-up takes 0 to .* 59 RL steps"),
    # Fine for full RL; block 1's run would train no block of the learning-rate group.
    ({"lr_groups": "layers.0=1e-5"}, r"train.layers='layers.1' leaves frozen"),
])
def test_bad_training_settings_fail_before_the_sweep_directory_is_made(tmp_path, overrides,
                                                                        message):
  config = make_config(tmp_path / "sweep", layers="0,1", model_path=assets.TINY_ARITH)
  config.train.update(overrides)

  def evaluate(*args, **kwargs):
    pytest.fail("the base model was evaluated before the training settings were checked")

  with pytest.raises(ValueError, match=message):
    runner.run_sweep(config, eval_fn=evaluate)
  assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_eval_prompts_that_cannot_fit_fail_before_the_sweep_directory_is_made(tmp_path, dry_run):
  """The shipped model has 64 positions; its arithmetic prompts take 6 tokens."""
  config = make_config(tmp_path / "sweep", layers="0", model_path=assets.TINY_ARITH)
  config.eval.max_new_tokens = 62
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError, match=r"^the longest test prompt of task 'arithmetic' has 6 "
                     r"tokens; with eval.max_new_tokens=62 that is 68 positions, beyond the "
                     r"model's max_position_embeddings=64: set eval.max_new_tokens to at most 58"):
    runner.run_sweep(config, train_fn=fake.train, dry_run=dry_run)
  assert fake.train_calls == [] and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_reward_weight_naming_no_component_fails_before_the_sweep_directory_is_made(
    tmp_path, dry_run):
  """Before, the base model's whole evaluation ran first, and failed at its scoring."""
  config = make_config(tmp_path / "sweep", layers="0", model_path=assets.TINY_ARITH)
  config.task.options.reward_weights = {"correct": 1.0, "formatt": 0.1}
  fake = FakeRL(BLOCKS)
  with pytest.raises(ValueError, match=r"^task 'arithmetic': reward_weights names \['formatt'\], "
                     r"which it does not grade; its reward components are \[.*'correct'"):
    runner.run_sweep(config, train_fn=fake.train, dry_run=dry_run)
  assert fake.train_calls == [] and not (tmp_path / "sweep").exists()


def test_a_sweep_dir_another_process_writes_is_refused_and_left_as_it_was(
    tmp_path, held_by_another_process):
  sweep_dir = _run(make_config(tmp_path / "sweep", layers="0"), FakeRL(BLOCKS))
  held_by_another_process(sweep_dir)  # (which writes its process id into the lock file)
  before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
  fake = FakeRL(BLOCKS)
  with pytest.raises(locks.DirectoryInUseError, match=r"in use: .*choose another sweep.dir"):
    _run(make_config(tmp_path / "sweep", layers="0,1"), fake)
  assert fake.train_calls == [] and fake.eval_calls == []
  assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == before


def test_a_sweep_refused_while_another_writes_there_records_no_moved_model(
    tmp_path, held_by_another_process):
  """The manifest records a moved base model only under the sweep's lock."""
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  sweep_dir = _run_on_model(tmp_path / "sweep", model_dir, FakeRL(BLOCKS))
  moved = model_dir.rename(tmp_path / "moved")
  held_by_another_process(sweep_dir)
  before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
  with pytest.raises(locks.DirectoryInUseError, match=r"in use: .*choose another sweep.dir"):
    _run_on_model(sweep_dir, moved, FakeRL(BLOCKS), command="jaxlayer sweep moved")
  assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == before


def test_a_dry_run_checks_and_tells_what_would_run_and_writes_nothing(tmp_path, capsys,
                                                                     monkeypatch):
  fake = FakeRL(BLOCKS)

  def dry_run(**sweep):
    return runner.run_sweep(make_config(tmp_path / "sweep", **sweep), train_fn=fake.train,
                            eval_fn=fake.eval, num_layers=NUM_LAYERS, dry_run=True)

  assert dry_run(layers="0,1") == tmp_path / "sweep"
  assert not (tmp_path / "sweep").exists()
  assert "4 runs of up to 60 RL steps (grpo).\ndry run: a new sweep directory." in (
      capsys.readouterr().out)
  _run(make_config(tmp_path / "sweep", layers="0"), fake)
  calls = (list(fake.train_calls), list(fake.eval_calls))
  files = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*") if p.is_file()}
  capsys.readouterr()
  dry_run(layers="0,1")
  assert "dry run: it resumes the sweep there, 3 of its 4 runs done." in capsys.readouterr().out
  config = make_config(tmp_path / "sweep", layers="0,1")
  config.sweep.halving_steps = "10"  # the finished runs cannot go back to a rung
  with pytest.raises(ValueError, match="cannot go back to a rung"):
    runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=NUM_LAYERS,
                     dry_run=True)
  assert (fake.train_calls, fake.eval_calls) == calls
  assert {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*") if p.is_file()} == files

  monkeypatch.setattr(runner, "default_train_fn", fake.train)
  monkeypatch.setattr(runner, "default_eval_fn", fake.eval)
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  cli.main(["sweep", "--config", str(REPO / "configs/sweep_tiny.py"), "--dry-run",
            f"--config.model.path={model_dir}", f"--config.sweep.dir={tmp_path / 'cli'}"])
  assert "dry run: a new sweep directory" in capsys.readouterr().out
  assert not (tmp_path / "cli").exists() and fake.train_calls == calls[0]


@pytest.mark.parametrize("tasks, message", [
    ("arithmetic,nope", r"eval.tasks / task.name: unknown task 'nope'"),
    ("arithmetic:pass@2", r"eval.tasks entry 'arithmetic:pass@2': the metric after ':' is "
                          r"pass@1 or mean@K"),
])
def test_a_bad_eval_tasks_entry_fails_the_dry_run_before_the_sweep_directory_is_made(
    tmp_path, monkeypatch, tasks, message):
  fake = FakeRL(BLOCKS)
  monkeypatch.setattr(runner, "default_train_fn", fake.train)
  monkeypatch.setattr(runner, "default_eval_fn", fake.eval)
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  with pytest.raises(SystemExit, match=f"^jaxlayer sweep: {message}"):
    cli.main(["sweep", "--config", str(REPO / "configs/sweep_tiny.py"), "--dry-run",
              f"--config.model.path={model_dir}", f"--config.sweep.dir={tmp_path / 'sweep'}",
              f"--config.eval.tasks={tasks}"])
  assert not (tmp_path / "sweep").exists() and fake.train_calls == fake.eval_calls == []


def test_block_count_comes_from_the_checkpoint_config(tmp_path):
  model_dir = write_model_config(tmp_path / "model", num_layers=6)
  assert runner.model_num_layers(str(model_dir)) == 6
  with pytest.raises(ValueError, match=r"6 blocks \(numbered 0-5\)"):
    runner.run_sweep(make_config(tmp_path / "sweep", layers="0,6", model_path=str(model_dir)),
                     train_fn=FakeRL(BLOCKS).train, eval_fn=FakeRL(BLOCKS).eval)


def test_cli_sweep_runs_with_the_wired_functions_and_prints_its_plan_result_and_report(
    tmp_path, monkeypatch, capsys):
  fake = FakeRL(BLOCKS)
  monkeypatch.setattr(runner, "default_train_fn", fake.train)
  monkeypatch.setattr(runner, "default_eval_fn", fake.eval)
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  argv = ["sweep", "--config", str(REPO / "configs/sweep_tiny.py"),
          f"--config.model.path={model_dir}",
          f"--config.sweep.dir={tmp_path / 'sweep'}", "--config.sweep.layers=0,2"]
  cli.main(argv)
  out, err = capsys.readouterr()
  # Its plan is a note on stderr; stdout holds the results alone: each run's, then the sweep's.
  assert err.startswith(f"sweep into {tmp_path / 'sweep'}: {model_dir}, the base model, full RL, "
                        "2 blocks alone; 1 seed: 4 runs of up to 60 RL steps (grpo).\n")
  assert out.startswith("base-seed0: pass@1 0.3000 ± ") and "sweep into" not in out
  # The result in short: base 12 and full RL 24 of 40 problems; C(0) = 2 / 12, C(2) = 8 / 12.
  sweep = json.loads((tmp_path / "sweep/sweep.json").read_text())
  gain_in_se = 0.3 / sweep["gain_paired_se"]
  assert (f"pass@1: base 0.300 ± {sweep['s_base_se']:.3f}, full RL 0.600 ± "
          f"{sweep['s_full_se']:.3f} (gain +0.300, {gain_in_se:.1f} standard errors)\n"
          "best: block 2 (C = 0.67, score 0.500). worst: block 0 (C = 0.17, score 0.350).\n"
          f"contribution plot: {tmp_path / 'sweep' / 'contribution.png'}\n") in out
  assert f"{tmp_path / 'sweep' / 'report.md'}" in out
  assert sorted(fake.train_calls, key=str) == sorted([(None, 0), ((0,), 0), ((2,), 0)], key=str)
  cli.main(argv)  # resumed, every run done
  resumed_out, resumed_err = capsys.readouterr()
  assert f"resuming {tmp_path / 'sweep'}: 4 of 4 runs already done." in resumed_err
  assert resumed_out.startswith("pass@1: base 0.300 ± ") and "resuming" not in resumed_out
  assert [l["layer"] for l in sweep["layers"]] == [0, 2]
  assert "--config.sweep.layers=0,2" in (tmp_path / "sweep/report.md").read_text()


def test_cli_sweep_into_a_different_sweep_is_a_clear_error(tmp_path, monkeypatch):
  fake = FakeRL(BLOCKS)
  monkeypatch.setattr(runner, "default_train_fn", fake.train)
  monkeypatch.setattr(runner, "default_eval_fn", fake.eval)
  model_dir = write_model_config(tmp_path / "model", num_layers=NUM_LAYERS)
  argv = ["sweep", "--config", str(REPO / "configs/sweep_tiny.py"),
          f"--config.model.path={model_dir}", f"--config.sweep.dir={tmp_path / 'sweep'}",
          "--config.sweep.layers=0", "--config.train.steps=5"]
  cli.main(argv)
  with pytest.raises(SystemExit, match="(?s)jaxlayer sweep: .*train.steps: 5 -> 6"):
    cli.main(argv + ["--config.train.steps=6"])


def test_cli_sweep_bad_override_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit,
                     match=r"--config.sweep.nope: sweep has no key .nope. \(its keys: .*layers"):
    cli.main(["sweep", "--config", str(REPO / "configs/sweep_tiny.py"), "--config.sweep.nope=1"])


def test_each_run_gets_the_training_config_with_its_blocks_seed_and_directory(tmp_path):
  config = make_config(tmp_path / "sweep")
  config.lock()
  run_config = runner.training_config(config, layers=[3], seed=2, workdir=tmp_path / "w")
  assert (run_config.train.layers, run_config.seed, run_config.run_dir) == (
      "layers.3", 2, str(tmp_path / "w"))
  assert "sweep" not in run_config and "eval" not in run_config  # the trainer's config only
  assert runner.training_config(config, layers=None, seed=0, workdir=tmp_path).train.layers == "all"
  assert run_config.train.learning_rate == config.train.learning_rate
  assert config.train.layers == "all" and "sweep" in config  # the sweep's config is untouched


def test_seeds_count_up_from_config_seed(tmp_path):
  config = make_config(tmp_path / "sweep", layers="0", seeds=2)
  config.seed = 5
  fake = FakeRL(BLOCKS)
  _run(config, fake)
  assert sorted(fake.train_calls, key=str) == sorted(
      [(None, 5), ((0,), 5), (None, 6), ((0,), 6)], key=str)
  assert json.loads((tmp_path / "sweep/sweep.json").read_text())["seeds"] == [5, 6]


def test_results_and_plots_are_written_readable_as_the_umask_allows(tmp_path):
  """Written through temporary files, which mkstemp makes owner-only (0600): on a shared
  cluster colleagues could not read a sweep's results."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  from jaxlayer import plots

  previous = os.umask(0o022)
  try:
    store.write_json_atomic(tmp_path / "sweep.json", {"a": 1})
    fig = plt.figure()
    plots.save_figure(fig, tmp_path / "plot.png")
    plt.close(fig)
    os.umask(0o077)
    paths.write_text_atomic(tmp_path / "report.md", "private")
  finally:
    os.umask(previous)
  assert stat.S_IMODE((tmp_path / "sweep.json").stat().st_mode) == 0o644
  assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == 0o644
  assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o600


def test_a_runs_training_time_sums_its_interrupted_and_rung_parts(tmp_path, monkeypatch):
  clock = {"now": 0.0}  # each train call takes 10 s of this clock, an interrupted one too
  monkeypatch.setattr(runner.time, "perf_counter", lambda: clock["now"])

  class TimedRL(FakeRL):
    def train(self, config, **kwargs):
      clock["now"] += 10.0
      return super().train(config, **kwargs)

  config = _halving_config(tmp_path / "sweep")
  with pytest.raises(KeyboardInterrupt):  # block 0 at the rung at 30: its third call
    _run(config, TimedRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT,
                         interrupt_on_train_call=9))
  _run(config, TimedRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT))
  block0_results = (tmp_path / "sweep" / "runs").glob("layer00-*/result*.json")
  block0 = {r["stop_at"]: r["train_seconds"] for r in map(store.read_json, block0_results)}
  assert block0 == {15: 10.0, 30: 30.0, None: 40.0}  # 15, interrupted, 30 resumed, 60
  full = store.read_json(tmp_path / "sweep" / "runs" / "full-seed0" / "result.json")
  assert full["train_seconds"] == full["cost"]["train_seconds"] == 30.0  # rungs at 15, 30, 60

  block0_dir = tmp_path / "sweep" / "runs" / "layer00-seed0"
  shutil.rmtree(block0_dir / "train")
  (block0_dir / store.RESULT).unlink()
  _run(config, TimedRL({**BLOCKS, (2, 3): 16}, rung_correct=RUNG_CORRECT))
  assert store.read_json(block0_dir / store.RESULT)["train_seconds"] == 10.0  # from scratch


@pytest.mark.parametrize("on_cluster", [False, True])
def test_a_block_run_on_a_cluster_removes_its_checkpoint_where_it_wrote_it(tmp_path, on_cluster):
  """On a cluster (a Ray worker) a block run removes its checkpoint itself once scored: the
  sweep's process, which records the result, may not see the worker's disk. Here the sweep
  removes it, after the result is recorded."""
  config = make_config(tmp_path / "sweep", layers="1")
  spec = next(s for s in runner.plan_runs([1], [0]) if s.kind == "layer")
  fake = FakeRL(BLOCKS)
  result = runner.execute_run(spec, config, tmp_path / "sweep", fake.train, fake.eval,
                              on_cluster=on_cluster)
  assert result["score"] == BLOCKS[1] / NUM_PROBLEMS
  assert Path(result["checkpoint_dir"]).exists() is not on_cluster


def test_a_signal_during_a_runs_last_step_stops_the_sweep_before_its_next_run(tmp_path,
                                                                              monkeypatch):
  """The trainer ends a run whose last step a Ctrl-C or SIGTERM came in as planned and reports
  the signal (train's tests): the sweep stops there, where it went on to its next run, the
  signal lost (a preemption notice then met the kill in the middle of the next block)."""
  import signal
  import types

  from jaxlayer.rl import train

  def finished_with_a_stop_request(config, **kwargs):
    return types.SimpleNamespace(stop_requested=signal.SIGTERM)  # (all the sweep reads)

  monkeypatch.setattr(train, "train", finished_with_a_stop_request)
  with pytest.raises(train.TrainingInterrupted) as stopped:
    runner.default_train_fn(make_config(tmp_path / "sweep", model_path=assets.TINY_ARITH),
                            layers=(1,), seed=0, workdir=tmp_path / "run", progress_position=0)
  assert stopped.value.signum == signal.SIGTERM
  assert str(stopped.value) == (f"stopped by SIGTERM during the last step of the run in "
                                f"{tmp_path / 'run'}, which finished.")
