"""Tasks: problems, reference answers and rewards, as plain Python on strings.

  task = get_task("arithmetic", seed=0, num_operands=2)
  problems = task.train_problems()
  batch = task.rewards(problems[:4], completions, completion_lengths=lengths)
  batch.total, batch.components  # per completion

Adding a task is one class (or factory function) and one line in TASKS.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import types
import typing
from collections.abc import Callable

from jaxlayer.tasks.arithmetic import ArithmeticTask
from jaxlayer.tasks.base import SCORE_COMPONENT, GeneratedTask, Problem, RewardBatch, Task
from jaxlayer.tasks.coding import CodeTask
from jaxlayer.tasks.countdown import CountdownTask
from jaxlayer.tasks.math_tasks import AMCTask, GSM8KTask, MathTask, NuminaTask, OlympiadBenchTask
from jaxlayer.tasks.prompts import (chat_prompt, encode_prompts, format_prompt, opened_thinking,
                                    prompt_settings)
from jaxlayer.text import closest

TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "gsm8k": GSM8KTask,
    "math": MathTask,
    "numina": NuminaTask,
    "olympiadbench": OlympiadBenchTask,
    "amc": AMCTask,
    "code": CodeTask,
}


# The option types get_task checks, each with the values it takes; options of other types (data
# files, weights, paths) are the task's own to check.
_PLAIN_TYPES = {bool: bool, int: numbers.Integral, float: numbers.Real, str: str,
                type(None): type(None)}


def _option_defaults(factory: Callable[..., Task]) -> dict[str, object]:
  """Each option of the task's constructor and its default (dataclasses.MISSING or
  inspect.Parameter.empty where it has none)."""
  if dataclasses.is_dataclass(factory):
    return {item.name: item.default for item in dataclasses.fields(factory) if item.init}
  return {name: parameter.default
          for name, parameter in inspect.signature(factory).parameters.items()}


def _plain_option_types(factory: Callable[..., Task]) -> dict[str, tuple[type, ...]]:
  """The types each option takes where all are plain (bool, int, float, str, None): by its
  annotation, else by its default's type (not a None default's: that says nothing)."""
  try:
    hints = typing.get_type_hints(factory)
  except (NameError, TypeError):  # annotations that do not resolve: the defaults say
    hints = {}
  option_types = {}
  for name, default in _option_defaults(factory).items():
    if name in hints:
      hint = hints[name]
      is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
      accepted = typing.get_args(hint) if is_union else (hint,)
    else:
      accepted = () if default is None else (type(default),)
    if accepted and all(option_type in _PLAIN_TYPES for option_type in accepted):
      option_types[name] = accepted
  return option_types


def _takes(option_type: type, value: object) -> bool:
  """Whether an option of the plain `option_type` takes `value` (an int for a float; no bool for
  a number)."""
  is_bool = isinstance(value, bool)
  return isinstance(value, _PLAIN_TYPES[option_type]) and (not is_bool or option_type is bool)


def get_task(name: str, **options) -> Task:
  """Build the task registered as `name` with its options (see each task's docstring).

  A ValueError names an unknown option, and one of a plain type (bool, int, float, str, None)
  given a value of another, before the task is built.
  """
  if not isinstance(name, str):
    raise TypeError(f"get_task takes a task's name, one of {sorted(TASKS)}, got "
                    f"{type(name).__name__}.")
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
  factory = TASKS[name]
  valid = list(_option_defaults(factory))
  unknown = sorted(set(options) - set(valid))
  if unknown:
    named = ", ".join(repr(option) + (f" (did you mean {guess!r}?)"
                                      if (guess := closest(option, valid)) else "")
                      for option in unknown)
    raise ValueError(f"task {name!r} has no {'option' if len(unknown) == 1 else 'options'} "
                     f"{named}; its options are: {valid}")
  option_types = _plain_option_types(factory)
  for option, value in options.items():
    accepted = option_types.get(option, ())
    if accepted and not any(_takes(option_type, value) for option_type in accepted):
      expected = " or ".join("None" if option_type is type(None) else option_type.__name__
                             for option_type in accepted)
      raise ValueError(f"task {name!r}: option {option!r} takes {expected}, got {value!r} "
                       f"({type(value).__name__}).")
  return factory(**options)


def require_task(task) -> None:
  """Raises a TypeError naming the fix when `task` is no Task object (a task's name, say)."""
  if not isinstance(task, Task):
    how = f"tasks.get_task({task!r})" if isinstance(task, str) else "tasks.get_task(NAME)"
    raise TypeError(f"task must be a jaxlayer Task, got {type(task).__name__}: make one with "
                    f"{how}.")


__all__ = ["SCORE_COMPONENT", "TASKS", "GeneratedTask", "Problem", "RewardBatch", "Task",
           "chat_prompt", "encode_prompts", "format_prompt", "get_task", "opened_thinking",
           "prompt_settings", "require_task"]
