"""The clipped-ratio policy loss with optional k3 KL, and its aggregation modes (pure JAX).

Per token t of response i:  l = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta KL,
r = exp(logp - logp_old), KL = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator).
An aggregation turns the per-token values [batch, response] into one scalar; adding one is
one function and one line in `AGGREGATIONS`. Masks are float weights: 1 on response tokens,
0 on padding and on responses that are filtered out.
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
  return jnp.exp(delta) - delta - 1.0


def clipped_surrogate(logps, old_logps, advantages, clip_eps_low: float, clip_eps_high: float):
  """Per-token PPO loss -min(r A, clip(r) A), all [batch, response]; also the ratio r."""
  ratio = jnp.exp(logps - old_logps)
  clipped = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
  return -jnp.minimum(ratio * advantages, clipped * advantages), ratio


def sequence_mean_token_mean(values, mask, max_response_length):
  """Mean over each response's tokens, then over responses (GRPO; TRL loss_type='grpo')."""
  del max_response_length
  tokens = mask.sum(axis=-1)  # [batch]
  per_response = (values * mask).sum(axis=-1) / jnp.maximum(tokens, 1.0)
  present = (tokens > 0).astype(values.dtype)
  return (per_response * present).sum() / jnp.maximum(present.sum(), 1.0)


def token_mean(values, mask, max_response_length):
  """Mean over every response token of the batch (DAPO; TRL loss_type='dapo' / 'bnpo')."""
  del max_response_length
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def sequence_mean_token_sum_norm(values, mask, max_response_length):
  """Sum over tokens / max response length, mean over responses (Dr. GRPO; TRL 'dr_grpo')."""
  responses = (mask.sum(axis=-1) > 0).sum()
  return (values * mask).sum() / (jnp.maximum(responses, 1) * max_response_length)


AGGREGATIONS: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "sequence-mean-token-mean": sequence_mean_token_mean,
    "token-mean": token_mean,
    "sequence-mean-token-sum-norm": sequence_mean_token_sum_norm,
}


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
    if self.kl_beta < 0:
      raise ValueError(f"kl_beta must be >= 0, got {self.kl_beta}.")
    if self.max_response_length < 1:
      raise ValueError(f"max_response_length must be >= 1, got {self.max_response_length}.")


def policy_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, mask: jax.Array,
                ref_logps: jax.Array | None, cfg: LossConfig) -> tuple[jax.Array, dict]:
  """All inputs [batch, response]; returns the scalar loss and token-mean diagnostics."""
  mask = mask.astype(jnp.float32)
  per_token, ratio = clipped_surrogate(logps, old_logps, advantages, cfg.clip_eps_low,
                                       cfg.clip_eps_high)
  metrics = {}
  if cfg.kl_beta > 0:
    if ref_logps is None:
      raise ValueError("kl_beta > 0 needs the reference log-probs.")
    kl = k3_kl(logps, ref_logps)
    per_token = per_token + cfg.kl_beta * kl
    metrics["kl"] = token_mean(kl, mask, 1)
  aggregate = AGGREGATIONS[cfg.aggregation]
  loss = aggregate(per_token, mask, cfg.max_response_length)
  low = (ratio < 1.0 - cfg.clip_eps_low) & (advantages < 0)
  high = (ratio > 1.0 + cfg.clip_eps_high) & (advantages > 0)
  metrics["clip_fraction_low"] = token_mean(low.astype(jnp.float32), mask, 1)
  metrics["clip_fraction_high"] = token_mean(high.astype(jnp.float32), mask, 1)
  metrics["ratio_mean"] = token_mean(ratio, mask, 1)
  return loss, metrics
