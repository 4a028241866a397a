"""C(k), its standard errors and the aggregation over seeds, on hand-made results."""

import math
import statistics
import warnings

import pytest
from scipy import stats

from jaxlayer.sweep import contribution
from jaxlayer.sweep.contribution import RunScore, UndefinedContributionWarning


def test_contribution_follows_the_paper_formula_including_negative_and_above_one():
  # Qwen3-1.7B in the paper: base 44.1, full 50.8, block 10 at 51.8 (C = 1.14 unrounded).
  assert contribution.layer_contribution(51.8, 44.1, 50.8) == pytest.approx(
      (51.8 - 44.1) / (50.8 - 44.1))
  # A block that ends below the base has a negative contribution.
  assert contribution.layer_contribution(0.30, 0.40, 0.60) == pytest.approx(-0.5)
  assert contribution.layer_contribution(0.60, 0.40, 0.60) == pytest.approx(1.0)
  assert contribution.layer_contribution(0.40, 0.40, 0.60) == 0.0
  # At the base when full RL lost: 0, not -0 (sweep.csv printed "-0.0").
  assert str(contribution.layer_contribution(0.40, 0.40, 0.30)) == "0.0"
  # Full RL below the base: C is still the same ratio (both differences negative).
  assert contribution.layer_contribution(0.35, 0.40, 0.30) == pytest.approx(0.5)


def test_full_equal_to_base_leaves_contribution_undefined_with_a_warning():
  with pytest.warns(UndefinedContributionWarning, match="S_full == S_base"):
    assert contribution.layer_contribution(0.7, 0.5, 0.5) is None
  assert contribution.contribution_standard_error(
      RunScore(0.7, 0.05), RunScore(0.5, 0.05), RunScore(0.5, 0.05)) is None


def test_equal_up_to_round_off_is_no_gain_and_one_problem_in_two_thousand_is_one():
  # Means of the same scores summed in another order differ in the last bit.
  with pytest.warns(UndefinedContributionWarning, match="S_full == S_base"):
    assert contribution.layer_contribution(0.5, 0.3, 0.1 + 0.2) is None
  assert contribution.layer_contribution(0.5001, 0.5, 0.5005) == pytest.approx(0.2)


def test_standard_error_binomial_for_pass_at_1_and_sample_se_otherwise():
  binary = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
  p = sum(binary) / len(binary)
  assert contribution.standard_error(binary) == pytest.approx(math.sqrt(p * (1 - p) / len(binary)))
  assert contribution.standard_error([1.0] * 10) == 0.0
  assert contribution.standard_error([0.0, 1.0]) == pytest.approx(math.sqrt(0.5 * 0.5 / 2))
  graded = [0.25, 1.0, 0.5, 0.0, 0.75]  # mean@4 style per-problem scores
  assert contribution.standard_error(graded) == pytest.approx(stats.sem(graded))
  with pytest.raises(ValueError, match="at least one"):
    contribution.standard_error([])


def test_one_problem_leaves_the_standard_error_undefined_not_zero():
  """One observation has no spread: None (the binomial formula gave 0, claiming no noise), and
  so every error computed from it, while the scores and C stay defined."""
  assert contribution.standard_error([1.0]) is None
  assert contribution.standard_error([0.25]) is None
  assert contribution.standard_error_of_mean([0.03, None]) is None
  undefined = {0: RunScore(1.0, None)}
  summary = contribution.summarize_sweep({0: RunScore(0.0, None)}, undefined, {3: undefined})
  assert summary.base.score_se is None and summary.layers[0].scores.score_se is None
  assert summary.layers[0].contribution == 1.0 and summary.layers[0].contribution_se is None
  for undefined_one in range(3):  # k's, the base's or full RL's
    scores = [RunScore(0.7, 0.05), RunScore(0.5, 0.05), RunScore(0.6, 0.05)]
    scores[undefined_one] = RunScore(scores[undefined_one].score, None)
    assert contribution.contribution_standard_error(*scores) is None


def test_contribution_standard_error_equals_finite_difference_propagation():
  k, base, full = RunScore(0.52, 0.020), RunScore(0.40, 0.022), RunScore(0.55, 0.021)
  h = 1e-6
  point = [k.score, base.score, full.score]
  def c(sk, sb, sf):
    return (sk - sb) / (sf - sb)
  gradient = []
  for i in range(3):
    up, down = list(point), list(point)
    up[i] += h
    down[i] -= h
    gradient.append((c(*up) - c(*down)) / (2 * h))
  expected = math.sqrt(sum((g * s.se)**2 for g, s in zip(gradient, (k, base, full))))
  assert contribution.contribution_standard_error(k, base, full) == pytest.approx(expected,
                                                                                  rel=1e-5)


def _runs(scores, se=0.02):
  return {seed: RunScore(score, se) for seed, score in enumerate(scores)}


def test_seed_aggregation_on_hand_made_results():
  base, full = [0.40, 0.42, 0.38], [0.60, 0.58, 0.65]
  blocks = {3: [0.55, 0.50, 0.57], 5: [0.35, 0.36, 0.30]}  # block 5 ends below the base
  ses = {0: 0.020, 1: 0.030, 2: 0.025}
  summary = contribution.summarize_sweep(
      {s: RunScore(v, ses[s]) for s, v in enumerate(base)}, _runs(full),
      {k: _runs(v) for k, v in blocks.items()})

  assert summary.base.score == pytest.approx(statistics.mean(base))
  assert summary.base.score_std == pytest.approx(statistics.stdev(base))
  rms_se = math.sqrt(statistics.mean(s**2 for s in ses.values()))
  assert summary.base.score_se == pytest.approx(rms_se)
  assert summary.base.seeds == (0, 1, 2)
  # Seeds given in another order are summarized in theirs.
  assert contribution.summarize_scores({2: RunScore(0.5, 0.1), 0: RunScore(0.3, 0.1)}).seeds == (
      0, 2)
  assert summary.full.score == pytest.approx(statistics.mean(full))
  mean_base, mean_full = statistics.mean(base), statistics.mean(full)
  for layer in summary.layers:
    scores = blocks[layer.layer]
    assert layer.scores.score == pytest.approx(statistics.mean(scores))
    assert layer.scores.score_std == pytest.approx(statistics.stdev(scores))
    # Headline: C of the seed means.
    assert layer.contribution == pytest.approx(
        (statistics.mean(scores) - mean_base) / (mean_full - mean_base))
    # Spread: per-seed C, seed s against seed s of base and full.
    per_seed = [(k - b) / (f - b) for k, b, f in zip(scores, base, full)]
    assert layer.contribution_seed_mean == pytest.approx(statistics.mean(per_seed))
    assert layer.contribution_std == pytest.approx(statistics.stdev(per_seed))
    assert layer.contribution_se is not None and layer.contribution_se > 0
  by_layer = {l.layer: l for l in summary.layers}
  assert by_layer[5].contribution < 0
  assert summary.best_layer().layer == 3 and summary.worst_layer().layer == 5
  assert summary.warnings == []


def test_a_single_seed_has_no_spread_over_seeds():
  summary = contribution.summarize_sweep(_runs([0.4]), _runs([0.6]), {0: _runs([0.5])})
  layer = summary.layers[0]
  assert summary.base.score_std is None and layer.scores.score_std is None
  assert layer.contribution == pytest.approx(0.5)
  assert layer.contribution_seed_mean == pytest.approx(0.5)
  assert layer.contribution_std is None
  assert layer.contribution_se == pytest.approx(contribution.contribution_standard_error(
      RunScore(0.5, 0.02), RunScore(0.4, 0.02), RunScore(0.6, 0.02)))


def test_full_equal_to_base_is_reported_undefined_not_a_crash():
  with pytest.warns(UndefinedContributionWarning) as caught:
    summary = contribution.summarize_sweep(_runs([0.5, 0.5]), _runs([0.5, 0.5]),
                                           {0: _runs([0.7, 0.6]), 1: _runs([0.2, 0.3])})
  assert len(caught) == 3  # once for the means, once per seed; not once per block
  assert all(l.contribution is None and l.contribution_se is None for l in summary.layers)
  assert all(l.contribution_seed_mean is None and l.contribution_std is None
             for l in summary.layers)
  assert summary.best_layer() is None and summary.worst_layer() is None
  assert len(summary.warnings) == 3 and "undefined for every block" in summary.warnings[0]
  assert summary.layers[0].scores.score == pytest.approx(0.65)  # scores are still reported


def test_a_seed_whose_full_equals_its_base_is_left_out_of_the_seed_spread():
  base, full, block = [0.40, 0.50, 0.40], [0.60, 0.50, 0.70], [0.50, 0.55, 0.60]
  with pytest.warns(UndefinedContributionWarning, match="seed 1"):
    summary = contribution.summarize_sweep(_runs(base), _runs(full), {2: _runs(block)})
  layer = summary.layers[0]
  assert layer.per_seed_contribution[1] is None
  defined = [(k - b) / (f - b) for k, b, f in zip(block, base, full) if f != b]
  assert layer.contribution_seed_mean == pytest.approx(statistics.mean(defined))
  assert layer.contribution_std == pytest.approx(statistics.stdev(defined))
  mean_block, mean_base, mean_full = (statistics.mean(v) for v in (block, base, full))
  assert layer.contribution == pytest.approx((mean_block - mean_base) / (mean_full - mean_base))


def test_seeds_missing_from_base_or_full_do_not_pair():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # nothing undefined here: no warning at all
    summary = contribution.summarize_sweep(_runs([0.4]), _runs([0.6, 0.7]), {0: _runs([0.5, 0.55])})
  assert summary.layers[0].per_seed_contribution == {0: pytest.approx(0.5)}
  assert summary.layers[0].contribution_std is None


def test_c_is_over_the_seeds_a_block_shares_with_base_and_full_rl():
  """Full RL gained over both seeds (0.45 -> 0.55), but not on seed 0, block 2's only seed:
  its C is undefined, and said so. Block 3 shares no seed: C against all of theirs."""
  base, full = _runs([0.4, 0.5]), _runs([0.4, 0.7])
  with pytest.warns(UndefinedContributionWarning) as caught:
    summary = contribution.summarize_sweep(base, full, {2: _runs([0.6]),
                                                        3: {5: RunScore(0.6, 0.02)}})
  assert [str(w.message) for w in caught] == [
      "seed 0: S_full == S_base (= 0.4000), so the per-seed C(k) of this seed is undefined and "
      "left out of the seed spread.",
      "block 2: S_full == S_base (= 0.4000) over the seeds it trained with (0), so its C is "
      "undefined; train it with more seeds."]
  block2, block3 = summary.layers
  assert block2.contribution is None and block2.contribution_se is None
  assert block3.contribution == pytest.approx((0.6 - 0.45) / (0.55 - 0.45))
  assert block3.per_seed_contribution == {}
  # What each C divides by: S_full - S_base over seed 0 (block 2), over all seeds (block 3).
  assert (block2.s_base, block2.s_full) == (pytest.approx(0.4), pytest.approx(0.4))
  assert (block3.s_base, block3.s_full) == (pytest.approx(0.45), pytest.approx(0.55))


def test_undefined_for_every_block_is_said_of_the_seeds_each_c_is_over():
  """Base with a seed more than full RL: the warnings follow the C computed (over seed 0, the
  one all share), not base's and full RL's means over all their seeds."""
  # Means over all seeds equal (0.5, 0.5), but on seed 0 full RL gained 0.4 -> 0.5: block 2's
  # C = (0.45 - 0.4) / (0.5 - 0.4) = 0.5 is defined, and nothing is undefined.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    summary = contribution.summarize_sweep(_runs([0.4, 0.6]), _runs([0.5]), {2: _runs([0.45])})
  assert summary.layers[0].contribution == pytest.approx(0.5) and summary.warnings == []
  # Means over all seeds differ (0.6, 0.4), but on seed 0 full RL moved nothing (0.4, 0.4): C is
  # undefined for both blocks, said once.
  with pytest.warns(UndefinedContributionWarning):
    summary = contribution.summarize_sweep(_runs([0.4, 0.8]), _runs([0.4]),
                                           {2: _runs([0.5]), 3: _runs([0.6])})
  assert [l.contribution for l in summary.layers] == [None, None]
  assert summary.warnings == [
      "S_full == S_base (= 0.4000, mean over seed 0): full RL did not move the score, so C(k) "
      "is undefined for every block. Train longer or with a higher learning rate, or evaluate "
      "on more problems.",
      "seed 0: S_full == S_base (= 0.4000), so the per-seed C(k) of this seed is undefined and "
      "left out of the seed spread."]
  # Undefined for both blocks over different seeds (seed 0; seeds 0 and 1): no one S_base.
  with pytest.warns(UndefinedContributionWarning):
    summary = contribution.summarize_sweep(_runs([0.4, 0.8]), _runs([0.4, 0.8]),
                                           {2: _runs([0.5]), 3: _runs([0.6, 0.7])})
  assert summary.warnings[0].startswith("S_full == S_base (over the seeds each block shares "
                                        "with them): full RL did not move the score")


def test_a_sweep_of_base_and_full_rl_alone_warns_only_when_full_rl_gained_nothing():
  base, full = {0: RunScore(0.4, 0.05)}, {0: RunScore(0.6, 0.05)}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert contribution.summarize_sweep(base, full, {}).warnings == []
  with pytest.warns(UndefinedContributionWarning):
    summary = contribution.summarize_sweep(base, base, {})
  assert "C(k) is undefined for every block" in summary.warnings[0]


def test_the_standard_error_of_a_mean_over_tasks_by_hand():
  # The mean of independent scores (X + Y) / 2 has variance (se_x^2 + se_y^2) / 4.
  assert contribution.standard_error_of_mean([0.03, 0.04]) == pytest.approx(0.05 / 2)
  assert contribution.standard_error_of_mean([0.02]) == pytest.approx(0.02)
  with pytest.raises(ValueError, match="at least one standard error"):
    contribution.standard_error_of_mean([])


@pytest.mark.parametrize("full", [0.6, 0.2], ids=["full-gained", "full-lost"])
def test_best_and_worst_blocks_are_the_highest_and_lowest_scores_ties_to_the_lowest_block(full):
  """Blocks 1 and 2 tie for the highest score, 3 and 4 for the lowest: the lower index wins
  either tie, whichever way full RL moved the score (C's scale is negative when it lost)."""
  scores = {4: 0.3, 2: 0.5, 3: 0.3, 1: 0.5}
  summary = contribution.summarize_sweep(_runs([0.4]), _runs([full]),
                                         {k: _runs([v]) for k, v in scores.items()})
  assert (summary.best_layer().layer, summary.worst_layer().layer) == (1, 3)


@pytest.mark.parametrize("full", [[0.50, 0.70], [0.30, 0.50]], ids=["full-gained", "full-lost"])
def test_blocks_of_different_seeds_rank_by_their_c_over_their_own_seeds(full):
  """Block 0 trained seeds 0 and 1, block 1 seed 0 only (a sweep extended with a seed for some
  blocks); seed 1 scores 0.2 higher everywhere. Block 1 gained 0.09 over the base on its seed,
  block 0 0.05 on its two: block 1 is the best, although block 0's mean score (0.55, lifted by
  seed 1) is the higher. Its C is the larger (0.9 against 0.5) when full RL gained; when full
  RL lost, C's scale is negative, and the best is the one of the more negative C."""
  summary = contribution.summarize_sweep(_runs([0.40, 0.60]), _runs(full),
                                         {0: _runs([0.45, 0.65]), 1: _runs([0.49])})
  scores = {l.layer: l.scores.score for l in summary.layers}
  assert scores[0] > scores[1]
  gains = {l.layer: l.contribution * (l.s_full - l.s_base) for l in summary.layers}
  assert gains == pytest.approx({0: 0.05, 1: 0.09})
  assert (summary.best_layer().layer, summary.worst_layer().layer) == (1, 0)
