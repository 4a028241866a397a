"""`arithmetic`: generated integer arithmetic, e.g. prompt "37+45=", answer "82".

Short and cheap on purpose: a tiny model can learn it from scratch on a CPU. A
completion is graded on its first line: an integer equal to the answer scores 1.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from jaxlayer.tasks import rewards
from jaxlayer.tasks.base import GeneratedTask, Problem

_ALLOWED_OPERATORS = "+-*"


@dataclass(kw_only=True)
class ArithmeticTask(GeneratedTask):
  """Expressions of `num_operands` integers in [min_value, max_value] joined by
  operators drawn from `operators` (a subset of "+-*", usual precedence).

  Reward components: "correct" (first line is the answer) and "format" (first
  line is an integer).
  """

  num_operands: int = 2
  min_value: int = 0
  max_value: int = 99
  operators: str = "+-"

  name = "arithmetic"

  def __post_init__(self) -> None:
    if self.num_operands < 2:
      raise ValueError(f"arithmetic: num_operands must be >= 2, got {self.num_operands}")
    if not 0 <= self.min_value <= self.max_value:
      raise ValueError(
          f"arithmetic: need 0 <= min_value <= max_value, got {self.min_value}, {self.max_value}"
      )
    if not self.operators or set(self.operators) - set(_ALLOWED_OPERATORS):
      raise ValueError(
          f"arithmetic: operators must be a subset of {_ALLOWED_OPERATORS!r}, "
          f"got {self.operators!r}"
      )

  def draw(self, rng: random.Random) -> Problem:
    operands = [rng.randint(self.min_value, self.max_value) for _ in range(self.num_operands)]
    operators = [rng.choice(self.operators) for _ in range(self.num_operands - 1)]
    terms = [operands[0]]  # products are folded in as they come: * binds tighter
    for operator, operand in zip(operators, operands[1:]):
      if operator == "*":
        terms[-1] *= operand
      else:
        terms.append(operand if operator == "+" else -operand)
    text = str(operands[0]) + "".join(
        f"{operator}{operand}" for operator, operand in zip(operators, operands[1:])
    )
    return Problem(prompt=f"{text}=", answer=str(sum(terms)))

  def split_key(self, problem: Problem) -> str:
    return problem.prompt

  def reward_components(
      self, problems: Sequence[Problem], completions: Sequence[str]
  ) -> dict[str, list[float]]:
    return {
        "correct": rewards.integer_correctness(
            [problem.answer for problem in problems], completions
        ),
        "format": [
            float(rewards.first_line_integer(completion) is not None)
            for completion in completions
        ],
    }
