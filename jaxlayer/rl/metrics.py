"""Per-step metrics to RUN_DIR/metrics.jsonl and TensorBoard; sampled completions to
samples.jsonl; their plot, training.png. On several hosts only process 0 writes them."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from jaxlayer import distributed, paths
from jaxlayer.text import counted

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
    warnings.warn(f"{path}: left out {counted(torn, 'line')} cut short when a run died while "
                  "writing them.", stacklevel=3)
  return rows


def _drop_rows_after(path: Path, step: int) -> None:
  """Keeps the whole rows with "step" <= step: a resumed run re-logs the steps after its
  checkpoint."""
  if not path.is_file():
    return
  rows = [line for line, row in _read_rows(path) if row.get("step", 0) <= step]
  paths.write_text_atomic(path, "".join(rows))


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
    _append(self._metrics, json.dumps(row) + "\n")
    if self._tensorboard is not None:
      for name, value in metrics.items():
        self._tensorboard.add_scalar(name, float(value), step)
      self._tensorboard.flush()

  def log_samples(self, step: int, samples: list[dict]) -> None:
    if not self._active:
      return
    _append(self._samples, "".join(json.dumps({"step": step, **sample}) + "\n"
                                   for sample in samples))

  def close(self) -> None:
    if not self._active:
      return
    for file in (self._metrics, self._samples):
      try:
        file.close()
      except OSError as err:  # rows a full disk refused (the error was raised as they came)
        if not paths.is_disk_full(err):
          raise
    if self._tensorboard is not None:
      self._tensorboard.close()


def _append(file, text: str) -> None:
  """Appends text to a JSONL file now; a full disk raises DiskFullError (a row it cut short is
  left out when the file is read)."""
  with paths.naming_a_full_disk(file.name):
    file.write(text)
    file.flush()


PLOT_FILE = "training.png"
# The panels of training.png: (title, the metrics drawn in it). A metric a run did not log
# (accuracy of a task without one, KL without a KL term) is left out, and so is an empty panel.
PANELS = (("reward", ("reward", "accuracy")), ("response length (tokens)", ("response_length",)),
          ("entropy", ("entropy",)), ("KL to the base model", ("kl",)),
          ("groups with a learning signal", ("groups_with_signal",)),
          ("gradient norm", ("grad_norm",)))


def training_figure(rows: list[dict], title: str):
  """A matplotlib Figure of a run's metrics rows per RL step: each metric as logged (thin) and
  as a moving average over a tenth of the run (thick)."""
  from matplotlib.figure import Figure

  from jaxlayer.plots import integer_ticks, moving_average

  panels = [(name, [key for key in keys if any(isinstance(r.get(key), float) for r in rows)])
            for name, keys in PANELS]
  # The test scores of logging.eval_every, at the steps they were taken (eval/TASK/METRIC).
  panels.insert(1, ("test score", sorted({key for r in rows for key in r
                                           if key.startswith("eval/")})))
  panels = [(name, keys) for name, keys in panels if keys]
  fig = Figure(figsize=(11, 2.6 * math.ceil(len(panels) / 3)))
  steps = np.array([r["step"] for r in rows])
  window = max(1, len(rows) // 10)
  for i, (name, keys) in enumerate(panels):
    ax = fig.add_subplot(math.ceil(len(panels) / 3), 3, i + 1)
    for k, key in enumerate(keys):
      color = f"C{k % 10}"  # matplotlib's colour cycle: every task and metric its own
      values = np.array([r.get(key) if isinstance(r.get(key), float) else np.nan for r in rows])
      if key.startswith("eval/"):  # a few steps only: each score as a point, joined
        taken = ~np.isnan(values)
        ax.plot(steps[taken], values[taken], "o-", color=color, linewidth=1.5, markersize=4,
                label=key.removeprefix("eval/"))
        continue
      ax.plot(steps, values, color=color, linewidth=0.7, alpha=0.4)
      ax.plot(steps, moving_average(values, window), color=color, linewidth=1.8, label=key)
    if len(keys) > 1 or keys[0].startswith("eval/"):  # which task and metric a score is
      ax.legend(fontsize=8)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("RL step", fontsize=8)
    integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{title} (thick: moving average over {window} steps)" if window > 1 else title,
               fontsize=10)
  fig.tight_layout()
  return fig


def plot_is_behind(run_dir: str | os.PathLike) -> bool:
  """Whether RUN_DIR/training.png leaves out logged steps: it is older than metrics.jsonl (the
  run was killed after logging them, before it drew them). A run that `train()` made has none."""
  rows, plot = Path(run_dir) / METRICS_FILE, Path(run_dir) / PLOT_FILE
  return plot.is_file() and rows.is_file() and plot.stat().st_mtime_ns < rows.stat().st_mtime_ns


def plot_training(run_dir: str | os.PathLike) -> Path | None:
  """Writes RUN_DIR/training.png from metrics.jsonl (None: no step logged yet)."""
  from jaxlayer.plots import save_figure

  run_dir = Path(run_dir)
  rows = read_metrics(run_dir)
  if not rows:
    return None
  title = run_dir.name
  if (run_dir / "config.json").is_file():  # written by the run (jaxlayer.rl.checkpoint)
    config = json.loads((run_dir / "config.json").read_text())
    lr_groups = config["train"].get("lr_groups")  # Boost-BK: "all" alone reads as full RL
    title += (f": {config['train']['layers']}{f' ({lr_groups})' if lr_groups else ''} of "
              f"{Path(config['model']['path']).name}, {config['train']['algorithm']}")
  path = run_dir / PLOT_FILE
  save_figure(training_figure(rows, title), path)
  return path
