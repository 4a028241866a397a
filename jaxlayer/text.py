"""Wording shared by jaxlayer's messages."""

import difflib
from collections.abc import Iterable


def counted(count: int, noun: str) -> str:
  """'1 step', '3 steps', '197,120 weights': a count (thousands separated) and its noun,
  singular for 1 (numpy integers included)."""
  count = int(count)
  return f"{count:,} {noun}{'s' * (count != 1)}"


def decimals(value: float | None, digits: int = 3) -> str:
  """value to `digits` decimals (0, never -0), or 'n/a' where it is undefined (None: a standard
  error from a single problem, say, never a 0 that would claim no noise)."""
  return "n/a" if value is None else f"{value:z.{digits}f}"


def closest(name: str, known: Iterable[str]) -> str | None:
  """The one of the `known` names closest to a mistyped `name` (difflib.get_close_matches), if
  one is close."""
  close = difflib.get_close_matches(name, list(known), n=1)
  return close[0] if close else None
