"""metrics.jsonl and samples.jsonl: appended per step, trimmed when a run resumes."""

import errno
import io
import json
import math
import os
import struct

import numpy as np
import pytest

from jaxlayer import paths
from jaxlayer.rl import metrics


def test_rows_after_the_resumed_step_are_replaced(tmp_path):
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False)
  for step in (1, 2, 3):
    logger.log(step, {"reward": step / 10, "loss": math.nan if step == 3 else 0.5})
    logger.log_samples(step, [{"completion": f"s{step}"}])
  logger.close()
  rows = metrics.read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] == "nan"  # valid JSON

  logger = metrics.MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
  logger.log(3, {"reward": 0.9, "loss": 0.1})
  logger.close()
  assert [(r["step"], r["reward"]) for r in metrics.read_metrics(tmp_path)] == [
      (1, 0.1), (2, 0.2), (3, 0.9)]
  lines = (tmp_path / metrics.SAMPLES_FILE).read_text().splitlines()
  samples = [json.loads(line) for line in lines]
  assert [s["completion"] for s in samples] == ["s1", "s2"]


def test_no_metrics_yet(tmp_path):
  assert metrics.read_metrics(tmp_path) == []


def test_a_row_cut_short_by_a_crash_is_left_out_and_the_run_resumes(tmp_path):
  """A process killed while writing a row leaves half a line; a machine that crashed can leave
  zero bytes where the page cache had not reached the disk. Neither may stop a resume."""
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False)
  for step in (1, 2):
    logger.log(step, {"reward": step / 10})
    logger.log_samples(step, [{"completion": f"s{step}"}])
  logger.close()
  with open(tmp_path / metrics.METRICS_FILE, "a") as f:
    f.write("\x00" * 30 + "\n" + '{"step": 3, "rew')
  with open(tmp_path / metrics.SAMPLES_FILE, "a") as f:
    f.write('{"step": 3, "completion": "s')
  with pytest.warns(UserWarning, match=r"metrics.jsonl: left out 1 line cut short"):
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]

  with pytest.warns(UserWarning, match="cut short"):
    logger = metrics.MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
  logger.log(3, {"reward": 0.3})
  logger.log_samples(3, [{"completion": "s3"}])
  logger.close()
  assert [(r["step"], r["reward"]) for r in metrics.read_metrics(tmp_path)] == [
      (1, 0.1), (2, 0.2), (3, 0.3)]
  samples = [json.loads(line) for line in (tmp_path / metrics.SAMPLES_FILE).open()]
  assert [s["completion"] for s in samples] == ["s1", "s2", "s3"]


def test_a_last_row_that_lost_only_its_newline_is_kept_whole_when_the_run_resumes(tmp_path):
  """A crash can cut a row's write just before its newline: the row is whole, and the resumed
  run's first row must not be appended to its line (both rows would be lost)."""
  (tmp_path / metrics.METRICS_FILE).write_text('{"step": 1, "reward": 0.1}\n'
                                               '{"step": 2, "reward": 0.2}')
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
  logger.log(3, {"reward": 0.3})
  logger.close()
  assert [(r["step"], r["reward"]) for r in metrics.read_metrics(tmp_path)] == [
      (1, 0.1), (2, 0.2), (3, 0.3)]


def test_a_resumed_run_purges_the_tensorboard_events_after_its_checkpoint(tmp_path):
  """TensorBoard drops the events logged before a SessionLog START at step T whose step is
  >= T: resumed from step 2's checkpoint, T is 3 (step 2's events are the run's own)."""
  from tensorboardX.proto import event_pb2

  metrics.MetricsLogger(tmp_path, resume_step=2).close()
  [events_file] = (tmp_path / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*")
  data, offset, starts = events_file.read_bytes(), 0, []
  while offset < len(data):  # TFRecords: length (8 bytes), its CRC (4), the event, its CRC (4)
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
    offset += 12 + length + 4
    if event.session_log.status == event_pb2.SessionLog.START:
      starts.append(event.step)
  assert starts == [3]


def test_the_training_plot_draws_each_logged_metric_per_step(tmp_path):
  assert metrics.plot_training(tmp_path) is None  # nothing logged yet
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False)
  rewards = np.random.default_rng(0).random(30)
  for step, reward in enumerate(rewards, start=1):
    logger.log(step, {"reward": reward, "accuracy": reward / 2, "entropy": 1.0 / step,
                      "kl": math.nan if step == 3 else 0.01 * step, "grad_norm": 1.0})
  logger.close()
  fig = metrics.training_figure(metrics.read_metrics(tmp_path), "run")
  titles = [ax.get_title() for ax in fig.axes]
  # No response length or learning-signal panel: this run logged neither.
  assert titles == ["reward", "entropy", "KL to the base model", "gradient norm"]
  reward_ax = fig.axes[0]
  np.testing.assert_array_equal(reward_ax.lines[0].get_xdata(), np.arange(1, 31))
  np.testing.assert_allclose(reward_ax.lines[0].get_ydata(), rewards)
  # The thick line: the mean of each step's centred window of 3 steps (a tenth of 30), of 2
  # at the ends.
  smoothed = [rewards[max(0, i - 1):i + 2].mean() for i in range(30)]
  np.testing.assert_allclose(reward_ax.lines[1].get_ydata(), smoothed)
  np.testing.assert_allclose(reward_ax.lines[2].get_ydata(), rewards / 2)  # accuracy
  kl = fig.axes[2].lines[0].get_ydata()
  assert np.isnan(kl[2]) and kl[3] == pytest.approx(0.04)  # NaN, logged as "nan": a gap
  path = metrics.plot_training(tmp_path)
  assert path == tmp_path / "training.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_training_plot_of_a_boost_run_names_its_learning_rate_groups(tmp_path, monkeypatch):
  """A Boost-BK run (train.layers=all plus lr_groups) was titled like full RL."""
  from jaxlayer.rl.config import default_config

  config = default_config()
  config.model.path, config.train.layers = "models/tiny-arith", "all"
  config.train.lr_groups = "top3@runs/sweep_tiny=6e-5"
  (tmp_path / "config.json").write_text(config.to_json())
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False)
  logger.log(1, {"reward": 0.5})
  logger.close()
  from jaxlayer import plots

  figures = []
  monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
  metrics.plot_training(tmp_path)
  assert figures[0].get_suptitle() == (
      f"{tmp_path.name}: all (top3@runs/sweep_tiny=6e-5) of tiny-arith, grpo")


def test_the_training_plot_of_a_short_run_has_ticks_at_whole_steps():
  rows = [{"step": step, "reward": 0.1 * step, "entropy": 1.0} for step in (1, 2, 3)]
  fig = metrics.training_figure(rows, "run")
  for ax in fig.axes:
    low, high = ax.get_xlim()
    assert [t for t in ax.get_xticks() if low <= t <= high] == [1, 2, 3]  # not 1.5, 2.5


class _FullDisk(io.FileIO):
  """A file on a disk that has just filled up."""

  def write(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_metrics_file_and_keeps_the_rows_before(tmp_path, monkeypatch):
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False)
  logger.log(1, {"reward": 0.5})
  logger.close()

  def appending_fills_the_disk(path, mode="r", **kwargs):
    if mode != "a":
      return open(path, mode, **kwargs)
    return io.TextIOWrapper(io.BufferedWriter(_FullDisk(path, mode)))

  monkeypatch.setattr(metrics, "open", appending_fills_the_disk, raising=False)
  logger = metrics.MetricsLogger(tmp_path, tensorboard=False, resume_step=1)
  with pytest.raises(paths.DiskFullError, match=f"write {tmp_path / metrics.METRICS_FILE}: free"):
    logger.log(2, {"reward": 0.75})
  logger.close()  # what the disk refused is not written again, and not raised again
  assert metrics.read_metrics(tmp_path) == [{"step": 1, "reward": 0.5}]
