"""What every task shares: the Problem record, the Task interface and reward bookkeeping."""

from __future__ import annotations

import abc
import functools
import hashlib
import math
import numbers
import random
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from jaxlayer import text
from jaxlayer.tasks import rewards


# The reward component that says whether a completion is right (1) or not (0) (code with
# reward_mode="fraction": the fraction of its tests passed): evaluation scores by it and DAPO's
# dynamic sampling filters groups on it.
SCORE_COMPONENT = "correct"


@dataclass(frozen=True)
class Problem:
  """One question: the raw prompt (before any template), the reference answer, extras, and the
  chat turns before the question where it ends a conversation (a data set's system message or
  few-shot turns, each {"role": ..., "content": ...}), which the chat template writes first."""

  prompt: str
  answer: str
  metadata: dict = field(default_factory=dict)
  earlier_turns: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class RewardBatch:
  """Rewards for a batch of completions: each named component, and their weighted sum."""

  components: dict[str, list[float]]  # name -> one value per completion
  weights: dict[str, float]  # name -> weight in the total

  @property
  def total(self) -> list[float]:
    return rewards.weighted_sum(self.components, self.weights)


@dataclass(kw_only=True)
class Task(abc.ABC):
  """A source of problems plus the grader for completions to them.

  Subclasses implement `train_problems`, `test_problems` and `reward_components`.
  `reward_weights` weighs the components into the scalar reward (components with no
  weight are still reported, for logging). `rewards` grades each completion's final answer
  (rewards.final_answer: what follows a reasoning model's </think>; "" for thinking cut short),
  so `reward_components` never sees the thinking. With `overlong_max_length` set,
  `rewards(..., completion_lengths=...)` adds DAPO's soft overlong penalty (tokens
  past overlong_max_length - overlong_cache_length) as the component "overlong"
  with weight 1.
  """

  name: ClassVar[str]
  reward_weights: dict[str, float] = field(default_factory=lambda: {SCORE_COMPONENT: 1.0})
  overlong_max_length: int | None = None
  overlong_cache_length: int = 0

  @abc.abstractmethod
  def train_problems(self) -> Sequence[Problem]:
    """Problems to train on."""

  @abc.abstractmethod
  def test_problems(self) -> Sequence[Problem]:
    """Held-out problems to evaluate on (disjoint from the train split)."""

  @abc.abstractmethod
  def reward_components(
      self, problems: Sequence[Problem], completions: Sequence[str]
  ) -> dict[str, list[float]]:
    """Grade completions[i] against problems[i]: component name -> one finite number per
    completion (`rewards` refuses anything else, naming it)."""

  def rewards(
      self,
      problems: Sequence[Problem],
      completions: Sequence[str],
      completion_lengths: Sequence[int] | None = None,
  ) -> RewardBatch:
    """Grade a whole batch in one call (the RL loop's entry point).

    completions: the model's text after the prompt, with the thinking block the prompt opened
      in front (tasks.opened_thinking: R1-Distill's generation prompt ends with "<think>\\n").
    completion_lengths: token counts of the completions, needed only for the
    overlong penalty.
    """
    if len(problems) != len(completions):
      raise ValueError(
          f"got {len(problems)} problems but {len(completions)} completions; "
          "pass one problem per completion (repeat a problem for a group)"
      )
    components = self.reward_components(problems, [rewards.final_answer(text)
                                                   for text in completions])
    self._check_components(components, problems)
    if self.overlong_max_length is not None:
      if completion_lengths is None:
        raise ValueError(
            f"task {self.name!r} has overlong_max_length set: pass "
            "completion_lengths (token counts) to rewards()"
        )
      components["overlong"] = rewards.overlong_penalty(
          completion_lengths, self.overlong_max_length, self.overlong_cache_length
      )
    return RewardBatch(components=components, weights=self._total_weights())

  def _check_components(self, components, problems: Sequence[Problem]) -> None:
    """Raises ValueError naming what is wrong when `reward_components` returned anything but a
    dict of component name -> one finite number per problem (a NaN reward stopped training
    as diverged, blaming the learning rate; a list one short gave the batch fewer rewards than
    completions)."""
    what = (f"task {self.name!r}: reward_components must return a dict of component name -> "
            f"one finite number per completion ({len(problems)})")
    if not isinstance(components, Mapping):
      raise ValueError(f"{what}; it returned {type(components).__name__}.")
    for name, values in components.items():
      if not isinstance(values, (Sequence, np.ndarray)) or isinstance(values, (str, bytes)):
        raise ValueError(f"{what}; component {name!r} is {type(values).__name__}.")
      if len(values) != len(problems):
        raise ValueError(f"{what}; component {name!r} has {text.counted(len(values), 'value')}.")
      for index, value in enumerate(values):
        if not (isinstance(value, (numbers.Real, np.bool_)) and math.isfinite(value)):
          raise ValueError(f"{what}; component {name!r} is {value!r} for completion {index} "
                           f"(problem {problems[index].prompt[:60]!r}): grade a wrong or "
                           "unreadable completion 0.")

  def grading_data(self, problem: Problem) -> dict:
    """What grading reads of `problem` besides its answer (a code task's tests), which a run's
    record of its training problems covers: all of its metadata, any of which
    `reward_components` may read, unless the task says less."""
    return problem.metadata

  def check_reward_weights(self, problem: Problem) -> None:
    """Raises ValueError if reward_weights names a component this task does not grade: called
    before any model runs (the components are found by grading an empty completion of
    `problem`), where the total reward would fail only after the first generation."""
    graded = self.rewards([problem], [""], [0]).components
    unknown = sorted(set(self.reward_weights) - set(graded))
    if unknown:
      raise ValueError(f"task {self.name!r}: reward_weights names {unknown}, which it does not "
                       f"grade; its reward components are {sorted(graded)} "
                       "(task.options.reward_weights).")

  def rewards_on_all_hosts(
      self,
      problems: Sequence[Problem],
      completions_of: Callable[[Sequence[int]], list[str]],
      completion_lengths: Sequence[int],
  ) -> RewardBatch:
    """`rewards` of a batch that every process of a multi-host run holds: each process
    grades its share (completions_of(indices) gives those completions, decoded only there)
    and every process gets all the rewards. On one process: `rewards` of the whole batch."""
    from jaxlayer import distributed  # (not at import: grading workers need no JAX)

    def grade(rows):
      graded = self.rewards([problems[r] for r in rows], completions_of(rows),
                            [completion_lengths[r] for r in rows])
      return {name: np.asarray(v, np.float64) for name, v in graded.components.items()}

    components = distributed.split_work(grade, len(problems))
    return RewardBatch(components={k: v.tolist() for k, v in components.items()},
                       weights=self._total_weights())

  def _total_weights(self) -> dict[str, float]:
    """Each reward component's weight in the total (DAPO's overlong penalty: 1)."""
    weights = dict(self.reward_weights)
    if self.overlong_max_length is not None:
      weights["overlong"] = 1.0
    return weights

  def reward(
      self, problem: Problem, completion: str, completion_length: int | None = None
  ) -> float:
    """The scalar reward of one completion."""
    lengths = None if completion_length is None else [completion_length]
    return self.rewards([problem], [completion], lengths).total[0]


def checked_problems(task: Task, split: str) -> list[Problem]:
  """`task.train_problems()` or `task.test_problems()` (split 'train' or 'test') as a list; a
  TypeError names the first that is no Problem with a str prompt (a user's task that gives
  dicts, say), before anything formats it into a prompt."""
  problems = list(task.train_problems() if split == "train" else task.test_problems())
  for index, problem in enumerate(problems):
    if isinstance(problem, Problem) and isinstance(problem.prompt, str):
      continue
    given = (f"a Problem whose prompt is {type(problem.prompt).__name__} "
             f"{reprlib.repr(problem.prompt)}" if isinstance(problem, Problem)
             else f"a {type(problem).__name__}, {reprlib.repr(problem)}")
    raise TypeError(f"task {task.name!r}: {split}_problems() gave {given} (problem {index}); "
                    "give tasks.Problem(prompt=..., answer=...) objects, the prompt a str.")
  return problems


def in_test_split(key: str, test_fraction: float) -> bool:
  """Assign a problem to the test split by a stable hash of its key.

  The same key always lands in the same split, whatever the seed, the process or the
  Python version, so train and test are disjoint by construction.
  """
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


@dataclass(kw_only=True)
class GeneratedTask(Task):
  """A task whose problems are drawn from a seeded generator.

  Subclasses implement `draw` (one random problem) and `split_key` (the text whose
  hash puts a problem in train or test).
  """

  seed: int = 0
  num_train: int = 20_000
  num_test: int = 1_000
  test_fraction: float = 0.1

  @abc.abstractmethod
  def draw(self, rng: random.Random) -> Problem:
    """One random problem."""

  @abc.abstractmethod
  def split_key(self, problem: Problem) -> str:
    """Problems with the same key are the same problem (and land in the same split)."""

  def _generate(self, split: str, count: int) -> list[Problem]:
    return generate_split(
        self.draw,
        self.split_key,
        task_name=self.name,
        seed=self.seed,
        split=split,
        count=count,
        test_fraction=self.test_fraction,
    )

  @functools.cached_property
  def _train(self) -> list[Problem]:
    return self._generate("train", self.num_train)

  @functools.cached_property
  def _test(self) -> list[Problem]:
    return self._generate("test", self.num_test)

  def train_problems(self) -> list[Problem]:
    return self._train

  def test_problems(self) -> list[Problem]:
    return self._test


def generate_split(
    draw: Callable[[random.Random], Problem],
    split_key: Callable[[Problem], str],
    *,
    task_name: str,
    seed: int,
    split: str,
    count: int,
    test_fraction: float,
) -> list[Problem]:
  """`count` problems of one split of a generated task, the same for the same seed.

  draw makes a random problem; split_key names it for the split hash. Test problems
  are distinct from each other; train problems may repeat (small problem spaces).
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  rng = random.Random(f"{task_name}/{split}/{seed}")
  want_test = split == "test"
  problems: list[Problem] = []
  seen: set[str] = set()
  for _ in range(100 * count + 1000):
    if len(problems) == count:
      return problems
    problem = draw(rng)
    key = split_key(problem)
    if in_test_split(key, test_fraction) != want_test or (want_test and key in seen):
      continue
    seen.add(key)
    problems.append(problem)
  raise ValueError(
      f"task {task_name!r}: found only {len(problems)} distinct {split} problems, wanted "
      f"{count}; the difficulty settings allow too few problems: lower num_{split} or "
      "widen the ranges"
  )
