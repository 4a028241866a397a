"""Models named by Hugging Face hub id, resolved offline from a local HF cache (the hub_model
fixture) by the real huggingface_hub.snapshot_download."""

from pathlib import Path

import pytest

from jaxlayer import cli, evaluation, models
from jaxlayer.models.hub import resolve_model_dir
from jaxlayer.rl import memory
from tests.sweep_fakes import REPO

CONFIG = str(REPO / "configs" / "grpo_arithmetic.py")


def test_a_hub_id_loads_from_its_snapshot_in_the_cache(hub_model):
  model, config = models.from_pretrained(hub_model)
  snapshot = Path(config.source_dir)
  assert snapshot.parent.name == "snapshots"
  assert snapshot.parent.parent.name == "models--tiny-org--tiny-arith"
  _, tokenizer, info = evaluation.load_model(hub_model)
  assert info == {"model": hub_model, "kind": "huggingface", "dtype": "float32"}
  assert tokenizer.decode(tokenizer("12+7=")["input_ids"]) == "12+7="
  assert model.config.num_layers == 8


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
