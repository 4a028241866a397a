"""`countdown`: reach a target from given numbers with + - * / (or some of them), each number
at most once (exactly once with use_all_numbers).

The completion's expression is read from its last <answer>...</answer> when it has
one, else from its first line; a trailing "= target" is allowed. It is evaluated by
jaxlayer.tasks.expressions (an ast walk, never eval).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jaxlayer.tasks import expressions
from jaxlayer.tasks.base import GeneratedTask, Problem

_ALLOWED_OPERATORS = "+-*/"
_APPLY = {
    "+": lambda left, right: left + right,
    "-": lambda left, right: left - right,
    "*": lambda left, right: left * right,
    "/": lambda left, right: left // right,
}
_ANSWER_START, _ANSWER_END = "<answer>", "</answer>"


def extract_expression(completion: str) -> str:
  """The expression a completion proposes (see the module docstring): in its last </answer>
  from the last <answer> before it (a tag the text mentions earlier is not the answer's)."""
  end = completion.rfind(_ANSWER_END)
  start = completion.rfind(_ANSWER_START, 0, max(end, 0))
  text = completion[start + len(_ANSWER_START):end] if start >= 0 else completion.split("\n", 1)[0]
  return text.split("=", 1)[0].strip()


def score_expression(
    text: str, numbers: Sequence[int], target: int, use_all_numbers: bool, operators: str
) -> tuple[float, float]:
  """(correct, well_formed) for an expression proposed for numbers -> target, written with
  `operators` only."""
  try:
    tree = expressions.parse_expression(text)
  except expressions.InvalidExpression:
    return 0.0, 0.0
  used, available = Counter(expressions.literals(tree)), Counter(numbers)
  if used - available or (use_all_numbers and used != available):
    return 0.0, 0.0
  if expressions.operators(tree) - set(operators):
    return 0.0, 0.0
  try:
    value = expressions.evaluate(tree)
  except ZeroDivisionError:
    return 0.0, 1.0
  return float(value == target), 1.0


@dataclass(kw_only=True)
class CountdownTask(GeneratedTask):
  """`num_numbers` numbers in [min_number, max_number] and a target in [1, max_target]
  that some expression over all of them reaches (so every problem has a solution).
  `operators`: those the prompt offers, the solutions use and a completion may use.
  `use_all_numbers`: a completion must use every number exactly once (else each at most once),
  as the prompt says.

  Reward components: "correct" and "format" (a valid expression over the numbers).
  """

  num_numbers: int = 4
  min_number: int = 1
  max_number: int = 99
  max_target: int = 100
  operators: str = "+-*/"
  use_all_numbers: bool = False

  name = "countdown"

  def __post_init__(self) -> None:
    if self.num_numbers < 2:
      raise ValueError(f"countdown: num_numbers must be >= 2, got {self.num_numbers}")
    if not 1 <= self.min_number <= self.max_number:
      raise ValueError(
          f"countdown: need 1 <= min_number <= max_number, got {self.min_number}, {self.max_number}"
      )
    if not self.operators or set(self.operators) - set(_ALLOWED_OPERATORS):
      raise ValueError(
          f"countdown: operators must be a subset of {_ALLOWED_OPERATORS!r}, "
          f"got {self.operators!r}"
      )

  def draw(self, rng: random.Random) -> Problem:
    uniform = rng.random  # indexes from random() directly: ~10x faster than randrange
    span = self.max_number - self.min_number + 1
    for _ in range(10_000):
      numbers = [self.min_number + int(uniform() * span) for _ in range(self.num_numbers)]
      solution = self._random_solution(numbers, uniform)
      if solution is not None:
        target, text = solution
        prompt = (
            f"Using the numbers {numbers}, write an expression that equals {target}. "
            f"Use {' '.join(self.operators)} and each number "
            f"{'exactly' if self.use_all_numbers else 'at most'} once."
        )
        answer = expressions.compact(expressions.parse_expression(text))
        return Problem(
            prompt=prompt, answer=answer, metadata={"numbers": numbers, "target": target}
        )
    raise ValueError(
        f"countdown: no target in [1, {self.max_target}] came out of 10000 random expressions "
        f"over numbers in [{self.min_number}, {self.max_number}] with {self.operators!r}: "
        "raise max_target or change the ranges"
    )

  def _random_solution(
      self, numbers: list[int], uniform: Callable[[], float]
  ) -> tuple[int, str] | None:
    """(value, text) of a random expression over all numbers with a value in
    [1, max_target], keeping to whole numbers as in the game; None if none is found
    in a few tries."""
    for _ in range(20):
      terms = [(number, str(number)) for number in numbers]
      while len(terms) > 1:  # join two random terms until one expression is left
        left, left_text = terms.pop(int(uniform() * len(terms)))
        right, right_text = terms.pop(int(uniform() * len(terms)))
        operator = self.operators[int(uniform() * len(self.operators))]
        if operator == "/" and (right == 0 or left % right):
          break
        terms.append((_APPLY[operator](left, right), f"({left_text}{operator}{right_text})"))
      else:
        if 1 <= terms[0][0] <= self.max_target:
          return terms[0]
    return None

  def split_key(self, problem: Problem) -> str:
    return f"{sorted(problem.metadata['numbers'])}->{problem.metadata['target']}"

  def reward_components(
      self, problems: Sequence[Problem], completions: Sequence[str]
  ) -> dict[str, list[float]]:
    scores = [
        score_expression(
            extract_expression(completion),
            problem.metadata["numbers"],
            problem.metadata["target"],
            self.use_all_numbers,
            self.operators,
        )
        for problem, completion in zip(problems, completions, strict=True)
    ]
    return {
        "correct": [correct for correct, _ in scores],
        "format": [well_formed for _, well_formed in scores],
    }
