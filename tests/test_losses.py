"""The policy loss: hand-computed values, and TRL's GRPOTrainer loss for the matching loss_type."""

import collections
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer

from jaxlayer.rl import losses

# Two responses of up to 3 tokens; the second has 2 real tokens.
#   token ratios r = exp(logp - old): response 0: 1.5, 1.0, 0.5; response 1: 1.5, 0.5, (pad)
#   advantages A: response 0: +1, response 1: -2
LOGPS = np.log([[1.5, 1.0, 0.5], [1.5, 0.5, 1.0]]) - 1.0
OLD = np.full((2, 3), -1.0)
ADV = np.array([[1.0] * 3, [-2.0] * 3])
MASK = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _hand_per_token(eps_low, eps_high):
  """-min(r A, clip(r) A) worked out token by token."""
  def one(r, a):
    clipped = min(max(r, 1 - eps_low), 1 + eps_high)
    return -min(r * a, clipped * a)
  ratios = [[1.5, 1.0, 0.5], [1.5, 0.5, 1.0]]
  return np.array([[one(r, a) for r in row] for row, a in zip(ratios, [1.0, -2.0])])


def test_per_token_clipped_loss_by_hand():
  # eps 0.2 / 0.28: r=1.5, A=+1 -> clip 1.28 -> -1.28; r=1, A=+1 -> -1; r=0.5, A=+1 -> -0.5
  # (min takes the unclipped 0.5); r=1.5, A=-2 -> min(-3, -2.56) = -3 -> +3; r=0.5, A=-2 ->
  # min(-1, -1.6) = -1.6 -> +1.6.
  expected = np.array([[-1.28, -1.0, -0.5], [3.0, 1.6, 2.0]])
  per_token, _ = losses.clipped_surrogate(LOGPS, OLD, ADV, 0.2, 0.28)
  np.testing.assert_allclose(per_token, expected, rtol=1e-6)
  np.testing.assert_allclose(_hand_per_token(0.2, 0.28), expected, rtol=1e-12)


@pytest.mark.parametrize("aggregation, expected", [
    # response means: (-1.28 - 1 - 0.5) / 3 = -0.92667, (3 + 1.6) / 2 = 2.3; mean: 0.68667
    ("sequence-mean-token-mean", ((-1.28 - 1.0 - 0.5) / 3 + (3.0 + 1.6) / 2) / 2),
    # all 5 real tokens: (-2.78 + 4.6) / 5 = 0.364
    ("token-mean", (-1.28 - 1.0 - 0.5 + 3.0 + 1.6) / 5),
    # token sum / (2 responses * max length 4) = 1.82 / 8
    ("sequence-mean-token-sum-norm", (-1.28 - 1.0 - 0.5 + 3.0 + 1.6) / (2 * 4)),
])
def test_aggregations_by_hand(aggregation, expected):
  cfg = losses.LossConfig(aggregation=aggregation, clip_eps_low=0.2, clip_eps_high=0.28,
                          max_response_length=4)
  loss, metrics = losses.policy_loss(LOGPS, OLD, ADV, MASK, None, cfg)
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  # clipped tokens: r=1.5 with A>0 (high), r=0.5 with A<0 (low), each 1 of 5 real tokens
  assert float(metrics["clip_fraction_high"]) == pytest.approx(0.2)
  assert float(metrics["clip_fraction_low"]) == pytest.approx(0.2)


@pytest.mark.parametrize("aggregation, expected", [
    # TRL 'grpo' / veRL seq-mean-token-mean: the mean of each response's token mean over the 3
    # responses, the filtered one adding 0: (-0.92667 + 2.3 + 0) / 3
    ("sequence-mean-token-mean", ((-1.28 - 1.0 - 0.5) / 3 + (3.0 + 1.6) / 2 + 0.0) / 3),
    # TRL 'dapo' (num_items_in_batch: the loss tokens left) / veRL token-mean: the 5 tokens
    ("token-mean", (-1.28 - 1.0 - 0.5 + 3.0 + 1.6) / 5),
    # TRL 'dr_grpo' / oat: token sums / (3 responses x max length 4), the filtered one counted
    ("sequence-mean-token-sum-norm", (-1.28 - 1.0 - 0.5 + 3.0 + 1.6) / (3 * 4)),
])
def test_filtered_responses_count_in_the_normalisers_and_filler_rows_do_not(aggregation,
                                                                            expected):
  """Row 2 is a response that overlong filtering masks (no loss token, still one of the
  batch's responses); row 3 a filler row (a dropped group standing in for one that dynamic
  sampling did not find, or multi-turn padding: no response at all). Its values would change
  any sum they entered: they must enter none."""
  pad = np.full((2, 3), 7.0)  # values of the masked rows, weighted 0 wherever they go
  logps, old = np.concatenate([LOGPS, pad]), np.concatenate([OLD, pad - 1.0])
  adv = np.concatenate([ADV, pad])
  mask = np.concatenate([MASK, np.zeros((2, 3))])
  is_response = np.array([1.0, 1.0, 1.0, 0.0])
  cfg = losses.LossConfig(aggregation=aggregation, clip_eps_low=0.2, clip_eps_high=0.28,
                          max_response_length=4)
  loss, metrics = losses.policy_loss(logps, old, adv, mask, None, cfg, is_response=is_response)
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  # The 5 loss tokens' ratios 1.5, 1, 0.5, 1.5, 0.5 (the masked ones', e, left out).
  assert float(metrics["ratio_mean"]) == pytest.approx(1.0, rel=1e-6)
  assert float(losses.normaliser(cfg, mask, is_response)) == pytest.approx(
      {"sequence-mean-token-mean": 3, "token-mean": 5, "sequence-mean-token-sum-norm": 12}[
          aggregation])


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
def test_a_batch_without_a_loss_token_has_zero_loss_and_metrics(aggregation):
  """A micro-batch of filler rows only (dynamic sampling short of groups): no response, no
  loss token. Its loss, gradient and diagnostics are 0, not 0 / 0."""
  cfg = losses.LossConfig(aggregation=aggregation, kl_beta=0.1, max_response_length=4)
  no_tokens = np.zeros((2, 3))

  def loss_of(logps):
    return losses.policy_loss(logps, OLD, ADV, no_tokens, LOGPS + 1.0, cfg,
                              is_response=np.zeros(2))

  (loss, metrics), grad = jax.value_and_grad(loss_of, has_aux=True)(jnp.asarray(LOGPS))
  assert float(loss) == 0.0 and not np.asarray(grad).any()
  assert {name: float(value) for name, value in metrics.items()} == {
      "kl": 0.0, "clip_fraction_low": 0.0, "clip_fraction_high": 0.0, "ratio_mean": 0.0}


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
def test_micro_batches_with_the_batch_normaliser_sum_to_the_batch_loss(aggregation):
  rng = np.random.default_rng(2)
  values = rng.normal(size=(6, 4))
  mask = (np.arange(4)[None] < np.array([4, 1, 3, 0, 2, 4])[:, None]).astype(np.float32)
  whole = losses.aggregate(aggregation, values, mask, 5)
  normaliser = losses.normaliser(losses.LossConfig(aggregation=aggregation,
                                                   max_response_length=5), mask)
  parts = [losses.aggregate(aggregation, values[rows], mask[rows], 5, normaliser)
           for rows in ([0, 2, 4], [1, 3, 5])]
  assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-6)


def test_k3_kl_by_hand_and_in_the_loss():
  ref = LOGPS + np.log(2.0)  # ref / pi = 2 on every token: k3 = 2 - ln 2 - 1
  kl = losses.k3_kl(LOGPS, ref)
  np.testing.assert_allclose(kl, np.full((2, 3), 1.0 - math.log(2.0)), rtol=1e-6)
  cfg = losses.LossConfig(aggregation="token-mean", clip_eps_low=0.2, clip_eps_high=0.28,
                          kl_beta=0.1)
  loss, metrics = losses.policy_loss(LOGPS, OLD, ADV, MASK, ref, cfg)
  assert float(loss) == pytest.approx(1.82 / 5 + 0.1 * (1.0 - math.log(2.0)), rel=1e-6)
  assert float(metrics["kl"]) == pytest.approx(1.0 - math.log(2.0), rel=1e-6)


def test_k3_kl_of_a_policy_near_the_reference_is_its_small_positive_value():
  """exp(delta) - delta - 1 = delta^2 / 2 + delta^3 / 6 + ...: in float32 the plain formula
  gave 0 at delta = 1e-4 and a negative value at 1e-6."""
  delta = np.array([1e-6, 1e-4, -1e-4, 3e-3, -3e-3, 0.5], np.float32)
  kl = losses.k3_kl(jnp.zeros(delta.shape, jnp.float32), jnp.asarray(delta))
  exact = np.expm1(delta.astype(np.float64)) - delta.astype(np.float64)
  np.testing.assert_allclose(kl, exact, rtol=2e-4)
  # Below |delta| = 1e-3 the series, good to float32's precision up to that bound.
  series = np.array([9e-4, -9e-4, 5e-4], np.float32)
  np.testing.assert_allclose(losses.k3_kl(jnp.zeros(3, jnp.float32), jnp.asarray(series)),
                             np.expm1(series.astype(np.float64)) - series, rtol=2e-6)
  # Its gradient with respect to the policy's log-probs: -(exp(delta) - 1).
  grad = jax.grad(lambda logps: losses.k3_kl(logps, jnp.asarray(delta)).sum())(
      jnp.zeros(delta.shape, jnp.float32))
  np.testing.assert_allclose(grad, -np.expm1(delta.astype(np.float64)), rtol=2e-4)


def test_token_logprobs_and_entropy_match_scipy():
  from scipy.special import log_softmax
  from scipy.stats import entropy

  logits = np.random.default_rng(0).normal(size=(2, 3, 7))
  tokens = np.array([[0, 3, 6], [1, 1, 2]])
  logps, ent = losses.token_logprobs(jnp.asarray(logits), jnp.asarray(tokens), temperature=0.7)
  reference = log_softmax(logits / 0.7, axis=-1)
  np.testing.assert_allclose(logps, np.take_along_axis(reference, tokens[..., None], -1)[..., 0],
                             rtol=1e-5)
  np.testing.assert_allclose(ent, entropy(np.exp(reference), axis=-1), rtol=1e-5)


def test_bad_loss_settings_are_named():
  with pytest.raises(ValueError, match="Unknown loss aggregation 'seq-mean'.*token-mean"):
    losses.LossConfig(aggregation="seq-mean")
  with pytest.raises(ValueError, match="kl_beta"):
    losses.LossConfig(kl_beta=-1.0)
  # clip_eps_low = 1 clips the ratio at 0 from below: no lower clip at all.
  with pytest.raises(ValueError, match="0 <= clip_eps_low < 1 .* got 1.0 and 0.2"):
    losses.LossConfig(clip_eps_low=1.0)
  with pytest.raises(ValueError, match="max_response_length must be >= 1, got 0"):
    losses.LossConfig(aggregation="sequence-mean-token-sum-norm", max_response_length=0)


@pytest.mark.parametrize("setting", ["kl_beta", "clip_eps_low", "clip_eps_high"])
def test_a_nan_loss_setting_is_refused(setting):
  """A NaN kl_beta passed `kl_beta < 0` and then turned the KL term off (NaN > 0 is False)."""
  with pytest.raises(ValueError, match=setting):
    losses.LossConfig(**{setting: math.nan})


# --- TRL's GRPOTrainer._compute_loss on the same batch --------------------------------------

def _trl_loss(loss_type, logps, old, ref, adv, mask, *, beta, eps_low, eps_high, max_len):
  """TRL 1.16's `GRPOTrainer._compute_loss`, run as is on a stand-in trainer whose model
  "computes" the given per-token log-probs. Returns (loss, d loss / d logps, {metric: the
  value TRL logged})."""
  logps_t = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
  identity = lambda x, **_: x  # noqa: E731  (one process: gather / reduce are no-ops)
  trainer = types.SimpleNamespace(
      _get_per_token_logps_and_entropies=lambda *a, **k: (logps_t, torch.zeros_like(logps_t),
                                                          None),
      top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
      beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
      args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False),
      model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
      max_completion_length=max_len, _entropy_bonus_enabled=False, aux_loss_enabled=False,
      _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
      accelerator=types.SimpleNamespace(num_processes=1, gather=identity, reduce=identity,
                                        gather_for_metrics=identity, sync_gradients=True))
  trainer.args.steps_per_generation = 1
  batch, length = logps.shape
  mask_t = torch.tensor(mask, dtype=torch.float64)
  inputs = {
      "prompt_ids": torch.zeros((batch, 2), dtype=torch.long),
      "prompt_mask": torch.ones((batch, 2), dtype=torch.long),
      "completion_ids": torch.zeros((batch, length), dtype=torch.long),
      "completion_mask": mask_t,
      "advantages": torch.tensor(adv, dtype=torch.float64),
      "old_per_token_logps": torch.tensor(old, dtype=torch.float64),
      "ref_per_token_logps": torch.tensor(ref, dtype=torch.float64),
      "num_items_in_batch": mask_t.sum(),
  }
  loss = GRPOTrainer._compute_loss(trainer, None, inputs)
  loss.backward()
  logged = {name: values[-1] for name, values in trainer._metrics["train"].items()}
  return float(loss.detach()), logps_t.grad.numpy(), logged


TRL_LOSS_TYPES = {  # TRL loss_type -> our aggregation
    "grpo": "sequence-mean-token-mean",
    "bnpo": "token-mean",
    "dapo": "token-mean",
    "dr_grpo": "sequence-mean-token-sum-norm",
}


@pytest.mark.parametrize("loss_type", sorted(TRL_LOSS_TYPES))
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("filtered", [(), (1, 4)], ids=["all-trained", "overlong-filtered"])
def test_loss_and_gradient_equal_trl(loss_type, beta, filtered):
  """filtered: rows whose completion mask is all 0, as TRL's mask_truncated_completions
  leaves a truncated response (and jaxlayer's overlong filtering): still rows of the batch.
  Response 4 has advantage 0 (a group of equal rewards): its tokens, clipped or not, change no
  loss, and TRL counts them in neither clip fraction."""
  rng = np.random.default_rng(1)
  batch, length, max_len = 6, 5, 7
  old = rng.normal(-2.0, 0.5, (batch, length))
  logps = old + rng.normal(0.0, 0.3, (batch, length))  # ratios spread across the clip range
  ref = old + rng.normal(0.0, 0.2, (batch, length))
  adv = rng.normal(size=batch)
  adv[4] = 0.0
  lengths = np.array([5, 3, 1, 4, 5, 2])
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float64)
  mask[list(filtered)] = 0.0
  eps_low, eps_high = 0.2, 0.28

  trl_loss, trl_grad, trl_metrics = _trl_loss(loss_type, logps, old, ref, adv, mask, beta=beta,
                                              eps_low=eps_low, eps_high=eps_high,
                                              max_len=max_len)
  cfg = losses.LossConfig(aggregation=TRL_LOSS_TYPES[loss_type], clip_eps_low=eps_low,
                          clip_eps_high=eps_high, kl_beta=beta, max_response_length=max_len)
  adv_tokens = np.broadcast_to(adv[:, None], (batch, length))

  def ours(lp):
    return losses.policy_loss(lp, jnp.asarray(old, jnp.float32),
                              jnp.asarray(adv_tokens, jnp.float32), jnp.asarray(mask, jnp.float32),
                              jnp.asarray(ref, jnp.float32), cfg)

  (loss, metrics), grad = jax.value_and_grad(ours, has_aux=True)(jnp.asarray(logps, jnp.float32))
  assert float(loss) == pytest.approx(trl_loss, rel=1e-5, abs=1e-6)
  np.testing.assert_allclose(np.asarray(grad), trl_grad, rtol=1e-4, atol=1e-6)
  ours_logged = {"clip_ratio/low_mean": metrics["clip_fraction_low"],
                 "clip_ratio/high_mean": metrics["clip_fraction_high"]}
  if beta:
    ours_logged["kl"] = metrics["kl"]
  assert {name: float(value) for name, value in ours_logged.items()} == pytest.approx(
      {name: trl_metrics[name] for name in ours_logged}, rel=1e-5)
