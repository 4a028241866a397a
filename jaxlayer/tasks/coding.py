"""`code`: MBPP / HumanEval style problems (a prompt plus unit tests), graded by running
the tests on the completion's code in jaxlayer.tasks.sandbox.

Tests are either a list of statements (MBPP's asserts: each one is a test) or one
script (HumanEval's `def check(candidate)`, called on the entry point, after the prompt's
own helpers: see _prompt_helpers). The code is
the last ```python fenced block of the completion (else the last fenced block, else
the whole completion); with an entry point, code that does not define it is taken
as the continuation of the prompt.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from jaxlayer.tasks import sandbox
from jaxlayer.tasks.base import Problem
from jaxlayer.tasks.loading import (LISTS_IN_CSV, DatasetTask, InvalidRecord, field_value,
                                    record_question, record_text, written_list)

_FENCED_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> str:
  """The code of a completion (see the module docstring)."""
  blocks = _FENCED_BLOCK.findall(completion)
  if not blocks:
    return completion
  python_blocks = [
      code for language, code in blocks if language.lower() in ("python", "py", "python3")
  ]
  return (python_blocks or [code for _, code in blocks])[-1]


def _prompt_helpers(prompt_code: str, entry_point: str) -> str:
  """The prompt's code but the entry point's definition (HumanEval's `poly`, `encode_cyclic`,
  its imports): run before the tests, so that the tests call the task's helpers, not
  redefinitions in the completion (`def poly(xs, x): return 0` passes no test)."""
  try:
    tree = ast.parse(prompt_code)
  except SyntaxError:
    return ""  # the prompt is prose: it defines nothing the tests use
  tree.body = [node for node in tree.body
               if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and node.name == entry_point)]
  return ast.unparse(tree)


@dataclass(kw_only=True)
class CodeTask(DatasetTask):
  """Code problems with unit tests. Defaults read MBPP ("text", "code", "test_list").

  tests_field: list of test statements, or one test script (records with none are skipped);
  setup_field: the benchmark's code for the tests (MBPP's "test_setup_code"; a list is joined),
    run apart from the program, whose names it replaces (jaxlayer.tasks.sandbox.run_tests);
    None for data without it (MBPP's sanitized copy);
  entry_point_field: HumanEval's "entry_point" (the tests' check() is called on it);
  answer_field: a reference solution (may be absent from the data: set it to None);
  show_tests_in_prompt: append list-style tests to the prompt (MBPP needs it: the
    function name is only in the tests);
  reward_mode: "fraction" of tests passed, or "all" (1 only if every test passes);
  sandbox_limits: SandboxLimits fields, e.g. {"wall_seconds": 10};
  sandbox_workers: sandboxes run at once (default: number of CPUs).
  """

  dataset: str | None = "google-research-datasets/mbpp"
  dataset_config: str | None = "full"
  question_field: str = "text"
  answer_field: str | None = "code"
  tests_field: str = "test_list"
  setup_field: str | None = "test_setup_code"
  entry_point_field: str | None = None
  show_tests_in_prompt: bool = True
  reward_mode: str = "fraction"
  sandbox_limits: dict[str, float] = field(default_factory=dict)
  sandbox_workers: int | None = None

  name = "code"

  def __post_init__(self) -> None:
    super().__post_init__()
    if self.reward_mode not in ("fraction", "all"):
      raise ValueError(f"code: reward_mode must be 'fraction' or 'all', got {self.reward_mode!r}")
    known = [limit.name for limit in fields(sandbox.SandboxLimits)]
    unknown = sorted(set(self.sandbox_limits) - set(known))
    if unknown:
      raise ValueError(f"code: sandbox_limits has no {unknown}; its keys are {known} "
                       "(jaxlayer.tasks.sandbox.SandboxLimits)")
    self.limits = sandbox.SandboxLimits(**self.sandbox_limits)

  optional_field_options = ("answer_field", "setup_field", "entry_point_field")

  def field_options(self) -> dict[str, str]:
    options = {"question_field": self.question_field, "tests_field": self.tests_field,
               "answer_field": self.answer_field, "setup_field": self.setup_field,
               "entry_point_field": self.entry_point_field}
    return {option: name for option, name in options.items() if name is not None}

  def usable_answer(self) -> str:
    return f"tests in its field {self.tests_field!r}"

  def make_problem(self, record: Mapping[str, Any]) -> Problem | None:
    raw_tests = field_value(record, self.tests_field)
    if raw_tests is not None and not isinstance(raw_tests, (str, list)):
      raise InvalidRecord(f"field {self.tests_field!r} holds a {type(raw_tests).__name__}: give "
                          "a list of test statements or one test script")
    if isinstance(raw_tests, str) and written_list(raw_tests):
      raise InvalidRecord(
          f"field {self.tests_field!r} holds a list written as text, not a test script: "
          f"{raw_tests.strip()[:80]}; run as the tests, it would pass every completion. "
          f"{LISTS_IN_CSV}")
    entry_point = None
    if self.entry_point_field:
      entry_point = record_text(record, self.entry_point_field).strip()
      if not entry_point:
        raise InvalidRecord(f"the entry point field {self.entry_point_field!r} is empty or missing")
    if isinstance(raw_tests, str):
      tests = [raw_tests] if raw_tests.strip() else []
    else:
      tests = [str(test) for test in raw_tests or [] if str(test).strip()]
    if not tests:
      return None  # nothing could grade a completion
    question, earlier_turns = record_question(record, self.question_field)
    if isinstance(raw_tests, str):
      check = f"\ncheck({entry_point})" if entry_point else ""
      helpers = _prompt_helpers(question, entry_point) if entry_point else ""
      tests = [f"{helpers}\n{raw_tests}{check}"]
    setup = field_value(record, self.setup_field) if self.setup_field else ""
    setup = "\n".join(setup) if isinstance(setup, list) else str(setup or "")
    prompt = question
    if self.show_tests_in_prompt and not isinstance(raw_tests, str):
      prompt += "\nYour code should pass these tests:\n" + "\n".join(tests)
    answer = record_text(record, self.answer_field) if self.answer_field else ""
    metadata = {
        "tests": tests,
        "setup": setup,
        "entry_point": entry_point,
        "prompt_code": question,
    }
    return Problem(prompt=prompt, answer=answer, metadata=metadata, earlier_turns=earlier_turns)

  def program(self, problem: Problem, completion: str) -> str:
    """The program the tests run against: the completion's code (after the prompt's, for a
    continuation)."""
    code = extract_code(completion)
    entry_point = problem.metadata["entry_point"]
    if entry_point and not re.search(rf"def\s+{re.escape(entry_point)}\s*\(", code):
      code = problem.metadata["prompt_code"] + code
    return code

  def reward_components(
      self, problems: Sequence[Problem], completions: Sequence[str]
  ) -> dict[str, list[float]]:
    results = sandbox.run_tests_batch(
        [
            self.program(problem, completion)
            for problem, completion in zip(problems, completions, strict=True)
        ],
        [problem.metadata["tests"] for problem in problems],
        limits=self.limits,
        workers=self.sandbox_workers,
        setups=[problem.metadata["setup"] for problem in problems],
    )
    if self.reward_mode == "all":
      correct = [float(result.all_passed) for result in results]
    else:
      correct = [result.fraction_passed for result in results]
    return {
        "correct": correct,
        "format": [
            float(_FENCED_BLOCK.search(completion) is not None) for completion in completions
        ],
    }
