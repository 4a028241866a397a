"""Environments by name: `get_env("gridworld", size=3)`. Adding one is one line in ENVS."""

from __future__ import annotations

from collections.abc import Callable

from jaxlayer.envs.base import Env
from jaxlayer.envs.external import alfworld_env
from jaxlayer.envs.gridworld import GridWorld
from jaxlayer.options import check_option_types
from jaxlayer.text import unknown_name

ENVS: dict[str, Callable[..., Env]] = {
    "gridworld": GridWorld,
    "alfworld": alfworld_env,
}


def get_env(name: str, **options) -> Env:
  """A new environment instance (one per trajectory: instances hold the episode state).

  A ValueError names an option of a plain type (bool, int, float, str, None) given a value of
  another, before the environment is built.
  """
  if name not in ENVS:
    raise ValueError(unknown_name("environment", name, ENVS, "envs.ENVS"))
  check_option_types(ENVS[name], options, f"environment {name!r}")
  try:
    return ENVS[name](**options)
  except TypeError as err:
    raise TypeError(f"bad options for environment {name!r}: {err}") from err
