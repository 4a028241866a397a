"""Advantage estimators over groups of responses, and DAPO's group filter (host-side numpy).

Rewards arrive as one flat array [num_prompts * group_size] in which row i*G+j is response j
to prompt i (the sampler's order). An estimator returns one advantage per response; the
train step gives it to every token of that response. Adding an estimator is one function
and one line in `ADVANTAGE_ESTIMATORS`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxlayer.text import unknown_name


def _grouped(rewards: np.ndarray, group_size: int) -> np.ndarray:
  rewards = np.asarray(rewards, np.float64)
  if group_size < 2:
    raise ValueError(f"Group-relative advantages need group_size >= 2, got {group_size}.")
  if rewards.ndim != 1 or rewards.size % group_size:
    raise ValueError(f"{rewards.size} rewards do not split into groups of {group_size}.")
  return rewards.reshape(-1, group_size)  # [num_prompts, group_size]


def _centred(grouped: np.ndarray) -> np.ndarray:
  """R_i - mean R per group; exactly 0 in a group of equal rewards (not 0 up to rounding)."""
  centred = grouped - grouped.mean(axis=1, keepdims=True)
  return np.where(grouped.max(axis=1, keepdims=True) > grouped.min(axis=1, keepdims=True),
                  centred, 0.0)


def grpo_advantages(rewards: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
  """GRPO: (R_i - mean R) / (std R + eps) within each group (unbiased std, as veRL and TRL)."""
  grouped = _grouped(rewards, group_size)
  return (_centred(grouped) / (grouped.std(axis=1, ddof=1, keepdims=True) + eps)).reshape(-1)


def dr_grpo_advantages(rewards: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
  """Dr. GRPO: R_i - mean R, no division by the group's std (`eps` is unused)."""
  del eps
  return _centred(_grouped(rewards, group_size)).reshape(-1)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., np.ndarray]] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def get_estimator(name: str) -> Callable[..., np.ndarray]:
  if name not in ADVANTAGE_ESTIMATORS:
    raise ValueError(unknown_name("advantage estimator", name, ADVANTAGE_ESTIMATORS,
                                  "advantages.ADVANTAGE_ESTIMATORS", "your_function"))
  return ADVANTAGE_ESTIMATORS[name]


def groups_with_signal(rewards: np.ndarray, group_size: int) -> np.ndarray:
  """True [num_prompts] where a group's scores are not all equal (DAPO's dynamic sampling
  passes accuracies: 0 < correct responses < G).

  A group whose responses all score the same has zero advantage everywhere and only dilutes
  the batch. Of total rewards (the training metric `groups_with_signal`), it is exactly the
  groups whose advantages are not all zero.
  """
  grouped = _grouped(rewards, group_size)
  return grouped.max(axis=1) > grouped.min(axis=1)
