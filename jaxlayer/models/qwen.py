"""Qwen2 / Qwen2.5 / Qwen3-dense decoder in Flax NNX.

Blocks are separate modules in `Qwen.layers` (not scanned), so each one can be selected,
frozen and trained on its own. Positions come from the attention mask, so a left-padded
batch gives the same logits per real token as the unpadded sequences.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlayer.models.config import ModelConfig, resolve_dtype
from jaxlayer.models.sharding import fsdp_gathered, keep_batch_split

_INIT = nnx.initializers.normal(stddev=0.02)  # transformers' `initializer_range` default
# Longer sequences attend in equal chunks of at most this many queries, and the backward pass
# recomputes each chunk's scores instead of storing them: a 3k-token sequence holds a seventh
# of its [seq, seq] score matrix at a time (the paper's responses run to 3,072 tokens).
# Shorter sequences attend in one piece.
ATTENTION_QUERY_CHUNK = 512


def _float32_products(method):
  """Runs a Qwen entry point with float32 matrix products when the model is float32.

  JAX's default precision multiplies float32 operands in TF32 on NVIDIA GPUs and in bfloat16
  passes on TPUs: ~4e-4 relative error in the logits, which breaks parity with transformers
  and between the sampler's and the update's log-probs. CPUs multiply in float32 either way.
  A bfloat16 model keeps the backend's default, and a precision the user set with
  `jax.default_matmul_precision` (or JAX_DEFAULT_MATMUL_PRECISION) wins. Set at trace time,
  the precision also holds for the products of the backward pass.
  """
  @functools.wraps(method)
  def at_model_precision(self, *args, **kwargs):
    if self.dtype != jnp.float32 or jax.config.jax_default_matmul_precision is not None:
      return method(self, *args, **kwargs)
    with jax.default_matmul_precision("highest"):
      return method(self, *args, **kwargs)
  return at_model_precision


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32, scaled after casting back (as transformers does)."""

  def __init__(self, dim: int, eps: float, *, dtype):
    self.scale = nnx.Param(jnp.ones((dim,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...] * x32.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """positions [...] -> cos, sin [..., head_dim] (float32), with cfg's RoPE scaling."""
  inv_freq = jnp.asarray(cfg.rope.inverse_frequencies(cfg.head_dim))  # [head_dim/2]
  freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [..., head_dim/2]
  angles = jnp.concatenate([freqs, freqs], axis=-1)  # [..., head_dim]
  scale = cfg.rope.attention_factor  # YaRN's; 1 otherwise
  return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [batch, seq, heads, head_dim], rotate-half convention of transformers' Qwen models."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x.astype(jnp.float32) * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


@flax.struct.dataclass
class KVCache:
  """Static-shape key/value cache for decoding `rows` sequences that continue `prompts` prompts.

  Row r continues prompt r // group (group = rows // prompts): the prompt keys and values are
  stored once per prompt and shared by its `group` rows (e.g. G samples of one prompt), then
  each row has its own slots for generated tokens, filled left to right.
  """

  # Keys are stored transposed (slots last), which suits the query-key product on CPU.
  prefix_keys: tuple[jax.Array, ...]  # per block [prompts, kv_heads, head_dim, prompt_len]
  prefix_values: tuple[jax.Array, ...]  # per block [prompts, kv_heads, prompt_len, head_dim]
  prefix_mask: jax.Array  # [prompts, prompt_len] bool: slot holds a real (non-padding) token
  keys: tuple[jax.Array, ...]  # per block [rows, kv_heads, head_dim, max_new]
  values: tuple[jax.Array, ...]  # per block [rows, kv_heads, max_new, head_dim]
  index: jax.Array  # [] int32: next generated slot to write

  @property
  def group(self) -> int:
    return self.values[0].shape[0] // self.prefix_mask.shape[0]

  @property
  def max_new(self) -> int:
    return self.values[0].shape[2]


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

  def _queries(self, x, cos, sin):
    """x [batch, seq, d_model] -> q [batch, seq, heads, hd]."""
    batch, seq, _ = x.shape
    q = _dense(self.q_proj, x).reshape(batch, seq, self.num_heads, self.head_dim)
    return apply_rope(q if self.q_norm is None else self.q_norm(q), cos, sin)

  def _keys_values(self, x, cos, sin):
    """x [batch, seq, d_model] -> k and v [batch, seq, kv_heads, hd]."""
    batch, seq, _ = x.shape
    k = _dense(self.k_proj, x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
    v = _dense(self.v_proj, x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
    return apply_rope(k if self.k_norm is None else self.k_norm(k), cos, sin), v

  def __call__(self, x, cos, sin, mask, num_last=None):
    """Attention among this call's tokens: x [batch, seq, d_model], mask [batch, seq, seq] bool.

    Returns the output and this call's keys [batch, kv_heads, head_dim, seq] and values
    [batch, kv_heads, seq, head_dim] (the layout of `KVCache`). num_last: the output of the
    last num_last positions only ([batch, num_last, d_model]; keys and values of all).
    """
    k, v = self._keys_values(x, cos, sin)
    if num_last is not None:  # queries of the last positions only
      x, cos, sin, mask = (a[:, -num_last:] for a in (x, cos, sin, mask))
    out = _attention(self._queries(x, cos, sin), k, v, mask).astype(x.dtype)
    return _dense(self.o_proj, out), (k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3))

  def shared_prompt(self, x, cos, sin, prompt_mask, response_mask, *, shape):
    """Attention of prompts and their responses, packed: x [prompts, P + G * R, d_model] holds
    each prompt's P tokens, then its G responses' R tokens each; shape = (P, G, R). A prompt's
    tokens attend among themselves (prompt_mask [prompts, P, P] bool), a response's to its
    prompt's and its own (response_mask [prompts * G, R, P + R]). Returns the output
    [prompts, P + G * R, d_model]. Rows stay on the device of their prompt."""
    prompt_len, group, responses = shape
    prompts = x.shape[0]
    q = self._queries(x, cos, sin)  # [prompts, P + G * R, heads, hd]
    k, v = self._keys_values(x, cos, sin)  # [prompts, P + G * R, kv_heads, hd]
    prompt_out = _attention(q[:, :prompt_len], k[:, :prompt_len], v[:, :prompt_len],
                            prompt_mask)  # [prompts, P, heads * hd]
    # [prompts, G * R, ...] -> [rows, R, ...]: each response's tokens.
    of_rows = lambda a: a[:, prompt_len:].reshape(  # noqa: E731
        prompts * group, responses, *a.shape[2:])
    # Each response's keys: its prompt's (shared by the G responses), then its own.
    response_k, response_v = (jnp.concatenate(
        [jnp.repeat(a[:, :prompt_len], group, axis=0), of_rows(a)], axis=1) for a in (k, v))
    response_out = _attention(of_rows(q), response_k, response_v, response_mask)
    out = jnp.concatenate([prompt_out, response_out.reshape(prompts, group * responses, -1)],
                          axis=1).astype(x.dtype)
    return _dense(self.o_proj, out)

  def decode_step(self, x, cos, sin, prefix_kv, kv, bias, index):
    """One new token per row after a cached prompt prefix and the row's earlier tokens.

    x [rows, 1, d_model]. prefix_kv: keys [prompts, kv_heads, head_dim, prompt_len] and values
    [prompts, kv_heads, prompt_len, head_dim], shared by groups of rows = rows // prompts.
    kv: keys [rows, kv_heads, head_dim, max_new] and values [rows, kv_heads, max_new, head_dim];
    this token's are written at slot `index`. bias [rows, 1, 1, prompt_len + max_new] is 0 where
    a slot is visible and very negative elsewhere. Returns the output and the updated kv.
    """
    rows = x.shape[0]
    prompts, kv_heads, head_dim, prompt_len = prefix_kv[0].shape
    group, heads_per_kv = rows // prompts, self.num_heads // kv_heads
    q = self._queries(x, cos, sin)  # [rows, 1, heads, hd]
    k, v = self._keys_values(x, cos, sin)  # [rows, 1, kv_heads, hd]
    # Keys are stored transposed ([.., head_dim, slots]).
    keys = jax.lax.dynamic_update_slice(kv[0], k.transpose(0, 2, 3, 1), (0, 0, 0, index))
    values = jax.lax.dynamic_update_slice(kv[1], v.transpose(0, 2, 1, 3), (0, 0, index, 0))
    q = q.reshape(rows, kv_heads, heads_per_kv, head_dim) * head_dim**-0.5
    # The prompt part: the queries of a group of rows against their one shared prefix.
    prefix_scores = jnp.einsum("pkqd,pkds->pkqs", _group(q, group), prefix_kv[0])
    prefix_scores = _ungroup(prefix_scores, group)  # [rows, kv_heads, heads_per_kv, prompt_len]
    new_scores = jnp.einsum("rkhd,rkdt->rkht", q, keys)
    scores = jnp.concatenate([prefix_scores, new_scores], axis=-1).astype(jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    prefix_probs = _group(probs[..., :prompt_len], group)  # [prompts, kv_heads, group*heads, len]
    out = _ungroup(jnp.einsum("pkqs,pksd->pkqd", prefix_probs, prefix_kv[1]), group)
    out = out + jnp.einsum("rkht,rktd->rkhd", probs[..., prompt_len:], values)
    out = out.astype(x.dtype).reshape(rows, 1, self.num_heads * head_dim)
    return _dense(self.o_proj, out), (keys, values)


def map_chunks(fn, xs: tuple[jax.Array, ...], max_chunk: int):
  """fn(*xs) over equal chunks, of at most max_chunk, of axis 1 of every array in xs (one
  after another: jax.lax.map), the results joined again along axis 1; fn(*xs) itself when that
  axis is no longer. The last chunk is padded with zeros, whose results are dropped."""
  length = xs[0].shape[1]
  if length <= max_chunk:
    return fn(*xs)
  chunks = -(-length // max_chunk)
  chunk = -(-length // chunks)

  def split(x):  # [batch, length, ...] -> [chunks, batch, chunk, ...]
    x = jnp.pad(x, [(0, 0), (0, chunks * chunk - length)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(x.shape[0], chunks, chunk, *x.shape[2:]), 1, 0)

  def join(y):  # [chunks, batch, chunk, ...] -> [batch, length, ...]
    y = jnp.moveaxis(y, 0, 1)
    return y.reshape(y.shape[0], chunks * chunk, *y.shape[3:])[:, :length]

  return jax.tree.map(join, jax.lax.map(lambda parts: fn(*parts), tuple(map(split, xs))))


def _attention(q, k, v, mask):
  """q [batch, seq, heads, hd] over k, v [batch, keys, kv_heads, hd] where mask [batch, seq,
  keys] is True -> [batch, seq, heads * hd] (float32 scores and softmax), in chunks of at most
  ATTENTION_QUERY_CHUNK queries, each recomputed in the backward pass, when seq is longer."""
  if q.shape[1] <= ATTENTION_QUERY_CHUNK:
    return _attention_at_once(q, k, v, mask)
  attend = jax.checkpoint(lambda q, mask: _attention_at_once(q, k, v, mask))
  return map_chunks(attend, (q, mask), ATTENTION_QUERY_CHUNK)  # padded queries see no key


def _attention_at_once(q, k, v, mask):
  """`_attention` of all queries together: scores [batch, kv_heads, groups, seq, keys]."""
  batch, seq, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  # [batch, seq, kv_heads, groups, head_dim]: the query heads that share a key-value head
  q = q.reshape(batch, seq, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k) * head_dim**-0.5
  scores = jnp.where(mask[:, None, None], scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [batch, kv_heads, groups, seq, keys]
  return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(batch, seq, heads * head_dim)


def _group(x, group):
  """[rows, kv_heads, heads, ...] -> [rows // group, kv_heads, group * heads, ...]."""
  rows, kv_heads, heads = x.shape[:3]
  x = x.reshape(rows // group, group, kv_heads, heads, *x.shape[3:]).swapaxes(1, 2)
  return x.reshape(rows // group, kv_heads, group * heads, *x.shape[4:])


def _ungroup(x, group):
  """Inverse of `_group`: [prompts, kv_heads, group * heads, ...] -> [rows, kv_heads, heads, ..]."""
  prompts, kv_heads, grouped_heads = x.shape[:3]
  x = x.reshape(prompts, kv_heads, group, grouped_heads // group, *x.shape[3:]).swapaxes(1, 2)
  return x.reshape(prompts * group, kv_heads, grouped_heads // group, *x.shape[4:])


def _dense(project, x: jax.Array) -> jax.Array:
  """project (a linear map of the last axis) applied to x [..., d_in] as one [rows, d_in]
  matrix: XLA:CPU computes the weight gradient of a 3-D product through a transposed copy of
  the output's gradient, which cost ~20% of a CPU update step; on 2-D operands it does not."""
  return project(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
    linear = dict(use_bias=False, dtype=dtype, param_dtype=dtype, kernel_init=_INIT, rngs=rngs)
    self.gate_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
    self.up_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
    self.down_proj = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, **linear)

  def __call__(self, x):
    hidden = jax.nn.silu(_dense(self.gate_proj, x)) * _dense(self.up_proj, x)
    return _dense(self.down_proj, hidden)


class Block(nnx.Module):
  """One pre-norm decoder block: the unit jaxlayer selects and trains."""

  def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x, cos, sin, mask, num_last=None):
    """x [batch, seq, d_model] -> the output ([batch, num_last, d_model] if num_last: the last
    positions only) and this block's keys and values of every position."""
    attn_out, kv = self.attn(self.attn_norm(x), cos, sin, mask, num_last)
    x = (x if num_last is None else x[:, -num_last:]) + attn_out
    return x + self.mlp(self.mlp_norm(x)), kv

  def decode_step(self, x, cos, sin, *cache_args):
    """`__call__` for one new token per row; `cache_args` as in `Attention.decode_step`."""
    attn_out, kv = self.attn.decode_step(self.attn_norm(x), cos, sin, *cache_args)
    x = x + attn_out
    return x + self.mlp(self.mlp_norm(x)), kv

  def shared_prompt(self, x, cos, sin, prompt_mask, response_mask, *, shape):
    """`__call__` for prompts packed with their responses; as `Attention.shared_prompt`."""
    x = x + self.attn.shared_prompt(self.attn_norm(x), cos, sin, prompt_mask, response_mask,
                                    shape=shape)
    return x + self.mlp(self.mlp_norm(x))


def _rematerialised(method, block: Block, *args, **static):
  """`method(block, *args, **static)` whose activations the backward pass recomputes instead
  of storing.

  A pure function of the block's arrays goes through jax.checkpoint (not nnx.remat, which
  refuses blocks whose parameters come from an enclosing trace, as frozen blocks do inside
  the update's micro-batch loop).
  """
  graphdef, state = nnx.split(block)
  return jax.checkpoint(
      lambda state, *args: method(nnx.merge(graphdef, state), *args, **static))(state, *args)


def _block_runner(method, remat: bool):
  """method(block, ...), rematerialised when remat."""
  return functools.partial(_rematerialised, method) if remat else method


def _real_tokens(input_ids, attention_mask):
  """The attention mask as bool [batch, seq] (None: every token is real)."""
  if attention_mask is None:
    return jnp.ones_like(input_ids, dtype=bool)
  return attention_mask.astype(bool)


def require_model(model) -> None:
  """Raises a TypeError naming the fix when `model` is not a jaxlayer model, such as the
  (model, config) pair that `from_pretrained` returns."""
  if isinstance(model, Qwen):
    return
  hint = (": from_pretrained returns (model, config); unpack it: "
          "`model, config = models.from_pretrained(...)`."
          if isinstance(model, tuple) and model and isinstance(model[0], Qwen) else
          " (models.from_pretrained(...) loads one).")
  raise TypeError(f"model must be a jaxlayer Qwen model, got {type(model).__name__}{hint}")


def _check_inputs(input_ids, attention_mask, vocab_size: int) -> None:
  """Raises a one-line error naming the fix for inputs `Qwen.__call__` cannot read. Token ids
  are checked against the vocabulary where their values are known (outside jit): the embedding
  lookup would return NaN for an id past the vocabulary, not an error."""
  for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask)):
    if value is not None and not hasattr(value, "ndim"):
      raise TypeError(f"{name} must be an array [batch, seq] (numpy or jax), got "
                      f"{type(value).__name__}: pass np.asarray(...) or the tokenizer's "
                      "return_tensors='np' output.")
  if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(f"input_ids must be integer token ids [batch, seq], got shape "
                     f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}"
                     + (": add the batch axis (ids[None])." if input_ids.ndim == 1 else "."))
  if attention_mask is not None and attention_mask.shape != input_ids.shape:
    raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                     f"{tuple(input_ids.shape)}: give one mask entry per token (1: real, 0: pad).")
  if not isinstance(input_ids, jax.core.Tracer) and getattr(input_ids, "is_fully_addressable",
                                                           True):
    ids = np.asarray(input_ids)
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
      raise ValueError(f"input_ids holds token id {bad[0]}, outside the model's vocabulary "
                       f"[0, {vocab_size}): was it made by another model's tokenizer?")


def _positions_and_causal_mask(mask):
  """Left-padded rows' real tokens mask [batch, seq] bool -> positions [batch, seq] (real
  tokens numbered from 0) and the causal mask [batch, seq, seq] over real tokens."""
  seq = mask.shape[1]
  positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
  return positions, jnp.tril(jnp.ones((seq, seq), dtype=bool))[None] & mask[:, None, :]


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

  @_float32_products
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               num_last: int | None = None, remat: bool = False,
               shared_prompt: tuple[int, int] | None = None, head: bool = True) -> jax.Array:
    """input_ids [batch, seq] -> logits [batch, seq, vocab]; mask 1 = real token, 0 = padding.

    num_last: logits of the last num_last positions only ([batch, num_last, vocab]), which
    saves the output projection, the largest activation, and the last block's work (but its
    keys and values) where no logit is needed (prompts).
    remat: under a gradient, keep only each block's input and recompute the block's
    activations in the backward pass (activation memory of one block instead of all, for
    about a third more compute).
    shared_prompt: (group, prompt_len) when rows come in groups of `group` whose first
    prompt_len tokens and mask are the same (G responses to one prompt): the prompt part runs
    once per group, and its gradient sums over the group. Needs num_last <= seq - prompt_len
    + 1 (logits of response positions and the prompt's last).
    head=False: the final hidden states [batch, n, d_model] instead (`logits` projects them),
    for a caller that rematerialises the output projection on its own.
    """
    _check_inputs(input_ids, attention_mask, self.config.vocab_size)
    if shared_prompt is None:
      hidden, _ = self._forward(input_ids, attention_mask, remat, num_last)  # [batch, n, d]
    else:
      hidden = self._forward_shared_prompt(input_ids, attention_mask, *shared_prompt, remat,
                                           num_last)
    return self.logits(hidden) if head else hidden

  @_float32_products
  def prefill(self, input_ids: jax.Array, input_mask: jax.Array, *, rows: int,
              max_new: int) -> tuple[jax.Array, KVCache]:
    """Runs left-padded prompts input_ids [prompts, prompt_len] (input_mask 1 = real token).

    Returns the logits for each prompt's next token [prompts, vocab] (float32) and a cache for
    `rows` decode rows (a multiple of prompts; row r continues prompt r // (rows // prompts))
    with `max_new` slots for generated tokens.
    """
    prompts = input_ids.shape[0]
    if rows % prompts:
      raise ValueError(f"rows ({rows}) must be a multiple of the number of prompts ({prompts}).")
    hidden, kv = self._forward(input_ids, input_mask, num_last=1)  # [prompts, 1, d_model]
    kv_heads, head_dim = self.config.num_kv_heads, self.config.head_dim
    zeros = lambda *shape: tuple(jnp.zeros(shape, self.dtype) for _ in self.layers)  # noqa: E731
    cache = KVCache(prefix_keys=tuple(k for k, _ in kv), prefix_values=tuple(v for _, v in kv),
                    prefix_mask=input_mask.astype(bool),
                    keys=zeros(rows, kv_heads, head_dim, max_new),
                    values=zeros(rows, kv_heads, max_new, head_dim),
                    index=jnp.zeros((), jnp.int32))
    return self.logits(hidden[:, 0]), cache

  @_float32_products
  def decode_step(self, token_ids: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Feeds one token per row, token_ids [rows], at slot `cache.index`.

    Returns the logits for the next token [rows, vocab] (float32) and the updated cache.
    """
    max_new = cache.max_new
    prompt_lengths = cache.prefix_mask.sum(axis=-1, dtype=jnp.int32)  # [prompts]
    positions = jnp.repeat(prompt_lengths, cache.group) + cache.index  # [rows]
    cos, sin = rope_cos_sin(positions[:, None], self.config)  # [rows, 1, head_dim]
    visible = jnp.concatenate([  # [rows, prompt_len + max_new]
        jnp.repeat(cache.prefix_mask, cache.group, axis=0),
        jnp.broadcast_to(jnp.arange(max_new) <= cache.index, (len(token_ids), max_new))], axis=1)
    # [rows, 1, 1, prompt_len + max_new]
    bias = jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
    x = self._embed(token_ids[:, None])  # [rows, 1, d_model]
    keys, values = [], []
    for i, block in enumerate(self.layers):
      x, (k, v) = block.decode_step(x, cos, sin, (cache.prefix_keys[i], cache.prefix_values[i]),
                                    (cache.keys[i], cache.values[i]), bias, cache.index)
      keys.append(k)
      values.append(v)
    cache = cache.replace(keys=tuple(keys), values=tuple(values), index=cache.index + 1)
    return self.logits(self.final_norm(x[:, 0])), cache

  def _forward(self, input_ids, attention_mask, remat=False, num_last=None):
    """Causal pass over left-padded input_ids [batch, seq]: final hidden and each block's kv.

    num_last: the final hidden of the last num_last positions only. The last block then
    computes its queries, attention output and MLP there alone (its keys and values, which a
    KV cache needs, everywhere): a prefill saves most of one block's work.
    """
    positions, mask = _positions_and_causal_mask(_real_tokens(input_ids, attention_mask))
    x = self._embed(input_ids)  # [batch, seq, d_model]
    cos, sin = rope_cos_sin(positions, self.config)  # [batch, seq, head_dim]
    run_block = _block_runner(Block.__call__, remat)
    kv = []
    for i, block in enumerate(self.layers):
      last = num_last if i == len(self.layers) - 1 else None
      x, block_kv = run_block(block, keep_batch_split(x), cos, sin, mask, num_last=last)
      kv.append(block_kv)
    return self.final_norm(x), kv

  def _forward_shared_prompt(self, input_ids, attention_mask, group, prompt_len, remat,
                            num_last):
    """`_forward`'s final hidden [batch, num_last, d_model] for rows in groups that share
    their first prompt_len tokens. Each block runs once over the packed tokens: each prompt's
    once, followed by its responses', which attend to their prompt's keys and values."""
    rows, seq = input_ids.shape
    if num_last is None or not 1 <= num_last <= seq - prompt_len + 1 or rows % group:
      raise ValueError(f"shared_prompt needs 1 <= num_last <= {seq - prompt_len + 1} and "
                       f"{rows} rows in whole groups of {group}; got num_last={num_last}.")
    mask = _real_tokens(input_ids, attention_mask)
    prompt_ids, prompt_mask = input_ids[::group, :prompt_len], mask[::group, :prompt_len]
    response_ids, response_mask = input_ids[:, prompt_len:], mask[:, prompt_len:]  # [rows, R]
    prompts, responses = rows // group, seq - prompt_len
    # Positions and masks as `_forward` makes them for the whole rows.
    prompt_positions, prompt_causal = _positions_and_causal_mask(prompt_mask)  # [prompts, P(, P)]
    real_prompt = jnp.repeat(prompt_mask.sum(axis=-1), group)  # [rows]
    response_positions = jnp.maximum(
        real_prompt[:, None] + jnp.cumsum(response_mask, axis=-1) - 1, 0)  # [rows, R]
    response_visible = jnp.concatenate([  # [rows, R, P + R]
        jnp.broadcast_to(jnp.repeat(prompt_mask, group, axis=0)[:, None],
                         (rows, responses, prompt_len)),
        jnp.tril(jnp.ones((responses, responses), dtype=bool))[None] & response_mask[:, None]],
        axis=-1)
    # Each prompt's tokens, then its G responses': [prompts, P + G * R, ...].
    packed = lambda p, r: jnp.concatenate(  # noqa: E731
        [p, r.reshape(prompts, group * responses, *r.shape[2:])], axis=1)
    cos, sin = (packed(p, r) for p, r in zip(rope_cos_sin(prompt_positions, self.config),
                                             rope_cos_sin(response_positions, self.config)))
    x = packed(self._embed(prompt_ids), self._embed(response_ids))  # [prompts, P + G * R, d_model]
    run_block = _block_runner(Block.shared_prompt, remat)
    for block in self.layers:
      x = run_block(block, keep_batch_split(x), cos, sin, prompt_causal, response_visible,
                    shape=(prompt_len, group, responses))
    last_prompt = jnp.repeat(x[:, prompt_len - 1:prompt_len], group, axis=0)  # [rows, 1, d]
    hidden = jnp.concatenate(
        [last_prompt, x[:, prompt_len:].reshape(rows, responses, -1)], axis=1)
    return self.final_norm(hidden[:, -num_last:])

  def _embed(self, ids):
    """ids [...] -> embeddings [..., d_model] (nnx.Embed's lookup, the table's fsdp split undone
    first when traced on a mesh: `fsdp_gathered`)."""
    return jnp.take(fsdp_gathered(self.embed.embedding[...], "embed.embedding"), ids, axis=0)

  @_float32_products
  def logits(self, hidden: jax.Array) -> jax.Array:
    """Final (normed) hidden states [..., d_model] -> logits [..., vocab] (float32)."""
    project = self.embed.attend if self.lm_head is None else self.lm_head
    return _dense(project, hidden).astype(jnp.float32)
