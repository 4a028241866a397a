"""Checking the options a registry's factory (a task's, an environment's) is given."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping

# The option types check_option_types checks, each with the values it takes; options of other
# types (data files, weights, paths) are the factory's own to check.
_PLAIN_TYPES = {bool: bool, int: numbers.Integral, float: numbers.Real, str: str,
                type(None): type(None)}


def option_defaults(factory: Callable) -> dict[str, object]:
  """Each option of `factory` (a dataclass, a class or a function) and its default
  (dataclasses.MISSING or inspect.Parameter.empty where it has none)."""
  if dataclasses.is_dataclass(factory):
    return {item.name: item.default for item in dataclasses.fields(factory) if item.init}
  return {name: parameter.default
          for name, parameter in inspect.signature(factory).parameters.items()}


# Cached: an environment's factory is checked at each get_env, one per episode of a rollout.
@functools.cache
def _plain_option_types(factory: Callable) -> dict[str, tuple[type, ...]]:
  """The types each option takes where all are plain (bool, int, float, str, None): by its
  annotation, else by its default's type (not a None default's: that says nothing)."""
  # A class that is no dataclass annotates its options on __init__, not on the class.
  annotated = (factory.__init__ if isinstance(factory, type)
               and not dataclasses.is_dataclass(factory) else factory)
  try:
    hints = typing.get_type_hints(annotated)
  except (NameError, TypeError):  # annotations that do not resolve: the defaults say
    hints = {}
  option_types = {}
  for name, default in option_defaults(factory).items():
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


def check_option_types(factory: Callable, options: Mapping[str, object], owner: str) -> None:
  """Raises a ValueError naming the first of `options` of a plain type (bool, int, float, str,
  None) that is given a value of another, and the types it takes; `owner` begins the message
  ("task 'arithmetic'")."""
  option_types = _plain_option_types(factory)
  for option, value in options.items():
    accepted = option_types.get(option, ())
    if accepted and not any(_takes(option_type, value) for option_type in accepted):
      expected = " or ".join("None" if option_type is type(None) else option_type.__name__
                             for option_type in accepted)
      raise ValueError(f"{owner}: option {option!r} takes {expected}, got {value!r} "
                       f"({type(value).__name__}).")
