"""Models named by Hugging Face hub id, resolved offline from a local HF cache (the hub_model
fixture) by the real huggingface_hub.snapshot_download."""

import fnmatch
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlayer import assets, cli, evaluation, models
from jaxlayer.models.hub import hub_id_of_snapshot, resolve_model_dir
from jaxlayer.rl import checkpoint, memory
from jaxlayer.sweep import report, runner
from tests.sweep_fakes import REPO, FakeRL, make_config

CONFIG = str(REPO / "configs" / "grpo_arithmetic.py")


def test_a_hub_id_loads_from_its_snapshot_in_the_cache(hub_model):
  model, config = models.from_pretrained(hub_model)
  snapshot = Path(config.source_dir)
  assert snapshot.parent.name == "snapshots"
  assert snapshot.parent.parent.name == "models--tiny-org--tiny-arith"
  _, tokenizer, info = evaluation.load_model(hub_model)
  assert info == {"model": hub_model, "kind": "huggingface", "dtype": "float32",
                  "snapshot": str(snapshot)}  # the revision evaluated, for eval.json
  assert tokenizer.decode(tokenizer("12+7=")["input_ids"]) == "12+7="
  assert model.config.num_layers == 8


def test_only_a_snapshot_directory_of_the_cache_names_its_hub_id(hub_model):
  """huggingface_hub's cache holds a hub id's revisions in models--ORG--NAME/snapshots/REVISION;
  its refs/ and blobs/ beside them, or a directory inside a snapshot, are no model of a hub id."""
  snapshot = resolve_model_dir(hub_model)  # laid out by the real snapshot_download
  assert hub_id_of_snapshot(snapshot) == hub_model
  cached_repo = snapshot.parent.parent
  for path in (cached_repo / "refs" / "main", cached_repo / "blobs" / "0a1b", snapshot / "sub",
               cached_repo):
    assert hub_id_of_snapshot(path) is None, path


@pytest.mark.parametrize("removed, missing", [
    ("tokenizer.json", r"tokenizer \(tokenizer.json or vocab.json\)"),
    ("model.safetensors", r"weights \(model.safetensors or model.safetensors.index.json\)"),
    ("config.json", "config.json"),
], ids=["tokenizer", "weights", "config"])
def test_an_incomplete_snapshot_says_to_download_it_again(hub_model, removed, missing):
  snapshot = resolve_model_dir(hub_model)
  (snapshot / removed).unlink()
  with pytest.raises(FileNotFoundError, match=rf"snapshot of 'tiny-org/tiny-arith' \({snapshot}\) "
                     rf"lacks its {missing}: .* `hf download tiny-org/tiny-arith` \(online"):
    evaluation.load_model(hub_model)  # the model, then its tokenizer


def test_memory_sizes_a_hub_model_whose_snapshot_holds_its_config_alone(hub_model, capsys,
                                                                        monkeypatch):
  (resolve_model_dir(hub_model) / "model.safetensors").unlink()
  monkeypatch.setattr(memory, "device_limit", lambda: None)  # a CPU's: no device memory line
  cli.main(["memory", "--config", CONFIG, f"--config.model.path={hub_model}",
            "--config.mesh.num_devices=1"])
  assert capsys.readouterr().out.splitlines()[-1].startswith("total")
  with pytest.raises(FileNotFoundError, match="lacks its weights"):
    models.from_pretrained(hub_model)


def test_memory_of_a_hub_model_it_cannot_fetch_says_to_download_its_config_alone(hub_model):
  """It said to download the whole model (`hf download ID --local-dir DIR`), gigabytes of
  weights that memory never reads. (hub_model: a Hugging Face cache of the test's own.)"""
  with pytest.raises(SystemExit) as exited:
    cli.main(["memory", "--config", CONFIG, "--config.model.path=tiny-org/not-cached"])
  assert ("Download it first (`hf download tiny-org/not-cached --include config.json "
          "--local-dir DIR`) and pass DIR.") in str(exited.value)
  with pytest.raises(FileNotFoundError, match=r"\(`hf download tiny-org/not-cached --local-dir"):
    models.from_pretrained("tiny-org/not-cached")  # which needs the weights too


def _train(hub_id: str, run_dir: Path, steps: int) -> None:
  cli.main(["train", "--config", CONFIG, f"--config.model.path={hub_id}",
            f"--config.run_dir={run_dir}", f"--config.train.steps={steps}",
            "--config.train.batch_size=8", "--config.train.group_size=4",
            "--config.rollout.max_new_tokens=4", "--config.mesh.num_devices=1",
            "--config.logging.progress=false"])


def test_a_run_on_a_hub_id_resumes_and_exports_offline_after_the_cache_moved(
    hub_model, tmp_path, monkeypatch, capsys):
  """run.json records the snapshot the hub id resolved to; once that is gone (the cache moved,
  the run was copied to another machine), export and eval find the run's hub id again, and the
  same id resumes the run."""
  from huggingface_hub import constants

  run_dir = tmp_path / "run"
  _train(hub_model, run_dir, steps=2)
  snapshot = resolve_model_dir(hub_model)
  assert json.loads((run_dir / "run.json").read_text())["base_model"] == str(snapshot)
  assert json.loads((run_dir / "config.json").read_text())["model"]["path"] == hub_model
  _train(hub_model, run_dir, steps=3)  # the same hub id resumes the run
  assert "resuming from step 2 of 3" in capsys.readouterr().err

  moved = Path(constants.HF_HUB_CACHE).rename(tmp_path / "moved_cache")
  monkeypatch.setenv("HF_HUB_CACHE", str(moved))
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(moved))
  assert not snapshot.exists()
  cli.main(["export", "--run", str(run_dir), "--out", str(tmp_path / "export"),
            "--dtype", "bfloat16"])  # (which also compares the export with the base model)
  assert "are their base model's values again" in capsys.readouterr().out
  exported, _ = models.from_pretrained(tmp_path / "export")
  trained, _, info = evaluation.load_model(run_dir)
  assert info["base_model"] == hub_model
  exported_params = models.named_params(exported)
  for path, value in models.named_params(trained).items():
    np.testing.assert_array_equal(exported_params[path], value.astype(jnp.bfloat16), err_msg=path)
  _train(hub_model, run_dir, steps=4)  # and resumes, recording the snapshot in the moved cache
  assert "resuming from step 3 of 4" in capsys.readouterr().err
  assert json.loads((run_dir / "run.json").read_text())["base_model"] == str(
      moved / snapshot.relative_to(snapshot.parents[2]))


def test_a_dry_run_sweep_of_a_hub_model_fetches_no_weights(tmp_path, monkeypatch, capsys):
  """A dry run fetches the config and tokenizer it checks a 7B model's sweep with on a laptop,
  not gigabytes of weights; the sweep itself fetches them. (snapshot_download: a fake serving
  the shipped tiny model's files that the patterns name, which it records.)"""
  import huggingface_hub

  asked = []

  def snapshot_download(repo_id, allow_patterns):
    asked.append(allow_patterns)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir(exist_ok=True)
    for file in Path(assets.TINY_ARITH).iterdir():
      if any(fnmatch.fnmatch(file.name, pattern) for pattern in allow_patterns):
        shutil.copy(file, snapshot)
    return str(snapshot)

  def asked_for_weights() -> bool:
    return any(fnmatch.fnmatch("model.safetensors", pattern)
               for patterns in asked for pattern in patterns)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
  monkeypatch.setattr(report, "plot_contribution", lambda sweep, path: path.touch())
  monkeypatch.setattr(report, "plot_curves", lambda results, num_layers, title, path: path.touch())
  config = make_config(tmp_path / "sweep", layers="0,1", model_path="tiny-org/tiny-arith")
  runner.run_sweep(config, dry_run=True)  # the eval prompts and every run's plan checked
  assert asked and not asked_for_weights()
  assert not (tmp_path / "snapshot" / "model.safetensors").exists()
  fake = FakeRL({0: 14, 1: 26})
  runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval)
  assert asked_for_weights()  # (a sweep's manifest records its weights' fingerprint)
  (tmp_path / "snapshot" / "model.safetensors").unlink()
  capsys.readouterr()
  runner.run_sweep(config, dry_run=True)
  assert not (tmp_path / "snapshot" / "model.safetensors").exists()
  assert ("it resumes the sweep there, 4 of its 4 runs done (its base model compared by "
          "model.path alone: the weights were not read).") in capsys.readouterr().out


def test_memory_sizes_a_top_k_of_a_sweep_of_a_hub_model_whose_weights_are_not_fetched(
    hub_model, tmp_path, monkeypatch, capsys):
  """`jaxlayer memory` fetches a hub model's config.json alone; the check that a sweep ranked
  the blocks of this model needs its weights, and sizing does not."""
  monkeypatch.setattr(report, "plot_contribution", lambda sweep, path: path.touch())
  monkeypatch.setattr(report, "plot_curves", lambda results, num_layers, title, path: path.touch())
  fake = FakeRL({0: 14, 1: 26})
  sweep_dir = runner.run_sweep(make_config(tmp_path / "sweep", layers="0,1", model_path=hub_model),
                               train_fn=fake.train, eval_fn=fake.eval)
  (resolve_model_dir(hub_model) / "model.safetensors").unlink()
  monkeypatch.setattr(memory, "device_limit", lambda: None)  # a CPU's: no device memory line
  capsys.readouterr()
  sized = []
  for layers in (f"top1@{sweep_dir}", "layers.1"):  # (block 1 contributed most)
    cli.main(["memory", "--config", CONFIG, f"--config.model.path={hub_model}",
              f"--config.train.layers={layers}", "--config.mesh.num_devices=1"])
    sized.append(capsys.readouterr().out)
  assert sized[0] == sized[1] and sized[0].splitlines()[-1].startswith("total")


def test_a_hub_id_that_names_another_revision_now_points_at_the_runs_snapshot(hub_model,
                                                                              tmp_path):
  """The hub id moved on to a revision with other weights: resuming or loading the run with the
  id is refused, and the error names the snapshot the run was trained on, still in the cache."""
  trained_on = resolve_model_dir(hub_model)
  revised, _ = models.from_pretrained(trained_on)
  revised.final_norm.scale.set_value(revised.final_norm.scale.get_value() * 1.01)
  new_revision = trained_on.parent / ("f" * 40)
  models.save_pretrained(revised, new_revision)
  (trained_on.parents[1] / "refs" / "main").write_text(new_revision.name)
  assert resolve_model_dir(hub_model) == new_revision
  run = {"base_model": str(trained_on), "base_fingerprint": models.weights_fingerprint(trained_on)}
  with pytest.raises(ValueError, match=rf"The model in {new_revision} is not the base model .* "
                     rf"That model is still in {trained_on} \(a hub id now names another "
                     r"revision, say\): pass that directory."):
    checkpoint.check_base_model(tmp_path / "run", run, new_revision)
  # Replaced in place, it is not pointed at.
  (trained_on / "model.safetensors").unlink()
  shutil.copy(new_revision / "model.safetensors", trained_on / "model.safetensors")
  with pytest.raises(ValueError, match="Pass the model the run was trained on, wherever it is"):
    checkpoint.check_base_model(tmp_path / "run", run, new_revision)
