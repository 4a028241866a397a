"""Runs side by side: the scores of several evaluated runs, grouped, with standard errors.

The paper's strategy table (full RL, Boost-B10, Only-B5, Mid-5; each the mean of 3 runs) from
`jaxlayer eval` results: each group is a name and one or more evaluations, typically the seeds
of one strategy, every one on the same problems with the same decoding.

- Every evaluation must be of the same problems (their fingerprint in eval.json), decoding
  (eval.batch_size aside: it changes no score), prompts and metrics.
- A run's score on a task is its eval.json score by the task's metric (eval.tasks' NAME:METRIC,
  else eval.metric: pass@1, or mean@k); with several tasks (`eval.tasks`), `mean` is the mean
  over the tasks (the paper's math score: the mean of its four benchmarks, AMC by mean@32).
- A group's score is the mean over its runs. Its standard error `se` has two parts: the
  test problems' (every run of a group answers the same problems; `evaluation_se`: the standard
  error over the problems of each problem's score averaged over the runs; for `mean`:
  sqrt(sum of the tasks' se^2) / number of tasks), and, with two runs or more, the seeds' (the
  runs' std / sqrt(n), ddof=1): se = sqrt(evaluation_se^2 + std^2 / n). For a single run it is
  its evaluation's standard error; two seeds that happen to score alike leave the first part.
  A task of a single problem leaves the first part, so `se`, undefined: None, shown as n/a
  (its binomial sqrt(p (1 - p) / 1) would be 0, claiming no noise); and `mean`'s with it.
- `difference`: the group's score minus the first group's. Its standard error is paired over
  the problems, which both groups answered: the standard error over the problems of the
  per-problem difference of the two groups' means (std(ddof=1) / sqrt(n); for `mean` combined
  over the tasks as above), with both groups' seeds' variances added. A task of a single
  problem leaves it undefined: None, shown as n/a (never 0, which would claim no noise).
  The seeds are not paired: every evaluation in a table has the same decoding, sampling seed
  included, so what the two groups' samples share lies in each problem's score, where the
  pairing over the problems takes it out; the runs of a group differ in their training seeds,
  which eval.json does not record, and two strategies trained with one seed train different
  weights on it, so nothing makes their scores move together. Pairing them by position would
  rest on the order the runs were given, and cost half the few degrees of freedom of the
  seeds' part (n - 1 instead of 2n - 2).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxlayer import evaluation
from jaxlayer.rl import checkpoint
from jaxlayer.sweep.contribution import standard_error, standard_error_of_mean
from jaxlayer.text import counted, decimals

MEAN_COLUMN = "mean"
# What makes two evaluations comparable, per task: the problems, the decoding and the prompt.
_SAME_PER_TASK = ("num_problems", "decoding", "prompt")
# Decoding settings that change no score: completions per generate call (the same samples at
# any eval.batch_size).
_SCORE_FREE_DECODING = ("batch_size",)


def eval_file(path: str | os.PathLike) -> Path:
  """The eval.json that `path` stands for: the file itself, a directory holding it (`jaxlayer
  eval --out`), or a `jaxlayer train` run directory (its latest checkpoint's RUN/eval/step-N)."""
  path = Path(path)
  if path.is_file():
    return path
  if (path / evaluation.EVAL_FILE).is_file():
    return path / evaluation.EVAL_FILE
  if evaluation.is_run_dir(path):
    found = evaluation.default_out_dir(path) / evaluation.EVAL_FILE
    if found.is_file():
      return found
    raise FileNotFoundError(f"{path}: its latest checkpoint has no evaluation ({found}); run "
                            f"`jaxlayer eval --config CONFIG --model {path}` first.")
  raise FileNotFoundError(f"{path} is neither an eval.json, a directory holding one, nor a "
                          f"`jaxlayer train` run directory (no {checkpoint.RUN_FILE}); give what "
                          "`jaxlayer eval` wrote.")


def _read_eval(path: Path) -> dict:
  try:
    report = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError):
    report = None
  if not isinstance(report, dict) or not {"tasks", "eval_settings"} <= set(report):
    raise ValueError(f"{path} is not an eval.json of `jaxlayer eval`; give what it wrote.")
  return report


def _metric_key(report: dict, task: str) -> str:
  """The key of the score that scores `task`: its "metric" (eval.tasks' NAME:METRIC or
  eval.metric), or, in an eval.json written before tasks had one, eval.metric's."""
  result = report["tasks"][task]
  if "metric" in result:
    return result["metric"]
  if report["eval_settings"]["metric"] == "pass@1":
    return "pass@1"
  return next(name for name in result["scores"] if name.startswith("mean@"))


def _group_scores(reports: Sequence[dict], tasks: Sequence[str]
                  ) -> tuple[list[dict[str, float]], dict[str, float], dict[str, np.ndarray]]:
  """(each run's column -> score, column -> the evaluation standard error of the runs' mean,
  task -> each problem's score averaged over the runs) of one group's eval.json dictionaries;
  the columns are `tasks` in their order (every table's, whatever order a run listed them in)."""
  per_run, errors, problem_means = [{} for _ in reports], {}, {}
  for task in tasks:
    key = _metric_key(reports[0], task)
    per_problem = np.array([report["tasks"][task]["per_problem"][key] for report in reports])
    for scores, run_scores in zip(per_run, per_problem):  # [runs, problems]
      scores[task] = float(run_scores.mean())
    problem_means[task] = per_problem.mean(axis=0)  # [problems]
    errors[task] = standard_error(problem_means[task])
  if len(errors) > 1:
    for scores in per_run:
      scores[MEAN_COLUMN] = float(np.mean(list(scores.values())))
    errors[MEAN_COLUMN] = _over_tasks(errors)
  return per_run, errors, problem_means


def _over_tasks(task_errors: Mapping[str, float]) -> float:
  """The standard error of the mean over tasks of independent task scores."""
  return standard_error_of_mean(list(task_errors.values()))


def _paired_problems_se(problem_means: Mapping[str, np.ndarray],
                        reference_means: Mapping[str, np.ndarray]) -> dict[str, float | None]:
  """Column -> the standard error over the problems of the per-problem score differences; None
  where it is undefined: a task of one problem (and then the mean over the tasks)."""
  errors = {}
  for task, means in problem_means.items():
    difference = means - reference_means[task]  # [problems]
    errors[task] = (float(difference.std(ddof=1) / math.sqrt(difference.size))
                    if difference.size > 1 else None)
  if len(errors) > 1:
    errors[MEAN_COLUMN] = None if None in errors.values() else _over_tasks(errors)
  return errors


def _compared(task_result: dict, key: str):
  """A task's eval.json entry `key` as `_check_comparable` compares it: its decoding less
  _SCORE_FREE_DECODING."""
  value = task_result[key]
  if key == "decoding":
    return {name: setting for name, setting in value.items() if name not in _SCORE_FREE_DECODING}
  return value


def _check_comparable(reports: Mapping[Path, dict]) -> None:
  (first_path, first), *others = reports.items()
  for path, report in others:
    if set(report["tasks"]) != set(first["tasks"]):  # (their order changes no score)
      raise ValueError(f"{path} scores tasks {list(report['tasks'])} but {first_path} scores "
                       f"{list(first['tasks'])}: evaluate every run with the same eval.tasks.")
    for task, result in report["tasks"].items():
      metric, first_metric = _metric_key(report, task), _metric_key(first, task)
      if metric != first_metric:
        raise ValueError(f"{path} scored {task} by {metric} but {first_path} by {first_metric}: "
                         "evaluate every run with the same eval.metric and eval.tasks.")
      for key in _SAME_PER_TASK:
        value, first_value = _compared(result, key), _compared(first["tasks"][task], key)
        if value != first_value:
          raise ValueError(f"{path} and {first_path} were evaluated on {task} with different "
                           f"{key} ({value} vs {first_value}): evaluate every run with the same "
                           "config and eval settings.")
      # (An eval.json written before evaluations recorded their problems has no fingerprint.)
      fingerprints = {result.get("problems"), first["tasks"][task].get("problems")}
      if None not in fingerprints and len(fingerprints) > 1:
        raise ValueError(f"{path} and {first_path} were evaluated on different {task} problems "
                         "(as many, with other questions or answers: another data file, task "
                         "seed or max_value, say): evaluate every run with the same task "
                         "options.")


def runs_table(groups: Mapping[str, Sequence[str | os.PathLike]]) -> dict:
  """The table of `groups` (name -> evaluations, see `eval_file`), first group the reference.

  Returns {"metrics" (task -> the metric scoring it), "columns", "rows": [{"name", "runs",
  "evaluations", "score", "se",
  "evaluation_se", "difference", "difference_se"}]}, the last five column -> value
  (`difference` and `difference_se` of the first row: None; the standard errors are None too
  where they are undefined: a task of a single problem has no spread to tell them from).
  """
  if not groups:
    raise ValueError("no runs given: name at least one group and its evaluations.")
  files = {name: [eval_file(path) for path in paths] for name, paths in groups.items()}
  for name, paths in files.items():
    if not paths:
      raise ValueError(f"group {name!r} has no evaluations: a group is its name, then its "
                       "evaluations (`jaxlayer table --runs NAME EVAL...`).")
  seen: dict[Path, str] = {}
  for name, paths in files.items():
    for path in paths:
      if path.resolve() in seen:
        raise ValueError(f"{path} is given twice (in {seen[path.resolve()]!r} and {name!r}): "
                         "give each evaluation once.")
      seen[path.resolve()] = name
  reports = {path: _read_eval(path) for paths in files.values() for path in paths}
  _check_comparable(reports)
  first_report = next(iter(reports.values()))
  rows, seeds_variances, problem_means = [], [], []
  for name, paths in files.items():
    per_run, evaluation_se, means = _group_scores([reports[path] for path in paths],
                                                  list(first_report["tasks"]))
    columns = list(per_run[0])
    runs = {c: np.array([scores[c] for scores in per_run]) for c in columns}
    seeds_variance = {c: runs[c].var(ddof=1) / runs[c].size if runs[c].size > 1 else 0.0
                      for c in columns}
    rows.append({"name": name, "runs": len(paths), "evaluations": [str(p) for p in paths],
                 "score": {c: float(runs[c].mean()) for c in columns},
                 "se": {c: None if evaluation_se[c] is None
                        else math.sqrt(evaluation_se[c]**2 + seeds_variance[c]) for c in columns},
                 "evaluation_se": evaluation_se})
    seeds_variances.append(seeds_variance)
    problem_means.append(means)
  reference = rows[0]
  for row, seeds_variance, means in zip(rows, seeds_variances, problem_means):
    first = row is reference
    paired_se = _paired_problems_se(means, problem_means[0])
    row["difference"] = {c: None if first else v - reference["score"][c]
                         for c, v in row["score"].items()}
    row["difference_se"] = {
        c: None if first or paired_se[c] is None
        else math.sqrt(paired_se[c]**2 + seeds_variance[c] + seeds_variances[0][c])
        for c in row["score"]}
  metrics = {task: _metric_key(first_report, task) for task in first_report["tasks"]}
  return {"metrics": metrics, "columns": columns, "rows": rows}


def format_table(table: dict) -> str:
  """`runs_table`'s result as a Markdown table, with a line saying what ± means."""
  columns, metrics = table["columns"], table["metrics"]
  mixed = len(set(metrics.values())) > 1  # then each task's column names its metric
  head = ["", "runs", *(f"{c} ({metrics[c]})" if mixed and c in metrics else c for c in columns),
          f"{columns[-1]} - {table['rows'][0]['name']}"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in table["rows"]:
    last = columns[-1]
    difference_se = row["difference_se"][last]
    difference = ("" if row["difference"][last] is None else
                  f"{row['difference'][last]:+.3f} ± {decimals(difference_se, 3)}")
    cells = [row["name"], str(row["runs"]),
             *(f"{row['score'][c]:.3f} ± {decimals(row['se'][c], 3)}" for c in columns),
             difference]
    lines.append("| " + " | ".join(cells) + " |")
  num_runs = sum(row["runs"] for row in table["rows"])
  lines.append(
      f"\n{'scores' if mixed else next(iter(metrics.values()))} of "
      f"{counted(num_runs, 'run')}; each group's mean over its runs, ± its "
      "standard error: the test problems' and, with several runs, the seeds' (std / sqrt(n))"
      + (f"; {MEAN_COLUMN}: over the tasks" if MEAN_COLUMN in columns else "")
      + "; differences paired over the problems.")
  return "\n".join(lines)
