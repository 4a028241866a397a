"""Run directories: Orbax round trips, keeping the newest k, clear errors."""

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import transformers

import jaxlayer
from jaxlayer import assets, models
from jaxlayer.rl import checkpoint
from tests.sweep_fakes import REPO


def _state(scale):
  params = {"layers.1.mlp.up_proj.kernel": jnp.full((4, 3), scale),
            "final_norm.scale": jnp.arange(4.0) * scale}
  optimizer = {"opt_state": {"mu": jax.tree.map(jnp.zeros_like, params),
                             "count": jnp.asarray(7, jnp.int32)},
               "rng": jax.random.PRNGKey(3)}
  return params, optimizer


@pytest.mark.eight_devices
def test_round_trip_keeps_values_dtypes_and_shardings(tmp_path):
  mesh = models.make_mesh(2, 4, 1)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  params, optimizer = _state(1.5)
  params = {k: jax.device_put(v, sharding) for k, v in params.items()}
  saver = checkpoint.Checkpointer(tmp_path, keep=2)
  saver.save(5, params, optimizer, {"step": 5, "data_position": 40})
  restored, restored_opt, meta = saver.restore(5, params, optimizer)
  saver.close()
  assert meta == {"step": 5, "data_position": 40}
  for k in params:
    np.testing.assert_array_equal(restored[k], params[k])
    assert restored[k].sharding == sharding
  assert restored_opt["opt_state"]["count"].dtype == jnp.int32
  np.testing.assert_array_equal(restored_opt["rng"], optimizer["rng"])


def test_keeps_the_newest_k(tmp_path):
  saver = checkpoint.Checkpointer(tmp_path, keep=2)
  for step in (1, 2, 3):
    params, optimizer = _state(float(step))
    saver.save(step, params, optimizer, {"step": step, "data_position": 0})
  assert saver.all_steps() == [2, 3] and saver.latest_step() == 3
  params, _ = _state(0.0)
  np.testing.assert_array_equal(saver.restore_params(2, params)["final_norm.scale"],
                                np.arange(4.0) * 2)
  saver.close()
  with pytest.raises(ValueError, match="checkpoint.keep must be >= 1"):
    checkpoint.Checkpointer(tmp_path, keep=0)


def test_a_full_disk_while_saving_frees_the_unfinished_checkpoint_and_keeps_the_last(
    tmp_path, monkeypatch):
  from jaxlayer import paths
  from tests.test_paths import TENSORSTORE_DISK_FULL

  saver = checkpoint.Checkpointer(tmp_path, keep=2)
  saver.save(1, *_state(1.0), {"step": 1})
  unfinished = saver.directory / "2.orbax-checkpoint-tmp"

  def fills_the_disk(step, args):  # Orbax's save as a full disk stops it: mid-write
    (unfinished / "params").mkdir(parents=True)
    (unfinished / "params" / "chunk").write_bytes(b"\0" * 1024)
    raise ValueError(TENSORSTORE_DISK_FULL)

  monkeypatch.setattr(saver._manager, "save", fills_the_disk)
  with pytest.raises(paths.DiskFullError, match=re.escape(
      f"no space left on the device to write {saver.directory / '2'}: free space there")):
    saver.save(2, *_state(2.0), {"step": 2})
  assert not unfinished.exists()  # the space it held is free for the next attempt
  assert saver.all_steps() == [1]
  params, optimizer = _state(0.0)
  restored, _, meta = saver.restore(1, params, optimizer)
  saver.close()
  assert meta == {"step": 1}
  np.testing.assert_array_equal(restored["final_norm.scale"], np.arange(4.0))


def test_a_full_disk_in_orbaxs_writing_thread_logs_no_traceback(tmp_path, monkeypatch, caplog):
  """A real full disk stops Orbax's save in a thread of its own, which logged the error with
  its traceback (30 lines above `jaxlayer train`'s one-line error) before the save raised it."""
  from orbax.checkpoint._src.path import async_path

  from jaxlayer import paths

  async def full_disk(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

  saver = checkpoint.Checkpointer(tmp_path, keep=2)
  saver.save(1, *_state(1.0), {"step": 1})
  monkeypatch.setattr(async_path, "write_text", full_disk)  # the metadata written last
  with pytest.raises(paths.DiskFullError):
    saver.save(2, *_state(2.0), {"step": 2})
  saver.close()
  assert saver.all_steps() == [1]
  assert [record.getMessage() for record in caplog.records if record.exc_info] == []


@pytest.mark.parametrize("name", [checkpoint.CONFIG_FILE, checkpoint.RUN_FILE])
def test_a_run_file_cut_short_is_named_with_the_fix(tmp_path, name):
  """A machine that crashed while writing can leave a file of zero bytes: `jaxlayer train`,
  `export` and `eval` said only "Expecting value: line 1 column 1 (char 0)"."""
  for written in (checkpoint.CONFIG_FILE, checkpoint.RUN_FILE):
    (tmp_path / written).write_text("{}")
  (tmp_path / name).write_bytes(b"")
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path / name} cannot be read (Expecting value: line 1 column 1 (char 0)): it was cut "
      "short or damaged (a machine that crashed while writing it, a disk error). Put back a copy "
      "of it, or train in a new run_dir.")):
    checkpoint.read_run_files(tmp_path)


def test_a_bfloat16_checkpoint_restores_into_float32_master_copies(tmp_path):
  """Runs of bfloat16 models written before the float32 master copies saved their trained
  leaves and Adam moments in bfloat16; restored into today's float32 state they keep every
  value."""
  params, optimizer = _state(1.5)
  as_bf16 = lambda tree: jax.tree.map(
      lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
  old_params = {k: v + jnp.linspace(0, 1e-2, v.size).reshape(v.shape) for k, v in params.items()}
  old_optimizer = {**optimizer, "opt_state": {**optimizer["opt_state"],
                                              "mu": as_bf16(old_params)}}
  saver = checkpoint.Checkpointer(tmp_path)
  saver.save(4, as_bf16(old_params), as_bf16(old_optimizer), {"step": 4})
  restored, restored_opt, _ = saver.restore(4, params, optimizer)
  saver.close()
  for k, v in old_params.items():
    for value in (restored[k], restored_opt["opt_state"]["mu"][k]):
      assert value.dtype == jnp.float32
      np.testing.assert_array_equal(value, v.astype(jnp.bfloat16).astype(jnp.float32))
  assert restored_opt["opt_state"]["count"] == 7


def test_load_trained_model_errors(tmp_path, tiny_qwen2_dir, monkeypatch):
  from jaxlayer import evaluation

  with pytest.raises(FileNotFoundError, match="not a jaxlayer run directory"):
    checkpoint.load_trained_model(tmp_path)
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(tmp_path, config, str(tiny_qwen2_dir), {"final_norm.scale": (32,)})
  with pytest.raises(FileNotFoundError, match="no checkpoint yet \\(it saves every 10 steps\\)"):
    checkpoint.load_trained_model(tmp_path)
  config.checkpoint.every = 1
  checkpoint.write_run_files(tmp_path, config, str(tiny_qwen2_dir), {"final_norm.scale": (32,)})
  with pytest.raises(FileNotFoundError, match="no checkpoint yet \\(it saves every 1 step\\)"):
    checkpoint.load_trained_model(tmp_path)
  saver = checkpoint.Checkpointer(tmp_path)
  saver.save(3, {"final_norm.scale": jnp.full((32,), 2.0)}, _state(1.0)[1], {"step": 3})
  saver.close()
  with pytest.raises(ValueError, match=r"no checkpoint for step 4; available: \[3\]"):
    checkpoint.load_trained_model(tmp_path, step=4)
  read, reads = checkpoint.read_run_files, []
  monkeypatch.setattr(checkpoint, "read_run_files", lambda run_dir: reads.append(run_dir) or
                      read(run_dir))
  model, loaded = checkpoint.load_trained_model(tmp_path)
  assert reads == [tmp_path]  # its config.json and run.json are read once (they were 3 times)
  assert loaded == {"base_model": str(tiny_qwen2_dir), "step": 3, "trained": ["final_norm.scale"]}
  reads.clear()
  _, _, info = evaluation.load_model(str(tmp_path))
  assert reads == [str(tmp_path)]  # once too (they were 4 times)
  assert info == {"model": str(tmp_path), "kind": "run", **loaded, "dtype": "float32"}
  trained = models.named_params(model)
  np.testing.assert_array_equal(trained["final_norm.scale"], np.full(32, 2.0))
  base = models.named_params(models.from_pretrained(tiny_qwen2_dir)[0])
  np.testing.assert_array_equal(trained["embed.embedding"], base["embed.embedding"])


def test_run_json_names_the_jaxlayer_version_that_trained_the_run(tmp_path, monkeypatch):
  monkeypatch.setattr(jaxlayer, "__version__", "0.1.0.dev3")
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"}})
  checkpoint.write_run_files(tmp_path, config, str(assets.TINY_ARITH), {})
  assert checkpoint.read_run_files(tmp_path)[1]["jaxlayer_version"] == "0.1.0.dev3"


def test_a_resume_is_checked_on_what_grades_the_problems_and_older_records_as_they_were(
    tmp_path):
  """A code task's tests edited, its prompts and answers the same, resumed silently over
  problems graded otherwise. Now train_problems covers what grades them; a run.json written
  before it did is checked on its prompts and answers alone, as then."""
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"}})
  prompts, answers = ["Write add(a, b)."], [""]
  tested = checkpoint.problems_record(prompts, answers, [{"tests": ["assert add(1, 2) == 3"]}])
  retested = checkpoint.problems_record(prompts, answers, [{"tests": ["assert add(1, 2) == 4"]}])
  checkpoint.write_run_files(tmp_path, config, str(assets.TINY_ARITH), {}, problems=tested)
  checkpoint.check_problems(tmp_path, tested, step=1)
  with pytest.raises(ValueError, match=r"other training problems than the task gives now \(1 "
                     r"problem, what grades them changed \(a code task's tests, say\): .* "
                     r"step 1 .* would now be graded otherwise\. Resume with the data"):
    checkpoint.check_problems(tmp_path, retested, step=1)
  # The prompts changed as well as their tests: the problems are others, not only regraded.
  reworded = checkpoint.problems_record(["Write add(x, y)."], answers, [{"tests": []}])
  with pytest.raises(ValueError, match=r"\(1 problem, their prompts or answers changed: .* "
                     r"would now name others\."):
    checkpoint.check_problems(tmp_path, reworded, step=1)
  # The record of jaxlayer 1b22c5c, of these prompts and answers: its fingerprint reads the same.
  older = {"count": 1, "fingerprint": "adc1ad6e01490f92"}
  assert tested["fingerprint"] == older["fingerprint"]
  checkpoint.write_run_files(tmp_path, config, str(assets.TINY_ARITH), {}, problems=older)
  checkpoint.check_problems(tmp_path, retested, step=1)
  with pytest.raises(ValueError, match=r"\(1 problem, their prompts or answers changed: .* "
                     r"would now name others\."):
    checkpoint.check_problems(tmp_path, reworded, step=1)


def test_a_base_model_directory_whose_weights_changed_is_not_offered_as_the_runs(
    tmp_path, tiny_qwen2_dir):
  """The error for another model names the run's recorded base model directory as the one to
  pass only where that directory still holds the weights the run was trained on."""
  where = str(assets.TINY_ARITH)
  for recorded, advice in ((models.weights_fingerprint(where), f"That model is still in {where}"),
                           ("weights that are nowhere now", "Pass the model the run was trained "
                            "on, wherever it is now.")):
    run = {"base_model": where, "base_fingerprint": recorded}
    with pytest.raises(ValueError, match=re.escape(advice)):
      checkpoint.check_base_model(tmp_path, run, tiny_qwen2_dir)


def test_a_sweep_run_says_where_its_checkpoints_went_and_what_to_pass(tmp_path, tiny_qwen2_dir):
  """A single-block run of a sweep (SWEEP/runs/RUN: its result.json and its training run in
  train/) after the sweep removed its checkpoints; nothing is written into it."""
  from jaxlayer import cli, evaluation

  sweep_run = tmp_path / "sweep/runs/layer01-seed0"
  train_dir = sweep_run / "train"
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(train_dir, config, str(tiny_qwen2_dir), {"final_norm.scale": (32,)})
  (sweep_run / "result.json").write_text("{}")
  removed = (f"Run {train_dir} has no checkpoint: the sweep removed them once the run was scored "
             "(it keeps only full RL's unless --config.sweep.keep_checkpoints=True). To get "
             "these weights, sweep these blocks into a new --config.sweep.dir with that option.")
  inside = (f"{sweep_run} is a sweep's run directory, not a run directory: its training run is "
            f"{train_dir}; pass that.")
  sweep_dir = tmp_path / "sweep"
  (sweep_dir / "manifest.json").write_text("{}")
  whole = (f"{sweep_dir} is a sweep directory, not a run directory: the training run of each of "
           f"its runs is {sweep_dir}/runs/RUN/train; pass one of those.")
  written = sorted(tmp_path.rglob("*"))
  for load, path, message in ((checkpoint.load_trained_model, train_dir, removed),
                              (evaluation.load_model, train_dir, removed),
                              (checkpoint.load_trained_model, sweep_run, inside),
                              (evaluation.load_model, sweep_run, inside),
                              (checkpoint.load_trained_model, sweep_dir, whole),
                              (evaluation.load_model, sweep_dir, whole)):
    with pytest.raises(FileNotFoundError) as error:
      load(path)
    assert str(error.value) == message
  # Nor does a new training run start beside the sweep's files.
  for path, message in ((sweep_run, inside), (sweep_dir, whole)):
    with pytest.raises(SystemExit) as error:
      cli.main(["train", "--config", str(REPO / "configs" / "grpo_arithmetic.py"),
                f"--config.model.path={tiny_qwen2_dir}", f"--config.run_dir={path}"])
    assert str(error.value) == f"jaxlayer train: run_dir={str(path)!r}: {message}"
  for argv in (["export", "--run", str(train_dir), "--out", str(tmp_path / "hf")],
               ["generate", "--model", str(train_dir), "--prompt", "1+1="]):
    with pytest.raises(SystemExit) as error:
      cli.main(argv)
    assert str(error.value) == f"jaxlayer {argv[0]}: {removed}"
  assert sorted(tmp_path.rglob("*")) == written  # no checkpoints directory made
  (sweep_run / "result.json").unlink()  # a run the sweep has not scored yet
  with pytest.raises(FileNotFoundError, match="no checkpoint yet \\(it saves every 10 steps\\)"):
    checkpoint.load_trained_model(train_dir)


def test_a_run_whose_base_model_moved_loads_with_base_model(tmp_path, tiny_qwen2_dir):
  """A run copied to another machine: its base model is not where run.json says. The error
  names the way out; --base-model (CLI) / base_model= loads it from its new place, and a model
  that does not fit the run is refused before anything is merged."""
  from jaxlayer import cli

  base = tmp_path / "base"
  shutil.copytree(tiny_qwen2_dir, base)
  run = tmp_path / "run"
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  trained = jnp.full((32,), 2.0)
  checkpoint.write_run_files(run, config, str(base), {"final_norm.scale": trained.shape})
  saver = checkpoint.Checkpointer(run)
  saver.save(3, {"final_norm.scale": trained}, _state(1.0)[1], {"step": 3})
  saver.close()
  moved = base.rename(tmp_path / "moved")
  with pytest.raises(FileNotFoundError, match=f"Run {run} was trained on the base model in "
                     f"{base} \\(its run.json\\), which is not there any more: give the base "
                     "model's directory or hub id with --base-model"):
    checkpoint.load_trained_model(run)
  model, _ = checkpoint.load_trained_model(run, base_model=str(moved))
  np.testing.assert_array_equal(models.named_params(model)["final_norm.scale"], trained)
  cli.main(["export", "--run", str(run), "--base-model", str(moved), "--out",
            str(tmp_path / "hf")])
  exported = models.named_params(models.from_pretrained(tmp_path / "hf")[0])
  np.testing.assert_array_equal(exported["final_norm.scale"], trained)
  # Another model is refused, whether its shapes fit (one weight changed) or not (the shipped
  # model is wider): its weights' fingerprint is not the one run.json recorded.
  other, _ = models.from_pretrained(moved)
  scale = other.layers[0].mlp_norm.scale
  scale.set_value(scale.get_value().at[0].add(1e-3))
  models.save_pretrained(other, tmp_path / "other")
  for wrong in (tmp_path / "other", assets.TINY_ARITH):
    with pytest.raises(SystemExit, match=f"jaxlayer export: The model in {wrong} is not the base "
                       f"model run {run} was trained on \\({base} when it was written\\): its "
                       "weights differ"):
      cli.main(["export", "--run", str(run), "--base-model", str(wrong), "--out",
                str(tmp_path / "hf3")])
  # A run written before run.json held the fingerprint: the shapes are checked.
  run_file = json.loads((run / checkpoint.RUN_FILE).read_text())
  del run_file["base_fingerprint"]
  (run / checkpoint.RUN_FILE).write_text(json.dumps(run_file))
  with pytest.raises(SystemExit, match=r"jaxlayer export: The base model .* does not fit run .* "
                     r"\(final_norm.scale: \(32,\) in the run, \(128,\) in the model; 1 of its 1 "
                     r"trained parameters differ\)"):
    cli.main(["export", "--run", str(run), "--base-model", str(assets.TINY_ARITH), "--out",
              str(tmp_path / "hf3")])
  assert not (tmp_path / "hf3").exists()


def test_a_model_directory_without_config_json_is_a_clear_error(tmp_path, tiny_qwen2_dir):
  """A base model directory that lost its config.json (an incomplete copy): --base-model of
  export and generate, and a sweep's model.path, used to stop with Python's bare
  "[Errno 2] No such file or directory"; they name what is missing and what to pass."""
  from jaxlayer import cli
  from jaxlayer.sweep import runner

  run = tmp_path / "run"
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(run, config, str(tiny_qwen2_dir), {"final_norm.scale": (32,)})
  saver = checkpoint.Checkpointer(run)
  saver.save(3, {"final_norm.scale": jnp.ones(32)}, _state(1.0)[1], {"step": 3})
  saver.close()
  incomplete = tmp_path / "incomplete"
  shutil.copytree(tiny_qwen2_dir, incomplete)
  (incomplete / "config.json").unlink()
  message = (f"No config.json in {incomplete}: a Hugging Face model directory holds its "
             "config.json beside the weights; pass the whole model directory (copy or download "
             "it again if files are missing) or a hub id.")
  for argv in (["export", "--run", str(run), "--out", str(tmp_path / "hf")],
               ["generate", "--model", str(run), "--prompt", "1+1="]):
    with pytest.raises(SystemExit) as error:
      cli.main([*argv, "--base-model", str(incomplete)])
    assert str(error.value) == f"jaxlayer {argv[0]}: {message}"
  with pytest.raises(FileNotFoundError) as error:
    runner.model_num_layers(str(incomplete))
  assert str(error.value) == message
  assert not (tmp_path / "hf").exists()


def test_export_into_the_base_model_is_refused_before_loading(tmp_path, tiny_qwen2_dir,
                                                             monkeypatch):
  """`--out BASE` used to answer "already holds a checkpoint; pass --overwrite", and with
  --overwrite loaded the model only to refuse to write over the checkpoint it came from."""
  from jaxlayer import cli

  base = tmp_path / "base"
  shutil.copytree(tiny_qwen2_dir, base)
  run = tmp_path / "run"
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(run, config, str(base), {"final_norm.scale": (32,)})
  saver = checkpoint.Checkpointer(run)
  saver.save(3, {"final_norm.scale": jnp.full((32,), 2.0)}, _state(1.0)[1], {"step": 3})
  saver.close()
  before = {path.name: path.read_bytes() for path in base.iterdir()}
  monkeypatch.setattr(checkpoint, "load_trained_model", lambda *a, **k: pytest.fail("loaded"))
  for out, overwrite in ((base, []), (tmp_path / "." / "base", ["--overwrite"])):
    with pytest.raises(SystemExit, match=re.escape(
        f"jaxlayer export: {out} is the run's base model, which the export is made from: "
        "choose another directory.")):
      cli.main(["export", "--run", str(run), "--out", str(out), *overwrite])
  assert {path.name: path.read_bytes() for path in base.iterdir()} == before


def _run_of(tiny_qwen2_dir, run: Path, trained: dict, dtype: str = "float32") -> None:
  """A run of tiny_qwen2_dir in `dtype` whose checkpoint 3 holds `trained`."""
  config = ml_collections.ConfigDict({"model": {"dtype": dtype},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(run, config, str(tiny_qwen2_dir),
                             {path: value.shape for path, value in trained.items()})
  saver = checkpoint.Checkpointer(run)
  saver.save(3, trained, _state(1.0)[1], {"step": 3})
  saver.close()


def test_export_in_bfloat16_or_float16_says_how_many_trained_weights_rounding_undid(
    tmp_path, tiny_qwen2_dir, capsys):
  """`--dtype bfloat16` rounds the float32 trained leaves: updates below bfloat16's spacing
  vanish, and the export said nothing (a few RL steps at lr 1e-5 left 79% of a block as in the
  base). The weights the run did not change are no loss: they counted as undone by rounding."""
  from jaxlayer import cli

  run = tmp_path / "run"
  base = models.named_params(models.from_pretrained(tiny_qwen2_dir)[0])["final_norm.scale"]
  # Scales near 1, where bfloat16's spacing is 2^-7: of the half the run changed, half move far
  # below it, half well above.
  trained = base + jnp.array([1e-6, 0.1, 0.0, 0.0] * 8)
  _run_of(tiny_qwen2_dir, run, {"final_norm.scale": trained})
  export = ["export", "--run", str(run), "--out"]
  cli.main([*export, str(tmp_path / "bf16"), "--dtype", "bfloat16"])
  assert capsys.readouterr().out == (
      f"wrote {tmp_path / 'bf16'}: step 3 of {run}\n"
      "in bfloat16, 50.0% of the 16 weights the run changed (of 32 trained) are their base "
      "model's values again; --dtype float32 writes them as trained\n")
  cli.main([*export, str(tmp_path / "f32")])
  assert capsys.readouterr().out == f"wrote {tmp_path / 'f32'}: step 3 of {run}\n"
  # float16's spacing near 1 is 2^-10: the same half of the updates vanish.
  cli.main([*export, str(tmp_path / "f16"), "--dtype", "float16"])
  assert capsys.readouterr().out == (
      f"wrote {tmp_path / 'f16'}: step 3 of {run}\n"
      "in float16, 50.0% of the 16 weights the run changed (of 32 trained) are their base "
      "model's values again; --dtype float32 writes them as trained\n")
  f16 = dict(models.stored_tensors(tmp_path / "f16", ["model.norm.weight"]))
  np.testing.assert_array_equal(f16["model.norm.weight"], np.asarray(trained).astype(np.float16))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_of_a_run_that_changed_nothing_says_so_not_that_rounding_undid_it(
    tmp_path, tiny_qwen2_dir, capsys, dtype):
  """A run without reward signal: its export in bfloat16 said "100% of the trained weights are
  their base model's values again; --dtype float32 writes them as trained", which wrote the
  same values. (A bfloat16 run of this float32 model starts from its weights rounded.)"""
  from jaxlayer import cli

  run = tmp_path / "run"
  base = models.named_params(models.from_pretrained(tiny_qwen2_dir, dtype=dtype)[0])
  trained = {path: base[path].astype(jnp.float32)
             for path in ("final_norm.scale", "layers.0.attn.k_proj.kernel")}
  _run_of(tiny_qwen2_dir, run, trained, dtype)
  cli.main(["export", "--run", str(run), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"])
  total = sum(value.size for value in trained.values())
  assert capsys.readouterr().out == (
      f"wrote {tmp_path / 'bf16'}: step 3 of {run}\n"
      f"the run changed none of its {total:,} trained weights: they are its base model's values "
      "in any --dtype\n")


def test_counting_what_rounding_undid_reads_one_base_tensor_at_a_time(tmp_path, tiny_qwen2_dir,
                                                                       monkeypatch):
  """The count after a bfloat16 export read every trained tensor of the base into host memory
  (in float32) before counting any: ~28 GB for a full-parameter run of a 7B model. Now each is
  read as it is counted."""
  base = models.named_params(models.from_pretrained(tiny_qwen2_dir)[0])
  trained = {path: base[path] + 0.5 for path in ("final_norm.scale", "layers.0.attn.k_proj.kernel")}
  _run_of(tiny_qwen2_dir, tmp_path / "run", trained)
  events = []  # in order: the base tensors read, "counted" after each count
  read, count = models.stored_tensors, checkpoint._rounded_back_and_changed

  def reading(*args):
    for name, tensor in read(*args):
      events.append(name)
      yield name, tensor

  def counting(*args):
    events.append("counted")
    return count(*args)

  monkeypatch.setattr(models, "stored_tensors", reading)
  monkeypatch.setattr(checkpoint, "_rounded_back_and_changed", counting)
  total = sum(value.size for value in trained.values())
  assert checkpoint.trained_weights_at_base(tmp_path / "run", 3, "bfloat16") == (0, total, total)
  assert events == ["model.norm.weight", "counted", "model.layers.0.self_attn.k_proj.weight",
                    "counted"]


def _run_training_the_final_norm(run: Path) -> tuple[Path, int]:
  """A run of the shipped model that trains final_norm.scale, with checkpoints at steps 3 and 5
  holding the step number in every weight; returns (run, hidden size)."""
  hidden = json.loads((Path(assets.TINY_ARITH) / "config.json").read_text())["hidden_size"]
  config = ml_collections.ConfigDict({"model": {"dtype": "float32"},
                                      "checkpoint": {"keep": 2, "every": 10}})
  checkpoint.write_run_files(run, config, str(assets.TINY_ARITH), {"final_norm.scale": (hidden,)})
  saver = checkpoint.Checkpointer(run)
  for step in (3, 5):
    saver.save(step, {"final_norm.scale": jnp.full((hidden,), float(step))}, _state(1.0)[1],
               {"step": step})
  saver.close()
  return run, hidden


def test_export_replaces_only_a_previous_export_and_names_the_step(tmp_path, capsys, monkeypatch):
  """export used to write into any directory (mixing the checkpoint into unrelated files), keep
  the files of a previous export that the new one lacks (a stale generation_config.json), and
  not say which checkpoint it exported."""
  from jaxlayer import cli

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  out = tmp_path / "hf"
  export = ["export", "--run", str(run), "--out", str(out)]
  with pytest.raises(SystemExit, match=re.escape(f"jaxlayer export: {tmp_path / 'nope'} does not "
                                                 "exist: pass the run_dir a `jaxlayer train` "
                                                 "run wrote.")):
    cli.main(["export", "--run", str(tmp_path / "nope"), "--out", str(out)])
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  with monkeypatch.context() as patched:
    patched.setattr(checkpoint, "load_trained_model", lambda *a, **k: pytest.fail("loaded"))
    for overwrite in ([], ["--overwrite"]):
      with pytest.raises(SystemExit, match=re.escape(
          f"jaxlayer export: {out} holds files other than a Hugging Face checkpoint's "
          "(notes.txt): give a new or empty directory.")):
        cli.main(export + overwrite)
  assert [(p.name, p.read_text()) for p in out.iterdir()] == [("notes.txt", "mine")]
  (out / "notes.txt").unlink()

  cli.main(export + ["--step", "3"])
  assert capsys.readouterr().out == f"wrote {out}: step 3 of {run}\n"
  fresh = sorted(p.name for p in out.iterdir())
  (out / "generation_config.json").write_text("{}")  # as an export of another base left it
  cli.main(export + ["--overwrite"])
  assert capsys.readouterr().out == f"wrote {out}: step 5 of {run}\n"
  assert sorted(p.name for p in out.iterdir()) == fresh
  assert "generation_config.json" not in fresh
  exported = models.named_params(models.from_pretrained(out)[0])
  np.testing.assert_array_equal(exported["final_norm.scale"], np.full(hidden, 5.0))


def test_an_export_into_a_directory_another_process_writes_is_refused(tmp_path, capsys,
                                                                       held_by_another_process):
  """Two exports into one --out interleaved their files: the second, with --overwrite, removed
  the first one's config.json and shards as it wrote its own."""
  from jaxlayer import cli

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  out = tmp_path / "hf"
  export = ["export", "--run", str(run), "--out", str(out)]
  cli.main(export + ["--step", "3"])
  assert not (out / ".jaxlayer.lock").exists()  # an export hands over no lock file
  holder = held_by_another_process(out)  # as an export writing there holds it
  before = {path.name: path.read_bytes() for path in out.iterdir()}
  for overwrite in ([], ["--overwrite"]):
    with pytest.raises(SystemExit, match=re.escape(
        f"jaxlayer export: {out} is in use: jaxlayer process {holder.pid} on "
        f"{socket.gethostname()} is writing there (it holds {out / '.jaxlayer.lock'}). Wait for "
        "it to finish or stop it, or choose another --out.")):
      cli.main(export + overwrite)
  assert {path.name: path.read_bytes() for path in out.iterdir()} == before
  holder.kill()
  holder.wait()
  cli.main(export + ["--overwrite"])  # takes the lock file the killed holder left
  assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}: step 5 of {run}"
  assert not (out / ".jaxlayer.lock").exists()
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
  np.testing.assert_array_equal(reloaded.model.norm.weight.detach().numpy(), np.full(hidden, 5.0))


class _Killed(BaseException):
  """A SIGKILL: nothing after it runs, no handler sees it."""


def test_an_export_killed_midway_never_looks_whole_and_the_same_command_replaces_it(
    tmp_path, monkeypatch):
  """An overwrite killed while moving its files into place used to leave the previous export's
  config.json beside some of the new files: a directory that loads as a checkpoint, of neither
  step."""
  from jaxlayer import cli
  from jaxlayer.models import hub

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  out = tmp_path / "hf"
  export = ["export", "--run", str(run), "--out", str(out)]
  cli.main(export + ["--step", "3"])
  replace = os.replace

  def killed_at_the_last_file(source, target):
    if Path(target).name == "config.json":
      raise _Killed
    replace(source, target)

  with monkeypatch.context() as patched:
    patched.setattr(hub.os, "replace", killed_at_the_last_file)
    with pytest.raises(_Killed):
      cli.main(export + ["--overwrite"])
  assert (out / "model.safetensors").is_file() and not (out / "config.json").exists()
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer export: {out} already holds an export that did not finish (it has no "
      "config.json, which is written last); pass overwrite=True (--overwrite) to replace it")):
    cli.main(export)
  cli.main(export + ["--overwrite"])
  exported = models.named_params(models.from_pretrained(out)[0])
  np.testing.assert_array_equal(exported["final_norm.scale"], np.full(hidden, 5.0))


def test_the_staging_directory_a_killed_export_left_goes_with_the_next_export(tmp_path,
                                                                             monkeypatch,
                                                                             dead_pid):
  """An export killed while writing (SIGKILL: no cleanup runs) left its staging directory in
  --out, as large as the checkpoint, and no later export removed it. Its name carries its
  process's mark (paths.marked): the next export, with no --overwrite needed, removes it once
  that process has ended, and leaves a staging directory of a process at work or of another
  host."""
  from jaxlayer import cli
  from jaxlayer.models import hub

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  out = tmp_path / "hf"
  export = ["export", "--run", str(run), "--out", str(out)]

  def killed_after_writing(*args, **kwargs):
    save_file(*args, **kwargs)
    raise _Killed

  save_file = hub.save_file
  with monkeypatch.context() as patched:
    patched.setattr(hub, "save_file", killed_after_writing)
    patched.setattr(hub.shutil, "rmtree", lambda *a, **k: None)  # what SIGKILL skips
    with pytest.raises(_Killed):
      cli.main(export)
  [left] = out.glob(".jaxlayer-staging-*")
  mark = f"{os.getpid()}@{socket.gethostname()}."
  assert left.name.startswith(f".jaxlayer-staging-{mark}")
  assert (left / "model.safetensors").is_file()
  left.rename(out / left.name.replace(f"{os.getpid()}@", f"{dead_pid}@"))  # its process ended
  others = [out / f".jaxlayer-staging-{mark}x2",  # a save into hf at work
            out / f".jaxlayer-staging-{dead_pid}@other-host.x3"]  # cannot be asked
  for other in others:
    other.mkdir()
  cli.main(export)
  assert sorted(out.glob(".jaxlayer-staging-*")) == sorted(others)
  exported = models.named_params(models.from_pretrained(out)[0])
  np.testing.assert_array_equal(exported["final_norm.scale"], np.full(hidden, 5.0))


@pytest.mark.parametrize("first_write", ["making --out", "the staging directory", "the weights"])
def test_an_export_onto_a_full_disk_says_so_and_leaves_nothing(tmp_path, monkeypatch,
                                                               first_write):
  """On a full disk an export stopped with a traceback of OSError [Errno 28] from its lock
  (making --out, or writing who holds the lock into --out/.jaxlayer.lock) or from making its
  staging directory. The lock holds without that line, and the export says which disk is full,
  as when its weights do not fit."""
  from jaxlayer import cli, locks
  from jaxlayer.models import hub

  run, _ = _run_training_the_final_norm(tmp_path / "run")
  out = tmp_path / "hf"
  write_text, mkdir = Path.write_text, Path.mkdir

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def writing_the_lock_on_a_full_disk(path, *args, **kwargs):
    return (no_space if path.name == locks.LOCK_FILE else write_text)(path, *args, **kwargs)

  def making_out_on_a_full_disk(path, *args, **kwargs):
    return (no_space if path == out else mkdir)(path, *args, **kwargs)

  monkeypatch.setattr(Path, "write_text", writing_the_lock_on_a_full_disk)
  if first_write == "making --out":
    monkeypatch.setattr(Path, "mkdir", making_out_on_a_full_disk)
  else:
    out.mkdir()
  if first_write == "the staging directory":
    monkeypatch.setattr(hub.tempfile, "mkdtemp", no_space)
  monkeypatch.setattr(hub, "save_file", no_space)
  with pytest.raises(SystemExit) as error:
    cli.main(["export", "--run", str(run), "--out", str(out)])
  assert str(error.value) == (
      f"jaxlayer export: no space left on the device to write {out}: free space there (or move "
      "the directory to a larger disk) and run the same command again; the files written before "
      "are intact.")
  if first_write == "making --out":
    assert not out.exists()
  else:
    assert list(out.iterdir()) == []  # neither the lock file nor the staging directory stays


OTHER_FILE_SYSTEM = Path("/dev/shm")  # a tmpfs on Linux


@pytest.mark.skipif(not OTHER_FILE_SYSTEM.is_dir(), reason="no /dev/shm")
def test_an_export_into_a_link_to_another_file_system_is_written_there(tmp_path):
  """--out a link to another disk (or a mount point, as a container's volume is) stopped with
  "[Errno 18] Invalid cross-device link": the files were staged beside --out, on the file system
  of its parent, from which they cannot be renamed into place; an --overwrite had removed the
  previous export's config.json by then."""
  from jaxlayer import cli

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  with tempfile.TemporaryDirectory(dir=OTHER_FILE_SYSTEM) as other_disk:
    if os.stat(other_disk).st_dev == os.stat(tmp_path).st_dev:
      pytest.skip(f"{OTHER_FILE_SYSTEM} is on the file system of {tmp_path}")
    out = tmp_path / "hf"
    out.symlink_to(other_disk)
    export = ["export", "--run", str(run), "--out", str(out)]
    cli.main(export + ["--step", "3"])
    cli.main(export + ["--overwrite"])
    assert sorted(path.name for path in Path(other_disk).iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    np.testing.assert_array_equal(reloaded.model.norm.weight.detach().numpy(),
                                  np.full(hidden, 5.0))


def test_a_half_deleted_checkpoint_is_named_with_the_fix_and_the_previous_one_restores(tmp_path):
  """Orbax deletes an old checkpoint (checkpoint.keep) file by file: a run killed meanwhile
  left a step directory that Orbax still lists, whose restore was a KeyError traceback."""
  saver = checkpoint.Checkpointer(tmp_path, keep=3)
  for step in (1, 2):
    saver.save(step, *_state(float(step)), {"step": step})
  shutil.rmtree(saver.directory / "2" / "params")  # the deletion, cut short
  params, optimizer = _state(0.0)
  assert saver.latest_step() == 2
  with pytest.raises(ValueError, match=re.escape(
      f"checkpoint {saver.directory / '2'} cannot be read (") + ".*" + re.escape(
      "delete that directory: the run then goes on from checkpoint 1.")):
    saver.restore(2, params, optimizer)
  shutil.rmtree(saver.directory / "2")  # as the message says
  saver.close()
  saver = checkpoint.Checkpointer(tmp_path, keep=3)
  restored, _, meta = saver.restore(saver.latest_step(), params, optimizer)
  saver.close()
  assert meta == {"step": 1}
  np.testing.assert_array_equal(restored["final_norm.scale"], np.arange(4.0))


def test_a_damaged_checkpoint_is_named_with_the_array_it_could_not_read(tmp_path):
  """The reason came with TensorStore's spec dump, cut after 300 characters, the cause and the
  array lost in it ("See full TensorStore details: <bound method pybind11_... of TensorStore({",
  "[tensorstore_spec='{...")."""
  saver = checkpoint.Checkpointer(tmp_path, keep=3)
  for step in (1, 2):
    saver.save(step, *_state(float(step)), {"step": step})
  for data in (saver.directory / "2" / "params").rglob("d/*"):  # a disk error
    data.write_bytes(data.read_bytes()[:16])
  with pytest.raises(ValueError) as error:
    saver.restore(2, *_state(0.0))
  saver.close()
  assert re.fullmatch(
      re.escape(f"checkpoint {saver.directory / '2'} cannot be read (") + r"[^\n]{10,310}; "
      r"array [\w.]+" + re.escape(
          "). If a process was killed while writing or deleting it, or the disk is damaged, "
          "delete that directory: the run then goes on from checkpoint 1."), str(error.value))
  assert "TensorStore" not in str(error.value) and "tensorstore_spec" not in str(error.value)


def test_an_export_of_a_checkpoint_the_training_deletes_meanwhile_says_so(tmp_path, monkeypatch):
  """An export while the run trains on: the checkpoint it chose was deleted (checkpoint.keep)
  while the base model loaded, and the error told the user to delete that directory, gone
  already, since "it is the run's only checkpoint, so the run then starts anew"."""
  from jaxlayer import cli

  run, hidden = _run_training_the_final_norm(tmp_path / "run")
  load = models.from_pretrained

  def loading_while_the_run_trains(*args, **kwargs):
    training = checkpoint.Checkpointer(run, keep=2, writer=True)
    for step in (7, 9):  # the checkpoints of steps 3 and 5 go
      training.save(step, {"final_norm.scale": jnp.full((hidden,), float(step))},
                    _state(1.0)[1], {"step": step})
    training.close()
    return load(*args, **kwargs)

  monkeypatch.setattr(models, "from_pretrained", loading_while_the_run_trains)
  with pytest.raises(SystemExit) as error:
    cli.main(["export", "--run", str(run), "--out", str(tmp_path / "hf")])
  assert str(error.value) == (
      f"jaxlayer export: checkpoint {run / 'checkpoints' / '5'} was deleted while it was being "
      "read: a run still training there keeps only its newest checkpoints (checkpoint.keep). Try "
      "again, which takes the latest one, or pass the step of one it keeps.")
  assert not (tmp_path / "hf").exists()


def test_the_training_deletes_an_unfinished_checkpoint_a_killed_run_left_and_readers_do_not(
    tmp_path):
  """Orbax deleted one only when its step was saved again: a run resumed with another
  checkpoint.every kept a checkpoint's worth of disk in it for good."""
  saver = checkpoint.Checkpointer(tmp_path, writer=True)
  saver.save(1, *_state(1.0), {"step": 1})
  saver.close()
  unfinished = tmp_path / checkpoint.CHECKPOINT_DIR / "2.orbax-checkpoint-tmp"
  (unfinished / "params").mkdir(parents=True)  # what a SIGKILL while saving step 2 leaves
  (unfinished / "params" / "chunk").write_bytes(b"\0" * 1024)
  reader = checkpoint.Checkpointer(tmp_path)
  assert reader.all_steps() == [1]
  reader.close()
  assert unfinished.is_dir()  # perhaps a running training's checkpoint in the making
  writer = checkpoint.Checkpointer(tmp_path, writer=True)
  # Gone once the writer is made, not in a thread of Orbax's that could outlive the process.
  assert not unfinished.exists()
  writer.save(3, *_state(3.0), {"step": 3})
  writer.close()
  assert not unfinished.exists()
  assert sorted(os.listdir(tmp_path / checkpoint.CHECKPOINT_DIR)) == ["1", "3"]


def test_a_training_that_saved_nothing_leaves_no_checkpoints_directory(tmp_path):
  """A run that failed before its first checkpoint (a missing data file) left an empty
  checkpoints/ in its run directory. A directory holding anything is kept."""
  writer = checkpoint.Checkpointer(tmp_path, writer=True)
  writer.close()
  assert not (tmp_path / checkpoint.CHECKPOINT_DIR).exists()
  writer = checkpoint.Checkpointer(tmp_path, writer=True)
  (tmp_path / checkpoint.CHECKPOINT_DIR / "notes.txt").write_text("mine")
  writer.close()
  assert (tmp_path / checkpoint.CHECKPOINT_DIR / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("found", ["empty directory", "link to another disk"])
def test_a_training_that_saved_nothing_keeps_a_checkpoints_directory_it_found(tmp_path, found):
  """checkpoints/ made by the user (a link to a bigger disk, an empty directory) is theirs: a run
  that failed before its first checkpoint raised NotADirectoryError from rmdir on the link
  (hiding the run's own error), or removed the user's empty directory."""
  directory = tmp_path / "run" / checkpoint.CHECKPOINT_DIR
  directory.parent.mkdir()
  if found == "empty directory":
    directory.mkdir()
  else:
    (tmp_path / "big_disk").mkdir()
    directory.symlink_to(tmp_path / "big_disk")
  writer = checkpoint.Checkpointer(tmp_path / "run", writer=True)
  writer.close()
  assert directory.is_dir()
  assert directory.is_symlink() == (found == "link to another disk")
