"""Per-step metrics to RUN_DIR/metrics.jsonl and TensorBoard; sampled completions to
samples.jsonl. On several hosts only process 0 writes them."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from jaxlayer import distributed

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
  """Every logged step of a run, oldest first."""
  return [row for _, row in _read_rows(Path(run_dir) / METRICS_FILE)]


def _read_rows(path: Path) -> list[tuple[str, dict]]:
  """(line, row) of every whole row of a JSONL file, oldest first. A line that is not a JSON
  object was cut short when its process or machine died while writing it (a crashed machine
  can leave zero bytes there): it is left out, with a warning."""
  if not path.is_file():
    return []
  rows, torn = [], 0
  with open(path, errors="replace") as f:
    for line in f:
      if not line.strip("\x00 \n\t"):
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        row = None
      if isinstance(row, dict):
        rows.append((line if line.endswith("\n") else line + "\n", row))
      else:
        torn += 1
  if torn:
    warnings.warn(f"{path}: left out {torn} line(s) cut short when a run died while writing "
                  "them.", stacklevel=3)
  return rows


def _drop_rows_after(path: Path, step: int) -> None:
  """Keeps the whole rows with "step" <= step: a resumed run re-logs the steps after its
  checkpoint."""
  if not path.is_file():
    return
  rows = [line for line, row in _read_rows(path) if row.get("step", 0) <= step]
  tmp = path.with_suffix(".tmp")
  with open(tmp, "w") as f:
    f.writelines(rows)
  os.replace(tmp, path)


def _json_value(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)  # JSON has no NaN / inf


class MetricsLogger:
  """Appends one JSON object per step; mirrors scalars to TensorBoard when asked.

  `resume_step`: rows (and TensorBoard events) after this step, from a run that was killed
  after its last checkpoint, are dropped so the resumed run's rows replace them.
  On a process other than the primary one (several hosts) it writes nothing.
  """

  def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True,
               resume_step: int = 0):
    self.run_dir = Path(run_dir)
    self._active = distributed.is_primary()
    if not self._active:
      return
    self.run_dir.mkdir(parents=True, exist_ok=True)
    for name in (METRICS_FILE, SAMPLES_FILE):
      _drop_rows_after(self.run_dir / name, resume_step)
    self._metrics = open(self.run_dir / METRICS_FILE, "a")
    self._samples = open(self.run_dir / SAMPLES_FILE, "a")
    self._tensorboard = None
    if tensorboard:
      from tensorboardX import SummaryWriter

      self._tensorboard = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR),
                                        purge_step=resume_step + 1 if resume_step else None)

  def log(self, step: int, metrics: dict[str, float]) -> None:
    if not self._active:
      return
    row = {"step": step, **{k: _json_value(v) for k, v in metrics.items()}}
    self._metrics.write(json.dumps(row) + "\n")
    self._metrics.flush()
    if self._tensorboard is not None:
      for name, value in metrics.items():
        self._tensorboard.add_scalar(name, float(value), step)
      self._tensorboard.flush()

  def log_samples(self, step: int, samples: list[dict]) -> None:
    if not self._active:
      return
    for sample in samples:
      self._samples.write(json.dumps({"step": step, **sample}) + "\n")
    self._samples.flush()

  def close(self) -> None:
    if not self._active:
      return
    self._metrics.close()
    self._samples.close()
    if self._tensorboard is not None:
      self._tensorboard.close()
