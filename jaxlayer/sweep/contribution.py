"""Layer contribution C(k) = (S_k - S_base) / (S_full - S_base), its errors, and seed aggregation.

Definitions used everywhere in jaxlayer (sweep.json, report.md, the plots):

- A *score* is the mean of one evaluation's per-problem scores (pass@1 with greedy decoding);
  scored over several tasks (eval.tasks), the mean of the tasks' scores, each by its metric.
- `score_se`: evaluation noise of one run, the standard error over the test problems
  (binomial sqrt(p(1-p)/n) for 0/1 scores, the sample standard error otherwise; over tasks,
  sqrt(sum se_t^2) / T of the tasks' standard errors, `standard_error_of_mean`). With
  several seeds it is the root-mean-square of the seeds' standard errors: every seed is
  scored on the same test problems, so this part of the noise does not average out. A single
  problem has no spread to tell it from: None (null in JSON, n/a in text), and so has every
  error computed from it.
- `score`, `score_std`: mean and sample standard deviation (ddof=1) over seeds.
- `contribution`: C of the seed-mean scores (a ratio of means), the three means over the
  same seeds: those block k shares with full RL and the base (a block trained with fewer
  seeds than full RL, or full RL with fewer than the base, is set against their scores on
  its seeds alone, so a seed that scores high everywhere does not bias C). A block that
  shares no seed with them (an unfinished sweep) is set against all of theirs. It is the
  headline value because a mean of per-seed ratios is biased and blows up whenever one
  seed's S_full - S_base is small.
- `contribution_se`: delta-method standard error of `contribution` from the three
  `score_se`s over the same seeds, treating the three evaluations as independent
  (conservative: they share the test problems, which makes their errors positively
  correlated).
- `contribution_seed_mean`, `contribution_std`: mean and sample standard deviation over
  seeds of the per-seed C, where seed s of block k is set against seed s of full RL and
  of the base evaluation. Only seeds present in all three count.
- S_full == S_base leaves C undefined: None (null in JSON) and an
  `UndefinedContributionWarning`, never a division by zero. C may be negative (block k
  ended below the base) or above 1 (it beat full RL), when full RL gained. When full RL
  ended below the base, C's scale is negative (a higher score gives a lower C).
- The best and worst blocks are those with the largest and smallest `relative_improvement`:
  C, or -C where C divides by a negative gain. With every C over the same seeds that is the
  order of the scores, whichever way full RL moved; a block trained with fewer seeds is set
  against base and full RL on its own, as its C is, not ranked by a score over other seeds.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np


class UndefinedContributionWarning(UserWarning):
  """S_full == S_base: full RL gained nothing, so C(k) has no scale."""


class RunScore(NamedTuple):
  """One evaluated run: its score and the score's standard error over the test problems."""

  score: float
  se: float | None  # None: undefined (a single test problem)


def standard_error(per_problem_scores: Sequence[float]) -> float | None:
  """Standard error of the mean score over problems.

  0/1 scores (pass@1): the binomial sqrt(p (1 - p) / n). Other scores (mean@k, partial
  credit): the sample standard error std(ddof=1) / sqrt(n). None for a single problem: one
  observation has no spread (the binomial formula would give 0, claiming no noise).
  """
  scores = np.asarray(per_problem_scores, dtype=np.float64)
  n = scores.size
  if n == 0:
    raise ValueError("standard_error needs at least one per-problem score; got none.")
  if n == 1:
    return None
  if np.all((scores == 0.0) | (scores == 1.0)):
    p = scores.mean()
    return float(math.sqrt(p * (1.0 - p) / n))
  return float(scores.std(ddof=1) / math.sqrt(n))


def standard_error_of_mean(standard_errors: Sequence[float | None]) -> float | None:
  """Standard error of the mean of independent scores (tasks' scores, on their own problems)
  from their standard errors: sqrt(sum se^2) / n; None where one of them is undefined."""
  if not standard_errors:
    raise ValueError("standard_error_of_mean needs at least one standard error; got none.")
  if None in standard_errors:
    return None
  return math.sqrt(sum(se**2 for se in standard_errors)) / len(standard_errors)


# Scores are means of per-problem scores; a gain below this is float round-off, not a gain.
_ZERO_GAIN = 1e-12


def _same_score(a: float, b: float) -> bool:
  return abs(a - b) <= _ZERO_GAIN


def _ratio(s_k: float, s_base: float, s_full: float) -> float | None:
  if _same_score(s_full, s_base):
    return None
  return (s_k - s_base) / (s_full - s_base) + 0.0  # (+ 0.0: a block at the base is C = 0, not -0)


def layer_contribution(s_k: float, s_base: float, s_full: float) -> float | None:
  """C(k) = (S_k - S_base) / (S_full - S_base); None, with a warning, when S_full == S_base."""
  contribution = _ratio(s_k, s_base, s_full)
  if contribution is None:
    warnings.warn(f"S_full == S_base (= {s_base}): full RL did not move the score, so the "
                  "layer contribution C(k) is undefined.", UndefinedContributionWarning,
                  stacklevel=2)
  return contribution


def contribution_standard_error(k: RunScore, base: RunScore, full: RunScore) -> float | None:
  """Delta-method standard error of C(k) from the three scores' standard errors.

  With C = (k - B) / (F - B): dC/dk = 1/g, dC/dF = -C/g, dC/dB = (C - 1)/g, g = F - B.
  None when C is undefined, or one of the standard errors is.
  """
  contribution = _ratio(k.score, base.score, full.score)
  if contribution is None or None in (k.se, base.se, full.se):
    return None
  gain = full.score - base.score
  variance = (k.se**2 + (contribution * full.se)**2 + ((contribution - 1.0) * base.se)**2) / gain**2
  return float(math.sqrt(variance))


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
  """A run group (base, full or block k) aggregated over its seeds."""

  score: float  # mean over seeds
  score_std: float | None  # sample std over seeds; None with a single seed
  score_se: float | None  # evaluation noise (root-mean-square of the seeds' SEs); None: undefined
  seeds: tuple[int, ...]
  per_seed: dict[int, float]


def summarize_scores(runs: Mapping[int, RunScore]) -> ScoreSummary:
  """Mean, std over seeds and evaluation standard error of one run group (seed -> RunScore)."""
  if not runs:
    raise ValueError("summarize_scores needs at least one seed's result.")
  seeds = tuple(sorted(runs))
  scores = np.array([runs[s].score for s in seeds], dtype=np.float64)
  ses = [runs[s].se for s in seeds]
  return ScoreSummary(
      score=float(scores.mean()),
      score_std=float(scores.std(ddof=1)) if len(seeds) > 1 else None,
      score_se=None if None in ses else float(np.sqrt(np.mean(np.square(ses)))),
      seeds=seeds,
      per_seed={s: float(runs[s].score) for s in seeds},
  )


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  layer: int | tuple[int, ...]  # a block, or a group of blocks trained together
  scores: ScoreSummary
  contribution: float | None  # C of the seed-mean scores
  # Base's and full RL's mean scores over the seeds C is over (per_seed_contribution's; all of
  # each one's where it shares none): C divides by s_full - s_base.
  s_base: float
  s_full: float
  contribution_se: float | None  # delta method, evaluation noise only
  contribution_seed_mean: float | None  # mean over seeds of the per-seed C
  contribution_std: float | None  # std over seeds of the per-seed C; None below 2 seeds
  per_seed_contribution: dict[int, float | None]


@dataclasses.dataclass(frozen=True)
class SweepSummary:
  base: ScoreSummary
  full: ScoreSummary
  layers: list[LayerSummary]  # sorted by block index
  groups: list[LayerSummary]  # groups of blocks trained together, sorted
  warnings: list[str]  # every UndefinedContributionWarning raised while summarizing

  def defined_layers(self) -> list[LayerSummary]:
    return [layer for layer in self.layers if layer.contribution is not None]

  def best_layer(self) -> LayerSummary | None:
    """The largest `relative_improvement` (ties: lowest block index) of the blocks with a
    defined C: the largest C when full RL gained; the smallest when it lost (C's scale is then
    negative). None when no C is defined."""
    defined = self.defined_layers()
    return min(defined, key=lambda l: (-_improvement(l), l.layer)) if defined else None

  def worst_layer(self) -> LayerSummary | None:
    """The smallest `relative_improvement` (ties: lowest block index) of the blocks with a
    defined C."""
    defined = self.defined_layers()
    return min(defined, key=lambda l: (_improvement(l), l.layer)) if defined else None


def relative_improvement(contribution: float, divisor_gain: float) -> float:
  """(S_k - S_base) / |S_full - S_base| of a block with a defined C, from its C and the gain C
  divides by (S_full - S_base over the seeds C is over): C, or -C where full RL lost. Higher is
  better either way; over the same seeds it orders the blocks as their scores do."""
  return contribution if divisor_gain > 0 else -contribution


def _improvement(layer: LayerSummary) -> float:
  """A block's relative_improvement, from its summary."""
  return relative_improvement(layer.contribution, layer.s_full - layer.s_base)


def summarize_sweep(base: Mapping[int, RunScore], full: Mapping[int, RunScore],
                    layers: Mapping[int, Mapping[int, RunScore]],
                    groups: Mapping[tuple[int, ...], Mapping[int, RunScore]] | None = None
                    ) -> SweepSummary:
  """Aggregates a sweep's results (each a mapping seed -> RunScore) into C(k) with spreads.

  layers: block index -> seed -> RunScore; groups: blocks trained together (a sorted tuple)
  -> seed -> RunScore, whose C is defined as a block's. Undefined contributions are reported
  once per cause (not once per block) as `UndefinedContributionWarning`s and in `.warnings`.
  """
  base_summary, full_summary = summarize_scores(base), summarize_scores(full)
  paired_seeds = sorted(set(base) & set(full))
  # Block or group -> (the seeds its C is over, () for all of each; S_base there) where C is
  # undefined: S_full == S_base over those seeds.
  undefined = {}

  def over_seeds(runs: Mapping[int, RunScore], seeds: Sequence[int]) -> RunScore:
    """The runs' mean score over `seeds` and its evaluation standard error."""
    summary = summarize_scores({s: runs[s] for s in seeds})
    return RunScore(summary.score, summary.score_se)

  def summarize(key, runs: Mapping[int, RunScore]) -> LayerSummary:
    scores = summarize_scores(runs)
    # C over the seeds the run shares with base and full RL; with none shared, over all of each.
    shared = tuple(s for s in paired_seeds if s in runs)
    k_score, base_score, full_score = (over_seeds(group, shared or sorted(group))
                                       for group in (runs, base, full))
    contribution = _ratio(k_score.score, base_score.score, full_score.score)
    if contribution is None:
      undefined[key] = (shared, base_score.score)
    per_seed = {s: _ratio(runs[s].score, base[s].score, full[s].score) for s in shared}
    defined = np.array([c for c in per_seed.values() if c is not None], dtype=np.float64)
    return LayerSummary(
        layer=key,
        scores=scores,
        contribution=contribution,
        s_base=base_score.score,
        s_full=full_score.score,
        contribution_se=contribution_standard_error(k_score, base_score, full_score),
        contribution_seed_mean=float(defined.mean()) if defined.size else None,
        contribution_std=float(defined.std(ddof=1)) if defined.size > 1 else None,
        per_seed_contribution=per_seed,
    )

  groups = groups or {}
  layer_summaries = [summarize(int(layer), layers[layer]) for layer in sorted(layers)]
  group_summaries = [summarize(tuple(map(int, g)), groups[g]) for g in sorted(groups)]
  if not layers and not groups:  # no C computed: whether one could be, on all the seeds
    if _same_score(full_summary.score, base_summary.score):
      undefined[None] = ((), base_summary.score)
  undefined_everywhere = len(undefined) >= max(len(layer_summaries) + len(group_summaries), 1)
  messages = [_undefined_for_every_block(undefined)] if undefined_everywhere else []
  messages += [
      f"seed {seed}: S_full == S_base (= {base[seed].score:.4f}), so the per-seed C(k) of this "
      "seed is undefined and left out of the seed spread."
      for seed in paired_seeds if _same_score(full[seed].score, base[seed].score)]
  if not undefined_everywhere:
    messages += [_undefined_for(key, *undefined[key]) for key in undefined]
  for message in messages:
    warnings.warn(message, UndefinedContributionWarning, stacklevel=2)
  return SweepSummary(base=base_summary, full=full_summary, layers=layer_summaries,
                      groups=group_summaries, warnings=messages)


def seeds_text(seeds: Sequence[int]) -> str:
  """'seed 0', 'seeds 0, 1'."""
  return f"{'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))}"


def _undefined_for_every_block(undefined: dict) -> str:
  """The warning when C is undefined for every block and group (`undefined`: key -> (the seeds
  its C is over, () for all of each; S_base over them); key None when there is no block)."""
  over = {seeds for seeds, _ in undefined.values()}
  if len(over) == 1:
    seeds, s_base = next(iter(undefined.values()))
    where = f"= {s_base:.4f}, mean over {seeds_text(seeds) if seeds else 'all of their seeds'}"
  else:
    where = "over the seeds each block shares with them"
  return (f"S_full == S_base ({where}): full RL did not move the score, so C(k) is undefined "
          "for every block. Train longer or with a higher learning rate, or evaluate on more "
          "problems.")


def _undefined_for(key: int | tuple[int, ...], seeds: tuple[int, ...], s_base: float) -> str:
  """The warning that one block's (or group's) C, over `seeds` (() for all of each), is
  undefined."""
  if seeds:
    return (f"{unit_name(key)}: S_full == S_base (= {s_base:.4f}) over the seeds it trained "
            f"with ({', '.join(map(str, seeds))}), so its C is undefined; train it with more "
            "seeds.")
  return (f"{unit_name(key)}: it shares no seed with base and full RL, and S_full == S_base "
          f"(= {s_base:.4f}) over all of theirs, so its C is undefined; train it with their "
          "seeds.")


def divisor_gain(entry: dict, gain_over_all_seeds: float) -> float:
  """The gain that a block's or group's C divides by, from its sweep.json `entry`: s_full -
  s_base over the seeds its C is over; for a sweep.json written before entries carried those,
  `gain_over_all_seeds`."""
  return entry["s_full"] - entry["s_base"] if "s_base" in entry else gain_over_all_seeds


def unit_name(key: int | tuple[int, ...]) -> str:
  """'block 4', or 'blocks 4+5' of blocks trained together."""
  return f"block {key}" if isinstance(key, int) else f"blocks {'+'.join(map(str, key))}"
