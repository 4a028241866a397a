"""The least time XLA:CPU's matmuls allow for a piece of work on this machine, measured now.

Work made of matmuls cannot run faster than its FLOPs divided by the best rate XLA:CPU
reaches for those matmuls, whatever the schedule. The benchmarks print this floor beside
each measured time, timed in the same run (a shared machine's speed changes by tens of per
cent from one hour to the next):
- `linear_rate`: the best FLOP/s of the model's [tokens, d_in] x [d_in, d_out] linear maps and
  of their two gradient products (dy @ w.T, x.T @ dy), each with XLA:CPU's default YNNPACK
  kernels and without; credited to every FLOP of an update or a prefill;
- `decode_rate`: the FLOP/s of one token's products of every block and of the logits for
  `rows` rows, `steps` times in a loop where each step depends on the last (as decoding
  does), the faster kernel choice; credited to every decoded FLOP.
Each product is also timed split over all of this process's devices (when there are
several, e.g. one CPU device per core), each device taking a share of the rows, and the
faster way counts. Attention, normalisation, sampling, the optimizer, communication and the
host are taken to cost nothing, so the floor is generous: no implementation built on these
matmuls can beat it.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxlayer import models

KERNELS = {"YNNPACK": {}, "no YNNPACK": {"xla_cpu_experimental_ynn_fusion_type": ""}}
REPEATS = 5  # timed calls per product (best of)


def _best_seconds(fn, args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def _fastest_seconds(fn, args, in_specs, out_spec) -> float:
  """Best time of fn(*args) compiled with each kernel choice, on one device and split over
  all local devices by in_specs / out_spec (axis "rows")."""
  runs = [(fn, args)]
  devices = jax.local_devices()
  divides = all(a.shape[spec.index("rows")] % len(devices) == 0
                for a, spec in zip(args, in_specs) if "rows" in spec)
  if len(devices) > 1 and divides:
    mesh = jax.sharding.Mesh(devices, ("rows",))
    split_args = [jax.device_put(a, NamedSharding(mesh, spec)) for a, spec in zip(args, in_specs)]
    runs.append((jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_spec),
                 split_args))
  return min(_best_seconds(jax.jit(f).lower(*a).compile(compiler_options=options), a)
             for f, a in runs for options in KERNELS.values())


def linear_shapes(cfg: models.ModelConfig) -> list[tuple[int, int]]:
  """(d_in, d_out) of q, k (and v), o, gate (and up), down, and the output projection."""
  d, hd = cfg.hidden_size, cfg.head_dim
  return [(d, cfg.num_heads * hd), (d, cfg.num_kv_heads * hd), (cfg.num_heads * hd, d),
          (d, cfg.intermediate_size), (cfg.intermediate_size, d), (d, cfg.vocab_size)]


@functools.cache
def linear_rate(cfg: models.ModelConfig, tokens: int) -> float:
  """Best FLOP/s of x @ w, dy @ w.T and x.T @ dy over the model's linear maps."""
  best = 0.0
  for d_in, d_out in sorted(set(linear_shapes(cfg))):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (tokens, d_in))  # [tokens, d_in]
    w = jax.random.normal(keys[1], (d_in, d_out))  # [d_in, d_out]
    dy = jax.random.normal(keys[2], (tokens, d_out))  # [tokens, d_out]
    # Split over devices: each takes a share of the output's rows.
    for fn, args, in_specs in ((lambda x, w: x @ w, (x, w), (P("rows"), P())),
                               (lambda dy, w: dy @ w.T, (dy, w), (P("rows"), P())),
                               (lambda x, dy: x.T @ dy, (x, dy), (P(None, "rows"), P()))):
      seconds = _fastest_seconds(fn, args, in_specs, P("rows"))
      best = max(best, 2 * tokens * d_in * d_out / seconds)
  return best


@functools.cache
def decode_rate(cfg: models.ModelConfig, rows: int, steps: int) -> float:
  """FLOP/s of `steps` dependent steps of one token's products (all blocks + logits)."""
  d = cfg.hidden_size
  q, kv, o, gate, down, head = linear_shapes(cfg)
  per_block = [q, kv, kv, o, gate, gate, down]  # q, k, v, o, gate, up, down
  keys = iter(jax.random.split(jax.random.key(1), len(per_block) * cfg.num_layers + 2))
  weights = [[jax.random.normal(next(keys), s) * s[0]**-0.5 for s in per_block]
             for _ in range(cfg.num_layers)]
  head_weight = jax.random.normal(next(keys), head) * d**-0.5
  x = jax.random.normal(next(keys), (rows, d))  # [rows, d_model]

  def run(x, weights, head_weight):
    def step(_, x):
      for wq, wk, wv, wo, wgate, wup, wdown in weights:
        attention = x @ wq + jnp.tile(x @ wk + x @ wv, wq.shape[1] // wk.shape[1])
        x = x + attention @ wo
        x = x + (jax.nn.silu(x @ wgate) * (x @ wup)) @ wdown
      x = x + jnp.max(x @ head_weight, axis=-1, keepdims=True) * 1e-3  # needs every logit
      return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True))  # no overflow
    return jax.lax.fori_loop(0, steps, step, x)

  per_token = cfg.num_layers * sum(a * b for a, b in per_block) + head[0] * head[1]
  seconds = _fastest_seconds(run, (x, weights, head_weight), (P("rows"), P(), P()), P("rows"))
  return 2 * rows * steps * per_token / seconds


def work_flops(cfg: models.ModelConfig, prompts: int, prompt_len: int, samples: int,
               new_tokens: int) -> float:
  """2 x multiply-adds of prefilling each prompt once and decoding `samples` rows per prompt.

  Per token: every matmul (logits included) plus attention over the token's context.
  """
  d, hd = cfg.hidden_size, cfg.head_dim
  per_block = d * hd * (cfg.num_heads * 2 + cfg.num_kv_heads * 2) + 3 * d * cfg.intermediate_size
  per_token = 2 * (cfg.num_layers * per_block + d * cfg.vocab_size)
  attention = lambda context: 4 * cfg.num_layers * cfg.num_heads * hd * context  # noqa: E731
  prefill = sum(per_token + attention(t + 1) for t in range(prompt_len))
  decode = sum(per_token + attention(prompt_len + t) for t in range(new_tokens))
  return prompts * prefill + prompts * samples * decode


def rollout_seconds(cfg: models.ModelConfig, prompts: int, prompt_len: int, samples: int,
                    new_tokens: int) -> float:
  """Floor of `work_flops(cfg, prompts, prompt_len, samples, new_tokens)`."""
  prefill = work_flops(cfg, prompts, prompt_len, samples, 0)
  decode = work_flops(cfg, prompts, prompt_len, samples, new_tokens) - prefill
  return (prefill / linear_rate(cfg, prompts * prompt_len)
          + decode / decode_rate(cfg, prompts * samples, new_tokens))
