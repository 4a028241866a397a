"""Wording shared by jaxlayer's messages."""


def counted(count: int, noun: str) -> str:
  """'1 step', '3 steps', '197,120 weights': a count (thousands separated) and its noun,
  singular for 1 (numpy integers included)."""
  count = int(count)
  return f"{count:,} {noun}{'s' * (count != 1)}"
