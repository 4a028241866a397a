"""`gsm8k`, `math` (MATH / MATH-500), `numina`, `olympiadbench` and `amc` (AMC 2023): math
problems graded by math-verify.

A completion is graded on its last \\boxed{...} when it has one (or on all its boxes as one
set), else on the answer math-verify finds in its text (jaxlayer.tasks.rewards.MathVerifier);
a reasoning model's on what follows its thinking (Task.rewards). Reward components: "correct",
and "format" (the completion has a \\boxed{...} answer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jaxlayer.tasks import rewards
from jaxlayer.tasks.base import Problem
from jaxlayer.tasks.loading import (LISTS_IN_CSV, DatasetTask, InvalidRecord, field_value,
                                    record_question, record_text, record_texts, written_list)


@dataclass(kw_only=True)
class MathTask(DatasetTask):
  """MATH-style problems; the reference is the answer field (its last \\boxed{...} if it
  has one). With boxed_answer=True the answer field is a full solution: records whose
  solution has no \\boxed{...} are skipped.

  verify_timeout: seconds math-verify may spend on one answer (then it scores 0);
  verify_workers: grading processes (default min(4, CPUs)).
  """

  dataset: str | None = "HuggingFaceH4/MATH-500"
  train_split: str | None = None  # MATH-500 is a test set only
  test_split: str | None = "test"
  question_field: str = "problem"
  answer_field: str = "answer"
  boxed_answer: bool = False
  verify_timeout: float = 5.0
  verify_workers: int | None = None

  name = "math"

  def reference_answer(self, text: str) -> str | None:
    boxed = rewards.last_boxed_content(text)
    if boxed is not None or self.boxed_answer:
      return boxed
    return text.strip() or None

  def grading_data(self, problem: Problem) -> dict:
    """Nothing: math-verify grades the answer alone (the metadata, the record's other fields,
    only fill prompt templates)."""
    del problem
    return {}

  def usable_answer(self) -> str:
    if self.boxed_answer:
      return (f"a \\boxed{{...}} answer in its field {self.answer_field!r} (boxed_answer=True: "
              "a full solution)")
    return super().usable_answer()

  def answer_text(self, record: Mapping[str, Any]) -> str:
    """The record's answer field as text (InvalidRecord for a list: it holds no one answer)."""
    return record_text(record, self.answer_field)

  def make_problem(self, record: Mapping[str, Any]) -> Problem | None:
    question, earlier_turns = record_question(record, self.question_field)
    answer = self.reference_answer(self.answer_text(record))
    if answer is None:
      return None
    metadata = {
        key: value
        for key, value in record.items()
        if key not in (self.question_field, self.answer_field)
    }
    return Problem(prompt=question, answer=answer, metadata=metadata, earlier_turns=earlier_turns)

  def reward_components(
      self, problems: Sequence[Problem], completions: Sequence[str]
  ) -> dict[str, list[float]]:
    verifier = rewards.shared_math_verifier(self.verify_workers, self.verify_timeout)
    return {
        "correct": verifier.grade([problem.answer for problem in problems], completions),
        "format": [
            float(rewards.last_boxed_content(completion) is not None)
            for completion in completions
        ],
    }


@dataclass(kw_only=True)
class NuminaTask(MathTask):
  """NuminaMath-CoT: full solutions whose last \\boxed{...} is the reference answer."""

  dataset: str | None = "AI-MO/NuminaMath-CoT"
  train_split: str | None = "train"
  test_split: str | None = "test"
  question_field: str = "problem"
  answer_field: str = "solution"
  boxed_answer: bool = True

  name = "numina"


@dataclass(kw_only=True)
class GSM8KTask(MathTask):
  """GSM8K: the reference is what follows "####" in the answer field (commas dropped);
  an answer field without "####" is taken whole."""

  dataset: str | None = "openai/gsm8k"
  dataset_config: str | None = "main"
  train_split: str | None = "train"
  test_split: str | None = "test"
  question_field: str = "question"
  answer_field: str = "answer"

  name = "gsm8k"

  def reference_answer(self, text: str) -> str | None:
    final = text.rsplit("####", 1)[-1]
    return final.strip().replace(",", "") or None


@dataclass(kw_only=True)
class OlympiadBenchTask(MathTask):
  """OlympiadBench's text-only English math competition problems (OE_TO_maths_en_COMP, 674
  on the hub), a test set only: the hub calls its one split "train".

  The answer field is a list of LaTeX answers, such as ["$\\frac{1}{2}$"]; the reference is
  the list's items without their $...$, joined with ", ". A problem with several answers
  (is_multiple_answer) is graded as a set: a completion must state all of them, in any order
  (\\boxed{2, \\frac{1}{2}}, or one box each), and one that gives only some scores 0. The unit
  field is not part of the reference: the benchmark asks for the unit outside the \\boxed{}.
  """

  dataset: str | None = "Hothan/OlympiadBench"
  dataset_config: str | None = "OE_TO_maths_en_COMP"
  train_split: str | None = None
  test_split: str | None = "train"
  question_field: str = "question"
  answer_field: str = "final_answer"

  name = "olympiadbench"

  def answer_text(self, record: Mapping[str, Any]) -> str:
    value = field_value(record, self.answer_field)
    if isinstance(value, str) and written_list(value):
      raise InvalidRecord(f"field {self.answer_field!r} holds a list written as text, not "
                          f"answers: {value.strip()[:80]}; a problem's several answers would be "
                          f"graded as that text, not as a set. {LISTS_IN_CSV}")
    answers = [_without_dollars(text.strip()) for text in record_texts(record, self.answer_field)]
    return ", ".join(answer for answer in answers if answer)


def _without_dollars(answer: str) -> str:
  """An answer's LaTeX without the $...$ around it ("$\\frac{1}{2}$" -> "\\frac{1}{2}")."""
  inline = re.fullmatch(r"\$([^$]*)\$", answer)
  return inline.group(1).strip() if inline else answer


@dataclass(kw_only=True)
class AMCTask(MathTask):
  """AMC 2023 as RL papers evaluate it: 40 problems with numeric answers, a test set only. The
  answers are floats (27.0, as copies of the data set write its first; the hub's card does not
  list its fields), which math-verify grades equal to \\boxed{27}. (The paper scores AMC by the
  mean over 32 samples per problem, an evaluation setting.)"""

  dataset: str | None = "math-ai/amc23"
  train_split: str | None = None
  test_split: str | None = "test"
  question_field: str = "question"
  answer_field: str = "answer"

  name = "amc"
