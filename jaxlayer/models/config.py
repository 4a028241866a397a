"""Hugging Face `config.json` -> `ModelConfig`, the one description of a Qwen decoder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3")
SUPPORTED_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SUPPORTED_ROPE_TYPES = ("default",)
SUPPORTED_ACTIVATIONS = ("silu",)
# transformers' default head_dim when config.json has none (Qwen3Config's is 128).
DEFAULT_HEAD_DIM = {"qwen3": 128}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a Qwen2 / Qwen2.5 / Qwen3-dense decoder (and DeepSeek-R1-Distill-Qwen)."""

  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  rms_norm_eps: float
  tie_word_embeddings: bool
  max_position_embeddings: int
  # The full HF config dict, kept so `save_pretrained` writes back every key it was given.
  hf_config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
  # Directory the checkpoint was read from (its tokenizer files travel with exports).
  source_dir: str | None = dataclasses.field(default=None, compare=False)

  @property
  def qkv_bias(self) -> bool:
    """Qwen2 has biases on q/k/v; Qwen3 replaces them with per-head q/k RMSNorm."""
    return self.model_type == "qwen2"

  @property
  def qk_norm(self) -> bool:
    return self.model_type == "qwen3"

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "ModelConfig":
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type {model_type!r}: jaxlayer supports {list(SUPPORTED_MODEL_TYPES)} "
          "(Qwen2, Qwen2.5, Qwen3 dense, DeepSeek-R1-Distill-Qwen)."
      )
    # transformers 5 keeps RoPE under `rope_parameters`, older configs under `rope_scaling`; a
    # `rope_scaling` added to a newer config (Qwen's long-context recipe) wins, as there.
    scaling = hf.get("rope_scaling") or {}
    rope = {**(hf.get("rope_parameters") or {}), **scaling}
    rope_type = scaling.get("rope_type", scaling.get("type", rope.get("rope_type", "default")))
    if rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(
          f"Unsupported rope_type {rope_type!r} in config.json: jaxlayer supports "
          f"{list(SUPPORTED_ROPE_TYPES)}. Remove the rope scaling entry to use plain RoPE."
      )
    # transformers 5 keeps theta under `rope_parameters`; older configs keep it at top level.
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    _check_supported(hf)
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads") if k not in hf]
    if missing:
      raise ValueError(f"config.json lacks required keys {missing}.")
    num_heads = hf["num_attention_heads"]
    return cls(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or DEFAULT_HEAD_DIM.get(model_type,
                                                            hf["hidden_size"] // num_heads),
        rope_theta=float(rope_theta),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        hf_config=dict(hf),
    )

  @classmethod
  def from_json_file(cls, path: str | Path) -> "ModelConfig":
    with open(path) as f:
      return cls.from_hf_dict(json.load(f))


def _sliding_layers(hf: dict[str, Any]) -> list[int]:
  """The blocks that transformers gives a sliding window (its Qwen2/Qwen3 config rules)."""
  if not hf.get("use_sliding_window", False) or hf.get("sliding_window") is None:
    return []
  types = hf.get("layer_types") or [
      "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
      for i in range(hf.get("num_hidden_layers", 0))]
  return [i for i, kind in enumerate(types) if kind == "sliding_attention"]


def _check_supported(hf: dict[str, Any]) -> None:
  """Refuses settings that would make the model differ from transformers' (one line each)."""
  act = hf.get("hidden_act", "silu")
  if act not in SUPPORTED_ACTIVATIONS:
    raise ValueError(f"Unsupported hidden_act {act!r} in config.json: jaxlayer supports "
                     f"{list(SUPPORTED_ACTIVATIONS)} (the SwiGLU of Qwen models).")
  if hf.get("attention_bias") and hf["model_type"] == "qwen3":
    raise ValueError("Unsupported attention_bias=true in a qwen3 config.json: jaxlayer's Qwen3 "
                     "has no q/k/v/o biases (attention_bias=false, as in released Qwen3).")
  sliding = _sliding_layers(hf)
  if sliding:
    raise ValueError(
        f"Unsupported sliding-window attention in config.json (use_sliding_window=true, "
        f"sliding_window={hf['sliding_window']}, on blocks {sliding}): jaxlayer attends over "
        "all positions; use_sliding_window=false gives the same model on sequences no longer "
        "than sliding_window.")
  architectures = hf.get("architectures") or []
  if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
    raise ValueError(f"Unsupported architectures {architectures} in config.json: jaxlayer loads "
                     "causal language models (Qwen2ForCausalLM, Qwen3ForCausalLM), whose "
                     "checkpoints hold lm_head.weight or tie it to the embeddings.")


def resolve_dtype(dtype: str | Any) -> Any:
  """'float32' / 'bfloat16' (or the jnp dtype itself) -> jnp dtype; anything else is an error."""
  for name, jnp_dtype in SUPPORTED_DTYPES.items():
    if dtype == name or dtype == jnp_dtype:
      return jnp_dtype
  raise ValueError(f"Unknown dtype {dtype!r}: choose one of {list(SUPPORTED_DTYPES)}.")
