"""The test set-up's own logic: which quick-compile XLA flags this jaxlib takes."""

from tests import conftest


def test_xla_flags_are_probed_so_an_unknown_one_is_left_out():
  # An unknown flag aborts the process that reads it; the probe must see that, not pass it on.
  assert not conftest._xla_accepts("--xla_jaxlayer_no_such_flag=true")
  assert conftest._xla_accepts("--xla_backend_optimization_level=0")
  assert conftest.TEST_XLA_FLAGS.startswith("--xla_backend_optimization_level=0")
