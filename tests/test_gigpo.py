"""GiGPO advantages against values worked out by hand from the paper's definitions."""

import math

import numpy as np
import pytest

from jaxlayer.rl.gigpo import EPSILON, discounted_returns, gigpo_advantages

# Three trajectories of one task instance, (state_key, reward) per step. gamma = 0.5 keeps
# the arithmetic short. s0 is shared by all three, s1 and s2 by A and B (with equal
# returns), s3 is seen once, s4 twice within C.
A = [("s0", 0.0), ("s1", 0.0), ("s2", 1.0)]
B = [("s0", 0.0), ("s3", 0.0), ("s1", 0.0), ("s2", 1.0)]
C = [("s0", 0.0), ("s4", 0.0), ("s4", -1.0)]

# Discounted returns, R_t = r_t + 0.5 * R_{t+1}:
#   A: R2 = 1,  R1 = 0 + 0.5 * 1 = 0.5,   R0 = 0 + 0.5 * 0.5 = 0.25
#   B: R3 = 1,  R2 = 0.5,  R1 = 0.25,  R0 = 0.125
#   C: R2 = -1, R1 = 0 + 0.5 * -1 = -0.5, R0 = 0 + 0.5 * -0.5 = -0.25
# Episode returns (undiscounted sums): A = 1, B = 1, C = -1.
#   mean = 1/3; deviations 2/3, 2/3, -4/3
#   std (ddof 1) = sqrt((4/9 + 4/9 + 16/9) / 2) = sqrt(4/3) = 2 / sqrt(3)
EPISODE_STD = 2 / math.sqrt(3)
# Anchor group s0: returns 0.25 (A), 0.125 (B), -0.25 (C)
#   mean = (0.25 + 0.125 - 0.25) / 3 = 0.125 / 3 = 1/24
#   deviations: 0.25 - 1/24 = 5/24, 0.125 - 1/24 = 2/24, -0.25 - 1/24 = -7/24
#   std (ddof 1) = sqrt(((5/24)^2 + (2/24)^2 + (7/24)^2) / 2) = sqrt(78 / 2) / 24 = sqrt(39) / 24
S0_STD = math.sqrt(39) / 24
# Anchor group s4 (both in C): returns -0.5, -1; mean -0.75; deviations 0.25, -0.25
#   std (ddof 1) = sqrt((0.0625 + 0.0625) / 1) = sqrt(0.125)
S4_STD = math.sqrt(0.125)
# s1: 0.5 and 0.5, equal -> 0. s2: 1 and 1, equal -> 0. s3: seen once -> 0.


def test_step_returns_are_discounted_from_each_step():
  np.testing.assert_allclose(discounted_returns([0.0, 0.0, 1.0], 0.5), [0.25, 0.5, 1.0])
  # The default gamma 0.95: 0.95^2 = 0.9025.
  np.testing.assert_allclose(discounted_returns([0.0, 0.0, 1.0], 0.95), [0.9025, 0.95, 1.0])
  np.testing.assert_allclose(discounted_returns([1.0, -1.0], 0.5), [1.0 - 0.5, -1.0])
  # gamma = 1, the end of its range: undiscounted returns (s0's: A's 1 and C's -1).
  undiscounted = gigpo_advantages([A, C], gamma=1.0, normalize="none")
  np.testing.assert_allclose([undiscounted.step[0][0], undiscounted.step[1][0]], [1.0, -1.0])


def test_std_normalised_advantages_match_hand_values():
  result = gigpo_advantages([A, B, C], gamma=0.5, omega=1.0, normalize="std")
  episode_a = (2 / 3) / (EPISODE_STD + EPSILON)  # = 0.57735
  episode_c = (-4 / 3) / (EPISODE_STD + EPSILON)  # = -1.15470
  for advantages, expected in zip(result.episode, [episode_a, episode_a, episode_c]):
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)  # every step of a trajectory

  s0 = [(5 / 24) / (S0_STD + EPSILON), (2 / 24) / (S0_STD + EPSILON),
        (-7 / 24) / (S0_STD + EPSILON)]  # = 0.80064, 0.32026, -1.12090
  s4 = [0.25 / (S4_STD + EPSILON), -0.25 / (S4_STD + EPSILON)]  # = 0.70711, -0.70711
  np.testing.assert_allclose(result.step[0], [s0[0], 0.0, 0.0], rtol=1e-12)
  np.testing.assert_allclose(result.step[1], [s0[1], 0.0, 0.0, 0.0], rtol=1e-12)
  np.testing.assert_allclose(result.step[2], [s0[2], s4[0], s4[1]], rtol=1e-12)
  assert result.step[1][1] == 0.0  # s3, seen once
  assert result.step[0][1] == result.step[1][2] == 0.0  # s1, equal returns

  np.testing.assert_allclose(result.combined[0], [episode_a + s0[0], episode_a, episode_a])
  np.testing.assert_allclose(result.combined[2],
                             [episode_c + s0[2], episode_c + s4[0], episode_c + s4[1]])
  np.testing.assert_allclose(result.combined[2], [-2.27560, -0.44759, -1.86181], atol=1e-5)
  assert sorted(result.anchor_group_sizes) == [1, 2, 2, 2, 3]  # s3; s1, s2, s4; s0


def test_unnormalised_advantages_and_omega_match_hand_values():
  result = gigpo_advantages([A, B, C], gamma=0.5, omega=0.5, normalize="none")
  # A_E = R - mean: 1 - 1/3, 1 - 1/3, -1 - 1/3; A_S = R_t - anchor mean.
  for advantages, expected in zip(result.episode, [2 / 3, 2 / 3, -4 / 3]):
    np.testing.assert_allclose(advantages, expected)
  np.testing.assert_allclose(result.step[0], [5 / 24, 0.0, 0.0])
  np.testing.assert_allclose(result.step[2], [-7 / 24, 0.25, -0.25])
  np.testing.assert_allclose(result.combined[1], [2 / 3 + 0.5 * 2 / 24, 2 / 3, 2 / 3, 2 / 3])
  np.testing.assert_allclose(result.combined[2],
                             [-4 / 3 - 0.5 * 7 / 24, -4 / 3 + 0.125, -4 / 3 - 0.125])


@pytest.mark.parametrize("normalize", ["std", "none"])
def test_groups_with_equal_returns_get_zero_advantage(normalize):
  # Every trajectory fails alike: all returns 0 -> zero std, advantages 0, no NaN.
  failed = [[("s0", 0.0), ("s1", 0.0)], [("s0", 0.0), ("s1", 0.0)], [("s0", 0.0)]]
  result = gigpo_advantages(failed, normalize=normalize)
  assert not np.any(np.concatenate(result.episode))
  assert all(not np.any(advantages) for advantages in result.combined)
  # Equal episode returns (0.1 each, not exactly representable: 0.1 * 3 / 3 != 0.1 in floats)
  # still give exactly 0; the anchor groups differ: s0's returns are 0.1 and 0.95 * 0.1.
  tied = [[("s0", 0.1)], [("s0", 0.0), ("s0", 0.1)], [("s1", 0.1)]]
  result = gigpo_advantages(tied, gamma=0.95, normalize=normalize)
  assert not np.any(np.concatenate(result.episode))
  assert np.all(np.isfinite(np.concatenate(result.combined)))
  # s0 returns: 0.1, 0.095, 0.1 -> mean 0.295 / 3; the 0.095 step is below it.
  assert result.step[1][0] < 0 < result.step[0][0]
  assert result.step[2][0] == 0.0  # s1, seen once
  # An anchor state whose returns are all 0.1: step advantages exactly 0 too.
  tied_steps = gigpo_advantages([[("s0", 0.1)]] * 3, normalize=normalize)
  assert not np.any(np.concatenate(tied_steps.step))


def test_single_trajectory_and_empty_trajectory():
  alone = gigpo_advantages([A], gamma=0.5)
  assert not np.any(alone.episode[0]) and not np.any(alone.combined[0])
  # A penalty makes its rows' scores differ; still one trajectory, nothing to compare it with.
  alone = gigpo_advantages([A], gamma=0.5, normalize="none", penalties=[[0.0, 0.2, 0.0]])
  assert not np.any(alone.episode[0]) and not np.any(alone.combined[0])
  # An episode that failed at reset has no steps; its return 0 still counts in the group.
  result = gigpo_advantages([A, []], gamma=0.5, normalize="none")
  np.testing.assert_allclose(result.episode[0], [0.5] * 3)  # 1 - mean(1, 0)
  assert result.episode[1].shape == result.combined[1].shape == (0,)


# Penalties (verl-agent's invalid-action penalty): P wins after a penalised second step, Q
# fails; gamma 0.5, omega 1.
P = [("s0", 0.0), ("s1", 0.0), ("s2", 1.0)]
Q = [("s0", 0.0), ("s1", 0.0), ("s3", 0.0)]
PENALTIES = [[0.0, 0.2, 0.0], [0.0, 0.0, 0.0]]
# verl-agent subtracts a step's penalty from that step's own episode score and step return,
# after the returns are summed and discounted:
#   returns R_P = 1, R_Q = 0; episode scores P: 1, 0.8, 1; Q: 0, 0, 0
#   step returns P: 0.25, 0.5 - 0.2 = 0.3, 1; Q: 0, 0, 0
# Episode mean over the rows, each trajectory weighing as one: (2.8 / 3 + 0) / 2 = 1.4 / 3;
#   deviations P: 1.6 / 3, 1 / 3, 1.6 / 3; Q: -1.4 / 3 each
#   std (ddof 1 over the 2 trajectories) = sqrt((mean P dev^2 + mean Q dev^2) / 1)
#     = sqrt(6.12 / 27 + 1.96 / 9) = sqrt(4 / 9) = 2 / 3
# Anchor groups: s0 {0.25, 0}: +-0.125, std 0.125 * sqrt(2); s1 {0.3, 0}: +-0.15, std
#   0.15 * sqrt(2); s2, s3 seen once.


def test_a_penalty_lowers_its_own_steps_scores_only():
  result = gigpo_advantages([P, Q], gamma=0.5, normalize="none", penalties=PENALTIES)
  np.testing.assert_allclose(result.episode[0], [1.6 / 3, 1 / 3, 1.6 / 3])
  np.testing.assert_allclose(result.episode[1], [-1.4 / 3] * 3)
  np.testing.assert_allclose(result.step[0], [0.125, 0.15, 0.0])
  np.testing.assert_allclose(result.step[1], [-0.125, -0.15, 0.0])
  # As a reward, the penalty would count in P's return (0.8) and P's first step return (0.2).
  result = gigpo_advantages([P, Q], gamma=0.5, normalize="std", penalties=PENALTIES)
  episode_std, step = 2 / 3 + EPSILON, 1 / (math.sqrt(2) + EPSILON / 0.125)  # s0 (s1: ~ same)
  np.testing.assert_allclose(result.episode[0], np.array([1.6, 1, 1.6]) / 3 / episode_std)
  np.testing.assert_allclose(result.combined[0], [0.8 + step, 0.5 + step, 0.8], rtol=1e-5)
  np.testing.assert_allclose(result.combined[1], [-0.7 - step, -0.7 - step, -0.7], rtol=1e-5)
  # No penalties: the paper's Eq. 3 over the two returns (1 and 0: +-0.5).
  plain = gigpo_advantages([P, Q], gamma=0.5, normalize="none", penalties=[[0.0] * 3] * 2)
  np.testing.assert_allclose(np.concatenate(plain.episode), [0.5] * 3 + [-0.5] * 3)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="normalization 'mean_std'.*'std', 'none'"):
    gigpo_advantages([A], normalize="mean_std")
  with pytest.raises(ValueError, match="gamma must be in"):
    gigpo_advantages([A], gamma=1.5)
  with pytest.raises(ValueError, match="at least one trajectory"):
    gigpo_advantages([])
  with pytest.raises(TypeError, match="trajectory 0, step 1: state_key of type list"):
    gigpo_advantages([[("s0", 0.0), (["x"], 0.0)]])
  with pytest.raises(ValueError, match="trajectory 1, step 0: reward nan"):
    gigpo_advantages([A, [("s0", float("nan"))]])
  with pytest.raises(ValueError, match=r"penalties of \[2\] steps for trajectories of \[3\] "
                     "steps: give one penalty per step"):
    gigpo_advantages([A], penalties=[[0.0, 0.1]])
  with pytest.raises(ValueError, match=r"trajectory 0: penalties \[0.0, nan, 0.0\] are not all "
                     "finite"):
    gigpo_advantages([A], penalties=[[0.0, math.nan, 0.0]])
