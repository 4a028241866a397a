"""Reward functions on strings: the final answer of a reasoning model's completion, math
correctness (math-verify), integer answers, DAPO's soft overlong penalty and weighted sums.

Every batch function takes lists and returns one float per completion. Math answers
are graded by math-verify in a pool of worker processes: math-verify's own timeouts
use signals, which fail off the main thread, and a pathological answer such as
9^{9^{9^9}} can sit in C code that no signal interrupts; so each answer gets a hard
deadline after which its worker is killed (and replaced) and the answer scores 0.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import re
import resource
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError

import pebble

_BOXED_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")  # and the spaces after it
_UNBRACED_ARGUMENT = re.compile(r"[^\s$]*")  # \boxed 5: up to the next space or $
_BRACE_TOKEN = re.compile(r"\\[\\{}]|[{}]")  # \\, \{ or \} (not braces), or a brace
# The most digits int() reads (Python's default int_max_str_digits), as many as str() writes:
# every integer answer fits.
_MAX_INTEGER_DIGITS = 4300
THINK_START, THINK_END = "<think>", "</think>"  # Qwen3's, QwQ's and R1-Distill's thinking block


def final_answer(completion: str) -> str:
  """What a completion answers after its thinking: the text after its last </think>; "" when
  the <think> block it starts with never closed (cut at the length limit while thinking: no
  answer yet, so it earns no reward, as in DeepScaleR's / rLLM's math reward); the whole text
  when it thinks in no such block (a <think> further on is text: code that handles the tag)."""
  end = completion.rfind(THINK_END)
  if end >= 0:
    return completion[end + len(THINK_END):]
  return "" if completion.lstrip().startswith(THINK_START) else completion


def boxed_contents(text: str) -> list[str]:
  """Contents of the \\boxed{...} (or \\fbox{...}) in text that hold an answer, in order: nested
  braces allowed, escaped ones (\\{1, 2\\}, \\left\\{) are text; \\boxed 5 boxes the characters
  up to the next space or $. An unclosed or empty box holds no answer.

  Linear in the text's length (a completion that repeats "\\boxed{" to the length limit is
  graded in the training process).
  """
  closing = _closing_braces(text)
  contents = []
  for command in _BOXED_COMMAND.finditer(text):
    start = command.end()
    if text.startswith("{", start):
      content = text[start + 1 : closing[start]] if start in closing else ""
    else:
      content = _UNBRACED_ARGUMENT.match(text, start).group()
    if content.strip():
      contents.append(content)
  return contents


def last_boxed_content(text: str) -> str | None:
  """The last of boxed_contents(text), the answer a completion settles on; None if none."""
  contents = boxed_contents(text)
  return contents[-1] if contents else None


def _closing_braces(text: str) -> dict[int, int]:
  """Index of each "{" in text -> index of the "}" that closes it (unclosed ones are left out);
  \\{ and \\} are not braces."""
  closing, open_braces = {}, []
  for token in _BRACE_TOKEN.finditer(text):
    if token.group() == "{":
      open_braces.append(token.start())
    elif token.group() == "}" and open_braces:
      closing[open_braces.pop()] = token.start()
  return closing


def first_line_integer(text: str) -> int | None:
  """The integer written on the first line of text (surrounding spaces allowed), or None."""
  line = text.split("\n", 1)[0].strip()
  if not re.fullmatch(rf"[+-]?\d{{1,{_MAX_INTEGER_DIGITS}}}", line):
    return None
  return int(line)


def integer_correctness(answers: Sequence[str], completions: Sequence[str]) -> list[float]:
  """1.0 where the completion's first line is exactly the reference integer, else 0.0."""
  return [
      float(first_line_integer(completion) == int(answer))
      for answer, completion in zip(answers, completions, strict=True)
  ]


def overlong_penalty(lengths: Sequence[int], max_length: int, cache_length: int) -> list[float]:
  """DAPO's soft overlong punishment on token lengths.

  0 up to max_length - cache_length, then linear down to -1 at max_length, -1 beyond.
  """
  if not 0 <= cache_length <= max_length:
    raise ValueError(
        f"overlong penalty needs 0 <= cache_length <= max_length, got "
        f"cache_length={cache_length}, max_length={max_length}"
    )
  soft_start = max_length - cache_length
  penalties = []
  for length in lengths:
    if length <= soft_start:
      penalties.append(0.0)
    elif length <= max_length:
      penalties.append((soft_start - length) / cache_length)
    else:
      penalties.append(-1.0)
  return penalties


def weighted_sum(
    components: Mapping[str, Sequence[float]], weights: Mapping[str, float]
) -> list[float]:
  """sum_k weights[k] * components[k], per completion; components without a weight count 0."""
  unknown = sorted(set(weights) - set(components))
  if unknown:
    raise ValueError(
        f"reward weights name unknown components {unknown}; available: {sorted(components)}"
    )
  sizes = {len(values) for values in components.values()}
  if len(sizes) > 1:
    raise ValueError(f"reward components have different lengths: {sizes}")
  size = sizes.pop() if sizes else 0
  totals = [0.0] * size
  for name, weight in weights.items():
    for index, value in enumerate(components[name]):
      totals[index] += weight * value
  return totals


def _as_math_text(answer: str) -> str:
  """Put a bare reference answer in $...$ so math-verify reads it as LaTeX. An escaped
  dollar sign (MATH's "\\$18.90") is a currency sign, not a math delimiter."""
  if re.search(r"(?<!\\)\$", answer) or "\\boxed" in answer or "\\(" in answer:
    return answer
  return f"${answer}$"


def _plain_text_answer(completion: str) -> str:
  """A completion without a box, written so that math-verify finds its answer: in text it finds
  none after an escaped dollar sign ("She makes \\$18.") or in a unicode minus ("\u22123"), so
  the dollar sign is dropped and the minus written "-"."""
  return completion.replace("\\$", "").replace("\u2212", "-")


def _init_math_worker(memory_limit_bytes: int | None) -> None:
  import math_verify  # noqa: F401  (imported once per worker, not once per answer)

  if memory_limit_bytes is not None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
  # math-verify warns that its signal timeouts are off: on purpose, the pool has deadlines.
  logging.getLogger("math_verify").setLevel(logging.ERROR)


def _verify_math_answer(reference: str, completion: str) -> float:
  """Runs in a pool worker: 1.0 if the completion's answer equals the reference."""
  from math_verify import parse, verify

  try:
    gold = parse(_as_math_text(reference), parsing_timeout=None)
    boxes = boxed_contents(completion)
    if boxes:
      # The last box, or all of them as one set (x = \boxed{1} or x = \boxed{2}).
      answers = [boxes[-1]] + ([", ".join(boxes)] if len(boxes) > 1 else [])
      predictions = [parse(f"${answer}$", parsing_timeout=None) for answer in answers]
    else:
      text = _plain_text_answer(completion)
      predicted = parse(text, parsing_timeout=None)
      if not predicted and "\n" not in text.strip():
        predicted = parse(f"${text.strip()}$", parsing_timeout=None)
      predictions = [predicted]
    return float(bool(gold) and any(prediction and verify(gold, prediction, timeout_seconds=None)
                                    for prediction in predictions))
  except Exception:  # whatever malformed output makes math-verify raise scores 0
    return 0.0


class MathVerifier:
  """Grades math answers with math-verify in worker processes, with a deadline each.

  A completion is graded on its last \\boxed{...} when it has one (or on all its boxes as one
  set: x = \\boxed{1} or x = \\boxed{2} states the answer {1, 2}), else on the answer
  math-verify finds in the text. Timeouts, crashes and unparsable output all score 0.0.
  memory_limit_bytes caps each worker's address space (a huge power then fails fast instead
  of eating the machine's memory).
  """

  def __init__(
      self, workers: int = 2, timeout: float = 5.0, memory_limit_bytes: int | None = 4 << 30
  ):
    if workers < 1:
      raise ValueError(f"MathVerifier needs workers >= 1, got {workers}")
    self.timeout = timeout
    # spawn, not fork: the parent may run JAX threads, which fork would copy broken.
    self._pool = pebble.ProcessPool(
        max_workers=workers,
        initializer=_init_math_worker,
        initargs=(memory_limit_bytes,),
        context=multiprocessing.get_context("spawn"),
    )

  def grade(self, references: Sequence[str], completions: Sequence[str]) -> list[float]:
    """1.0 / 0.0 per completion: does it state the reference answer?"""
    try:
      futures = [
          self._pool.schedule(_verify_math_answer, (reference, completion), timeout=self.timeout)
          for reference, completion in zip(references, completions, strict=True)
      ]
    except RuntimeError as error:
      raise RuntimeError(
          "the math-verify worker processes could not start. They are started with "
          "'spawn', which re-imports your main script: put its top-level code under "
          "`if __name__ == '__main__':`"
      ) from error
    scores = []
    for future in futures:
      try:
        scores.append(future.result())
      except (FutureTimeoutError, pebble.ProcessExpired):
        scores.append(0.0)  # past its deadline, or its worker died: killed and replaced
    return scores

  def close(self) -> None:
    self._pool.stop()
    self._pool.join()

  def __enter__(self) -> MathVerifier:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


_shared_verifiers: dict[tuple[int, float], MathVerifier] = {}
_shared_lock = threading.Lock()


def shared_math_verifier(workers: int | None = None, timeout: float = 5.0) -> MathVerifier:
  """One MathVerifier per (workers, timeout) per process, started on first use, stopped at exit.

  workers defaults to min(4, number of CPUs).
  """
  workers = workers or min(4, os.cpu_count() or 1)
  with _shared_lock:
    key = (workers, timeout)
    if key not in _shared_verifiers:
      _shared_verifiers[key] = MathVerifier(workers=workers, timeout=timeout)
      atexit.register(_shared_verifiers[key].close)
    return _shared_verifiers[key]
