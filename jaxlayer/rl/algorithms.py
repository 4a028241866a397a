"""The GRPO family as presets: advantage estimator, loss settings and batch filters.

GiGPO is the multi-turn member: its advantages come from whole episodes of an environment
(`jaxlayer.rl.gigpo`, `jaxlayer.rl.multiturn`), so it trains on `env.name`, not a task.

`train.algorithm` picks a preset; any `train.*` loss key that is set in the config overrides
the preset's value. Adding an algorithm is one `Algorithm(...)` line in `ALGORITHMS`.
"""

from __future__ import annotations

import dataclasses

from jaxlayer.rl import advantages, losses
from jaxlayer.text import unknown_name


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """advantage: key of `advantages.ADVANTAGE_ESTIMATORS`; aggregation: of `losses.AGGREGATIONS`.

  dynamic_sampling: drop groups whose responses are all correct or all wrong (DAPO filters on
  accuracy, the task's "correct" component; the total reward for a task without one; with
  overlong_filtering, also groups whose every response is truncated) and sample more prompts
  instead, up to train.dynamic_sampling_max_rounds rollouts a step; a batch still short then
  is filled with dropped groups at zero loss weight, which no normaliser counts as responses
  (veRL raises an error instead).
  overlong_filtering: truncated responses (no end-of-sequence token) carry no loss; they still
  count as responses in the per-response normalisers (`losses`), as TRL's do.
  overlong_buffer_fraction: DAPO's soft overlong penalty, as a fraction of the maximum
  response length (0: off): the reward falls linearly from 0 to -1 over the last
  `fraction * max_new_tokens` tokens.
  """

  advantage: str
  aggregation: str
  clip_eps_low: float = 0.2
  clip_eps_high: float = 0.2
  kl_beta: float = 0.0
  dynamic_sampling: bool = False
  overlong_filtering: bool = False
  overlong_buffer_fraction: float = 0.0


ALGORITHMS: dict[str, Algorithm] = {
    # Shao et al. 2024; the paper's Qwen3 runs: clip 0.2, KL 0.001.
    "grpo": Algorithm(advantage="grpo", aggregation="sequence-mean-token-mean", kl_beta=0.001),
    # Liu et al. 2025: no std division, no per-response length normalisation, no KL.
    "dr_grpo": Algorithm(advantage="dr_grpo", aggregation="sequence-mean-token-sum-norm"),
    # Yu et al. 2025: clip-higher, token-mean, dynamic sampling, soft overlong punishment.
    "dapo": Algorithm(advantage="grpo", aggregation="token-mean", clip_eps_high=0.28,
                      dynamic_sampling=True, overlong_buffer_fraction=0.2),
    # Feng et al. 2025, as verl-agent's ALFWorld script: token-mean, KL 0.01, clip 0.2.
    "gigpo": Algorithm(advantage="gigpo", aggregation="token-mean", kl_beta=0.01),
}

# Advantages computed from episodes of an environment rather than from one reward per response.
MULTI_TURN_ADVANTAGES = ("gigpo",)

OVERRIDABLE = tuple(f.name for f in dataclasses.fields(Algorithm))


def resolve_algorithm(name: str, **overrides) -> Algorithm:
  """The preset `name` with every override that is not None applied, validated."""
  if name not in ALGORITHMS:
    raise ValueError("train.algorithm: " + unknown_name("algorithm", name, ALGORITHMS,
                                                        "algorithms.ALGORITHMS", "Algorithm(...)"))
  unknown = sorted(set(overrides) - set(OVERRIDABLE))
  if unknown:
    raise ValueError(f"Unknown algorithm settings {unknown}; known: {list(OVERRIDABLE)}.")
  algorithm = dataclasses.replace(ALGORITHMS[name],
                                  **{k: v for k, v in overrides.items() if v is not None})
  if algorithm.advantage not in MULTI_TURN_ADVANTAGES:
    advantages.get_estimator(algorithm.advantage)
  losses.LossConfig(aggregation=algorithm.aggregation, clip_eps_low=algorithm.clip_eps_low,
                    clip_eps_high=algorithm.clip_eps_high, kl_beta=algorithm.kl_beta)
  if not 0.0 <= algorithm.overlong_buffer_fraction <= 1.0:
    raise ValueError("overlong_buffer_fraction must lie in [0, 1], got "
                     f"{algorithm.overlong_buffer_fraction}.")
  return algorithm
