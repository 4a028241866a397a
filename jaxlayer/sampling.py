"""Decoding with the KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlayer.models import Qwen


@nnx.jit
def _step(model: Qwen, tokens, mask, cache):
  logits, cache = model.forward_cached(tokens, mask, cache)
  return jnp.argmax(logits[:, -1], axis=-1), cache


def greedy_generate(model: Qwen, prompt_ids: list[int], *, max_new_tokens: int,
                    eos_token_ids: list[int]) -> list[int]:
  """Greedy completion of one prompt, a token at a time (the simple reference loop)."""
  if not prompt_ids:
    raise ValueError("The prompt is empty: give at least one token.")
  cache = model.init_cache(1, len(prompt_ids) + max_new_tokens)
  tokens = jnp.asarray([prompt_ids], jnp.int32)
  completion = []
  for _ in range(max_new_tokens):
    next_token, cache = _step(model, tokens, jnp.ones_like(tokens, bool), cache)
    token = int(jax.device_get(next_token)[0])
    completion.append(token)
    if token in eos_token_ids:
      break
    tokens = jnp.asarray([[token]], jnp.int32)
  return completion
