"""Progress bars: tqdm's, redrawn as it likes in a terminal or notebook and now and then in a log.

Where the bar's stream is no terminal (a CI log, `2> log`), every redraw stays in the file: tqdm's
0.1 s between redraws wrote one or two lines per RL step and per evaluation batch.
"""

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as notebook_tqdm
from tqdm.std import tqdm as std_tqdm

# Seconds between two redraws of a bar written to a file or a pipe.
LOG_INTERVAL_S = 60.0


def progress_bar(iterable: Iterable | None = None, **options) -> tqdm:
  """tqdm(iterable, **options), redrawn at most every LOG_INTERVAL_S (and once at the end) where
  its stream (`file`, stderr by default) is no terminal. Its `set_postfix` then waits for the
  next redraw too (tqdm's own redraws at once)."""
  stream = options.get("file") or sys.stderr
  shown_live = notebook_tqdm is not std_tqdm or stream.isatty()  # (a notebook's is no tty)
  if shown_live:
    return tqdm(iterable, **options)
  return _LogBar(iterable, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, **options)


class _LogBar(tqdm):
  """A bar in a log: a new postfix shows at the next redraw that the interval allows."""

  def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
    del refresh
    super().set_postfix(ordered_dict, refresh=False, **kwargs)

  def set_postfix_str(self, s="", refresh=True):
    del refresh
    super().set_postfix_str(s, refresh=False)
