"""Declarative Hugging Face tensor name <-> jaxlayer parameter path table.

Each row: (HF name pattern, jaxlayer path pattern, transform). `{i}` stands for the block
index. `TRANSPOSE` rows hold torch `nn.Linear` weights, stored [out, in] by Hugging Face and
[in, out] by Flax.
"""

from __future__ import annotations

import re

import numpy as np

IDENTITY = "identity"
TRANSPOSE = "transpose"

_BLOCK = "model.layers.{i}"
_TABLE = (
    ("model.embed_tokens.weight", "embed.embedding", IDENTITY),
    (f"{_BLOCK}.input_layernorm.weight", "layers.{i}.attn_norm.scale", IDENTITY),
    (f"{_BLOCK}.self_attn.q_proj.weight", "layers.{i}.attn.q_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.self_attn.k_proj.weight", "layers.{i}.attn.k_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.self_attn.v_proj.weight", "layers.{i}.attn.v_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.self_attn.o_proj.weight", "layers.{i}.attn.o_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.self_attn.q_proj.bias", "layers.{i}.attn.q_proj.bias", IDENTITY),
    (f"{_BLOCK}.self_attn.k_proj.bias", "layers.{i}.attn.k_proj.bias", IDENTITY),
    (f"{_BLOCK}.self_attn.v_proj.bias", "layers.{i}.attn.v_proj.bias", IDENTITY),
    (f"{_BLOCK}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.scale", IDENTITY),
    (f"{_BLOCK}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.scale", IDENTITY),
    (f"{_BLOCK}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.scale", IDENTITY),
    (f"{_BLOCK}.mlp.gate_proj.weight", "layers.{i}.mlp.gate_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.mlp.up_proj.weight", "layers.{i}.mlp.up_proj.kernel", TRANSPOSE),
    (f"{_BLOCK}.mlp.down_proj.weight", "layers.{i}.mlp.down_proj.kernel", TRANSPOSE),
    ("model.norm.weight", "final_norm.scale", IDENTITY),
    ("lm_head.weight", "lm_head.kernel", TRANSPOSE),
)


def _pattern(template: str) -> re.Pattern:
  return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_HF_TO_JAX = tuple((_pattern(hf), jx, t) for hf, jx, t in _TABLE)
_JAX_TO_HF = tuple((_pattern(jx), hf, t) for hf, jx, t in _TABLE)


def _lookup(name: str, rules) -> tuple[str, str] | None:
  for pattern, target, transform in rules:
    match = pattern.match(name)
    if match:
      return target.format(**match.groupdict()), transform
  return None


def hf_to_jax_path(hf_name: str) -> tuple[str, str] | None:
  """HF tensor name -> (jaxlayer dotted path, transform), or None for a tensor jaxlayer ignores."""
  return _lookup(hf_name, _HF_TO_JAX)


def jax_to_hf_name(jax_path: str) -> tuple[str, str]:
  """jaxlayer dotted path -> (HF tensor name, transform)."""
  found = _lookup(jax_path, _JAX_TO_HF)
  if found is None:
    raise KeyError(f"No Hugging Face name for parameter {jax_path!r}.")
  return found


def apply_transform(array: np.ndarray, transform: str) -> np.ndarray:
  """Both directions: a transpose is its own inverse."""
  return array.T if transform == TRANSPOSE else array

