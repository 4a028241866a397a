"""jaxlayer.table and `jaxlayer table`: evaluated runs side by side, against hand-computed means
and standard errors."""

import json
import math

import jax
import numpy as np
import pytest

from jaxlayer import assets, cli, evaluation, table, tasks
from jaxlayer.rl import checkpoint
from jaxlayer.rl.config import default_config

NUM_PROBLEMS = 10
DECODING = {"mode": "greedy", "max_new_tokens": 8}
PROMPT = {"template": "{question}"}


def _write_eval(directory, correct: dict[str, int], metric: str = "pass@1",
                num_problems: int = NUM_PROBLEMS, task_metrics: dict[str, str] | None = None,
                problems: str | None = None, decoding: dict | None = None):
  """An eval.json as `jaxlayer eval` writes it: task -> that many of the problems solved.

  task_metrics: task -> the metric scoring it ("pass@1" or "mean@4"), written as today's
  eval.json has it; None: an eval.json from before tasks had their own (eval.metric's).
  problems: every task's problems fingerprint; None: an eval.json from before they had one.
  decoding: every task's decoding settings (None: DECODING)."""
  results = []
  for task, solved in correct.items():
    per_problem = [1.0] * solved + [0.0] * (num_problems - solved)
    scores = {"pass@1": float(np.mean(per_problem))}
    per_metric = {"pass@1": per_problem}
    if metric == "mean@k" or task_metrics:  # four samples per problem: a quarter point less each
      per_metric["mean@4"] = [max(score - 0.25, 0.0) for score in per_problem]
      scores["mean@4"] = float(np.mean(per_metric["mean@4"]))
    results.append(evaluation.EvalResult(task, num_problems, scores, per_metric,
                                         decoding or DECODING, PROMPT, generations=[],
                                         problems=problems))
  settings = {**evaluation.default_eval_config().to_dict(), "metric": metric}
  report = {"model": "m", "kind": "huggingface", "eval_settings": settings,
            "tasks": {r.task: {**r.summary(), **({"metric": task_metrics[r.task]}
                                                 if task_metrics else {})} for r in results}}
  directory.mkdir(parents=True)
  (directory / evaluation.EVAL_FILE).write_text(json.dumps(report))
  return directory


def _problems_se(per_problem_mean: list[float]) -> float:
  """The sample standard error over the problems: std(ddof=1) / sqrt(n)."""
  return float(np.std(per_problem_mean, ddof=1) / math.sqrt(len(per_problem_mean)))


def test_a_group_is_the_mean_of_its_runs_and_a_single_run_carries_its_evaluation_error(tmp_path):
  full = [_write_eval(tmp_path / f"full-{s}", {"arithmetic": n}) for s, n in enumerate((5, 6, 7))]
  mid = _write_eval(tmp_path / "mid", {"arithmetic": 8})
  result = table.runs_table({"full RL": full, "Mid-5": [mid / "eval.json"]})
  first, second = result["rows"]
  assert result["columns"] == ["arithmetic"] and result["metrics"] == {"arithmetic": "pass@1"}
  assert first["runs"] == 3 and first["score"]["arithmetic"] == pytest.approx(0.6)
  # The problems: 5 solved by all three runs, one by two, one by one, 3 by none.
  problems = _problems_se([1.0] * 5 + [2 / 3, 1 / 3] + [0.0] * 3)
  assert first["evaluation_se"]["arithmetic"] == pytest.approx(problems)
  # The seeds: std over the runs (0.5, 0.6, 0.7; ddof=1) = 0.1, over sqrt(3).
  full_se = math.sqrt(problems**2 + 0.1**2 / 3)
  assert first["se"]["arithmetic"] == pytest.approx(full_se)
  assert first["difference"]["arithmetic"] is None
  mid_se = math.sqrt(0.8 * 0.2 / NUM_PROBLEMS)  # one run: binomial
  assert second["se"]["arithmetic"] == pytest.approx(mid_se)
  assert second["difference"]["arithmetic"] == pytest.approx(0.2)
  # Paired over the problems: Mid-5 solves problems 0-7, full RL's mean per problem is above.
  paired = _problems_se([0.0] * 5 + [1 / 3, 2 / 3, 1.0] + [0.0] * 2)
  assert second["difference_se"]["arithmetic"] == pytest.approx(
      math.sqrt(paired**2 + 0.1**2 / 3))


def test_the_difference_is_paired_over_the_problems(tmp_path):
  """A strategy that solves what the first group solves and one problem more: the difference
  0.1 carries the error of that one problem, far less than two independent errors."""
  first = _write_eval(tmp_path / "first", {"arithmetic": 5})
  better = _write_eval(tmp_path / "better", {"arithmetic": 6})
  _, row = table.runs_table({"first": [first], "better": [better]})["rows"]
  paired = _problems_se([0.0] * 5 + [1.0] + [0.0] * 4)
  assert row["difference_se"]["arithmetic"] == pytest.approx(paired)
  assert paired < math.hypot(math.sqrt(0.25 / NUM_PROBLEMS), math.sqrt(0.24 / NUM_PROBLEMS)) / 2


def test_a_single_problem_leaves_the_errors_undefined_not_zero(tmp_path, capsys):
  """One problem: no spread of per-problem scores, nor of their differences. The errors are n/a
  (they were 0.000, the binomial sqrt(p (1 - p) / 1), as if the scores carried no noise), in
  each task's column and in the mean's, with one run or two."""
  first = _write_eval(tmp_path / "first", {"math": 1, "gsm8k": 1}, num_problems=1)
  other = _write_eval(tmp_path / "other", {"math": 0, "gsm8k": 1}, num_problems=1)
  other_seed = _write_eval(tmp_path / "other-seed", {"math": 1, "gsm8k": 1}, num_problems=1)
  undefined = {"math": None, "gsm8k": None, "mean": None}
  first_row, row = table.runs_table({"first": [first], "other": [other]})["rows"]
  assert row["difference"] == {"math": -1.0, "gsm8k": 0.0, "mean": -0.5}
  assert row["difference_se"] == first_row["se"] == row["se"] == row["evaluation_se"] == undefined
  _, two_runs = table.runs_table({"first": [first], "other": [other, other_seed]})["rows"]
  assert two_runs["se"] == undefined and two_runs["score"]["math"] == 0.5
  cli.main(["table", "--runs", "first", str(first), "--runs", "other", str(other)])
  assert "| other | 1 | 0.000 ± n/a | 1.000 ± n/a | 0.500 ± n/a | -0.500 ± n/a |" in (
      capsys.readouterr().out.splitlines())


def test_seeds_that_score_alike_keep_the_test_problems_error(tmp_path):
  """Two seeds solving the same 5 of 10 problems: the seeds' std is 0 (the table said ± 0.000),
  the test problems' error is the binomial sqrt(p (1 - p) / n)."""
  runs = [_write_eval(tmp_path / seed, {"arithmetic": 5}) for seed in ("s0", "s1")]
  (row,) = table.runs_table({"two seeds": runs})["rows"]
  assert row["score"]["arithmetic"] == 0.5
  assert row["se"]["arithmetic"] == pytest.approx(math.sqrt(0.5 * 0.5 / NUM_PROBLEMS))


def test_several_tasks_get_a_column_each_and_their_mean(tmp_path):
  runs = [_write_eval(tmp_path / "a", {"math": 2, "gsm8k": 6}),
          _write_eval(tmp_path / "b", {"math": 4, "gsm8k": 6})]
  single = _write_eval(tmp_path / "c", {"math": 5, "gsm8k": 9})
  first, second = table.runs_table({"full": runs, "boost": [single]})["rows"]
  assert list(first["score"]) == ["math", "gsm8k", "mean"]
  assert first["score"]["mean"] == pytest.approx((0.4 + 0.5) / 2)  # the runs' means 0.4, 0.5
  math_se = _problems_se([1.0, 1.0, 0.5, 0.5] + [0.0] * 6)  # b solved two more
  gsm8k_se = math.sqrt(0.6 * 0.4 / NUM_PROBLEMS)  # both solved the same 6
  assert first["se"]["mean"] == pytest.approx(
      math.sqrt((math_se**2 + gsm8k_se**2) / 4 + np.var([0.4, 0.5], ddof=1) / 2))
  task_errors = [math.sqrt(0.5 * 0.5 / NUM_PROBLEMS), math.sqrt(0.9 * 0.1 / NUM_PROBLEMS)]
  assert second["se"]["mean"] == pytest.approx(math.hypot(*task_errors) / 2)
  assert second["difference"]["mean"] == pytest.approx(0.7 - 0.45)


def test_the_same_tasks_in_another_order_are_compared_task_by_task(tmp_path):
  """`eval.tasks=math,gsm8k` against `gsm8k,math`: the same scores, in the first's columns."""
  first = _write_eval(tmp_path / "a", {"math": 2, "gsm8k": 6})
  second = _write_eval(tmp_path / "b", {"gsm8k": 9, "math": 5})
  third = _write_eval(tmp_path / "c", {"gsm8k": 7, "math": 3})
  result = table.runs_table({"one": [first], "others": [second, third]})
  assert result["columns"] == ["math", "gsm8k", "mean"]
  _, others = result["rows"]
  assert list(others["score"]) == ["math", "gsm8k", "mean"]
  assert others["score"] == pytest.approx({"math": 0.4, "gsm8k": 0.8, "mean": 0.6})
  assert others["difference"] == pytest.approx({"math": 0.2, "gsm8k": 0.2, "mean": 0.2})


def test_mean_at_k_evaluations_are_compared_by_mean_at_k(tmp_path):
  runs = [_write_eval(tmp_path / "a", {"amc": 6}, metric="mean@k")]
  (row,) = table.runs_table({"sampled": runs})["rows"]
  assert row["score"]["amc"] == pytest.approx(6 * 0.75 / NUM_PROBLEMS)


def test_each_task_is_scored_by_its_own_metric(tmp_path, capsys):
  # The paper's math score: AMC by the mean over samples, the other benchmarks by pass@1.
  metrics = {"math": "pass@1", "amc": "mean@4"}
  runs = [_write_eval(tmp_path / "a", {"math": 6, "amc": 8}, task_metrics=metrics)]
  (row,) = table.runs_table({"full": runs})["rows"]
  assert row["score"]["math"] == pytest.approx(0.6)
  assert row["score"]["amc"] == pytest.approx(8 * 0.75 / NUM_PROBLEMS)
  assert row["score"]["mean"] == pytest.approx((0.6 + 0.6) / 2)
  amc_se = _problems_se([0.75] * 8 + [0.0] * 2)
  assert row["se"]["mean"] == pytest.approx(math.hypot(math.sqrt(0.6 * 0.4 / 10), amc_se) / 2)
  cli.main(["table", "--runs", "full", str(runs[0])])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "|  | runs | math (pass@1) | amc (mean@4) | mean | mean - full |"
  assert lines[-1].startswith("scores of 1 run; each group's mean")
  other = _write_eval(tmp_path / "b", {"math": 6, "amc": 8},
                      task_metrics={"math": "pass@1", "amc": "pass@1"})
  with pytest.raises(ValueError, match=r"b/eval.json scored amc by pass@1 but .*a/eval.json by "
                     r"mean@4: evaluate every run with the same eval.metric and eval.tasks"):
    table.runs_table({"full": runs, "other": [other]})


def test_cli_prints_the_table_and_says_what_the_errors_are(tmp_path, capsys):
  full = [_write_eval(tmp_path / f"full-{s}", {"arithmetic": n}) for s, n in enumerate((5, 7))]
  boost = _write_eval(tmp_path / "boost", {"arithmetic": 9})
  cli.main(["table", "--runs", "full RL", *map(str, full), "--runs", "Boost-B3", str(boost)])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "|  | runs | arithmetic | arithmetic - full RL |"
  # The problems' error (2 of them solved by one run) and the seeds' (std 0.1414 / sqrt(2)).
  full_se = math.sqrt(_problems_se([1.0] * 5 + [0.5] * 2 + [0.0] * 3)**2 + 0.02 / 2)
  assert lines[2] == f"| full RL | 2 | 0.600 ± {full_se:.3f} |  |"
  boost_se = math.sqrt(0.9 * 0.1 / NUM_PROBLEMS)
  paired = _problems_se([0.0] * 5 + [0.5] * 2 + [1.0] * 2 + [0.0])
  assert lines[3] == (f"| Boost-B3 | 1 | 0.900 ± {boost_se:.3f} | +0.300 ± "
                      f"{math.sqrt(paired**2 + 0.02 / 2):.3f} |")
  assert lines[-1].startswith("pass@1 of 3 runs; each group's mean over its runs")


def test_a_run_directory_is_read_at_its_latest_checkpoints_evaluation(tmp_path):
  run_dir = tmp_path / "run"
  config = default_config()
  config.model.path, config.run_dir = assets.TINY_ARITH, str(run_dir)
  checkpoint.write_run_files(run_dir, config, assets.TINY_ARITH, {"embed.embedding": (2, 2)})
  saver = checkpoint.Checkpointer(run_dir)
  for step in (2, 4):
    saver.save(step, {"embed.embedding": jax.numpy.zeros((2, 2))},
               {"rng": jax.random.key_data(jax.random.key(0))}, {"step": step, "data_position": 0})
  saver.close()
  _write_eval(run_dir / "eval" / "step-2", {"arithmetic": 3})
  with pytest.raises(FileNotFoundError, match=r"its latest checkpoint has no evaluation \(.*"
                     r"step-4/eval.json\); run `jaxlayer eval --config CONFIG --model "):
    table.runs_table({"run": [run_dir]})
  _write_eval(run_dir / "eval" / "step-4", {"arithmetic": 4})
  assert table.runs_table({"run": [run_dir]})["rows"][0]["score"]["arithmetic"] == 0.4


def test_evaluations_that_cannot_be_compared_are_refused(tmp_path, capsys):
  a = _write_eval(tmp_path / "a", {"arithmetic": 5})
  with pytest.raises(ValueError, match=r"different num_problems \(20 vs 10\): evaluate every run "
                     "with the same config"):
    table.runs_table({"a": [a], "b": [_write_eval(tmp_path / "b", {"arithmetic": 5},
                                                  num_problems=20)]})
  with pytest.raises(ValueError, match=r"scores tasks \['gsm8k'\] but .* scores \['arithmetic'\]"):
    table.runs_table({"a": [a], "c": [_write_eval(tmp_path / "c", {"gsm8k": 5})]})
  with pytest.raises(ValueError, match=r"eval.json is given twice \(in 'a' and 'again'\)"):
    table.runs_table({"a": [a], "again": [a / "eval.json"]})
  with pytest.raises(FileNotFoundError, match="is neither an eval.json, a directory holding one"):
    table.runs_table({"a": [tmp_path]})
  (tmp_path / "notes.txt").write_text("not json")
  with pytest.raises(ValueError, match=r"notes.txt is not an eval.json of `jaxlayer eval`"):
    table.runs_table({"a": [tmp_path / "notes.txt"]})
  with pytest.raises(SystemExit, match="jaxlayer table: the group name 'a' is given twice"):
    cli.main(["table", "--runs", "a", str(a), "--runs", "a", str(a)])
  # A run given without its group's name (`--runs RUN`) named the run a group and told the user
  # to "give it at least one" evaluation.
  with pytest.raises(SystemExit) as exited:
    cli.main(["table", "--runs", str(a)])
  assert exited.value.code == (f"jaxlayer table: group {str(a)!r} has no evaluations: a group is "
                               "its name, then its evaluations (`jaxlayer table --runs NAME "
                               "EVAL...`).")


def test_evaluations_of_other_problems_of_the_same_task_are_refused(tmp_path):
  """task.options.seed=1 draws as many other arithmetic problems, under the same prompt
  template: the table set them side by side, its differences 'paired' over unrelated problems."""

  def fingerprint(**options) -> str:
    task = tasks.get_task("arithmetic", **options)
    return evaluation.problems_fingerprint(evaluation.eval_problems(task, NUM_PROBLEMS))

  first = _write_eval(tmp_path / "first", {"arithmetic": 5}, problems=fingerprint())
  same = _write_eval(tmp_path / "same", {"arithmetic": 6}, problems=fingerprint())
  older = _write_eval(tmp_path / "older", {"arithmetic": 7})  # written before the fingerprint
  rows = table.runs_table({"first": [first], "same": [same], "older": [older]})["rows"]
  assert [row["difference"]["arithmetic"] for row in rows[1:]] == pytest.approx([0.1, 0.2])
  for options in ({"seed": 1}, {"max_value": 50, "num_test": 100}):
    other = _write_eval(tmp_path / f"other-{options}", {"arithmetic": 6},
                        problems=fingerprint(**options))
    with pytest.raises(ValueError, match=r"were evaluated on different arithmetic problems \(as "
                       "many, with other questions or answers: another data file, task seed"):
      table.runs_table({"first": [first], "other": [other]})


def test_evaluations_at_another_batch_size_are_compared_but_not_other_decoding(tmp_path):
  """eval.batch_size (completions per generate call) draws the same samples: a run evaluated at
  a smaller one to fit memory stands beside the others; another max_new_tokens does not."""
  first = _write_eval(tmp_path / "first", {"arithmetic": 5},
                      decoding={**DECODING, "batch_size": 64})
  smaller = _write_eval(tmp_path / "smaller", {"arithmetic": 7},
                        decoding={**DECODING, "batch_size": 8})
  rows = table.runs_table({"first": [first], "smaller": [smaller]})["rows"]
  assert rows[1]["difference"]["arithmetic"] == pytest.approx(0.2)
  longer = _write_eval(tmp_path / "longer", {"arithmetic": 7},
                       decoding={**DECODING, "batch_size": 64, "max_new_tokens": 16})
  with pytest.raises(ValueError, match=r"with different decoding \(\{'mode': 'greedy', "
                     r"'max_new_tokens': 16\} vs \{'mode': 'greedy', 'max_new_tokens': 8\}\)"):
    table.runs_table({"first": [first], "longer": [longer]})
