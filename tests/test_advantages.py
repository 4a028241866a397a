"""Group-relative advantages: hand-computed values, TRL's formula, DAPO's group filter."""

import math

import numpy as np
import pytest
import torch
from trl.trainer.utils import nanstd

from jaxlayer.rl import advantages


def test_grpo_advantages_by_hand():
  # group 0: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3) -> +-0.5 * sqrt(3)
  # group 1: rewards 2, 0, 0, 0 -> mean 0.5, unbiased std 1 -> 1.5, -0.5, -0.5, -0.5
  rewards = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0])
  half_root3 = 0.5 * math.sqrt(3.0)
  expected = [half_root3, -half_root3, -half_root3, half_root3, 1.5, -0.5, -0.5, -0.5]
  np.testing.assert_allclose(advantages.grpo_advantages(rewards, 4, eps=0.0), expected,
                             rtol=1e-12)


def test_dr_grpo_advantages_have_no_std_division():
  rewards = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(advantages.get_estimator("dr_grpo")(rewards, 4),
                             [0.5, -0.5, -0.5, 0.5, 1.5, -0.5, -0.5, -0.5])


def test_grpo_advantages_equal_trl_scale_rewards_group():
  """TRL 1.16 GRPOTrainer: (r - group mean) / (nanstd(group) + 1e-4)."""
  rewards = np.random.default_rng(0).normal(size=24)
  r = torch.tensor(rewards).view(-1, 8)
  trl = ((r - r.mean(dim=1, keepdim=True)) / (nanstd(r, dim=1, keepdim=True) + 1e-4)).view(-1)
  np.testing.assert_allclose(advantages.grpo_advantages(rewards, 8, eps=1e-4), trl.numpy(),
                             rtol=1e-7)  # TRL computes the Bessel factor in float32


def test_equal_rewards_give_exactly_zero_and_no_signal():
  rewards = np.array([0.1, 0.1, 0.1, 0.0, 1.0, 0.0])
  assert advantages.grpo_advantages(rewards, 3)[:3].tolist() == [0.0, 0.0, 0.0]
  assert advantages.dr_grpo_advantages(rewards, 3)[:3].tolist() == [0.0, 0.0, 0.0]
  assert advantages.groups_with_signal(rewards, 3).tolist() == [False, True]


def test_bad_groups_are_named():
  with pytest.raises(ValueError, match="group_size >= 2"):
    advantages.grpo_advantages(np.zeros(4), 1)
  with pytest.raises(ValueError, match="5 rewards do not split into groups of 2"):
    advantages.grpo_advantages(np.zeros(5), 2)
  with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; registered: "
                     r"\['dr_grpo', 'grpo'\]\. Register your own advantage estimator in the "
                     r"config file \(for the command line\) or before it is named: "
                     r"advantages.ADVANTAGE_ESTIMATORS\['ppo'\] = your_function\."):
    advantages.get_estimator("ppo")
