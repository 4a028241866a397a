"""Wording shared by jaxlayer's messages."""


def counted(count: int, noun: str) -> str:
  """'1 step', '3 steps', '197,120 weights': a count (thousands separated) and its noun,
  singular for 1 (numpy integers included)."""
  count = int(count)
  return f"{count:,} {noun}{'s' * (count != 1)}"


def error_text(standard_error: float | None, digits: int) -> str:
  """A standard error to `digits` decimals, or 'n/a' where it is undefined (None: from a single
  problem, say), never a 0 that would claim no noise."""
  return "n/a" if standard_error is None else f"{standard_error:.{digits}f}"
