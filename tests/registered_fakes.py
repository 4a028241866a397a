"""An environment, a task and an algorithm registered by name in a test, as a config file
registers its own, and a sweep's fake training that builds them by name, as a real run does: on a
Ray worker it fails unless the driver's registrations reached the worker."""

from __future__ import annotations

from jaxlayer import envs, tasks
from jaxlayer.rl import advantages, algorithms
from tests.sweep_fakes import FakeRL

NAME = "guess"  # the name each is registered under


class GuessTheNumber:
  """Stands in for a user's environment: only its identity is checked."""


class GuessTask:
  """Stands in for a user's task: only its identity is checked."""


def guess_advantages(rewards, group_size, eps=1e-6):
  """Stands in for a user's advantage estimator: only its identity is checked."""
  del rewards, group_size, eps


GUESS_ALGORITHM = algorithms.Algorithm(advantage=NAME, aggregation="token-mean")


def check_registered() -> None:
  """Builds environment, task and algorithm NAME from the registries, as a run does."""
  assert isinstance(envs.get_env(NAME), GuessTheNumber)
  assert isinstance(tasks.get_task(NAME), GuessTask)
  assert algorithms.resolve_algorithm(NAME) == GUESS_ALGORITHM
  assert advantages.get_estimator(NAME) is guess_advantages


class RegistryCheckingRL(FakeRL):
  """FakeRL whose training first checks that what the driver registered is registered here."""

  def train(self, config, **kwargs):
    check_registered()
    return super().train(config, **kwargs)
