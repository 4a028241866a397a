"""Wording shared by jaxlayer's messages."""


def counted(count: int, noun: str) -> str:
  """'1 step', '3 steps', '197,120 weights': a count (thousands separated) and its noun,
  singular for 1 (numpy integers included)."""
  count = int(count)
  return f"{count:,} {noun}{'s' * (count != 1)}"


def decimals(value: float | None, digits: int = 3) -> str:
  """value to `digits` decimals (0, never -0), or 'n/a' where it is undefined (None: a standard
  error from a single problem, say, never a 0 that would claim no noise)."""
  return "n/a" if value is None else f"{value:z.{digits}f}"
