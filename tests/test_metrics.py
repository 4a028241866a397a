"""metrics.jsonl and samples.jsonl: appended per step, trimmed when a run resumes."""

import json
import math

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
