"""Wording shared by jaxlayer's messages."""

import contextlib
import difflib
import os
import warnings
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


def unknown_name(kind: str, name: str, registry: dict, registry_name: str,
                 entry: str = "YourClass") -> str:
  """The error for a `kind` ('task', 'environment') that no one registered as `name`: the
  closest registered name, and how a user's own `entry` is registered in `registry` (its Python
  name `registry_name`, e.g. 'tasks.TASKS')."""
  guess = closest(name, registry)
  return (f"unknown {kind} {name!r}" + (f" (did you mean {guess!r}?)" if guess else "")
          + f"; registered: {sorted(registry)}. Register your own {kind} in the config file (for "
          f"the command line) or before it is named: {registry_name}[{name!r}] = {entry}.")


@contextlib.contextmanager
def warnings_in_one_line():
  """Within: jaxlayer's warnings (of its own categories, or raised in its modules) print as one
  line, `jaxlayer: warning: MESSAGE`, without the file, line number and line of code that
  Python's format adds for developers (the command line's, and a sweep's Ray workers'). Other
  libraries' warnings keep Python's format; it is restored on leaving, so a notebook or a test
  that calls `cli.main` keeps Python's."""
  python_format = warnings.formatwarning
  package_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep

  def format_warning(message, category, filename, lineno, line=None) -> str:
    if (category.__module__.partition(".")[0] == "jaxlayer"
        or os.path.abspath(filename).startswith(package_dir)):
      return f"jaxlayer: warning: {message}\n"
    return python_format(message, category, filename, lineno, line)

  warnings.formatwarning = format_warning
  try:
    yield
  finally:
    warnings.formatwarning = python_format
