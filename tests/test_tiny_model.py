"""The shipped tiny model (jaxlayer/assets/tiny-arith) and the script that makes it."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from jaxlayer import evaluation, models, tasks

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "jaxlayer" / "assets" / "tiny-arith"


def _load_script():
  spec = importlib.util.spec_from_file_location("make_tiny_model",
                                                ROOT / "scripts" / "make_tiny_model.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_shipped_model_is_small_and_loads_in_transformers_and_jaxlayer_alike():
  size = sum(f.stat().st_size for f in TINY.iterdir())
  assert size < 10 * 1024**2
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(TINY).eval()
  model, cfg = models.from_pretrained(TINY)
  assert cfg.model_type == "qwen2" and cfg.num_layers == 8
  tokenizer = transformers.AutoTokenizer.from_pretrained(TINY)
  ids = tokenizer(["37+45=", "12-45="])["input_ids"]
  for seq in ids:
    with torch.no_grad():
      reference = hf_model(torch.tensor([seq])).logits[0].numpy()
    logits = np.asarray(model(jnp.asarray([seq])))[0]
    assert np.linalg.norm(logits - reference) / np.linalg.norm(reference) <= 1e-5


def test_shipped_tokenizer_round_trips_text_and_agrees_with_the_config():
  tokenizer = transformers.AutoTokenizer.from_pretrained(TINY)
  assert type(tokenizer).__name__ == "Qwen2Tokenizer"  # what AutoTokenizer picks for qwen2
  for text in ["37+45=82", "0-99=-99\n5+5=10", " spaces  and\nnewlines\t!"]:
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
  cfg = models.ModelConfig.from_json_file(TINY / "config.json")
  assert cfg.hf_config["eos_token_id"] == tokenizer.eos_token_id
  assert cfg.vocab_size == len(tokenizer)


def test_shipped_model_has_partial_skill_on_the_test_split():
  model, _ = models.from_pretrained(TINY)
  tokenizer = models.load_tokenizer(TINY)
  result = evaluation.evaluate(model, tokenizer, tasks.get_task("arithmetic"), num_problems=500,
                               max_new_tokens=8, batch_size=250, progress=False)
  assert 0.2 <= result.scores["pass@1"] <= 0.6  # room for RL to improve, as issue 6 asks


def test_make_tiny_model_is_deterministic_per_seed(tmp_path):
  script = _load_script()
  for name in ("a", "b"):
    script.main(["--out", str(tmp_path / name), "--max-steps", "3", "--eval-every", "2",
                 "--batch-size", "16"])
  first = (tmp_path / "a" / "model.safetensors").read_bytes()
  assert first == (tmp_path / "b" / "model.safetensors").read_bytes()
  script.main(["--out", str(tmp_path / "c"), "--max-steps", "3", "--eval-every", "2",
               "--batch-size", "16", "--seed", "1"])
  assert first != (tmp_path / "c" / "model.safetensors").read_bytes()
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a")
  assert reloaded.config.eos_token_id == transformers.AutoTokenizer.from_pretrained(
      tmp_path / "a").eos_token_id
