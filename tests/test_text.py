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
