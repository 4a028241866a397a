"""Builds tiny random Hugging Face checkpoints with transformers (the reference implementation)."""

from pathlib import Path

import torch
import transformers

_BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
             rms_norm_eps=1e-6)


def tiny_config(model_type: str, **overrides) -> transformers.PretrainedConfig:
  """A tiny Qwen2 or Qwen3 config; Qwen3 gets an explicit head_dim (its default is 128)."""
  kwargs = dict(_BASE, **overrides)
  if model_type == "qwen2":
    return transformers.Qwen2Config(**kwargs)
  kwargs.setdefault("head_dim", 12)
  return transformers.Qwen3Config(**kwargs)


def random_hf_model(config: transformers.PretrainedConfig, seed: int = 0):
  """transformers' model with every parameter random, biases and norm scales included."""
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        param.add_(0.1 * torch.randn_like(param))  # default init leaves them at 0 / 1
  return model


def save_random_checkpoint(directory: Path, config, seed: int = 0) -> Path:
  random_hf_model(config, seed).save_pretrained(directory)
  return Path(directory)


def save_byte_level_tokenizer(directory: Path, vocab_size: int = 300) -> None:
  """A small byte-level BPE tokenizer (what Qwen2Tokenizer expects), saved beside a checkpoint.

  All 256 byte symbols are in the vocabulary so any text round-trips (newlines included).
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog 0123456789"] * 4,
                                trainer)
  transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                       pad_token="<|endoftext|>").save_pretrained(directory)



# The chat templates of the families, as the hub checkpoints ship them (their tool-call branches
# left out: jaxlayer sends no tools): Qwen's of Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen3-8B
# (Qwen3's reads enable_thinking), DeepSeek's of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (it
# writes the BOS, and its generation prompt opens the thinking block).
CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"

# Each chat family's special tokens (in vocabulary order), the tokenizer's EOS, its BOS and
# generation_config.json's eos_token_id, as the hub checkpoints have them: Qwen's chat models
# stop at <|im_end|> or <|endoftext|>; R1-Distill's tokenizer adds its BOS to any text (and its
# chat template writes it too: DeepSeek-R1 issue #151), and it stops at <｜end▁of▁sentence｜>.
CHAT_FAMILIES = {
    "qwen2.5-instruct": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|im_end|>", bos=None,
        generation_eos=["<|im_end|>", "<|endoftext|>"]),
    "qwen3": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|im_end|>", bos=None,
        generation_eos=["<|im_end|>", "<|endoftext|>"]),
    "r1-distill-qwen": dict(
        specials=["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>"],
        eos="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>",
        generation_eos="<｜end▁of▁sentence｜>"),
}


def save_chat_model(directory: Path, family: str, seed: int = 0) -> Path:
  """A tiny random checkpoint of a chat family of CHAT_FAMILIES: its real chat template
  (CHAT_TEMPLATES), special tokens, <think> and </think> (plain added tokens, as on the
  hub: decoding keeps them), BOS behaviour and generation_config.json stop tokens."""
  import json

  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, \
    trainers


  family_spec = CHAT_FAMILIES[family]
  directory = Path(directory)
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=299, special_tokens=family_spec["specials"][:1],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog 0123456789 \\boxed{}"]
                                * 4, trainer)
  tokenizer.add_special_tokens([AddedToken(token, normalized=False)
                                for token in family_spec["specials"][1:]])
  tokenizer.add_tokens([AddedToken(token, normalized=False, special=False)
                        for token in ("<think>", "</think>")])
  bos = family_spec["bos"]
  if bos is not None:  # a BOS before every text, as LlamaTokenizerFast's add_bos_token writes it
    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, eos_token=family_spec["eos"], bos_token=bos,
      pad_token=family_spec["specials"][0]).save_pretrained(directory)
  settings_file = directory / "tokenizer_config.json"
  settings = json.loads(settings_file.read_text())
  settings["chat_template"] = (CHAT_TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
  settings["tokenizer_class"] = "LlamaTokenizerFast" if bos else "Qwen2Tokenizer"
  if bos:
    settings.update(add_bos_token=True, add_eos_token=False)
  settings_file.write_text(json.dumps(settings, ensure_ascii=False, indent=2))
  vocab_size = tokenizer.get_vocab_size()
  save_random_checkpoint(directory, tiny_config("qwen3" if family == "qwen3" else "qwen2",
                                                vocab_size=vocab_size), seed)
  eos = family_spec["generation_eos"]
  generation = {"eos_token_id": (tokenizer.token_to_id(eos) if isinstance(eos, str) else
                                 [tokenizer.token_to_id(token) for token in eos])}
  if bos:
    generation["bos_token_id"] = tokenizer.token_to_id(bos)
  (directory / "generation_config.json").write_text(json.dumps(generation))
  return directory
