"""What every plot of jaxlayer shares: writing a figure atomically, smoothing noisy curves,
integer ticks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxlayer import paths

if TYPE_CHECKING:
  from matplotlib.axis import Axis
  from matplotlib.figure import Figure


def save_figure(fig: Figure, path: Path) -> None:
  """Writes fig as a PNG at path, through a temporary file: never a half-written image."""
  with paths.replacing(path, ".png") as (handle, tmp_name):
    os.close(handle)
    fig.savefig(tmp_name, dpi=150, bbox_inches="tight")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
  """The mean of each value's centred window of `window` steps (cut short at the ends), NaN
  values left out: values [n] -> [n], also when the window is longer than the values (a run
  that successive halving stopped early; np.convolve's "same" would return [window])."""
  if window <= 1:
    return values
  kernel = np.ones(window)
  valid = ~np.isnan(values)
  centred = slice((window - 1) // 2, (window - 1) // 2 + values.size)  # of the full convolution
  sums = np.convolve(np.where(valid, values, 0.0), kernel)[centred]  # [n]
  counts = np.convolve(valid.astype(float), kernel)[centred]  # [n]
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums / counts


def integer_ticks(axis: Axis) -> None:
  """Ticks of an axis of whole numbers (RL steps, ranks) only at whole numbers."""
  from matplotlib.ticker import MaxNLocator

  axis.set_major_locator(MaxNLocator(integer=True))
