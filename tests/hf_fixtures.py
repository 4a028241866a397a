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

