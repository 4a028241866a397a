"""Wording shared by jaxlayer's messages."""

import numpy as np

from jaxlayer.text import counted, decimals


def test_a_count_names_its_noun_in_the_singular_for_one_only():
  assert [counted(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
  # numpy integers (sampler lengths, device counts), whose comparisons are numpy bools
  assert counted(np.int64(1), "token") == "1 token"
  assert counted(np.int32(3), "RL step") == "3 RL steps"
  assert counted(197120, "trained weight") == "197,120 trained weights"


def test_an_undefined_standard_error_reads_n_a_never_zero():
  assert [decimals(0.0123, 3), decimals(0.0, 4), decimals(None, 3)] == [
      "0.012", "0.0000", "n/a"]


def test_a_value_that_rounds_to_zero_reads_zero_never_minus_zero():
  """A C of -0.004 rounds to -0.00, which reads as a block below the base; Python's "z" format
  option makes a rounded negative zero 0."""
  assert [decimals(-0.004, 2), decimals(-0.0), decimals(-0.0004)] == ["0.00", "0.000", "0.000"]
  assert decimals(-0.006, 2) == "-0.01"
