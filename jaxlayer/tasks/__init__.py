"""Tasks: problems, reference answers and rewards, as plain Python on strings.

  task = get_task("arithmetic", seed=0, num_operands=2)
  problems = task.train_problems()
  batch = task.rewards(problems[:4], completions, completion_lengths=lengths)
  batch.total, batch.components  # per completion

Adding a task is one class (or factory function) and one line in TASKS.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxlayer.options import check_option_types, option_defaults
from jaxlayer.tasks.arithmetic import ArithmeticTask
from jaxlayer.tasks.base import (SCORE_COMPONENT, GeneratedTask, Problem, RewardBatch, Task,
                                 checked_problems)
from jaxlayer.tasks.coding import CodeTask
from jaxlayer.tasks.countdown import CountdownTask
from jaxlayer.tasks.math_tasks import AMCTask, GSM8KTask, MathTask, NuminaTask, OlympiadBenchTask
from jaxlayer.tasks.prompts import (chat_prompt, encode_prompts, format_prompt, opened_thinking,
                                    prompt_settings)
from jaxlayer.text import closest, unknown_name

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


def get_task(name: str, **options) -> Task:
  """Build the task registered as `name` with its options (see each task's docstring).

  A ValueError names an unknown option, and one of a plain type (bool, int, float, str, None)
  given a value of another, before the task is built.
  """
  if not isinstance(name, str):
    raise TypeError(f"get_task takes a task's name, one of {sorted(TASKS)}, got "
                    f"{type(name).__name__}.")
  if name not in TASKS:
    raise ValueError(unknown_name("task", name, TASKS, "tasks.TASKS"))
  factory = TASKS[name]
  valid = list(option_defaults(factory))
  unknown = sorted(set(options) - set(valid))
  if unknown:
    named = ", ".join(repr(option) + (f" (did you mean {guess!r}?)"
                                      if (guess := closest(option, valid)) else "")
                      for option in unknown)
    raise ValueError(f"task {name!r} has no {'option' if len(unknown) == 1 else 'options'} "
                     f"{named}; its options are: {valid}")
  check_option_types(factory, options, f"task {name!r}")
  return factory(**options)


def require_task(task) -> None:
  """Raises a TypeError naming the fix when `task` is no Task object (a task's name, say)."""
  if not isinstance(task, Task):
    how = f"tasks.get_task({task!r})" if isinstance(task, str) else "tasks.get_task(NAME)"
    raise TypeError(f"task must be a jaxlayer Task, got {type(task).__name__}: make one with "
                    f"{how}.")


__all__ = ["SCORE_COMPONENT", "TASKS", "GeneratedTask", "Problem", "RewardBatch", "Task",
           "chat_prompt", "checked_problems", "encode_prompts", "format_prompt", "get_task",
           "opened_thinking", "prompt_settings", "require_task"]
