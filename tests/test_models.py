"""jaxlayer's Qwen decoder against transformers' PyTorch models (the reference)."""

import json
import os
import re
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors import safe_open

from jaxlayer import models
from jaxlayer.models import hub, qwen, sharding
from tests import hf_fixtures

# (model_type, overrides): tied / untied, GQA ratios 1, 2, 4, head_dim != hidden/heads,
# theta 1e4 / 1e6.
PARITY_CASES = [
    ("qwen2", dict(num_key_value_heads=2, rope_theta=1e4)),
    ("qwen2", dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=1e6)),
    ("qwen2", dict(num_key_value_heads=1, head_dim=16, rope_theta=1e6)),
    ("qwen3", dict(num_key_value_heads=2, head_dim=12, rope_theta=1e6)),
    ("qwen3", dict(num_key_value_heads=1, head_dim=8, tie_word_embeddings=True, rope_theta=1e4)),
    ("qwen3", dict(num_key_value_heads=4, head_dim=16, num_hidden_layers=3)),
]

LENGTHS = [9, 5, 1, 7]  # a batch of different lengths, left-padded to 9


def _left_padded_batch(vocab: int, seed: int = 0):
  rng = np.random.RandomState(seed)
  seqs = [rng.randint(0, vocab, n) for n in LENGTHS]
  width = max(LENGTHS)
  ids = np.zeros((len(seqs), width), np.int32)
  mask = np.zeros((len(seqs), width), np.int32)
  for row, seq in enumerate(seqs):
    ids[row, width - len(seq):] = seq
    mask[row, width - len(seq):] = 1
  return seqs, ids, mask


def _torch_logits(hf_model, seq) -> np.ndarray:
  with torch.no_grad():
    return hf_model(torch.tensor(seq)[None]).logits[0].float().numpy()


def _rel_err(a, b) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("model_type,overrides", PARITY_CASES)
def test_logits_match_transformers_on_left_padded_batch(tmp_path, model_type, overrides):
  config = hf_fixtures.tiny_config(model_type, **overrides)
  hf_model = hf_fixtures.random_hf_model(config)
  hf_model.save_pretrained(tmp_path)
  seqs, ids, mask = _left_padded_batch(config.vocab_size)
  # The reference runs each sequence alone, unpadded.
  reference = np.concatenate([_torch_logits(hf_model, s) for s in seqs])

  for dtype, tolerance in [("float32", 1e-5), ("bfloat16", 2e-2)]:
    model, cfg = models.from_pretrained(tmp_path, dtype=dtype)
    # Each forward pass compiled whole: op by op, they took most of this test.
    logits = np.asarray(jax.jit(lambda m: m(jnp.asarray(ids), jnp.asarray(mask)))(model))
    assert logits.shape == (*ids.shape, cfg.vocab_size) and logits.dtype == np.float32
    real_tokens = logits[mask.astype(bool)]
    assert _rel_err(real_tokens, reference) <= tolerance, dtype
    last = np.asarray(jax.jit(lambda m: m(jnp.asarray(ids), jnp.asarray(mask), num_last=3))(model))
    # The last block on 3 positions alone: other kernels (on a GPU), the same up to rounding.
    ulp = 1e-6 if dtype == "float32" else 2.0**-7
    np.testing.assert_allclose(last, logits[:, -3:], rtol=ulp, atol=ulp * np.abs(logits).max())


def test_config_reads_rope_theta_in_both_layouts():
  base = hf_fixtures.tiny_config("qwen2").to_dict()
  new_style = dict(base, rope_parameters={"rope_type": "default", "rope_theta": 12345.0})
  new_style.pop("rope_theta", None)
  old_style = {k: v for k, v in base.items() if k != "rope_parameters"}
  old_style["rope_theta"] = 54321.0
  assert models.ModelConfig.from_hf_dict(new_style).rope.theta == 12345.0
  assert models.ModelConfig.from_hf_dict(old_style).rope.theta == 54321.0


# config.json settings that transformers reads in its own way: (model_type, config overrides,
# keys dropped from config.json).
CONFIG_VARIANTS = [
    ("qwen3", dict(head_dim=128), ["head_dim"]),  # Qwen3Config's default head_dim is 128
    # A sliding window that no block uses: below max_window_layers, or layer_types all full.
    ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=2), []),
    ("qwen3", dict(use_sliding_window=True, sliding_window=4,
                   layer_types=["full_attention"] * 2), []),
    # An epsilon that moves the logits (the others' 1e-6 does not), in the q/k norms too.
    ("qwen3", dict(rms_norm_eps=0.3), []),
    ("qwen2", dict(hidden_act="swish"), []),  # SiLU's other name
    # Heads that do not divide hidden_size: head_dim is hidden_size // heads (10), q_proj's
    # output (30) narrower than the hidden size.
    ("qwen2", dict(num_attention_heads=3, num_key_value_heads=1), []),
]


@pytest.mark.parametrize("model_type,overrides,dropped", CONFIG_VARIANTS)
def test_config_variants_load_as_transformers_reads_them(tmp_path, model_type, overrides,
                                                         dropped):
  hf_fixtures.save_random_checkpoint(tmp_path, hf_fixtures.tiny_config(model_type, **overrides))
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                    if k not in dropped}))
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
  model, _ = models.from_pretrained(tmp_path)
  seq = np.arange(1, 12)  # longer than the sliding window
  logits = np.asarray(model(jnp.asarray(seq)[None]))[0]
  assert _rel_err(logits, _torch_logits(hf_model, seq)) <= 1e-5


@pytest.mark.parametrize("checkpoint,changes,message", [
    ("tiny_qwen2_dir", dict(hidden_act="gelu"), r"hidden_act 'gelu'.*\['silu', 'swish'\]"),
    ("tiny_qwen3_dir", dict(attention_bias=True), r"attention_bias=true.*qwen3"),
    ("tiny_qwen2_dir", dict(use_sliding_window=True, sliding_window=64,
                            layer_types=["full_attention", "sliding_attention"]),
     r"sliding_window=64, on blocks \[1\]\).*use_sliding_window=false"),
    ("tiny_qwen2_dir", dict(architectures=["Qwen2ForSequenceClassification"]),
     r"architectures \['Qwen2ForSequenceClassification'\].*Qwen2ForCausalLM"),
    ("tiny_qwen2_dir", dict(architectures="Qwen2ForSequenceClassification"),
     r"architectures \['Qwen2ForSequenceClassification'\].*Qwen2ForCausalLM"),
    ("tiny_qwen3_dir", dict(quantization_config={"quant_method": "fp8", "fmt": "e4m3"}),
     r"quantization_config \(quant_method 'fp8'\).*loads unquantized weights"),
])
def test_settings_jaxlayer_lacks_are_refused(checkpoint, changes, message, request, tmp_path):
  """Each would load and give other logits than transformers (or fail on the weights)."""
  directory = _edit_config(request.getfixturevalue(checkpoint), tmp_path / "edited", **changes)
  with pytest.raises(ValueError, match=message):
    models.from_pretrained(directory)


def test_quantized_weights_are_refused(tiny_qwen2_dir, tmp_path):
  """An int8 tensor (a quantized checkpoint that lost its quantization_config) loaded as its
  integers cast to float: other logits, silently."""
  from safetensors.torch import load_file, save_file

  directory = tmp_path / "int8"
  shutil.copytree(tiny_qwen2_dir, directory)
  tensors = load_file(directory / "model.safetensors")
  name = "model.layers.1.mlp.up_proj.weight"
  tensors[name] = (tensors[name] * 1000).to(torch.int8)
  save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match=re.escape(
      f"Tensor '{name}' (model.safetensors) is stored as I8, jaxlayer reads ['F32', 'BF16', "
      "'F16', 'F64']: these weights are quantized or damaged")):
    models.from_pretrained(directory)


def _with_extra_tensors(source, directory, extra):
  """A copy of the checkpoint in `source` whose weights also hold the tensors of `extra`."""
  from safetensors.torch import load_file, save_file

  shutil.copytree(source, directory)
  tensors = dict(load_file(directory / "model.safetensors"), **extra)
  save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
  return directory


@pytest.mark.parametrize("name", ["model.layers.1.mlp.down_proj.bias", "lm_head.bias"])
def test_a_decoder_tensor_without_a_place_is_refused(tiny_qwen2_dir, tmp_path, name):
  """transformers drops them with a warning (its Qwen has no such bias): both loaded a model
  other than the one the checkpoint was trained as, silently here."""
  directory = _with_extra_tensors(tiny_qwen2_dir, tmp_path / "extra", {name: torch.ones(32)})
  with pytest.raises(ValueError, match=re.escape(
      f"Checkpoint tensor '{name}' (model.safetensors) has no place in a qwen2 model: it "
      "belongs to another architecture")):
    models.from_pretrained(directory)


def test_tensors_outside_the_decoder_are_ignored(tiny_qwen2_dir, tmp_path):
  """A RoPE buffer that older transformers saved, and a value head (TRL's), load as without."""
  directory = _with_extra_tensors(tiny_qwen2_dir, tmp_path / "extra", {
      "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4),
      "v_head.summary.weight": torch.ones(1, 32)})
  model, _ = models.from_pretrained(directory)
  reference, _ = models.from_pretrained(tiny_qwen2_dir)
  ids = jnp.arange(1, 9)[None]
  np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(reference(ids)))


def test_weights_that_do_not_fit_are_refused_before_any_is_read(tiny_qwen3_dir, tmp_path,
                                                                  monkeypatch):
  """Missing tensors were named after the whole checkpoint had loaded (a shape only once its
  turn came), without a fix. A tied checkpoint whose config.json lost tie_word_embeddings
  (false by default) lacks lm_head.weight, which transformers initialises at random."""
  from safetensors.torch import load_file, save_file

  untied = _edit_config(tiny_qwen3_dir, tmp_path / "untied", tie_word_embeddings=False)
  wider = _edit_config(tiny_qwen3_dir, tmp_path / "wider", intermediate_size=48)
  cut = tmp_path / "cut"
  shutil.copytree(tiny_qwen3_dir, cut)
  tensors = load_file(cut / "model.safetensors")
  del tensors["model.norm.weight"], tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, cut / "model.safetensors", metadata={"format": "pt"})
  monkeypatch.setattr(hub, "_read_hf_tensors", None)  # reading a tensor fails
  for directory, message in (
      (untied, re.escape(
          f"The checkpoint in {untied} lacks 1 tensor of the model, ['lm_head.weight']: "
          "config.json's tie_word_embeddings=false asks for it: set it to true if the model "
          "ties its output layer to the embeddings")),
      (cut, re.escape(
          f"The checkpoint in {cut} lacks 2 tensors of the model, ['model.norm.weight', "
          "'model.layers.1.mlp.up_proj.weight']: the weights are incomplete or of a model other "
          "than config.json's: copy or download the checkpoint again.")),
      (wider, r"Tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape \(\d+, \d+\) but "
       r"config.json implies")):
    with pytest.raises(ValueError, match=message):
      models.from_pretrained(directory)


def test_tied_checkpoint_with_its_own_lm_head(tmp_path):
  """transformers 5 uses a stored lm_head.weight even with tie_word_embeddings=true: a copy of
  the embeddings loads, another matrix is refused."""
  from safetensors.torch import load_file, save_file

  config = hf_fixtures.tiny_config("qwen2", tie_word_embeddings=True)
  hf_model = hf_fixtures.random_hf_model(config)
  hf_model.save_pretrained(tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  seq = np.arange(7)
  for lm_head in (tensors["model.embed_tokens.weight"], torch.randn(97, 32)):
    save_file(dict(tensors, **{"lm_head.weight": lm_head.clone()}),
              tmp_path / "model.safetensors", metadata={"format": "pt"})
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(reference.lm_head.weight, lm_head)
  with pytest.raises(ValueError, match="lm_head.weight differs.*tie_word_embeddings to false"):
    models.from_pretrained(tmp_path)
  save_file(dict(tensors, **{"lm_head.weight": tensors["model.embed_tokens.weight"].clone()}),
            tmp_path / "model.safetensors", metadata={"format": "pt"})
  model, _ = models.from_pretrained(tmp_path)
  logits = np.asarray(model(jnp.asarray(seq)[None]))[0]
  assert _rel_err(logits, _torch_logits(hf_model, seq)) <= 1e-5


@pytest.mark.parametrize("model_type,tied", [("qwen2", False), ("qwen3", True)])
def test_round_trip_through_save_pretrained(tmp_path, model_type, tied, monkeypatch, capsys):
  config = hf_fixtures.tiny_config(model_type, tie_word_embeddings=tied)
  hf_model = hf_fixtures.random_hf_model(config)
  hf_model.save_pretrained(tmp_path / "source")
  (tmp_path / "source" / "tokenizer_config.json").write_text("{}")
  capsys.readouterr()
  monkeypatch.setattr(hub, "PROGRESS_DELAY_S", 0.0)  # the bars of a slow load and save
  model, _ = models.from_pretrained(tmp_path / "source")
  models.save_pretrained(model, tmp_path / "export")
  tensors = len(models.named_params(model))
  bars = capsys.readouterr().err
  for bar in ("load source", "save export"):  # the bar over every tensor is there
    assert re.search(rf"{bar}: +0%\|.*\| 0/{tensors} \[", bars), bars

  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
  assert (tmp_path / "export" / "tokenizer_config.json").is_file()
  seq = np.arange(11) % config.vocab_size
  np.testing.assert_allclose(_torch_logits(reloaded, seq), _torch_logits(hf_model, seq),
                             rtol=1e-6, atol=1e-6)
  n_jax = sum(int(np.prod(p.shape)) for p in models.named_params(model).values())
  assert n_jax == sum(p.numel() for p in hf_model.parameters())


def test_export_of_a_transformers_4_config_names_only_the_written_dtype(tmp_path):
  """A config.json of transformers 4 (`torch_dtype`, as DeepSeek-R1-Distill's) kept its
  `torch_dtype: bfloat16` beside the `dtype: float32` of the weights written: readers of
  `torch_dtype` loaded the float32 export in bfloat16, rounding its trained weights away."""
  hf_fixtures.random_hf_model(hf_fixtures.tiny_config("qwen2")).to(torch.bfloat16).save_pretrained(
      tmp_path / "source")
  source = json.loads((tmp_path / "source" / "config.json").read_text())
  source["torch_dtype"] = source.pop("dtype")
  (tmp_path / "source" / "config.json").write_text(json.dumps(source))
  models.save_pretrained(models.from_pretrained(tmp_path / "source", dtype="float32")[0],
                         tmp_path / "export")
  written = json.loads((tmp_path / "export" / "config.json").read_text())
  transformers.AutoConfig.from_pretrained(tmp_path / "export").save_pretrained(tmp_path / "hf")
  by_transformers = json.loads((tmp_path / "hf" / "config.json").read_text())
  dtype_keys = ("dtype", "torch_dtype")
  assert {k: written.get(k) for k in dtype_keys} == {k: by_transformers.get(k) for k in dtype_keys}
  assert written["dtype"] == "float32"


def test_save_pretrained_writes_float16_for_transformers_and_refuses_what_overflows(tmp_path):
  config = hf_fixtures.tiny_config("qwen3", tie_word_embeddings=True)
  hf_model = hf_fixtures.random_hf_model(config)
  with torch.no_grad():
    hf_model.model.norm.weight[:2] = torch.tensor([65519.0, 2e-8])  # rounds to 65504, and to 0
  hf_model.save_pretrained(tmp_path / "source")
  model, _ = models.from_pretrained(tmp_path / "source")
  models.save_pretrained(model, tmp_path / "f16", dtype="float16")
  assert json.loads((tmp_path / "f16" / "config.json").read_text())["dtype"] == "float16"
  source = dict(models.stored_tensors(tmp_path / "source", ["model.norm.weight"]))
  written = dict(models.stored_tensors(tmp_path / "f16", ["model.norm.weight"]))
  np.testing.assert_array_equal(written["model.norm.weight"],
                                source["model.norm.weight"].astype(np.float16))
  assert written["model.norm.weight"][:2].tolist() == [65504.0, 0.0]
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "f16")
  assert reloaded.dtype == torch.float16
  jax_model, _ = models.from_pretrained(tmp_path / "f16")  # float32 holds float16 exactly
  seq = np.arange(7)
  np.testing.assert_allclose(np.asarray(jax_model(jnp.asarray(seq)[None]))[0],
                             _torch_logits(reloaded.float(), seq), rtol=1e-5, atol=1e-5)

  with torch.no_grad():
    hf_model.model.norm.weight[0] = 70000.0  # beyond float16's range: inf
  hf_model.save_pretrained(tmp_path / "large")
  model, _ = models.from_pretrained(tmp_path / "large")
  with pytest.raises(ValueError, match=re.escape(
      "Saving in float16 would turn weights of 1 tensor into inf (float16's largest value is "
      "65504; model.norm.weight holds 70000): write float32 or bfloat16 instead.")):
    models.save_pretrained(model, tmp_path / "refused", dtype="float16")
  assert not (tmp_path / "refused").exists()
  with pytest.raises(ValueError, match=r"'float64'.*float32.*bfloat16.*float16"):
    models.save_pretrained(model, tmp_path / "refused", dtype="float64")


def test_save_pretrained_holds_a_shard_at_a_time_not_a_second_copy_of_the_model(tmp_path,
                                                                               monkeypatch):
  """Each shard is written once its tensors are converted: beside the model, the host holds
  about a shard (twice, as safetensors serializes it), where holding every converted tensor
  until the end took as much again as the model (15 GB more for a 7B model in bfloat16)."""
  import tracemalloc

  config = hf_fixtures.tiny_config("qwen2", hidden_size=64, intermediate_size=256,
                                   num_hidden_layers=8)
  hf_fixtures.save_random_checkpoint(tmp_path / "source", config)
  model, _ = models.from_pretrained(tmp_path / "source", dtype="float32")
  weights = sum(value.nbytes for value in models.named_params(model).values())
  monkeypatch.setattr(hub, "SHARD_BYTES", weights // 8)
  models.save_pretrained(model, tmp_path / "first")  # what a first save sets up once is not held
  tracemalloc.start()  # numpy's arrays are traced, the model's XLA buffers not
  try:
    models.save_pretrained(model, tmp_path / "export")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert len(json.loads((tmp_path / "export" / hub.INDEX_FILE).read_text())["weight_map"]) > 8
  assert peak < weights / 2, f"saving held {peak:,} bytes for {weights:,} of weights"


@pytest.mark.parametrize("model_type, tied", [("qwen2", False), ("qwen3", True)])
def test_a_sharded_bfloat16_export_is_whole_for_transformers_and_vllm(tmp_path, model_type, tied,
                                                                      monkeypatch):
  """What a transformers or vLLM user gets: every tensor, bit for bit, in shards that the index
  names in full; the source's config.json (the dtype written), generation config, tokenizer and
  chat template; files readable as the umask allows, as transformers writes them."""
  config = hf_fixtures.tiny_config(model_type, tie_word_embeddings=tied, bos_token_id=1,
                                   eos_token_id=2)
  hf_model = hf_fixtures.random_hf_model(config).to(torch.bfloat16)
  source, export = tmp_path / "source", tmp_path / "export"
  hf_model.save_pretrained(source)
  hf_fixtures.save_byte_level_tokenizer(source, vocab_size=config.vocab_size)
  (source / "chat_template.jinja").write_text(
      "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
  transformers.GenerationConfig(eos_token_id=[2, 5], do_sample=True,
                                temperature=0.7).save_pretrained(source)
  model, _ = models.from_pretrained(source)  # in bfloat16, the checkpoint's dtype
  monkeypatch.setattr(hub, "SHARD_BYTES", 20_000)  # ~74 KB of weights: several shards
  previous_umask = os.umask(0o022)
  try:
    models.save_pretrained(model, export)
  finally:
    os.umask(previous_umask)

  index = json.loads((export / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and not (export / "model.safetensors").exists()
  stored = {}
  for shard in shards:
    with safe_open(export / shard, framework="pt") as f:
      stored.update({name: f.get_tensor(name) for name in f.keys()})
  reference = hf_model.state_dict()
  if tied:  # transformers stores no copy of the tied output projection
    reference.pop("lm_head.weight")
  assert set(index["weight_map"]) == set(stored) == set(reference)
  assert all(torch.equal(stored[name], reference[name]) for name in reference)
  assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                for t in reference.values())
  written = json.loads((export / "config.json").read_text())
  assert written == json.loads((source / "config.json").read_text())
  assert {"architectures", "max_position_embeddings", "rope_parameters", "tie_word_embeddings",
          "bos_token_id", "eos_token_id", "dtype"} <= set(written)
  assert written["dtype"] == "bfloat16"
  for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja"):
    assert (export / name).read_bytes() == (source / name).read_bytes(), name
  assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in export.iterdir()} == {
      path.name: 0o644 for path in export.iterdir()}

  reloaded = transformers.AutoModelForCausalLM.from_pretrained(export)
  assert reloaded.dtype == torch.bfloat16
  seq = np.arange(9) % config.vocab_size
  np.testing.assert_array_equal(
      _torch_logits(reloaded, seq),
      _torch_logits(transformers.AutoModelForCausalLM.from_pretrained(source), seq))
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  assert tokenizer.apply_chat_template([{"role": "user", "content": "2+2="}],
                                       tokenize=False) == "<user>2+2="
  assert transformers.GenerationConfig.from_pretrained(export).eos_token_id == [2, 5]


def test_save_pretrained_protects_existing_checkpoints(tiny_qwen2_dir, tmp_path):
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  with pytest.raises(ValueError, match="loaded from"):
    models.save_pretrained(model, tiny_qwen2_dir)
  models.save_pretrained(model, tmp_path / "out")
  before = (tmp_path / "out" / "model.safetensors").read_bytes()
  with pytest.raises(FileExistsError, match="overwrite"):
    models.save_pretrained(model, tmp_path / "out")
  assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
  models.save_pretrained(model, tmp_path / "out", overwrite=True)


def test_loads_sharded_safetensors_index(tmp_path):
  config = hf_fixtures.tiny_config("qwen2")
  hf_model = hf_fixtures.random_hf_model(config)
  hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  model, _ = models.from_pretrained(tmp_path)
  seq = np.arange(6)
  logits = np.asarray(model(jnp.asarray(seq)[None]))[0]
  assert _rel_err(logits, _torch_logits(hf_model, seq)) <= 1e-5


def test_weights_of_two_checkpoints_in_one_directory_are_refused(tmp_path):
  """transformers' save_pretrained over an older checkpoint leaves its model.safetensors or
  index: transformers then loads the single file, jaxlayer loaded the shards (other logits)."""
  config = hf_fixtures.tiny_config("qwen2")
  hf_fixtures.random_hf_model(config, seed=0).save_pretrained(tmp_path)
  hf_fixtures.random_hf_model(config, seed=1).save_pretrained(tmp_path, max_shard_size="20KB")
  message = (f"{tmp_path} holds both model.safetensors and model.safetensors.index.json, the "
             "weights of two checkpoints (transformers loads the first, vLLM the shards the "
             "second names): one is left from an earlier save into this directory; remove the "
             "files of the one that is not this model's.")
  for read in (models.from_pretrained, models.weights_fingerprint):
    with pytest.raises(ValueError) as raised:
      read(tmp_path)
    assert str(raised.value) == message, read.__name__


def test_an_incomplete_sharded_checkpoint_is_a_clear_error(tmp_path):
  """A sharded checkpoint copied or downloaded in part: a shard missing, its index or a shard
  cut short, an index without its weight_map. Each used to stop with a bare parser error or a
  traceback (KeyError, SafetensorError); each names the file and the fix."""
  hf_fixtures.random_hf_model(hf_fixtures.tiny_config("qwen2")).save_pretrained(
      tmp_path / "whole", max_shard_size="20KB")
  shard = sorted((tmp_path / "whole").glob("model-*.safetensors"))[1].name

  def damaged(name: str, damage):
    directory = tmp_path / name
    shutil.copytree(tmp_path / "whole", directory)
    damage(directory)
    return directory

  no_shard = damaged("no_shard", lambda d: (d / shard).unlink())
  cut_index = damaged("cut_index", lambda d: (d / "model.safetensors.index.json").write_text(
      '{"metadata": {"total_size": 1'))
  no_map = damaged("no_map", lambda d: (d / "model.safetensors.index.json").write_text("{}"))
  cut_shard = damaged("cut_shard", lambda d: (d / shard).write_bytes(
      (tmp_path / "whole" / shard).read_bytes()[:1000]))
  again = "copy or download it again."
  for directory, error, message in (
      (no_shard, FileNotFoundError, f"{no_shard / 'model.safetensors.index.json'} names 1 missing "
       f"shard: ['{shard}']. The checkpoint is incomplete: copy or download the "
       "missing files again."),
      (cut_index, ValueError, f"{cut_index / 'model.safetensors.index.json'} is no valid JSON "
       "(Expecting ',' delimiter: line 1 column 30 (char 29)): it is "
       f"damaged or cut short; {again}"),
      (no_map, ValueError, f"{no_map / 'model.safetensors.index.json'} has no \"weight_map\" "
       f"(tensor name -> shard file): it is damaged or cut short; {again}"),
      (cut_shard, ValueError, f"{cut_shard / shard} is no readable safetensors file (Error "
       "while deserializing header: incomplete metadata, file not fully covered): it is "
       f"damaged or cut short; {again}")):
    for read in (models.from_pretrained, models.weights_fingerprint):
      with pytest.raises(error) as raised:
        read(directory)
      assert str(raised.value) == message, (directory.name, read.__name__)

def test_a_damaged_config_json_is_a_clear_error(tmp_path):
  """A config.json cut short said only "Expecting ',' delimiter ..." (no file named); one that
  is no JSON object stopped with an AttributeError traceback."""
  hf_fixtures.random_hf_model(hf_fixtures.tiny_config("qwen2")).save_pretrained(tmp_path)
  config_file = tmp_path / "config.json"
  for text, problem in (('{"model_type": "qwen2"',
                         "is no valid JSON (Expecting ',' delimiter: line 1 column 23 (char 22))"),
                        ("[]", "holds no JSON object")):
    config_file.write_text(text)
    for read in (models.from_pretrained, models.weights_fingerprint):
      with pytest.raises(ValueError) as raised:
        read(tmp_path)
      assert str(raised.value) == (f"{config_file} {problem}: it is damaged or cut short; copy "
                                   "or download it again."), read.__name__

def test_weights_fingerprint_follows_the_weights_not_their_files(tmp_path):
  config = hf_fixtures.tiny_config("qwen2", tie_word_embeddings=True)
  hf_model = hf_fixtures.random_hf_model(config)
  hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  fingerprint = models.weights_fingerprint(tmp_path / "bf16")
  # The same weights: in float32 (exact), split into shards, elsewhere, with a redundant copy
  # of the tied output projection.
  hf_model.to(torch.float32).save_pretrained(tmp_path / "f32", max_shard_size="20KB")
  assert (tmp_path / "f32" / "model.safetensors.index.json").is_file()
  shutil.copytree(tmp_path / "bf16", tmp_path / "copy")
  from safetensors.torch import load_file, save_file

  tensors = load_file(tmp_path / "copy" / "model.safetensors")
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
  save_file(tensors, tmp_path / "copy" / "model.safetensors", metadata={"format": "pt"})
  assert models.weights_fingerprint(tmp_path / "f32") == fingerprint
  assert models.weights_fingerprint(tmp_path / "copy") == fingerprint
  # Other weights: one value of a norm, one sampled row of a matrix, another initialisation.
  for name, index in [("model.norm.weight", 3), ("model.layers.1.mlp.down_proj.weight", 0)]:
    changed = dict(tensors)
    changed[name] = changed[name].clone()
    changed[name][index] += 0.5
    save_file(changed, tmp_path / "copy" / "model.safetensors", metadata={"format": "pt"})
    assert models.weights_fingerprint(tmp_path / "copy") != fingerprint, name
  hf_fixtures.random_hf_model(config, seed=1).save_pretrained(tmp_path / "other")
  assert models.weights_fingerprint(tmp_path / "other") != fingerprint


def _product_precisions(function, *args) -> set[str]:
  """The precision of every matrix product XLA is given for function(*args)."""
  text = jax.jit(function).lower(*args).as_text()
  products = text.count("stablehlo.dot_general")
  precisions = re.findall(r"stablehlo.dot_general.*precision = \[(\w+), (\w+)\]", text)
  found = {p for pair in precisions for p in pair}
  return found if len(precisions) == products else found | {"DEFAULT"}


def test_float32_models_multiply_in_float32_on_every_backend(tiny_qwen2_dir):
  """JAX's default rounds float32 products to TF32 on GPUs and bfloat16 on TPUs (4e-4 off
  transformers on an H100): a float32 model asks for float32 in the forward pass, the
  backward pass and the sampler's steps."""
  _, ids, mask = _left_padded_batch(300)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  loss = lambda m: m(ids, mask, remat=True).sum()  # noqa: E731
  gradient = jax.grad(lambda m: loss(m))
  decode = lambda m, token, cache: m.decode_step(token, cache)  # noqa: E731
  _, cache = model.prefill(ids, mask, rows=4, max_new=2)
  prefill = lambda m: m.prefill(ids, mask, rows=4, max_new=2)  # noqa: E731
  for function, args in [(loss, (model,)), (gradient, (model,)), (prefill, (model,)),
                         (decode, (model, ids[:, -1], cache))]:
    assert _product_precisions(function, *args) == {"HIGHEST"}
  # A precision the user chose wins; bfloat16 models keep the backend's default.
  with jax.default_matmul_precision("tensorfloat32"):
    assert _product_precisions(gradient, model) == {"HIGH"}  # HIGH is TF32
  bf16_model, _ = models.from_pretrained(tiny_qwen2_dir, dtype="bfloat16")
  assert _product_precisions(loss, bf16_model) == {"DEFAULT"}


@pytest.fixture(scope="module")
def tiny_qwen3_yarn_dir(tiny_qwen3_dir, tmp_path_factory):
  """tiny_qwen3_dir with YaRN over a pretraining context of 8 tokens."""
  yarn = dict(YARN, original_max_position_embeddings=8, rope_theta=1e4)
  return _edit_config(tiny_qwen3_dir, tmp_path_factory.mktemp("yarn") / "qwen3",
                      rope_parameters=yarn)


@pytest.mark.parametrize("checkpoint", ["tiny_qwen2_dir", "tiny_qwen3_yarn_dir"])
def test_shared_prompt_pass_equals_the_whole_rows(checkpoint, request):
  """Rows in groups of 3 responses to one prompt (left-padded prompts of 5 and 2 tokens,
  right-padded responses): running each prompt once gives the logits and the gradient of
  running the whole rows (YaRN's frequencies and scaling included)."""
  model, _ = models.from_pretrained(request.getfixturevalue(checkpoint))
  rng = np.random.RandomState(0)
  prompt_len, responses, group = 7, 6, 3
  ids = np.zeros((2 * group, prompt_len + responses), np.int32)
  mask = np.zeros_like(ids, bool)
  for p, length in enumerate([5, 2]):
    prompt = rng.randint(1, 300, length)
    for r in range(p * group, (p + 1) * group):
      answer = rng.randint(1, 300, rng.randint(1, responses + 1))
      ids[r, prompt_len - length:prompt_len + len(answer)] = [*prompt, *answer]
      mask[r, prompt_len - length:prompt_len + len(answer)] = True
  used = jnp.asarray(mask[:, prompt_len - 1:, None], jnp.float32)  # the logits a loss reads
  weights = jnp.asarray(rng.normal(size=300), jnp.float32)

  def loss(m, shared):  # the shared pass with remat, the whole rows without
    logits = m(jnp.asarray(ids), jnp.asarray(mask), num_last=responses + 1, remat=shared,
               shared_prompt=(group, prompt_len) if shared else None)
    return (logits * used * weights).sum(), logits * used

  loss_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (_, whole), whole_grad = loss_and_grad(model, False)
  (_, shared), shared_grad = loss_and_grad(model, True)
  np.testing.assert_allclose(shared, whole, atol=1e-5)
  for (path, a), (_, b) in zip(models.named_params(shared_grad).items(),
                               models.named_params(whole_grad).items()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()),
                               err_msg=path)
  for num_last in (8, None):
    with pytest.raises(ValueError, match="shared_prompt needs 1 <= num_last <= 7"):
      model(jnp.asarray(ids), jnp.asarray(mask), num_last=num_last,
            shared_prompt=(group, prompt_len))


@pytest.mark.parametrize("checkpoint", ["tiny_qwen2_dir", "tiny_qwen3_dir"])
def test_long_sequences_attend_in_chunks_like_transformers(checkpoint, request, monkeypatch):
  """Chunks of at most 4 queries: the 9-token rows attend in 3 chunks of 3, the logits equal
  transformers' and the gradient equals the one-piece attention's."""
  directory = request.getfixturevalue(checkpoint)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  model, cfg = models.from_pretrained(directory)
  seqs, ids, mask = _left_padded_batch(cfg.vocab_size)
  reference = np.concatenate([_torch_logits(hf_model, s) for s in seqs])
  weights = jnp.asarray(np.random.RandomState(1).normal(size=cfg.vocab_size), jnp.float32)

  def loss(m):
    logits = m(jnp.asarray(ids), jnp.asarray(mask))
    return (logits * weights * mask[..., None]).sum(), logits

  whole_grad = jax.jit(jax.grad(lambda m: loss(m)[0]))(model)
  monkeypatch.setattr(qwen, "ATTENTION_QUERY_CHUNK", 4)
  (_, logits), chunked_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(model)
  assert _rel_err(np.asarray(logits)[mask.astype(bool)], reference) <= 1e-5
  for (path, a), (_, b) in zip(models.named_params(chunked_grad).items(),
                               models.named_params(whole_grad).items()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()),
                               err_msg=path)


def test_chunked_attention_holds_a_fraction_of_the_scores(monkeypatch):
  """XLA's own count of the temporary bytes of a gradient over one 1,024-token sequence: with
  chunks of 256 queries, the [seq, seq] scores are never whole. (Whole: 121 MB on a CPU and on
  an H100; chunked: 22 MB on a CPU, 51 MB on the H100, whose count holds workspace besides.)"""
  cfg = models.ModelConfig.from_hf_dict({
      "model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 1024})
  model = models.Qwen(cfg, rngs=nnx.Rngs(0))
  ids = jnp.ones((1, 1024), jnp.int32)

  def temporary_bytes(chunk: int) -> int:
    monkeypatch.setattr(qwen, "ATTENTION_QUERY_CHUNK", chunk)
    grad = jax.jit(jax.grad(lambda m: m(ids).sum()))
    return grad.lower(model).compile().memory_analysis().temp_size_in_bytes

  scores = 4 * 1024 * 1024 * 4  # heads x seq x keys float32: one layer's
  whole, chunked = temporary_bytes(1024), temporary_bytes(256)
  assert whole > 2 * scores and whole - chunked > 3 * scores


@pytest.mark.eight_devices
@pytest.mark.parametrize("query_chunk", [None, 4])
def test_sharded_forward_on_2x4_mesh_equals_unsharded(tiny_qwen2_dir, query_chunk, monkeypatch):
  if query_chunk:  # attention in chunks of queries, heads split over the tensor axis
    monkeypatch.setattr(qwen, "ATTENTION_QUERY_CHUNK", query_chunk)
  mesh = models.make_mesh(data=1, fsdp=2, tensor=4)
  sharded_model, _ = models.from_pretrained(tiny_qwen2_dir, mesh=mesh)
  plain_model, _ = models.from_pretrained(tiny_qwen2_dir)

  q_kernel = sharded_model.layers[0].attn.q_proj.kernel[...]
  assert q_kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert len(q_kernel.addressable_shards) == 8

  _, ids, mask = _left_padded_batch(300)
  batch = [jax.device_put(jnp.asarray(x), models.batch_sharding(mesh)) for x in (ids, mask)]
  with jax.set_mesh(mesh):
    sharded = jax.jit(lambda m, i, a: m(i, a))(sharded_model, *batch)
  plain = plain_model(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), rtol=1e-5, atol=1e-5)


@pytest.mark.eight_devices
@pytest.mark.parametrize("data,fsdp,tensor", [(1, 1, 8), (1, 8, 1), (2, 2, 2)])
def test_qwen3_on_a_mesh_gives_transformers_logits_and_the_one_device_gradient(
    tiny_qwen3_dir, data, fsdp, tensor):
  """Qwen3's head_dim (12) is not hidden / heads (32 / 4), and its q / k norms act per head:
  8 tensor shards cut each query head in two and each key head in four (the vocabulary of 300
  stays whole), 8 fsdp shards split the hidden size. The logits are transformers', the
  gradient (of an update of every parameter) the one-device model's."""
  mesh = models.make_mesh(data, fsdp, tensor)
  model, cfg = models.from_pretrained(tiny_qwen3_dir, mesh=mesh)
  plain, _ = models.from_pretrained(tiny_qwen3_dir)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir,
                                                               dtype=torch.float32)
  seqs, ids, mask = _left_padded_batch(cfg.vocab_size)
  seqs, ids, mask = seqs * 2, np.tile(ids, (2, 1)), np.tile(mask, (2, 1))  # 8 rows to split
  reference = np.concatenate([_torch_logits(hf_model, s) for s in seqs])
  weights = jnp.asarray(np.random.RandomState(1).normal(size=cfg.vocab_size), jnp.float32)

  def loss(m, ids, mask):
    logits = m(ids, mask)
    return (logits * weights * mask[..., None]).sum(), logits

  loss_and_grad = jax.value_and_grad(loss, has_aux=True)
  batch = [jax.device_put(jnp.asarray(x), models.batch_sharding(mesh)) for x in (ids, mask)]
  with jax.set_mesh(mesh):
    (_, logits), grad = jax.jit(sharding.traced_on(mesh, loss_and_grad))(model, *batch)
  _, plain_grad = jax.jit(loss_and_grad)(plain, jnp.asarray(ids), jnp.asarray(mask))
  assert _rel_err(np.asarray(logits)[mask.astype(bool)], reference) <= 1e-5
  for (path, a), (_, b) in zip(models.named_params(grad).items(),
                               models.named_params(plain_grad).items()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()),
                               err_msg=path)


@pytest.mark.eight_devices
def test_partition_spec_drops_axes_that_do_not_divide():
  mesh = models.make_mesh(data=1, fsdp=2, tensor=4)
  assert sharding.partition_spec("embed.embedding", (97, 32), mesh) == jax.sharding.PartitionSpec(
      None, "fsdp")  # 97 rows do not split over 4 tensor shards
  assert sharding.partition_spec("layers.0.mlp.down_proj.kernel", (64, 32), mesh) == (
      jax.sharding.PartitionSpec("tensor", "fsdp"))
  with pytest.raises(ValueError, match="needs 16 devices"):
    models.make_mesh(data=2, fsdp=2, tensor=4)


# ---- RoPE scaling ----

# YaRN as Qwen's long-context recipe sets it, and linear scaling. original_max_position_embeddings
# =16 is shorter than the test sequences, so YaRN's kept, divided and ramped frequencies all
# turn there.
ROPE_SCALINGS = {
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "linear": {"rope_type": "linear", "factor": 2.5},
}
SCALED_THETA = 1e6


def _scaled_checkpoint(directory, model_type, scaling, layout, seed=0):
  """A tiny random checkpoint whose config.json has `scaling` in the layout of transformers 5
  (inside rope_parameters, beside rope_theta) or of older ones (rope_scaling beside a top-level
  rope_theta, the layout of released Qwen2.5 and Qwen3 configs)."""
  hf_fixtures.save_random_checkpoint(directory, hf_fixtures.tiny_config(model_type), seed)
  config = json.loads((directory / "config.json").read_text())
  del config["rope_parameters"]
  if layout == "rope_parameters":
    config["rope_parameters"] = dict(scaling, rope_theta=SCALED_THETA)
  else:
    config.update(rope_theta=SCALED_THETA, rope_scaling=scaling)
  (directory / "config.json").write_text(json.dumps(config))
  return directory


def _left_padded(seqs):
  width = max(len(s) for s in seqs)
  ids, mask = np.zeros((len(seqs), width), np.int32), np.zeros((len(seqs), width), np.int32)
  for row, seq in enumerate(seqs):
    ids[row, width - len(seq):], mask[row, width - len(seq):] = seq, 1
  return jnp.asarray(ids), jnp.asarray(mask)


@pytest.mark.parametrize("layout", ["rope_parameters", "rope_scaling"])
@pytest.mark.parametrize("model_type,scaling", [
    ("qwen2", "yarn"), ("qwen3", "yarn"), ("qwen2", "linear"), ("qwen3", "linear")])
def test_rope_scaling_matches_transformers(tmp_path, model_type, scaling, layout):
  directory = _scaled_checkpoint(tmp_path, model_type, ROPE_SCALINGS[scaling], layout)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  assert hf_model.config.rope_parameters["rope_type"] == scaling
  assert hf_model.config.rope_parameters["rope_theta"] == SCALED_THETA
  rng = np.random.RandomState(0)
  seqs = [rng.randint(0, 97, n) for n in (40, 23)]  # beyond original_max_position_embeddings
  reference = np.concatenate([_torch_logits(hf_model, s) for s in seqs])
  ids, mask = _left_padded(seqs)
  for dtype, tolerance in [("float32", 1e-5), ("bfloat16", 2e-2)]:
    model, cfg = models.from_pretrained(directory, dtype=dtype)
    assert cfg.rope.rope_type == scaling
    logits = np.asarray(model(ids, mask))[np.asarray(mask, bool)]
    assert _rel_err(logits, reference) <= tolerance, dtype


# Settings of _compute_yarn_parameters beyond the factor: config.json's rope_scaling entry and
# top-level keys beside it.
YARN = ROPE_SCALINGS["yarn"]
YARN_VARIANTS = [
    (YARN, {}),
    ({"rope_type": "yarn", "factor": 4.0}, {}),  # the context: max_position_embeddings
    (dict(YARN, factor=None), {}),  # max_position_embeddings / the context
    (dict(YARN, factor=8, mscale=0.7, mscale_all_dim=1.0, beta_fast=16, beta_slow=2,
          truncate=False), {}),
    (dict(YARN, attention_factor=0.9, beta_fast=4), {}),
    (YARN, dict(original_max_position_embeddings=8)),  # a top-level one wins
]


@pytest.mark.parametrize("model_type,overrides", [("qwen2", {}), ("qwen3", dict(head_dim=128))])
@pytest.mark.parametrize("scaling,top_level", YARN_VARIANTS, ids=[
    "plain", "no-context", "factor-null", "mscale-betas-untruncated", "attention-factor",
    "top-level-context"])
def test_yarn_frequencies_and_scaling_equal_transformers(tmp_path, model_type, overrides,
                                                        scaling, top_level):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

  hf_fixtures.tiny_config(model_type, **overrides).save_pretrained(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  del config["rope_parameters"]
  config.update(top_level, rope_theta=SCALED_THETA, rope_scaling=scaling)
  (tmp_path / "config.json").write_text(json.dumps(config))
  hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
  inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config)
  cfg = models.ModelConfig.from_hf_dict(config)
  np.testing.assert_allclose(cfg.rope.inverse_frequencies(cfg.head_dim), inv_freq.numpy(),
                             rtol=1e-6)
  assert cfg.rope.attention_factor == pytest.approx(attention_factor, rel=1e-12)


def test_greedy_generation_with_yarn_equals_transformers(tmp_path):
  """Prefill and decode steps run past original_max_position_embeddings (16)."""
  from jaxlayer import sampling

  directory = _scaled_checkpoint(tmp_path, "qwen3", ROPE_SCALINGS["yarn"], "rope_scaling")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  rng = np.random.RandomState(1)
  prompts = [rng.randint(0, 97, n).tolist() for n in (13, 4)]
  max_new = 12
  with torch.no_grad():
    references = [hf_model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=max_new,
                                    eos_token_id=None, pad_token_id=0)[0, len(p):].numpy()
                  for p in prompts]
  model, _ = models.from_pretrained(directory)
  out = sampling.generate(model, prompts, max_new_tokens=max_new, temperature=0,
                          eos_token_ids=[], seed=0)
  np.testing.assert_array_equal(out.tokens, np.stack(references))


def test_yarn_extends_the_context_to_original_positions_times_factor(tmp_path):
  """Qwen's recipe adds YaRN and leaves max_position_embeddings as it was: sequences may then
  be original_max_position_embeddings x factor long (here 16 x 4 = 64 > 24)."""
  from jaxlayer import sampling

  directory = _edit_config(
      _scaled_checkpoint(tmp_path / "source", "qwen3", ROPE_SCALINGS["yarn"], "rope_scaling"),
      tmp_path / "short", max_position_embeddings=24)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  model, cfg = models.from_pretrained(directory)
  assert cfg.max_positions == 64
  prompt = (np.arange(20) % 97).tolist()
  out = sampling.generate(model, [prompt], max_new_tokens=30, temperature=0, eos_token_ids=[],
                          seed=0)
  # Each greedy token is the argmax of transformers' logits after the tokens before it
  # (transformers' own generate differs from its forward past max_position_embeddings).
  sequence = np.concatenate([prompt, out.tokens[0]])
  reference = _torch_logits(hf_model, sequence[:-1])[len(prompt) - 1:].argmax(-1)
  np.testing.assert_array_equal(out.tokens[0], reference)
  with pytest.raises(ValueError, match=r"65 positions, beyond the model's YaRN context of 64 "
                     r"positions \(original_max_position_embeddings=16 x factor 4\)"):
    sampling.generate(model, [prompt], max_new_tokens=45, eos_token_ids=[], seed=0)


@pytest.mark.parametrize("layout", ["rope_parameters", "rope_scaling"])
def test_export_keeps_the_rope_scaling(tmp_path, layout):
  source = _scaled_checkpoint(tmp_path / "source", "qwen2", ROPE_SCALINGS["yarn"], layout)
  model, cfg = models.from_pretrained(source)
  models.save_pretrained(model, tmp_path / "export")
  assert models.ModelConfig.from_json_file(tmp_path / "export" / "config.json").rope == cfg.rope
  reference = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export",
                                                               dtype=torch.float32)
  assert exported.config.rope_parameters == reference.config.rope_parameters
  seq = np.arange(30) % 97
  np.testing.assert_allclose(_torch_logits(exported, seq), _torch_logits(reference, seq),
                             rtol=1e-6, atol=1e-6)


def test_rope_scaling_added_beside_rope_parameters(tiny_qwen3_dir, tmp_path):
  """Qwen's long-context recipe adds rope_scaling to config.json. transformers 5 then reads it
  in place of rope_parameters: it loads as there while rope_parameters holds no other
  rope_theta, and is refused where transformers would drop that theta for 10000."""
  yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}
  directory = _edit_config(tiny_qwen3_dir, tmp_path / "edited", rope_scaling=yarn)
  assert json.loads((directory / "config.json").read_text())["rope_parameters"] == {
      "rope_type": "default", "rope_theta": 10000.0}
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  assert hf_model.config.rope_parameters["rope_type"] == "yarn"
  model, _ = models.from_pretrained(directory)
  seq = np.arange(1, 20)
  logits = np.asarray(model(jnp.asarray(seq)[None]))[0]
  assert _rel_err(logits, _torch_logits(hf_model, seq)) <= 1e-5

  theta = {"rope_type": "default", "rope_theta": 1e6}
  directory = _edit_config(directory, tmp_path / "theta", rope_parameters=theta)
  assert transformers.AutoConfig.from_pretrained(directory).rope_parameters["rope_theta"] == 1e4
  with pytest.raises(ValueError, match=r"rope_theta=1000000.0 transformers then ignores \(it "
                     r"uses 10000.0\): move the rope_scaling entries into rope_parameters"):
    models.from_pretrained(directory)


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope", "llama3", "ntk-by-parts"])
def test_rope_types_jaxlayer_lacks_are_refused(tiny_qwen2_dir, tmp_path, rope_type):
  """dynamic (transformers rescales the frequencies with each sequence's length), longrope and
  llama3 would load as another model than transformers'."""
  scaling = {"rope_type": rope_type, "factor": 4.0}
  directory = _edit_config(tiny_qwen2_dir, tmp_path / "edited", rope_scaling=scaling)
  with pytest.raises(ValueError, match=rf"Unsupported rope_type '{rope_type}' in config.json: "
                     r"jaxlayer supports \['default', 'linear', 'yarn'\]"):
    models.from_pretrained(directory)


@pytest.mark.parametrize("scaling,message", [
    ({"rope_type": "yarn", "original_max_position_embeddings": 16},
     r"rope_type 'yarn' lacks its factor: add \"factor\""),
    ({"type": "linear", "factor": 0.5}, r"factor=0.5 is not a number >= 1"),
    ({"rope_type": "yarn", "factor": "4"}, r"factor='4' is not a number >= 1"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0},
     r"original_max_position_embeddings=0 for yarn is not a positive integer"),
    ({"rope_type": "yarn", "factor": 4.0, "beta_fast": 1, "beta_slow": 2},
     r"beta_fast=1 is below beta_slow=2"),
])
def test_bad_rope_scaling_values_are_a_clear_error(scaling, message):
  config = dict(hf_fixtures.tiny_config("qwen2").to_dict(), rope_scaling=scaling)
  with pytest.raises(ValueError, match=message):
    models.ModelConfig.from_hf_dict(config)


# ---- bad input ----

@pytest.mark.parametrize("axes, message", [
    (dict(data=0), r"data=0 x fsdp=-1 x tensor=1: each axis size must be an int >= 1, or -1 "
                   r"for the remaining devices \(in a config: mesh.data, mesh.fsdp, mesh.tensor\)"),
    (dict(fsdp=1.5), r"each axis size must be an int >= 1"),
    (dict(data=2), r"1 device cannot be split by 2, the product of the other axes"),
    (dict(fsdp=2), r"needs 2 devices, not 1: choose sizes whose product is 1"),
])
def test_bad_mesh_axes_are_a_clear_error(axes, message):
  """data=0 divided by zero, a float axis failed in numpy, and the counts read '1 devices'."""
  with pytest.raises(ValueError, match=message):
    models.make_mesh(**axes, devices=jax.devices()[:1])


def test_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    models.from_pretrained(tmp_path / "nope")


def test_unreachable_hub_id_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="could not be fetched"):
    models.from_pretrained("no-such-org/no-such-model")


def test_missing_config_or_weights(tiny_qwen2_dir, tmp_path):
  no_config = tmp_path / "no_config"
  shutil.copytree(tiny_qwen2_dir, no_config)
  (no_config / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.from_pretrained(no_config)

  no_weights = tmp_path / "no_weights"
  shutil.copytree(tiny_qwen2_dir, no_weights)
  (no_weights / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    models.from_pretrained(no_weights)


def _edit_config(src, dst, **changes):
  shutil.copytree(src, dst)
  config = json.loads((dst / "config.json").read_text())
  config.update(changes)
  (dst / "config.json").write_text(json.dumps(config))
  return dst


def test_unsupported_model_type_names_the_supported_ones(tiny_qwen2_dir, tmp_path):
  with pytest.raises(ValueError, match=r"'gpt2'.*qwen2.*qwen3"):
    models.from_pretrained(_edit_config(tiny_qwen2_dir, tmp_path / "gpt2", model_type="gpt2"))


def test_config_without_a_required_key_names_it_and_the_fix():
  config = hf_fixtures.tiny_config("qwen3").to_dict()
  del config["intermediate_size"], config["num_attention_heads"]
  with pytest.raises(ValueError, match=re.escape(
      "config.json lacks required keys ['intermediate_size', 'num_attention_heads']: add them")):
    models.ModelConfig.from_hf_dict(config)


SIZE, FLAG, FIX = ("an integer >= 1 (no decimal point)", "true or false (no quotes)",
                   "set it to the model's value in that form.")
EPSILON, THETA = "a decimal number > 0 (e.g. 1e-06 or 1.0)", "a number > 0 (e.g. 1000000.0)"
ROPE = 'an object (e.g. {"rope_type": "default", "rope_theta": 1000000.0}) or null'


# Hand-edited config.json values that transformers' strict config classes refuse, or that it
# computes with another model (or not at all): (model_type, changes, the error).
BAD_CONFIG_VALUES = [
    # "false" read as true (a tied model); "1e-6", null and 2.0 failed in the forward pass.
    ("qwen2", dict(tie_word_embeddings="false"),
     f"config.json's tie_word_embeddings is \"false\", not {FLAG}: {FIX}"),
    ("qwen3", dict(tie_word_embeddings=0), f"config.json's tie_word_embeddings is 0, not {FLAG}"),
    ("qwen3", dict(rms_norm_eps="1e-6"),
     f"config.json's rms_norm_eps is \"1e-6\", not {EPSILON}"),
    ("qwen2", dict(max_position_embeddings="32"),
     f"config.json's max_position_embeddings is \"32\", not {SIZE}"),
    ("qwen2", dict(use_sliding_window="false"),
     f"config.json's use_sliding_window is \"false\", not {FLAG}"),
    ("qwen3", dict(attention_bias="false"),
     f"config.json's attention_bias is \"false\", not {FLAG}"),
    ("qwen2", dict(rms_norm_eps=None), f"config.json's rms_norm_eps is null, not {EPSILON}"),
    ("qwen2", dict(vocab_size=None), f"config.json's vocab_size is null, not {SIZE}"),
    ("qwen3", dict(head_dim=None), f"config.json's head_dim is null, not {SIZE}"),
    # transformers refuses a float where an int belongs, whole or not, and an int where a
    # float does.
    ("qwen2", dict(num_hidden_layers=2.0), f"config.json's num_hidden_layers is 2.0, not {SIZE}"),
    ("qwen2", dict(num_hidden_layers=2.5), f"config.json's num_hidden_layers is 2.5, not {SIZE}"),
    ("qwen3", dict(rms_norm_eps=1), f"config.json's rms_norm_eps is 1, not {EPSILON}"),
    ("qwen2", dict(hidden_size=0), f"config.json's hidden_size is 0, not {SIZE}"),
    ("qwen3", dict(intermediate_size=-64), f"config.json's intermediate_size is -64, not {SIZE}"),
    ("qwen2", dict(num_key_value_heads=0), f"config.json's num_key_value_heads is 0, not {SIZE}"),
    ("qwen2", dict(max_position_embeddings=0),
     f"config.json's max_position_embeddings is 0, not {SIZE}"),
    ("qwen3", dict(rms_norm_eps=0.0), f"config.json's rms_norm_eps is 0.0, not {EPSILON}"),
    ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 0.0}),
     f"config.json's rope_theta is 0.0, not {THETA}"),
    ("qwen2", dict(rope_parameters=None, rope_theta="1e6"),
     f"config.json's rope_theta is \"1e6\", not {THETA}"),
    ("qwen2", dict(rope_parameters="default"),
     f"config.json's rope_parameters is \"default\", not {ROPE}"),
    ("qwen3", dict(rope_scaling="yarn"), f"config.json's rope_scaling is \"yarn\", not {ROPE}"),
    ("qwen2", dict(num_key_value_heads=3),
     "config.json's num_attention_heads=4 is no multiple of num_key_value_heads=3 (each "
     "key/value head serves a group of query heads): set both to the model's values."),
]


@pytest.mark.parametrize("model_type,changes,message", BAD_CONFIG_VALUES)
def test_bad_config_values_are_refused_before_the_weights(tmp_path, model_type, changes,
                                                          message):
  """No weights lie beside config.json: it is refused before they are looked for."""
  config = dict(hf_fixtures.tiny_config(model_type).to_dict(), **changes)
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=re.escape(message)):
    models.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_type,changes", [
    ("qwen2", dict(attention_bias="false")),  # not a key of Qwen2Config: transformers ignores it
    ("qwen2", dict(num_key_value_heads=None)),  # one key/value head per query head
    ("qwen3", dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000})),  # an int
    ("qwen2", dict(architectures="Qwen2ForCausalLM")),  # one name, not a list of one
])
def test_config_values_transformers_reads_alike_are_accepted(model_type, changes):
  config = dict(hf_fixtures.tiny_config(model_type).to_dict(), **changes)
  reference = transformers.AutoConfig.for_model(**config)
  cfg = models.ModelConfig.from_hf_dict(config)
  assert (cfg.num_kv_heads, cfg.rope.theta) == (reference.num_key_value_heads,
                                                reference.rope_parameters["rope_theta"])


def test_shape_mismatch_names_the_tensor(tiny_qwen2_dir, tmp_path):
  wrong = _edit_config(tiny_qwen2_dir, tmp_path / "wrong", intermediate_size=48)
  with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight.*shape"):
    models.from_pretrained(wrong)


def test_config_with_fewer_layers_than_weights(tiny_qwen2_dir, tmp_path):
  wrong = _edit_config(tiny_qwen2_dir, tmp_path / "fewer", num_hidden_layers=1)
  with pytest.raises(ValueError, match="do not belong together"):
    models.from_pretrained(wrong)


@pytest.mark.parametrize("stored, key, expected", [
    (torch.bfloat16, "dtype", "bfloat16"),  # transformers 5's config.json
    (torch.bfloat16, "torch_dtype", "bfloat16"),  # transformers 4's (DeepSeek-R1-Distill's)
    (torch.float16, "dtype", "float32"),  # jaxlayer computes in float32, which holds it exactly
    (torch.float32, "dtype", "float32"),
])
def test_a_checkpoint_loads_in_its_own_dtype_unless_one_is_given(tmp_path, stored, key,
                                                                  expected):
  hf_model = hf_fixtures.random_hf_model(hf_fixtures.tiny_config("qwen3"))
  hf_model.to(stored).save_pretrained(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  config[key] = config.pop("dtype")
  (tmp_path / "config.json").write_text(json.dumps(config))
  # transformers 5 loads a checkpoint in its own dtype by default (dtype="auto").
  if stored != torch.float16:
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path).dtype == stored
  model, _ = models.from_pretrained(tmp_path)
  loaded = models.named_params(model)
  assert {np.dtype(value.dtype).name for value in loaded.values()} == {expected}
  reference = hf_model.to(stored).float().state_dict()["model.norm.weight"].numpy()
  np.testing.assert_array_equal(np.asarray(loaded["final_norm.scale"], np.float32), reference)
  chosen, _ = models.from_pretrained(tmp_path, dtype="float32")
  assert chosen.dtype == jnp.float32


def test_unknown_dtype_lists_the_choices(tiny_qwen2_dir):
  with pytest.raises(ValueError, match=r"'float16'.*float32.*bfloat16"):
    models.from_pretrained(tiny_qwen2_dir, dtype="float16")


@pytest.mark.parametrize("generation_eos, expected", [
    (None, [0]),  # no generation_config.json: the tokenizer's EOS only
    (7, [0, 7]),
    ([0, 42, 7], [0, 7, 42]),  # chat checkpoints list several; duplicates merged
])
def test_stop_token_ids_join_the_tokenizer_eos_and_generation_config(
    tiny_qwen2_dir, tmp_path, generation_eos, expected):
  for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tiny_qwen2_dir / name, tmp_path / name)
  if generation_eos is not None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
  tokenizer = models.load_tokenizer(tmp_path)
  assert tokenizer.eos_token_id == 0
  assert models.stop_token_ids(tmp_path, tokenizer) == expected
  assert models.stop_token_ids(None, tokenizer) == [0]  # a model built in memory


@pytest.mark.parametrize("input_ids,mask,error", [
    ([[1, 2, 3]], None, "input_ids must be an array.*got list.*return_tensors='np'"),
    (np.array([1, 2, 3]), None, r"shape \(3,\).*add the batch axis \(ids\[None\]\)"),
    (np.array([[1.0, 2.0]]), None, "integer token ids.*dtype float64"),
    (np.array([[1, 2, 3]]), np.ones((1, 2)),
     r"attention_mask has shape \(1, 2\), input_ids \(1, 3\)"),
    (np.array([[1, 300]]), None, r"token id 300, outside the model's vocabulary \[0, 300\)"),
])
def test_bad_model_input_is_a_clear_error(tiny_qwen2_dir, input_ids, mask, error):
  """transformers raises for an id past the vocabulary; the embedding lookup gave NaN logits."""
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  with pytest.raises((TypeError, ValueError), match=error):
    model(input_ids, mask)
