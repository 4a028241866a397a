"""Progress bars: live in a terminal, now and then in a log."""

import io

import pytest
import tqdm.std

from jaxlayer.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def _redraws(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> int:
  """How many times a bar on `stream` is drawn over 300 RL steps of 1 s each, a training run's
  bar: an update, then the step's metrics as the postfix."""
  clock = [0.0]  # seconds
  monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
  with progress_bar(total=300, desc="train layers.1", file=stream) as bar:
    for step in range(300):
      clock[0] += 1.0
      bar.update(1)
      bar.set_postfix({"reward": step})
  return stream.getvalue().count("\r")


def test_a_bar_in_a_log_is_drawn_once_a_minute_and_live_in_a_terminal(monkeypatch):
  # A CI log, `2> log`: 300 one-second steps drew 600 lines there with tqdm's defaults.
  minutes = 300 / LOG_INTERVAL_S
  assert _redraws(io.StringIO(), monkeypatch) <= minutes + 2  # (+ the first and last)
  assert _redraws(_Terminal(), monkeypatch) >= 300
