"""The test set-up's own logic: which quick-compile XLA flags this jaxlib takes, and that it
loads without torch."""

import os
import subprocess
import sys
from pathlib import Path

from tests import conftest

REPO = Path(__file__).resolve().parents[1]


def test_xla_flags_are_probed_so_an_unknown_one_is_left_out():
  # An unknown flag aborts the process that reads it; the probe must see that, not pass it on.
  assert not conftest._xla_accepts("--xla_jaxlayer_no_such_flag=true")
  assert conftest._xla_accepts("--xla_backend_optimization_level=0")
  assert conftest.TEST_XLA_FLAGS.startswith("--xla_backend_optimization_level=0")


def test_the_set_up_loads_without_torch():
  # torch (the tests' reference models) has no wheel for every Python jaxlayer runs on: the
  # tests that need none must still load conftest there. torch = None makes its import fail.
  loading = subprocess.run(
      [sys.executable, "-c", "import sys; sys.modules['torch'] = None; import tests.conftest"],
      cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
  assert loading.returncode == 0, loading.stderr
