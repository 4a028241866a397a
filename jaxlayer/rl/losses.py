"""The clipped-ratio policy loss with optional k3 KL, and its aggregation modes (pure JAX).

Per token t of response i:  l = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta KL,
r = exp(logp - logp_old), KL = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator).
An aggregation turns the per-token values [batch, response] into one scalar, as token weights
and a normaliser; adding one is one function and one line in `AGGREGATIONS`. Masks are float
weights: 1 on response tokens, 0 on padding and on responses that are filtered out.
`is_response` [batch] is 1 on each response of the batch, a filtered one included, and 0 on a
filler row (which has no loss token either): the per-response normalisers count responses, as
TRL's `.mean()` over its batch, oat's over its batch with `ignore_no_eos` responses zeroed,
and veRL's seq-mean over its global batch do, so overlong filtering zeroes a response's terms
but keeps the divisor; filler rows only keep shapes static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, tokens: jax.Array,
                   temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """logits [batch, response, vocab], tokens [batch, response] -> log-probs and entropies.

  Both are taken under softmax(logits / temperature), the distribution the sampler drew from.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  picked = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]  # [batch, response]
  entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)  # [batch, response]
  return picked, entropy


def k3_kl(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  """Per-token k3 estimate of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
  delta = ref_logps - logps
  # exp(delta) - delta - 1 cancels in float32 where the policy is near the reference (0 at
  # delta = 1e-4, negative at 1e-6): there (|delta| < 1e-3) its series, exact to float32 (the
  # next term is delta^5 / 120), elsewhere expm1, which keeps exp(delta) - 1's small digits.
  series = delta * delta * (0.5 + delta * (1.0 / 6.0 + delta / 24.0))
  return jnp.where(jnp.abs(delta) < 1e-3, series, jnp.expm1(delta) - delta)


def clipped_surrogate(logps, old_logps, advantages, clip_eps_low: float, clip_eps_high: float):
  """Per-token PPO loss -min(r A, clip(r) A), all [batch, response]; also the ratio r."""
  ratio = jnp.exp(logps - old_logps)
  clipped = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
  return -jnp.minimum(ratio * advantages, clipped * advantages), ratio


def sequence_mean_token_mean(mask, is_response, max_response_length):
  """Mean over each response's tokens, then over the batch's responses (GRPO; TRL
  loss_type='grpo': a response without a loss token adds 0 and counts)."""
  del max_response_length
  return mask / jnp.maximum(mask.sum(axis=-1, keepdims=True), 1.0), is_response.sum()


def token_mean(mask, is_response, max_response_length):
  """Mean over every loss token of the batch (DAPO; TRL loss_type='dapo' / 'bnpo')."""
  del is_response, max_response_length
  return mask, mask.sum()


def sequence_mean_token_sum_norm(mask, is_response, max_response_length):
  """Sum over tokens / max response length, mean over the batch's responses (Dr. GRPO; TRL
  'dr_grpo': token sums / (batch size x max_completion_length), a constant per batch)."""
  return mask, is_response.sum() * max_response_length


# name -> f(mask [batch, response], is_response [batch], max_response_length) -> (token
# weights [batch, response], normaliser): loss = sum(values * weights) / normaliser. Weights
# only depend on a token's own response, so a batch split into micro-batches sums to the same
# loss with the whole batch's normaliser.
AGGREGATIONS: dict[str, Callable[[jax.Array, jax.Array, int], tuple[jax.Array, jax.Array]]] = {
    "sequence-mean-token-mean": sequence_mean_token_mean,
    "token-mean": token_mean,
    "sequence-mean-token-sum-norm": sequence_mean_token_sum_norm,
}


def masked_mean(values, mask):
  """Mean of values [batch, response] over the tokens where mask is 1 (0 when there are none)."""
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _as_rows(mask, is_response):
  """is_response [batch] as float32 weights; None: every row of mask is a response."""
  if is_response is None:
    return jnp.ones(mask.shape[:1], jnp.float32)
  return jnp.asarray(is_response, jnp.float32)


def aggregate(name: str, values, mask, max_response_length: int, normaliser=None,
              is_response=None):
  """values [batch, response] -> scalar by the aggregation `name`; `normaliser` replaces the
  batch's own (pass the whole batch's when `values` is one micro-batch of it); is_response
  [batch]: 1 on responses, 0 on filler rows (None: every row is a response)."""
  weights, own = AGGREGATIONS[name](mask, _as_rows(mask, is_response), max_response_length)
  return (values * weights).sum() / jnp.maximum(own if normaliser is None else normaliser, 1.0)


def normaliser(cfg: "LossConfig", mask, is_response=None) -> jax.Array:
  """The aggregation's denominator for a whole batch (mask [batch, response], is_response
  [batch] as in `aggregate`)."""
  mask = jnp.asarray(mask, jnp.float32)
  return AGGREGATIONS[cfg.aggregation](mask, _as_rows(mask, is_response),
                                       cfg.max_response_length)[1]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The loss's settings; `max_response_length` is Dr. GRPO's constant normaliser."""

  aggregation: str = "sequence-mean-token-mean"
  clip_eps_low: float = 0.2
  clip_eps_high: float = 0.2
  kl_beta: float = 0.0
  max_response_length: int = 1

  def __post_init__(self):
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"Unknown loss aggregation {self.aggregation!r}: choose one of "
                       f"{sorted(AGGREGATIONS)}.")
    if not (0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0):
      raise ValueError(f"Clip range needs 0 <= clip_eps_low < 1 and clip_eps_high >= 0, got "
                       f"{self.clip_eps_low} and {self.clip_eps_high}.")
    if not self.kl_beta >= 0:  # (a NaN too)
      raise ValueError(f"kl_beta must be >= 0, got {self.kl_beta}.")
    if self.max_response_length < 1:
      raise ValueError(f"max_response_length must be >= 1, got {self.max_response_length}.")


def policy_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, mask: jax.Array,
                ref_logps: jax.Array | None, cfg: LossConfig,
                normaliser: jax.Array | None = None,
                is_response: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """All inputs [batch, response]; returns the scalar loss and token-mean diagnostics.

  normaliser: the aggregation's denominator of the whole batch when this is a micro-batch.
  is_response [batch]: 1 on responses, 0 on filler rows (None: every row is a response).
  """
  mask = mask.astype(jnp.float32)
  per_token, ratio = clipped_surrogate(logps, old_logps, advantages, cfg.clip_eps_low,
                                       cfg.clip_eps_high)
  metrics = {}
  if cfg.kl_beta > 0:
    if ref_logps is None:
      raise ValueError("kl_beta > 0 needs the reference log-probs.")
    kl = k3_kl(logps, ref_logps)
    per_token = per_token + cfg.kl_beta * kl
    metrics["kl"] = masked_mean(kl, mask)
  loss = aggregate(cfg.aggregation, per_token, mask, cfg.max_response_length, normaliser,
                   is_response)
  low = (ratio < 1.0 - cfg.clip_eps_low) & (advantages < 0)
  high = (ratio > 1.0 + cfg.clip_eps_high) & (advantages > 0)
  metrics["clip_fraction_low"] = masked_mean(low.astype(jnp.float32), mask)
  metrics["clip_fraction_high"] = masked_mean(high.astype(jnp.float32), mask)
  metrics["ratio_mean"] = masked_mean(ratio, mask)
  return loss, metrics
