"""A sweep directory's results -> sweep.json, sweep.csv, contribution.png, curves.png, report.md.

The numbers and their spreads are defined in jaxlayer.sweep.contribution. The figures are
drawn with matplotlib's object API (Agg), so the caller's pyplot backend is left alone.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from jaxlayer import paths
from jaxlayer.plots import integer_ticks, moving_average, save_figure
from jaxlayer.sweep import contribution, store
from jaxlayer.sweep.contribution import RunScore
from jaxlayer.text import counted, decimals

OUTPUT_FILES = ("sweep.json", "sweep.csv", "contribution.png", "curves.png", "report.md")
CSV_COLUMNS = ("run", "layer", "steps", "num_seeds", "score", "score_std", "score_se",
               "contribution", "s_base", "s_full", "contribution_se", "contribution_seed_mean",
               "contribution_std") + store.COST_KEYS
# contribution.png names each group of blocks up to this many (then report.md does).
MAX_LABELLED_GROUPS = 12
# A group's name on contribution.png (drawn above the points and lines) lies on a backing that
# keeps it readable over them (the best block's star, a neighbour's error bar).
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
             "alpha": 0.85}
# Where the paper found the best blocks (for the comparison in report.md).
PAPER_FINDING = (
    "The paper finds the most useful blocks in the middle of the stack and the least useful "
    "mostly near the output: Qwen3-1.7B (28 blocks) best at block 10 (C = 1.14), weak at 24 "
    "(0.28); Qwen3-4B and -8B (36 blocks) best at 16 (C = 1.06 / 1.07), weak at 2 (0.66) / 0 "
    "(-0.51), next to the embeddings; Qwen2.5-Math-1.5B with Dr. GRPO best at 14 (1.01), weak "
    "at 23 (0.42).")


def _run_key(result: dict):
  """A trained run's group over seeds: "full", its block, or its group's blocks (a tuple)."""
  if result["kind"] == "group":
    return tuple(result["blocks"])
  return result["layer"] if result["kind"] == "layer" else "full"


def _group_results(results: list[dict]):
  """(base, full, blocks, groups of blocks), each seed -> RunScore."""
  base, full = {}, {}
  layers, groups = defaultdict(dict), defaultdict(dict)
  for r in results:
    run_score = RunScore(r["score"], r["score_se"])
    if r["kind"] == "base":
      base[r["seed"]] = run_score
    elif r["kind"] == "full":
      full[r["seed"]] = run_score
    else:
      (groups if r["kind"] == "group" else layers)[_run_key(r)][r["seed"]] = run_score
  return base, full, dict(layers), dict(groups)


def _mean_costs(results: list[dict]) -> tuple[dict | None, dict]:
  """(full RL's cost, {block or group: its cost}): each store.COST_KEYS entry averaged over
  seeds, None where a seed's run lacks it (a train_fn that gave no cost, a result from before
  costs)."""
  costs = defaultdict(list)
  for r in results:
    if r["kind"] != "base":
      costs[_run_key(r)].append(r.get("cost") or {"train_seconds": r["train_seconds"]})
  means = {run: {key: None if any(c.get(key) is None for c in run_costs)
                 else float(np.mean([c[key] for c in run_costs]))
                 for key in store.COST_KEYS}
           for run, run_costs in costs.items()}
  return means.pop("full", None), means


def _per_problem_by_task(result: dict) -> dict[str, list[float]]:
  """A run's per-problem scores by task: {task: its scores} of a score over tasks (result.json's
  "tasks"), {"": the scores} of one (its "per_problem")."""
  if "tasks" in result:
    return {name: task["per_problem"] for name, task in result["tasks"].items()}
  return {"": result["per_problem"]}


def _paired_gain_se(results: list[dict], seeds: list[int]) -> float | None:
  """SE of S_full - S_base from per-problem differences (both scored on the same problems); of a
  score over tasks (the mean of theirs), sqrt(sum se_t^2) / T from each task's paired SE.

  Each problem's score is averaged over `seeds`, the seeds base and full RL both ran (paired by
  seed, as C(k) is); with none (`seeds` empty), over all of each one's own seeds.
  """
  per_kind = {"base": defaultdict(list), "full": defaultdict(list)}
  for r in results:
    if r["kind"] in per_kind and (not seeds or r["seed"] in seeds):
      for task, scores in _per_problem_by_task(r).items():
        per_kind[r["kind"]][task].append(np.asarray(scores, dtype=np.float64))
  if not per_kind["base"] or not per_kind["full"]:
    return None
  task_errors = []
  for task, base_scores in per_kind["base"].items():
    # Each problem's score, mean over seeds: full RL's minus the base's.
    difference = np.mean(per_kind["full"][task], axis=0) - np.mean(base_scores, axis=0)  # [n]
    if difference.size < 2:
      return None
    task_errors.append(float(difference.std(ddof=1) / math.sqrt(difference.size)))
  return contribution.standard_error_of_mean(task_errors)


def _task_scores(results: list[dict]) -> dict | None:
  """Each task's score, mean over seeds, of base ("base"), full RL ("full"), each block and each
  group (_run_key) of a sweep scored over tasks (result.json's "tasks"); None for one task."""
  if not all("tasks" in r for r in results):
    return None
  scores = defaultdict(lambda: defaultdict(list))
  for r in results:
    for name, task in r["tasks"].items():
      scores["base" if r["kind"] == "base" else _run_key(r)][name].append(task["score"])
  return {unit: {name: float(np.mean(values)) for name, values in by_task.items()}
          for unit, by_task in scores.items()}


def _decoding(eval_config: dict) -> dict:
  """The eval settings that shape the scores (sampling settings only when there are samples)."""
  # The metric, the tasks and the problems have their own entries (eval.metric is not every
  # task's metric when eval.tasks names one); the tasks' options are among the settings.
  # batch_size and replicate_params only batch or place the same samples (a resumed sweep may
  # change them: store.NOT_IDENTITY).
  unused = ({"metric", "num_problems", "tasks", "task_options", "batch_size", "replicate_params"}
            | store.unused_eval_settings(eval_config))
  return {k: v for k, v in eval_config.items() if k not in unused}


def _single(values: set, what: str):
  if len(values) != 1:
    raise ValueError(f"the sweep's runs disagree on {what}: {sorted(values)}; every run must be "
                     "evaluated the same way. Start a fresh sweep directory.")
  return values.pop()


def _furthest_stopped(results: list[dict], rung_results: list[dict]) -> list[dict]:
  """The last rung's result of every run that successive halving stopped (one per seed)."""
  finished = {(_run_key(r), r["seed"]) for r in results}
  furthest = {}
  for r in sorted(rung_results, key=lambda r: r["stop_at"]):
    if (_run_key(r), r["seed"]) not in finished:
      furthest[_run_key(r), r["seed"]] = r
  return list(furthest.values())


def _rank_correlation(early: dict, final: dict) -> tuple[float | None, int]:
  """(Spearman's rank correlation of two {block: score} over the blocks in both, their count);
  None below three blocks."""
  from scipy import stats  # (a dependency of jax)

  common = sorted(k for k in early if k in final)
  if len(common) < 3:
    return None, len(common)
  rho = stats.spearmanr([early[k] for k in common], [final[k] for k in common]).statistic
  return (None if math.isnan(rho) else float(rho)), len(common)


def _halving_json(base: dict, results: list[dict], rung_results: list[dict],
                  final_steps: int, final_scores: dict) -> dict | None:
  """sweep.json's "halving": each rung's scores and C (against full RL at the same step), which
  runs went on, and the RL steps trained against a sweep without halving."""
  if not rung_results:
    return None
  rungs, messages = [], []
  for steps in sorted({r["stop_at"] for r in rung_results}):
    at_rung = [r for r in rung_results if r["stop_at"] == steps]
    _, full, layers, groups = _group_results(at_rung)
    if not full:
      continue  # full RL's rung was not reached (an unfinished sweep)
    with warnings.catch_warnings(record=True):
      warnings.simplefilter("always", contribution.UndefinedContributionWarning)
      summary = contribution.summarize_sweep(base, full, layers, groups)
    messages += [f"after {steps} steps: {w}" for w in summary.warnings]
    below = _below_the_base(summary)
    if below:
      where, every_c = below
      messages.append(
          f"after {steps} steps {where}: {'C' if every_c else 'their C'} at this rung divides "
          "by a negative gain, so a higher score gives a lower C. The rung still kept the runs "
          "with the best scores; read the scores, or put the first rung later.")
    went_on = {_run_key(r) for r in results + rung_results
               if r["kind"] != "base" and (r.get("stop_at") or final_steps) > steps}

    def entry(unit) -> dict:
      return {"score": unit.scores.score, "score_se": unit.scores.score_se,
              "seeds": list(unit.scores.seeds), "contribution": unit.contribution,
              "s_base": unit.s_base, "s_full": unit.s_full,
              "contribution_se": unit.contribution_se,
              "contribution_std": unit.contribution_std, "went_on": unit.layer in went_on}

    rho, count = _rank_correlation({l.layer: l.scores.score for l in summary.layers},
                                   final_scores)
    rungs.append({"steps": steps, "s_full": summary.full.score,
                  "s_full_se": summary.full.score_se,
                  "s_full_seeds": list(summary.full.seeds),
                  "layers": [{"layer": l.layer, **entry(l)} for l in summary.layers],
                  "groups": [{"blocks": list(g.layer), **entry(g)} for g in summary.groups],
                  "rank_correlation_with_final": rho, "rank_correlation_blocks": count})
  trained = {(_run_key(r), r["seed"]): final_steps for r in results if r["kind"] != "base"}
  for r in _furthest_stopped(results, rung_results):
    trained[_run_key(r), r["seed"]] = r["stop_at"]
  return {"final_steps": final_steps, "rungs": rungs, "warnings": messages,
          "rl_steps": sum(trained.values()),
          "rl_steps_without_halving": len(trained) * final_steps}


def _below_the_base(summary: contribution.SweepSummary) -> tuple[str, bool] | None:
  """Where a computed C divides by a negative gain (full RL below the base over the seeds that
  C is over), and whether every computed C does: ('full RL scored 0.4000, below the base
  (0.5000)', True) when every one does, over the same seeds (named where they are not all of
  base's and full RL's), else the blocks and groups whose C does, each with its scores. None
  when no computed C does; with no block or group, whether full RL ended below the base over
  all seeds."""
  units = summary.layers + summary.groups
  if not units:
    if summary.full.score >= summary.base.score:
      return None
    return (f"full RL scored {summary.full.score:.4f}, below the base "
            f"({summary.base.score:.4f})", True)
  computed = [u for u in units if u.contribution is not None]
  below = [u for u in computed if u.s_full < u.s_base]
  if not below:
    return None
  over = {(tuple(u.per_seed_contribution), u.s_base, u.s_full) for u in below}
  if len(below) == len(computed) and len(over) == 1:
    seeds, s_base, s_full = over.pop()
    every_seed = not seeds or seeds == summary.base.seeds == summary.full.seeds
    return (f"full RL scored {s_full:.4f}, below the base ({s_base:.4f})"
            + ("" if every_seed else f" over {contribution.seeds_text(seeds)}"), True)
  each = "; ".join(
      f"{contribution.unit_name(u.layer)}: {u.s_full:.4f} against {u.s_base:.4f} over "
      + (contribution.seeds_text(tuple(u.per_seed_contribution)) if u.per_seed_contribution
         else "all of their seeds")
      for u in below)
  return f"full RL scored below the base on the seeds some of the C are over ({each})", False


def _full_rl_lost(summary: contribution.SweepSummary) -> list[str]:
  """The warning of a sweep where a computed C divides by a negative gain (_below_the_base),
  where C reads upside down."""
  below = _below_the_base(summary)
  if not below:
    return []
  where, every_c = below
  # As contribution.relative_improvement ranks them.
  ranking = ("those with the smallest and largest C" if every_c
             else "ranked by C, and by -C where it divides by a negative gain")
  return [f"{where}: {'C(k)' if every_c else 'their C'} divides by a negative gain, so a higher "
          "score gives a lower C, and C = 1 is no target. The best and worst blocks are "
          f"{ranking}. Train longer or with another learning rate, or evaluate on more problems."]


def _mixed_devices(results: list[dict]) -> list[str]:
  """The warning of a sweep whose runs trained on different devices or meshes (one resumed on
  another machine, say), whose memory per device and seconds per step do not compare."""
  runs_on = defaultdict(list)
  for r in results:
    if r.get("devices"):  # None: the base, a train_fn that did not say, an older result
      runs_on[r["devices"]].append(r["run"])
  if len(runs_on) < 2:
    return []
  where = "; ".join(f"{devices}: {', '.join(runs[:4])}"
                    + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
                    for devices, runs in runs_on.items())
  return [f"the runs trained on different devices or meshes ({where}): the Cost section's "
          "memory per device and seconds per step compare only runs on the same, and a run "
          "resumed on others mixes their steps."]


def build_sweep_json(manifest: dict, results: list[dict],
                     rung_results: list[dict] = ()) -> dict:
  """The sweep.json dictionary (see the README for the meaning of every key); rung_results:
  successive halving's evaluations before train.steps (store.load_rung_results)."""
  base, full, layers, groups = _group_results(results)
  missing = [name for name, runs in (("base", base), ("full RL", full)) if not runs]
  if missing:
    raise ValueError(f"the sweep has no {' and no '.join(missing)} result yet: C(k) needs both. "
                     "Run `jaxlayer sweep` again to finish it.")
  summary = contribution.summarize_sweep(base, full, layers, groups)
  config, identity = manifest["config"], manifest["identity"]
  gain = summary.full.score - summary.base.score
  gain_paired_seeds = sorted(set(summary.base.seeds) & set(summary.full.seeds))
  # S_full - S_base over the seeds both ran (the paired SE's seeds); sharing none, over all.
  gain_paired = (contribution.summarize_scores({s: full[s] for s in gain_paired_seeds}).score
                 - contribution.summarize_scores({s: base[s] for s in gain_paired_seeds}).score
                 if gain_paired_seeds else gain)
  best, worst = summary.best_layer(), summary.worst_layer()
  full_cost, layer_costs = _mean_costs(results)
  task_scores = _task_scores(results) or {}

  def spreads(unit) -> dict:
    return {"score": unit.scores.score, "score_std": unit.scores.score_std,
            "score_se": unit.scores.score_se, "contribution": unit.contribution,
            "s_base": unit.s_base, "s_full": unit.s_full,
            "contribution_se": unit.contribution_se,
            "contribution_seed_mean": unit.contribution_seed_mean,
            "contribution_std": unit.contribution_std,
            "seeds": list(unit.scores.seeds),
            "per_seed_score": [unit.scores.per_seed[s] for s in unit.scores.seeds],
            "per_seed_contribution": [unit.per_seed_contribution.get(s)
                                      for s in unit.scores.seeds],
            "cost": layer_costs.get(unit.layer), "task_scores": task_scores.get(unit.layer)}

  alone = {l.layer: l.contribution for l in summary.layers}
  halving = _halving_json(base, results, list(rung_results), config["train"]["steps"],
                          {l.layer: l.scores.score for l in summary.layers})
  return {
      "model": config["model"]["path"],
      "num_layers": identity["num_layers"],
      # What the runs are scored on: the environment of a multi-turn config, else its task.
      "task": (config.get("env") or {}).get("name") or config["task"].get("name"),
      "algorithm": config["train"].get("algorithm"),
      "metric": _single({r["metric"] for r in results}, "the metric"),
      "num_problems": _single({r["num_problems"] for r in results}, "the number of test problems"),
      "decoding": _decoding(config["eval"]),
      "tasks": {name: {"metric": task["metric"], "s_base": task_scores["base"][name],
                       "s_full": task_scores["full"][name]}
                for name, task in results[0]["tasks"].items()} if task_scores else None,
      "seeds": sorted({r["seed"] for r in results}),
      "s_base": summary.base.score, "s_base_std": summary.base.score_std,
      "s_base_se": summary.base.score_se, "s_base_seeds": list(summary.base.seeds),
      "s_full": summary.full.score, "s_full_std": summary.full.score_std,
      "s_full_se": summary.full.score_se, "s_full_seeds": list(summary.full.seeds),
      "gain": gain,
      "gain_se": (None if None in (summary.full.score_se, summary.base.score_se)
                  else math.hypot(summary.full.score_se, summary.base.score_se)),
      "gain_paired": gain_paired,
      "gain_paired_se": _paired_gain_se(results, gain_paired_seeds),
      "gain_paired_seeds": gain_paired_seeds or None,
      "full_cost": full_cost,
      "layers": [{"layer": l.layer, **spreads(l)} for l in summary.layers],
      "groups": [{"blocks": list(g.layer), **spreads(g),
                  "contribution_alone": [alone.get(block) for block in g.layer]}
                 for g in summary.groups],
      "best_layer": best.layer if best else None,
      "worst_layer": worst.layer if worst else None,
      "halving": halving,
      "warnings": summary.warnings + _full_rl_lost(summary) + _mixed_devices(results)
                  + (halving["warnings"] if halving else []),
      "settings": identity,
  }


def _csv_text(sweep: dict) -> str:
  """One row per run group: base (0 RL steps), full RL, each block and group at the end, then,
  with successive halving, the same at each rung (its steps in `steps`, `-stepN` in `run`).
  A block's or group's `s_base` and `s_full` are what its C divides by (over its seeds).
  Scored over tasks, a column `score_TASK` per task gives each task's score (at the end)."""
  final_steps = sweep["settings"]["train"]["steps"]
  tasks = sweep["tasks"] or {}

  def task_columns(task_scores: dict | None) -> dict:
    return {f"score_{name}": score for name, score in (task_scores or {}).items()}

  rows = [{"run": "base", "layer": "", "steps": 0, "num_seeds": len(sweep["s_base_seeds"]),
           "score": sweep["s_base"], "score_std": sweep["s_base_std"],
           "score_se": sweep["s_base_se"],
           **task_columns({name: task["s_base"] for name, task in tasks.items()})}]

  def stage(steps: int, suffix: str, full: dict, layers: list[dict], groups: list[dict]):
    rows.append({"run": f"full{suffix}", "layer": "", "steps": steps, **full})
    rows.extend({"run": f"layer{l['layer']:02d}{suffix}", "steps": steps,
                 "num_seeds": len(l["seeds"]),
                 **{k: l[k] for k in CSV_COLUMNS if k in l}, **(l.get("cost") or {}),
                 **task_columns(l.get("task_scores"))}
                for l in layers)
    rows.extend({"run": f"group{store.group_name(g['blocks'], '{:02d}')}{suffix}",
                 "layer": store.group_name(g["blocks"]), "steps": steps,
                 "num_seeds": len(g["seeds"]),
                 **{k: g[k] for k in CSV_COLUMNS if k in g}, **(g.get("cost") or {}),
                 **task_columns(g.get("task_scores"))}
                for g in groups)

  stage(final_steps, "", {"num_seeds": len(sweep["s_full_seeds"]), "score": sweep["s_full"],
                          "score_std": sweep["s_full_std"], "score_se": sweep["s_full_se"],
                          **(sweep["full_cost"] or {}),
                          **task_columns({name: task["s_full"] for name, task in tasks.items()})},
        sweep["layers"], sweep["groups"])
  for rung in (sweep.get("halving") or {}).get("rungs", []):
    stage(rung["steps"], f"-step{rung['steps']}",
          {"num_seeds": len(rung["s_full_seeds"]), "score": rung["s_full"],
           "score_se": rung["s_full_se"]}, rung["layers"], rung["groups"])
  columns = CSV_COLUMNS + tuple(task_columns(dict.fromkeys(tasks)))
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
  return out.getvalue()


def _title(sweep: dict) -> str:
  return f"{Path(str(sweep['model'])).name} · {sweep['task']} · {sweep['algorithm']}"


def contribution_error_bars(layer: dict) -> tuple[float | None, str]:
  """The error bar drawn for a block: std over seeds when there are two or more, else the SE."""
  if layer["contribution_std"] is not None:
    return layer["contribution_std"], "std over seeds"
  return layer["contribution_se"], "± 1 SE (evaluation noise)"


def _score_name(sweep: dict) -> str:
  """The metric as an axis names it: over tasks, 'mean of 4 tasks' (report.md names them)."""
  return f"mean of {counted(len(sweep['tasks']), 'task')}" if sweep["tasks"] else sweep["metric"]


def _score_scale(sweep: dict, units: list[dict]) -> tuple[float, float, str] | None:
  """The score axis beside C, (S_base, S_full - S_base, ' over seeds 0, 1' where those are
  fewer than base's and full RL's), when every C drawn (`units`, blocks and groups) divides by
  the same base and full RL scores, over the same seeds; None when they do not (blocks that
  ran different seeds), as no one score axis then reads every C. A sweep.json written before
  blocks carried s_base and s_full: base's and full RL's means over all seeds."""
  if not all("s_base" in unit for unit in units):
    return sweep["s_base"], sweep["s_full"] - sweep["s_base"], ""
  paired = set(sweep["s_base_seeds"]) & set(sweep["s_full_seeds"])
  # The seeds each C is over: those its run shares with base and full RL (none: all of each).
  over = {tuple(s for s in unit["seeds"] if s in paired) for unit in units}
  scores = {(unit["s_base"], unit["s_full"]) for unit in units}
  if len(over) > 1 or len(scores) > 1:
    return None
  (seeds,), ((s_base, s_full),) = over, scores
  every_seed = not seeds or list(seeds) == sweep["s_base_seeds"] == sweep["s_full_seeds"]
  return s_base, s_full - s_base, "" if every_seed else f" over {contribution.seeds_text(seeds)}"


def plot_contribution(sweep: dict, path: Path) -> None:
  """C(k) against block index, error bars, C = 1 (full RL) and C = 0 (base), best block marked."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(max(6.0, 0.32 * sweep["num_layers"] + 3), 4.2))
  ax = fig.add_subplot()
  defined = [l for l in sweep["layers"] if l["contribution"] is not None]
  groups = [g for g in sweep["groups"] if g["contribution"] is not None]
  ax.axhline(1.0, color="tab:green", linestyle="--", linewidth=1.2, label="C = 1: full RL")
  ax.axhline(0.0, color="gray", linestyle=":", linewidth=1.2, label="C = 0: base model")
  # A group: a marker per block at the group's C, its error bar once, between its blocks.
  for i, group in enumerate(groups):
    blocks, c = group["blocks"], group["contribution"]
    ax.plot(blocks, [c] * len(blocks), "s:", color="tab:purple", markersize=5, linewidth=1.5,
            label="blocks trained together" if i == 0 else None)
    error, _ = contribution_error_bars(group)
    ax.errorbar([np.mean(blocks)], [c], yerr=[error or 0.0], color="tab:purple", capsize=2,
                elinewidth=0.8, alpha=0.6)
    if len(groups) <= MAX_LABELLED_GROUPS:
      ax.annotate(store.group_name(blocks), (blocks[-1], c), xytext=(4, 3),
                  textcoords="offset points", fontsize=7, color="tab:purple", bbox=LABEL_BOX)
  # Successive halving: each rung's C (against full RL at as many steps), paler the earlier.
  rungs = (sweep.get("halving") or {"rungs": []})["rungs"]
  score_after = ""  # with rungs drawn: the steps the score axis is for
  for i, rung in enumerate(rungs):
    # A rung's C where full RL gained over the seeds that C is over (no gain to scale by, or C's
    # sign flipped, elsewhere); in a sweep.json written before rungs carried those, over all.
    measured = [l for l in rung["layers"] if l["contribution"] is not None
                and contribution.divisor_gain(l, rung["s_full"] - sweep["s_base"]) > 0]
    if not measured:
      ax.plot([], [], " ", label=f"after {rung['steps']} steps: no C, full RL not above the base")
      continue
    ax.plot([l["layer"] for l in measured], [l["contribution"] for l in measured], "o--",
            color=str(0.75 - 0.4 * i / max(1, len(rungs) - 1)), markerfacecolor="none",
            markersize=5, linewidth=0.8,
            label=f"C after {rung['steps']} of {sweep['halving']['final_steps']} steps "
                  "(against full RL after as many)")
    # The score axis scales the final C only: a rung's C has its own full RL.
    score_after = f" after {sweep['halving']['final_steps']} steps"
  if defined:
    x = [l["layer"] for l in defined]
    y = [l["contribution"] for l in defined]
    bars = [contribution_error_bars(l) for l in defined]
    yerr = [0.0 if b is None else b for b, _ in bars]
    # Blocks swept with more seeds than others (a sweep extended for some) mix the two kinds.
    kinds = {kind for _, kind in bars}
    ax.errorbar(x, y, yerr=yerr, fmt="o-", color="tab:blue", ecolor="tab:blue", capsize=3,
                markersize=5, linewidth=1, label="C(k), error bars: " + (
                    kinds.pop() if len(kinds) == 1 else
                    "std over seeds where a block has several, else ± 1 SE (evaluation noise)"))
    best = next(l for l in defined if l["layer"] == sweep["best_layer"])
    ax.plot([best["layer"]], [best["contribution"]], marker="*", markersize=16, color="tab:orange",
            linestyle="none", label=_best_block(sweep))
  if defined or groups:  # the final C is defined: S_full != S_base
    scale = _score_scale(sweep, defined + groups)
    if scale:  # (else no one score axis reads every C)
      s_base, gain, over = scale
      score_axis = ax.secondary_yaxis(
          "right", functions=(lambda c: s_base + c * gain, lambda s: (s - s_base) / gain))
      score_axis.set_ylabel(f"score{score_after}{over} ({_score_name(sweep)})")
  else:  # (a rung's C, against its own full RL, may still be drawn)
    ax.text(0.5, 0.5, "C(k) undefined: S_full == S_base\n(full RL did not move the score)",
            transform=ax.transAxes, ha="center", va="center", fontsize=12, color="tab:red")
    if not rungs:
      ax.set_ylim(-0.25, 1.25)
  ax.set_xlim(-0.7, sweep["num_layers"] - 0.3)
  ax.set_xticks(range(sweep["num_layers"]))
  if sweep["num_layers"] > 24:
    ax.tick_params(axis="x", labelsize=7)
  ax.set_xlabel("block index k (0 = next to the embeddings)")
  ax.set_ylabel("layer contribution C(k)")
  # The metric here too: the score axis, which names it, is left out where no one axis reads C.
  ax.set_title(f"{_title(sweep)}\n{_score_name(sweep)}: S_base = {sweep['s_base']:.3f}, "
               f"S_full = {sweep['s_full']:.3f}, {sweep['num_problems']} test problems, "
               f"{_seeds_per_run(sweep)} per run", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
  save_figure(fig, path)


def _mean_curve(curves: list[list]) -> np.ndarray:
  steps = max(len(c) for c in curves)
  padded = np.full((len(curves), steps), np.nan)  # [seeds, steps]: NaN past a curve's end
  for i, c in enumerate(curves):
    padded[i, :len(c)] = [np.nan if v is None else v for v in c]
  with np.errstate(invalid="ignore"):
    return np.nanmean(padded, axis=0)


def plot_curves(results: list[dict], num_layers: int, title: str, path: Path) -> None:
  """Training reward per step for full RL (black) and each single-block run (coloured by block)."""
  import matplotlib as mpl

  curves = defaultdict(list)
  for r in results:
    if r["kind"] != "base" and r["reward_curve"]:
      curves[_run_key(r)].append(r["reward_curve"])
  from matplotlib.figure import Figure

  fig = Figure(figsize=(8, 4.5))
  ax = fig.add_subplot()
  steps = max((len(c) for runs in curves.values() for c in runs), default=0)
  window = max(1, steps // 10)  # per-step rewards of a small batch are noisy
  # One discrete colour per block; viridis stops short of its pale yellow end.
  cmap = mpl.colors.ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.88, num_layers)))
  norm = mpl.colors.BoundaryNorm(np.arange(-0.5, num_layers), cmap.N)
  # A block's curve in its colour; a group's dashed, in the colour of its mean block.
  runs = sorted((k for k in curves if k != "full"), key=lambda k: (isinstance(k, tuple), k))
  for i, run in enumerate(runs):
    mean = moving_average(_mean_curve(curves[run]), window)
    grouped = isinstance(run, tuple)
    first_group = grouped and (i == 0 or not isinstance(runs[i - 1], tuple))
    ax.plot(np.arange(1, mean.size + 1), mean, color=cmap(norm(np.mean(run))), linewidth=1.2,
            alpha=0.85, linestyle="--" if grouped else "-",
            label="blocks trained together" if first_group else None)
  if "full" in curves:
    mean = moving_average(_mean_curve(curves["full"]), window)
    ax.plot(np.arange(1, mean.size + 1), mean, color="black", linewidth=2.4, label="full RL")
  # Successive halving: where the runs that stopped early stopped.
  for i, step in enumerate(sorted({r["stop_at"] for r in results if r.get("stop_at")})):
    ax.axvline(step, color="gray", linestyle=":", linewidth=1.2,
               label="rung: the weaker runs stop" if i == 0 else None)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(loc="lower right", fontsize=9)
  if not curves:
    ax.text(0.5, 0.5, "no reward curves recorded", transform=ax.transAxes, ha="center")
  colorbar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02,
                          ticks=range(0, num_layers, math.ceil(num_layers / 14)))
  colorbar.set_label("trained block k")
  ax.set_xlabel("RL step")
  integer_ticks(ax.xaxis)
  smoothing = f" (moving average, {window} steps)" if window > 1 else ""
  ax.set_ylabel(f"mean training reward{smoothing}")
  ax.set_title(f"{title}: training reward (mean over seeds)", fontsize=10)
  ax.grid(alpha=0.3)
  save_figure(fig, path)


def _depth_thirds(sweep: dict) -> str:
  thirds = defaultdict(list)
  for l in sweep["layers"]:
    if l["contribution"] is not None:
      thirds[min(2, 3 * l["layer"] // sweep["num_layers"])].append(l["contribution"])
  names = ("lower (input side)", "middle", "upper (output side)")
  return ", ".join(f"{names[i]} {np.mean(thirds[i]):z.2f}" for i in range(3) if thirds[i])


def _groups_section(sweep: dict) -> list[str]:
  """report.md's lines on blocks trained together, each set beside its blocks trained alone."""
  if not sweep["groups"]:
    return []
  lines = ["## Blocks trained together", "",
           "| blocks | score | SE | C | C error | C of each block alone |",
           "|---|---|---|---|---|---|"]
  for g in sweep["groups"]:
    error, _ = contribution_error_bars(g)
    lines.append(f"| {store.group_name(g['blocks'])} | {decimals(g['score'])} | "
                 f"{decimals(g['score_se'])} | {decimals(g['contribution'], 2)} | "
                 f"{decimals(error, 2)} | "
                 + ", ".join(decimals(c, 2) for c in g["contribution_alone"]) + " |")
  compared = [g for g in sweep["groups"] if g["contribution"] is not None
              and None not in g["contribution_alone"]]
  if compared:
    above_best = [g["contribution"] - max(g["contribution_alone"]) for g in compared]
    lines += ["", f"Against the best of its blocks trained alone, a group's C differs by "
              f"{np.mean(above_best):+z.2f} on average ({sum(d > 0 for d in above_best)} of "
              f"{counted(len(compared), 'group')} above it). The sums of the blocks' C would "
              f"predict {np.mean([sum(g['contribution_alone']) for g in compared]):z.2f} on "
              f"average; the groups reached {np.mean([g['contribution'] for g in compared]):z.2f}. "
              "Differences within the C errors are noise."]
  return lines + [""]


def _halving_section(sweep: dict) -> list[str]:
  """report.md's lines on successive halving: the rungs, each run's C at them, the saving."""
  halving = sweep["halving"]
  if not halving or not halving["rungs"]:
    return []
  rungs, final_steps = halving["rungs"], halving["final_steps"]
  counts = [len(r["layers"]) + len(r["groups"]) for r in rungs]
  counts.append(len(sweep["layers"]) + len(sweep["groups"]))
  path = " -> ".join(f"{n} to step {steps}" for n, steps in zip(
      counts, [r["steps"] for r in rungs] + [final_steps]))
  lines = ["## Successive halving", "",
           f"Every block (and group) trained {rungs[0]['steps']} RL steps and was evaluated; "
           "the best by score went on to the next rung, the rest stopped there. Blocks and "
           f"groups trained: {path} (train.steps). Full RL was evaluated at every rung, so a "
           "C at a rung compares equal numbers of steps. The sweep trained "
           f"{halving['rl_steps']:,} RL steps (all runs and seeds), "
           f"{halving['rl_steps'] / halving['rl_steps_without_halving']:.0%} of the "
           f"{halving['rl_steps_without_halving']:,} of a sweep without halving. A run that "
           "stopped early has no final C: its last C is its best guess.", "",
           "Each cell: score / C.", "",
           "| run | " + " | ".join(f"after {r['steps']} steps" for r in rungs)
           + f" | after {final_steps} steps |",
           "|---|" + "---|" * (len(rungs) + 1),
           "| full RL | " + " | ".join(f"{decimals(r['s_full'])} / 1" for r in rungs)
           + f" | {decimals(sweep['s_full'])} / 1 |"]

  def cells(stage: dict) -> dict:
    units = [(l["layer"], l) for l in stage["layers"]]
    units += [(tuple(g["blocks"]), g) for g in stage["groups"]]
    return {run: f"{decimals(u['score'])} / {decimals(u['contribution'], 2)}" for run, u in units}
  stages = [cells(r) for r in rungs] + [cells(sweep)]
  runs = sorted(set().union(*stages), key=lambda k: (isinstance(k, tuple), k))
  for run in runs:
    name = f"blocks {store.group_name(run)}" if isinstance(run, tuple) else f"block {run}"
    lines.append(f"| {name} | " + " | ".join(stage.get(run, "-") for stage in stages) + " |")
  agreement = [f"after {r['steps']} steps {r['rank_correlation_with_final']:z.2f} "
               f"({r['rank_correlation_blocks']} blocks)"
               for r in rungs if r["rank_correlation_with_final"] is not None]
  if agreement:
    lines += ["", "How well a rung ordered the blocks it shares with the end (Spearman's rank "
              "correlation of their scores at the rung with their scores after "
              f"{final_steps} steps): " + ", ".join(agreement) + "."]
  return lines + [""]


def _cost_section(sweep: dict) -> list[str]:
  """report.md's "Cost" lines: what each training run took, and one block against full RL."""
  from jaxlayer.rl.memory import readable_bytes  # (imports jax: only when the report is written)

  runs = ([("full RL", sweep["full_cost"])]
          + [(f"block {l['layer']}", l["cost"]) for l in sweep["layers"]]
          + [(f"blocks {store.group_name(g['blocks'])}", g["cost"]) for g in sweep["groups"]])
  runs = [(name, cost) for name, cost in runs if cost is not None]
  if not runs:
    return []
  full = sweep["full_cost"] or {}

  def cell(cost: dict, key: str, show) -> str:
    return "n/a" if cost[key] is None else show(cost[key])

  def share(cost: dict, key: str) -> str:
    known = cost[key] is not None and full.get(key)
    return f"{cost[key] / full[key]:.2f}x" if known else "n/a"

  lines = ["## Cost", "",
           "Per training run, mean over seeds. Parameters and optimizer state count whole arrays "
           "(all devices); memory is `jaxlayer memory`'s estimated peak on one device; seconds "
           "per step are the median RL step (rollout and update) after the first, which compiles; "
           "the training time includes compiling and, for a run that was interrupted or stopped "
           "at a rung and resumed, every part.", "",
           "| run | trained parameters | optimizer state | memory per device | s/step | "
           "s/step vs full | training time |",
           "|---|---|---|---|---|---|---|"]
  for name, cost in runs:
    lines.append(
        f"| {name} | {cell(cost, 'trained_params', lambda v: f'{v:,.0f}')} | "
        f"{cell(cost, 'optimizer_state_bytes', readable_bytes)} | "
        f"{cell(cost, 'memory_per_device_bytes', readable_bytes)} | "
        f"{cell(cost, 'seconds_per_step', lambda v: f'{v:.3g}')} | "
        f"{share(cost, 'seconds_per_step')} | "
        f"{cell(cost, 'train_seconds', lambda v: f'{v:.1f} s')} |")
  blocks = [cost for name, cost in runs if name.startswith("block ")]
  ratios = {key: [c[key] / full[key] for c in blocks if c[key] is not None and full.get(key)]
            for key in ("trained_params", "optimizer_state_bytes", "memory_per_device_bytes",
                        "seconds_per_step")}
  if all(ratios.values()):
    lines += ["", f"One block against full RL, mean over the blocks: "
              f"{np.mean(ratios['trained_params']):.2f}x the trained parameters, "
              f"{np.mean(ratios['optimizer_state_bytes']):.2f}x the optimizer state, "
              f"{np.mean(ratios['memory_per_device_bytes']):.2f}x the memory per device and "
              f"{np.mean(ratios['seconds_per_step']):.2f}x the seconds per step."]
  return lines + [""]


def _paired_seeds_text(sweep: dict) -> str:
  """'' unless base and full RL share no seed: '; they share no seed, so each averages over its
  own' (what the paired SE of the gain averages each problem's score over)."""
  if sweep["s_base_seeds"] == sweep["s_full_seeds"] or sweep["gain_paired_seeds"]:
    return ""
  return "; they share no seed, so each averages over its own"


def _weighs_gain_on_shared_seeds(sweep: dict) -> bool:
  """Whether the gain weighed against the noise is `gain_paired`, over fewer seeds than
  `gain`: base and full RL ran different seeds, shared some, and the paired SE is defined."""
  return (sweep["s_base_seeds"] != sweep["s_full_seeds"] and bool(sweep["gain_paired_seeds"])
          and sweep["gain_paired_se"] is not None)


def _gain_in_standard_errors(sweep: dict) -> float | None:
  """The gain weighed against the noise, in standard errors: `gain_paired` (over the seeds both
  ran) by the paired SE where that is defined, else `gain` by the independent SE; None at SE 0
  or with the SE undefined (a single test problem)."""
  if sweep["gain_paired_se"] is not None:
    gain, noise = sweep["gain_paired"], sweep["gain_paired_se"]
  else:
    gain, noise = sweep["gain"], sweep["gain_se"]
  return gain / noise if noise else None


def _block(sweep: dict, layer: int) -> str:
  """'block 4 (C = 0.72, score 0.415)'."""
  block = next(l for l in sweep["layers"] if l["layer"] == layer)
  return f"block {layer} (C = {block['contribution']:z.2f}, score {block['score']:.3f})"


def _best_block(sweep: dict) -> str:
  """'best: block 4 (C = 0.72, score 0.415)', or, when no block scored above the base over the
  seeds its C is over (C and its gain of opposite signs, or C = 0), 'no block improved on the
  base; the closest: block 4 (...)' (contribution.divisor_gain: over all seeds in a sweep.json
  written before blocks carried s_base and s_full)."""
  best = next(l for l in sweep["layers"] if l["layer"] == sweep["best_layer"])
  # Its S_k - S_base over the seeds its C is over: C times the gain it divides by.
  gain = contribution.divisor_gain(best, sweep["s_full"] - sweep["s_base"])
  if best["contribution"] * gain > 0:
    return f"best: {_block(sweep, best['layer'])}"
  return f"no block improved on the base; the closest: {_block(sweep, best['layer'])}"


def _best_and_worst(sweep: dict, worst_label: str) -> str:
  """'best: block 4 (C = 0.72, score 0.415). WORST_LABEL: block 7 (...)', or, when the best
  block is also the worst (one block swept, or with a defined C; a tie), 'best: block 4 (...);
  the only block swept' ('... swept with a defined C') or '...; every block swept scored the
  same'. With successive halving the blocks are those trained to the end, and the phrases say
  so."""
  if sweep["worst_layer"] != sweep["best_layer"]:
    return f"{_best_block(sweep)}. {worst_label}: {_block(sweep, sweep['worst_layer'])}"
  blocks = "trained to the end" if sweep.get("halving") else "swept"
  ranked = [l for l in sweep["layers"] if l["contribution"] is not None]
  if len(ranked) > 1:
    tie = f"every block {blocks} scored the same"
  else:
    tie = f"the only block {blocks}" + ("" if len(sweep["layers"]) == 1 else " with a defined C")
  return f"{_best_block(sweep)}; {tie}"


def _gain_in_standard_errors_text(sweep: dict, gain_in_se: float | None) -> str:
  """', 5.4 standard errors'; over fewer seeds than the gain, the gain it weighs: '; on seeds
  0, 1, which both ran, +0.300, 5.4 standard errors'; '' when it cannot be weighed."""
  if gain_in_se is None:
    return ""
  if _weighs_gain_on_shared_seeds(sweep):
    return (f"; on {contribution.seeds_text(sweep['gain_paired_seeds'])}, which both ran, "
            f"{sweep['gain_paired']:+z.3f}, {gain_in_se:z.1f} standard errors")
  return f", {gain_in_se:z.1f} standard errors"


def summary_lines(sweep: dict) -> list[str]:
  """The sweep's result in a few lines, for the terminal (report.md has the rest)."""
  gain_in_se = _gain_in_standard_errors(sweep)
  lines = [f"{sweep['metric']}: base {sweep['s_base']:.3f} ± {decimals(sweep['s_base_se'])}, "
           f"full RL {sweep['s_full']:.3f} ± {decimals(sweep['s_full_se'])} "
           f"(gain {sweep['gain']:+z.3f}" + _gain_in_standard_errors_text(sweep, gain_in_se) + ")"]
  if sweep["best_layer"] is not None:
    halved = " of the blocks trained to the end" if sweep.get("halving") else ""
    lines.append(_best_and_worst(sweep, f"worst{halved}") + ".")
  if sweep["warnings"]:
    lines.append(f"{counted(len(sweep['warnings']), 'warning')}: see report.md.")
  return lines


def _tasks_lines(sweep: dict) -> list[str]:
  """report.md's line on a score over tasks: each task's score, base and full RL."""
  if not sweep["tasks"]:
    return []
  return ["A score is the mean of the tasks' scores. Each task, base -> full RL: "
          + ", ".join(f"{name} {task['metric']} {task['s_base']:.3f} -> {task['s_full']:.3f}"
                      for name, task in sweep["tasks"].items())
          + " (each block's and group's: `task_scores` in sweep.json).", ""]


def _seeds_per_run(sweep: dict) -> str:
  """'3 seeds' when every run group has as many, else their range: '1-3 seeds'."""
  counts = {len(sweep["s_base_seeds"]), len(sweep["s_full_seeds"])} | {
      len(unit["seeds"]) for unit in sweep["layers"] + sweep["groups"]}
  fewest, most = min(counts), max(counts)
  return counted(most, "seed") if fewest == most else f"{fewest}-{most} seeds"


def _above_or_below(gain: float) -> str:
  """'0.079 above', '0.100 below' (full RL may end below the base)."""
  return f"{abs(gain):.3f} {'above' if gain >= 0 else 'below'}"


def _evaluation_noise(sweep: dict) -> str:
  """report.md's paragraph weighing full RL's gain against the evaluation noise. Where base and
  full RL ran different seeds, the gain over all of them has the independent SE, and the gain
  over the seeds both ran (`gain_paired`) the paired one, which weighs it."""
  paired = sweep["gain_paired_se"] is not None
  gain_in_se = _gain_in_standard_errors(sweep)
  change = "gain" if sweep["gain"] >= 0 else "loss"
  weighed_change = "gain" if (sweep["gain_paired"] if paired else sweep["gain"]) >= 0 else "loss"
  noise = ("undefined (a single test problem)" if sweep["gain_se"] is None and not paired
           else "0")
  verdict = (f": the {weighed_change} is {abs(gain_in_se):.1f} standard errors."
             if gain_in_se is not None
             else f": its standard error is {noise}, so the {weighed_change} cannot be weighed "
             "against the noise.")
  independent = (f"Full RL scored {_above_or_below(sweep['gain'])} the base. The standard error "
                 f"of that {change} is {decimals(sweep['gain_se'])} treating the two "
                 "evaluations as independent")
  if _weighs_gain_on_shared_seeds(sweep):
    text = (f"{independent}. On {contribution.seeds_text(sweep['gain_paired_seeds'])}, which "
            f"both ran, full RL scored {_above_or_below(sweep['gain_paired'])} the base, with a "
            f"standard error of {sweep['gain_paired_se']:.3f} from the per-problem differences "
            f"(both are scored on the same problems){verdict}")
  else:
    text = (independent + (f", {sweep['gain_paired_se']:.3f} from the per-problem differences "
                           f"(both are scored on the same problems{_paired_seeds_text(sweep)})"
                           if paired else "")
            + verdict)
  return text + (" That is too close to the noise for C(k) to mean much: train longer, or "
                 "evaluate on more problems." if gain_in_se is None or abs(gain_in_se) < 3
                 else "")


def markdown_report(sweep: dict, sweep_dir: Path, command: str | None) -> str:
  lines = [
      f"# Layer-contribution sweep: {_title(sweep)}", "",
      f"Model `{sweep['model']}` ({sweep['num_layers']} blocks), task `{sweep['task']}`, "
      f"algorithm `{sweep['algorithm']}`; metric {sweep['metric']} on {sweep['num_problems']} "
      f"test problems; {_seeds_per_run(sweep)} per run; decoding: "
      + ", ".join(f"{k}={v}" for k, v in sweep["decoding"].items()) + ".", "",
      *_tasks_lines(sweep),
      "C(k) = (S_k - S_base) / (S_full - S_base): 1 matches full RL, 0 the base model. Scores are "
      "means over seeds; SE is the evaluation noise over test problems; C is computed from the "
      "mean scores over the block's seeds (base and full RL over the same seeds), its error is "
      "the std over seeds of the per-seed C when there are several seeds, else the "
      "delta-method SE.", "",
      "| run | score | SE | std over seeds | C(k) | C error |",
      "|---|---|---|---|---|---|",
      f"| base | {decimals(sweep['s_base'])} | {decimals(sweep['s_base_se'])} | "
      f"{decimals(sweep['s_base_std'])} | 0 | |",
      f"| full RL | {decimals(sweep['s_full'])} | {decimals(sweep['s_full_se'])} | "
      f"{decimals(sweep['s_full_std'])} | 1 | |",
  ]
  for l in sweep["layers"]:
    error, _ = contribution_error_bars(l)
    lines.append(f"| block {l['layer']} | {decimals(l['score'])} | {decimals(l['score_se'])} | "
                 f"{decimals(l['score_std'])} | {decimals(l['contribution'], 2)} | "
                 f"{decimals(error, 2)} |")
  lines.append("")
  lines += ["## Evaluation noise", "", _evaluation_noise(sweep), ""]
  if sweep["best_layer"] is not None:
    halved = bool(sweep.get("halving"))
    best_and_worst = _best_and_worst(sweep, "Worst" + (
        " of the blocks that trained to the end (successive halving stopped the others "
        "earlier: see below)" if halved else ""))
    lines += ["## Best and worst block", "",
              best_and_worst[0].upper() + best_and_worst[1:] + ".",
              f"Mean C by depth{' (the same blocks)' if halved else ''}: "
              f"{_depth_thirds(sweep)}.", "",
              "## Compared with the paper", "", PAPER_FINDING, ""]
  lines += _halving_section(sweep)
  lines += _groups_section(sweep)
  lines += _cost_section(sweep)
  if sweep["warnings"]:
    lines += ["## Warnings", ""] + [f"- {w}" for w in sweep["warnings"]] + [""]
  rerun = f"`{command}`" if command else "`jaxlayer sweep --config CONFIG --config.sweep.dir=" \
                                         f"{sweep_dir}`"
  lines += ["## Files and rerunning", "",
            "`sweep.json` (all numbers), `sweep.csv` (one row per run group), `contribution.png`, "
            "`curves.png`, `runs/<run>/result.json` (each run, with per-problem scores).", "",
            f"Rerun or extend (more blocks with `--config.sweep.layers`, more seeds with "
            f"`--config.sweep.seeds`): {rerun}. Finished runs are skipped.", ""]
  return "\n".join(lines)


def write_report(sweep_dir: str | os.PathLike) -> dict[str, Path]:
  """Writes every report file from the sweep directory's results; returns name -> path."""
  sweep_dir = Path(sweep_dir)
  manifest = store.load_manifest(sweep_dir)
  results, rung_results = store.load_results(sweep_dir), store.load_rung_results(sweep_dir)
  sweep = build_sweep_json(manifest, results, rung_results)
  outputs = {name: sweep_dir / name for name in OUTPUT_FILES}
  store.write_json_atomic(outputs["sweep.json"], sweep)
  paths.write_text_atomic(outputs["sweep.csv"], _csv_text(sweep))
  plot_contribution(sweep, outputs["contribution.png"])
  # Runs that successive halving stopped draw their curves to the rung where they stopped.
  plot_curves(results + _furthest_stopped(results, rung_results), sweep["num_layers"],
              _title(sweep), outputs["curves.png"])
  paths.write_text_atomic(outputs["report.md"],
                          markdown_report(sweep, sweep_dir, manifest.get("command")))
  return outputs
