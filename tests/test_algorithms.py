"""The algorithm presets against their papers' settings, and train.* overrides of them."""

import dataclasses

import pytest

from jaxlayer.rl import algorithms

NO_FILTERS = dict(dynamic_sampling=False, overlong_filtering=False, overlong_buffer_fraction=0.0)


@pytest.mark.parametrize("name, expected", [
    # Shao et al. 2024, as the layer paper ran it on Qwen3: clip 0.2, KL 0.001.
    ("grpo", dict(advantage="grpo", aggregation="sequence-mean-token-mean", clip_eps_low=0.2,
                  clip_eps_high=0.2, kl_beta=0.001, **NO_FILTERS)),
    # Liu et al. 2025: no std division, token sums over a constant, no KL.
    ("dr_grpo", dict(advantage="dr_grpo", aggregation="sequence-mean-token-sum-norm",
                     clip_eps_low=0.2, clip_eps_high=0.2, kl_beta=0.0, **NO_FILTERS)),
    # Yu et al. 2025: clip-higher 0.28, token-mean, no KL, dynamic sampling, the soft overlong
    # penalty over the last 4,096 of 20,480 tokens.
    ("dapo", dict(advantage="grpo", aggregation="token-mean", clip_eps_low=0.2,
                  clip_eps_high=0.28, kl_beta=0.0, dynamic_sampling=True,
                  overlong_filtering=False, overlong_buffer_fraction=4096 / 20480)),
    # Feng et al. 2025, verl-agent's ALFWorld script: token-mean, KL 0.01, clip 0.2.
    ("gigpo", dict(advantage="gigpo", aggregation="token-mean", clip_eps_low=0.2,
                   clip_eps_high=0.2, kl_beta=0.01, **NO_FILTERS)),
])
def test_each_preset_has_its_papers_settings(name, expected):
  assert dataclasses.asdict(algorithms.resolve_algorithm(name)) == expected


def test_overrides_replace_the_presets_values_and_none_keeps_them():
  dapo = algorithms.resolve_algorithm("dapo", kl_beta=0.01, clip_eps_high=None,
                                      overlong_buffer_fraction=1.0)
  assert (dapo.kl_beta, dapo.clip_eps_high, dapo.overlong_buffer_fraction) == (0.01, 0.28, 1.0)
  with pytest.raises(ValueError, match=r"overlong_buffer_fraction must lie in \[0, 1\], got 1.5"):
    algorithms.resolve_algorithm("dapo", overlong_buffer_fraction=1.5)
  with pytest.raises(ValueError, match=r"Unknown algorithm settings \['clip'\]"):
    algorithms.resolve_algorithm("grpo", clip=0.3)
