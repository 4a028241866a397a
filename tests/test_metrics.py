"""metrics.jsonl and samples.jsonl: appended per step, trimmed when a run resumes."""

import json
import math

import pytest

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
  with pytest.warns(UserWarning, match=r"metrics.jsonl: left out 1 line\(s\) cut short"):
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
