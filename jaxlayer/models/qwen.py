"""Qwen2 / Qwen2.5 / Qwen3-dense decoder in Flax NNX.

Blocks are separate modules in `Qwen.layers` (not scanned), so each one can be selected,
frozen and trained on its own. Positions come from the attention mask, so a left-padded
batch gives the same logits per real token as the unpadded sequences.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlayer.models.config import ModelConfig, resolve_dtype

_INIT = nnx.initializers.normal(stddev=0.02)  # transformers' `initializer_range` default


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32, scaled after casting back (as transformers does)."""

  def __init__(self, dim: int, eps: float, *, dtype):
    self.scale = nnx.Param(jnp.ones((dim,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...] * x32.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """positions [batch, seq] -> cos, sin [batch, seq, head_dim] (float32)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [batch, seq, head_dim/2]
  angles = jnp.concatenate([freqs, freqs], axis=-1)  # [batch, seq, head_dim]
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [batch, seq, heads, head_dim], rotate-half convention of transformers' Qwen models."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x.astype(jnp.float32) * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


@flax.struct.dataclass
class KVCache:
  """Static-shape key/value cache for all blocks; slots are filled left to right."""

  keys: tuple[jax.Array, ...]  # per block [batch, max_len, kv_heads, head_dim]
  values: tuple[jax.Array, ...]  # per block [batch, max_len, kv_heads, head_dim]
  key_mask: jax.Array  # [batch, max_len] bool: slot holds a real (non-padding) token
  index: jax.Array  # [] int32: next slot to write

  @property
  def max_len(self) -> int:
    return self.key_mask.shape[1]


class Attention(nnx.Module):
  """Grouped-query attention with RoPE; Qwen2 q/k/v biases or Qwen3 per-head q/k RMSNorm."""

  def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
    d, hd = cfg.hidden_size, cfg.head_dim
    self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
    linear = dict(dtype=dtype, param_dtype=dtype, kernel_init=_INIT, rngs=rngs)
    self.q_proj = nnx.Linear(d, cfg.num_heads * hd, use_bias=cfg.qkv_bias, **linear)
    self.k_proj = nnx.Linear(d, cfg.num_kv_heads * hd, use_bias=cfg.qkv_bias, **linear)
    self.v_proj = nnx.Linear(d, cfg.num_kv_heads * hd, use_bias=cfg.qkv_bias, **linear)
    self.o_proj = nnx.Linear(cfg.num_heads * hd, d, use_bias=False, **linear)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, dtype=dtype)
      self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, dtype=dtype)
    else:
      self.q_norm = self.k_norm = None

  def __call__(self, x, cos, sin, mask, cached_kv=None, write_index=0):
    """x [batch, seq, d_model]; mask [batch, seq, keys] bool.

    Without `cached_kv` the keys are this call's tokens. With `cached_kv` (keys, values of shape
    [batch, max_len, kv_heads, head_dim]) this call's keys are written at `write_index` and the
    queries attend over the whole buffer. Returns the output and the (updated) keys and values.
    """
    batch, seq, _ = x.shape
    q = self.q_proj(x).reshape(batch, seq, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cached_kv is not None:
      start = (0, write_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cached_kv[0], k.astype(cached_kv[0].dtype), start)
      v = jax.lax.dynamic_update_slice(cached_kv[1], v.astype(cached_kv[1].dtype), start)
    groups = self.num_heads // self.num_kv_heads
    q = q.reshape(batch, seq, self.num_kv_heads, groups, self.head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype)) * self.head_dim**-0.5
    scores = jnp.where(mask[:, None, None], scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [batch, kv_heads, groups, seq, keys]
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v).astype(x.dtype)
    out = out.reshape(batch, seq, self.num_heads * self.head_dim)
    return self.o_proj(out), (k, v)


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
    linear = dict(use_bias=False, dtype=dtype, param_dtype=dtype, kernel_init=_INIT, rngs=rngs)
    self.gate_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
    self.up_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
    self.down_proj = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, **linear)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
  """One pre-norm decoder block: the unit jaxlayer selects and trains."""

  def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x, cos, sin, mask, cached_kv=None, write_index=0):
    attn_out, kv = self.attn(self.attn_norm(x), cos, sin, mask, cached_kv, write_index)
    x = x + attn_out
    return x + self.mlp(self.mlp_norm(x)), kv


class Qwen(nnx.Module):
  """The decoder. `model(input_ids, attention_mask)` -> float32 logits [batch, seq, vocab]."""

  def __init__(self, cfg: ModelConfig, *, dtype="float32", rngs: nnx.Rngs):
    dtype = resolve_dtype(dtype)
    self.config = cfg
    self.dtype = dtype
    self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                           embedding_init=_INIT, rngs=rngs)
    self.layers = nnx.List([Block(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    if cfg.tie_word_embeddings:
      self.lm_head = None
    else:
      self.lm_head = nnx.Linear(cfg.hidden_size, cfg.vocab_size, use_bias=False, dtype=dtype,
                                param_dtype=dtype, kernel_init=_INIT, rngs=rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """input_ids [batch, seq] -> logits [batch, seq, vocab]; mask 1 = real token, 0 = padding."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids, dtype=bool)
    attention_mask = attention_mask.astype(bool)
    positions = jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)  # [batch, seq]
    seq = input_ids.shape[1]
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    mask = causal[None] & attention_mask[:, None, :]  # [batch, seq, seq]
    hidden, _ = self._decode(input_ids, positions, mask)
    return self._logits(hidden)

  def init_cache(self, batch: int, max_len: int) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt + completion)."""
    shape = (batch, max_len, self.config.num_kv_heads, self.config.head_dim)
    zeros = tuple(jnp.zeros(shape, self.dtype) for _ in range(self.config.num_layers))
    return KVCache(keys=zeros, values=zeros, key_mask=jnp.zeros((batch, max_len), bool),
                   index=jnp.zeros((), jnp.int32))

  def forward_cached(self, input_ids: jax.Array, input_mask: jax.Array,
                     cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Runs input_ids [batch, seq] after what `cache` holds (prefill or one decode step).

    input_mask [batch, seq] marks real tokens (left padding in a prefill). Returns logits
    [batch, seq, vocab] and the cache with these tokens written at slots index..index+seq.
    """
    input_mask = input_mask.astype(bool)
    seq = input_ids.shape[1]
    tokens_so_far = cache.key_mask.sum(axis=-1, dtype=jnp.int32)  # [batch]
    positions = tokens_so_far[:, None] + jnp.maximum(jnp.cumsum(input_mask, axis=-1) - 1, 0)
    key_mask = jax.lax.dynamic_update_slice(cache.key_mask, input_mask, (0, cache.index))
    query_slots = cache.index + jnp.arange(seq)  # [seq]
    causal = jnp.arange(cache.max_len)[None, :] <= query_slots[:, None]  # [seq, max_len]
    mask = causal[None] & key_mask[:, None, :]  # [batch, seq, max_len]
    kv = list(zip(cache.keys, cache.values))
    hidden, kv = self._decode(input_ids, positions, mask, kv, cache.index)
    new_cache = KVCache(keys=tuple(k for k, _ in kv), values=tuple(v for _, v in kv),
                        key_mask=key_mask, index=cache.index + seq)
    return self._logits(hidden), new_cache

  def _decode(self, input_ids, positions, mask, cached_kv=None, write_index=0):
    """Embeds and runs every block; returns final hidden [batch, seq, d_model] and per-block kv."""
    x = self.embed(input_ids)
    cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
    new_kv = []
    for i, block in enumerate(self.layers):
      x, kv = block(x, cos, sin, mask, None if cached_kv is None else cached_kv[i], write_index)
      new_kv.append(kv)
    return self.final_norm(x), new_kv

  def _logits(self, hidden):
    if self.lm_head is None:
      return self.embed.attend(hidden).astype(jnp.float32)
    return self.lm_head(hidden).astype(jnp.float32)
