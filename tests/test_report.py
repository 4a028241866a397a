"""The sweep report: every output file, with the documented keys and the right numbers."""

import csv
import json
import math
import statistics

import pytest
from matplotlib import image

from jaxlayer.sweep import report, runner, store, strategies
from jaxlayer.sweep.contribution import UndefinedContributionWarning
from tests.sweep_fakes import NUM_PROBLEMS, FakeRL, FakeTasksRL, make_config

SWEEP_KEYS = {"model", "num_layers", "task", "algorithm", "metric", "num_problems", "decoding",
              "seeds", "s_base", "s_base_std", "s_base_se", "s_base_seeds", "s_full", "s_full_std",
              "s_full_se", "s_full_seeds", "gain", "gain_se", "gain_paired", "gain_paired_se",
              "gain_paired_seeds", "full_cost",
              "layers", "groups", "best_layer", "worst_layer", "halving", "warnings", "settings",
              "tasks"}
LAYER_KEYS = {"layer", "score", "score_std", "score_se", "contribution", "s_base", "s_full",
              "contribution_se",
              "contribution_seed_mean", "contribution_std", "seeds", "per_seed_score",
              "per_seed_contribution", "cost", "task_scores"}
GROUP_KEYS = LAYER_KEYS - {"layer"} | {"blocks", "contribution_alone"}
BLOCKS = {0: 14, 1: 27, 2: 20, 3: 8}  # solved of 40; base 12, full 24: block 3 ends below base


def _sweep(tmp_path, fake, seeds=1, layers="all"):
  return runner.run_sweep(make_config(tmp_path / "sweep", layers=layers, seeds=seeds),
                          train_fn=fake.train, eval_fn=fake.eval, num_layers=len(BLOCKS))


def test_report_writes_every_file_with_the_documented_keys_and_numbers(tmp_path):
  fake = FakeRL(BLOCKS, seed_shift=2)
  sweep_dir = _sweep(tmp_path, fake, seeds=3)
  for name in report.OUTPUT_FILES:
    assert (sweep_dir / name).stat().st_size > 0

  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert set(sweep) == SWEEP_KEYS
  assert all(set(l) == LAYER_KEYS for l in sweep["layers"])
  assert (sweep["model"], sweep["task"], sweep["algorithm"]) == ("assets/tiny-arith", "arithmetic",
                                                                 "grpo")
  assert sweep["metric"] == "pass@1" and sweep["num_problems"] == NUM_PROBLEMS
  assert sweep["seeds"] == [0, 1, 2] and sweep["halving"] is None
  # greedy pass@1 only: the sampling settings played no part and are not reported, nor is
  # eval.batch_size, which changes no score (a resumed sweep may change it)
  assert sweep["decoding"] == {"num_samples": 0, "max_new_tokens": 8}

  def scores(correct):  # per seed, as the fake scores them
    return [(correct + 2 * seed) / NUM_PROBLEMS for seed in range(3)]
  base, full = scores(12), scores(24)
  assert sweep["s_base"] == pytest.approx(statistics.mean(base))
  assert sweep["s_base_std"] == pytest.approx(statistics.stdev(base))
  # Evaluation SE: root-mean-square over seeds of the binomial sqrt(p (1 - p) / n).
  assert sweep["s_base_se"] == pytest.approx(
      math.sqrt(statistics.mean(b * (1 - b) / NUM_PROBLEMS for b in base)))
  assert sweep["s_full"] == pytest.approx(statistics.mean(full))
  assert sweep["gain"] == pytest.approx(statistics.mean(full) - statistics.mean(base))
  for layer in sweep["layers"]:
    k = scores(BLOCKS[layer["layer"]])
    assert layer["score"] == pytest.approx(statistics.mean(k))
    mean_k, mean_base, mean_full = statistics.mean(k), statistics.mean(base), statistics.mean(full)
    assert layer["contribution"] == pytest.approx((mean_k - mean_base) / (mean_full - mean_base))
    assert layer["per_seed_score"] == pytest.approx(k)
    # Every block ran the seeds base and full RL ran: its C is over all of theirs.
    assert (layer["s_base"], layer["s_full"]) == (sweep["s_base"], sweep["s_full"])
  by_layer = {l["layer"]: l for l in sweep["layers"]}
  assert by_layer[3]["contribution"] < 0
  assert sweep["best_layer"] == max(BLOCKS, key=BLOCKS.get) == 1
  assert sweep["worst_layer"] == min(BLOCKS, key=BLOCKS.get) == 3

  rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
  assert [r["run"] for r in rows] == ["base", "full"] + [f"layer{k:02d}" for k in sorted(BLOCKS)]
  assert tuple(rows[0]) == report.CSV_COLUMNS
  assert float(rows[3]["contribution"]) == pytest.approx(by_layer[1]["contribution"])
  assert rows[0]["contribution"] == ""

  for name in ("contribution.png", "curves.png"):
    height, width, _ = image.imread(sweep_dir / name).shape
    assert height > 300 and width > 600
  markdown = (sweep_dir / "report.md").read_text()
  assert "Best: block 1" in markdown and "Worst: block 3" in markdown
  assert f"| block 3 | {by_layer[3]['score']:.3f} |" in markdown
  assert "The paper finds" in markdown and "standard errors" in markdown
  # Its weak blocks of the 36-block models too, which lie at the input (8B's below the base):
  # quoting only those near the output read as if a weak block 0 disagreed with it.
  assert "weak at 2 (0.66) / 0 (-0.51), next to the embeddings" in markdown
  assert f"Full RL scored {sweep['gain']:.3f} above the base. The standard error of that gain " \
         f"is {sweep['gain_se']:.3f}" in markdown


def test_a_block_with_fewer_seeds_is_set_against_base_and_full_rl_on_its_seeds(tmp_path):
  """Block 0 with seeds 0-2 (as base and full RL), then block 1 with seed 0 alone: every seed
  solves 2 problems more, so C(1) against base's and full RL's means over seeds 0-2 was
  (27 - 14) / (26 - 14) = 1.08; on its seed it is (27 - 12) / (24 - 12) = 1.25."""
  fake = FakeRL(BLOCKS, seed_shift=2)
  _sweep(tmp_path, fake, seeds=3, layers="0")
  sweep_dir = _sweep(tmp_path, fake, seeds=1, layers="0,1")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert sweep["s_base_seeds"] == sweep["s_full_seeds"] == [0, 1, 2]
  block0, block1 = sweep["layers"]
  assert block0["seeds"] == [0, 1, 2] and block1["seeds"] == [0]
  assert block0["contribution"] == pytest.approx((16 - 14) / (26 - 14))  # all seeds: as before
  assert block1["contribution"] == pytest.approx(1.25)
  assert block1["per_seed_contribution"] == pytest.approx([1.25])

  def se(correct):  # binomial, one seed
    return math.sqrt(correct / NUM_PROBLEMS * (1 - correct / NUM_PROBLEMS) / NUM_PROBLEMS)
  # Delta method over seed 0: (se_k^2 + (C se_full)^2 + ((C - 1) se_base)^2) / gain^2.
  assert block1["contribution_se"] == pytest.approx(
      math.sqrt(se(27)**2 + (1.25 * se(24))**2 + (0.25 * se(12))**2) / (12 / NUM_PROBLEMS))
  rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
  assert [(r["run"], r["num_seeds"]) for r in rows] == [("base", "3"), ("full", "3"),
                                                        ("layer00", "3"), ("layer01", "1")]
  # What each C divides by, in its row: block 1's C is not (score - base) / (full - base) of
  # the rows above, and sweep.csv alone did not say what it was.
  for row in rows[2:]:
    score, s_base, s_full = (float(row[key]) for key in ("score", "s_base", "s_full"))
    assert float(row["contribution"]) == pytest.approx((score - s_base) / (s_full - s_base))
  assert (float(rows[3]["s_base"]), float(rows[3]["s_full"])) == pytest.approx((12 / 40, 24 / 40))
  markdown = (sweep_dir / "report.md").read_text()
  assert "test problems; 1-3 seeds per run; decoding" in markdown
  assert "| block 1 | 0.675 | 0.074 | n/a | 1.25 | 0.41 |" in markdown
  even = json.loads((_sweep(tmp_path / "even", fake, seeds=3) / "sweep.json").read_text())
  assert "test problems; 3 seeds per run; decoding" in (
      tmp_path / "even" / "sweep" / "report.md").read_text()
  assert even["layers"][1]["contribution"] == pytest.approx((29 - 14) / (26 - 14))


def test_blocks_with_different_seeds_are_ranked_by_their_c_not_by_scores_over_other_seeds(
    tmp_path):
  """Every seed solves 4 problems more. Block 0 on seed 0 solves 20 (C = (20 - 12) / (24 - 12)
  = 0.67); block 1 on seeds 0-2 solves 18 + 4s (C = 0.5), a higher mean score (0.55 against
  0.5) from its later seeds alone. Ranked by score, block 1 was the best and block 0 the worst,
  and top1@ trained block 1."""
  fake = FakeRL({0: 20, 1: 18}, seed_shift=4)
  _sweep(tmp_path, fake, seeds=3, layers="1")
  sweep_dir = _sweep(tmp_path, fake, seeds=1, layers="0,1")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  block0, block1 = sweep["layers"]
  assert (block0["score"], block1["score"]) == (pytest.approx(0.5), pytest.approx(0.55))
  assert (block0["contribution"], block1["contribution"]) == (pytest.approx(2 / 3),
                                                              pytest.approx(0.5))
  assert (sweep["best_layer"], sweep["worst_layer"]) == (0, 1)
  assert ("Best: block 0 (C = 0.67, score 0.500). Worst: block 1 (C = 0.50, score 0.550)."
          in (sweep_dir / "report.md").read_text())
  assert strategies.ranked_blocks(sweep_dir, 1, largest=True, num_layers=len(BLOCKS)) == [0]


def test_a_score_over_tasks_is_their_mean_with_its_errors_and_its_c(tmp_path, capsys,
                                                                   monkeypatch):
  """With eval.tasks a sweep scores what `jaxlayer eval` does (the paper's math score: the mean
  of four benchmarks); it scored task.name alone before. FakeTasksRL: alpha by pass@1 on 40
  problems, beta by mean@2 on 20 (full credit on solved // 4, half credit on as many)."""
  fake = FakeTasksRL({0: 20, 1: 28})  # solved of alpha's 40; base 12, full 24
  figures = {}
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.update({path.name: fig}))
  sweep_dir = runner.run_sweep(make_config(tmp_path / "sweep", layers="0,1"),
                               train_fn=fake.train, eval_fn=fake.eval, num_layers=2)
  base_alpha = [1.0] * 12 + [0.0] * 28
  full_alpha = [1.0] * 24 + [0.0] * 16
  base_beta = [1.0] * 3 + [0.5] * 3 + [0.0] * 14
  full_beta = [1.0] * 6 + [0.5] * 6 + [0.0] * 8
  base_se = math.hypot(math.sqrt(0.3 * 0.7 / 40), statistics.stdev(base_beta) / math.sqrt(20)) / 2

  result = json.loads((sweep_dir / "runs/base-seed0/result.json").read_text())
  assert result["score"] == pytest.approx((0.3 + 4.5 / 20) / 2)
  assert result["score_se"] == pytest.approx(base_se)
  assert (result["metric"], result["num_problems"]) == ("mean of alpha pass@1, beta mean@2", 60)
  assert "per_problem" not in result
  assert result["tasks"]["alpha"] == {"metric": "pass@1", "score": 0.3, "num_problems": 40,
                                      "score_se": pytest.approx(math.sqrt(0.3 * 0.7 / 40)),
                                      "per_problem": base_alpha, "problems": None}
  assert result["tasks"]["beta"]["per_problem"] == base_beta
  assert (f"base-seed0: score 0.2625 ± {base_se:.4f} (alpha pass@1 0.3000, beta mean@2 "
          "0.2250) (train 0.0 s") in capsys.readouterr().out

  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  s_base, s_full = (0.3 + 4.5 / 20) / 2, (0.6 + 9 / 20) / 2
  assert (sweep["s_base"], sweep["s_full"]) == (pytest.approx(s_base), pytest.approx(s_full))
  assert sweep["s_base_se"] == pytest.approx(base_se)
  block_scores = {0: (0.5 + 7.5 / 20) / 2, 1: (0.7 + 10.5 / 20) / 2}
  for layer in sweep["layers"]:
    assert layer["contribution"] == pytest.approx(
        (block_scores[layer["layer"]] - s_base) / (s_full - s_base))
  assert sweep["layers"][1]["task_scores"] == {"alpha": 0.7, "beta": 10.5 / 20}
  assert sweep["tasks"] == {"alpha": {"metric": "pass@1", "s_base": 0.3, "s_full": 0.6},
                            "beta": {"metric": "mean@2", "s_base": 4.5 / 20, "s_full": 9 / 20}}
  # Each task's paired SE, from its per-problem differences, then the SE of their mean.
  alpha_differences = [f - b for f, b in zip(full_alpha, base_alpha)]
  beta_differences = [f - b for f, b in zip(full_beta, base_beta)]
  assert sweep["gain_paired_se"] == pytest.approx(math.hypot(
      statistics.stdev(alpha_differences) / math.sqrt(40),
      statistics.stdev(beta_differences) / math.sqrt(20)) / 2)
  rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
  assert tuple(rows[0]) == report.CSV_COLUMNS + ("score_alpha", "score_beta")
  assert [(r["run"], float(r["score_alpha"]), float(r["score_beta"])) for r in rows] == [
      ("base", 0.3, 4.5 / 20), ("full", 0.6, 9 / 20), ("layer00", 0.5, 7.5 / 20),
      ("layer01", 0.7, 10.5 / 20)]
  markdown = (sweep_dir / "report.md").read_text()
  assert "metric mean of alpha pass@1, beta mean@2 on 60 test problems" in markdown
  assert "metric=" not in markdown  # eval.metric is not beta's: the headline names each metric
  assert ("Each task, base -> full RL: alpha pass@1 0.300 -> 0.600, beta mean@2 0.225 -> 0.450"
          in markdown)
  (score_axis,) = figures["contribution.png"].axes[0].child_axes  # (report.md names the tasks)
  assert score_axis.get_ylabel() == "score (mean of 2 tasks)"


def test_groups_of_blocks_are_reported_beside_their_blocks_alone(tmp_path):
  fake = FakeRL({**BLOCKS, (0, 1): 30, (2, 3): 16})
  config = make_config(tmp_path / "sweep", layers="0,1,2")  # block 3 is not trained alone
  config.sweep.groups = "0+1,2+3"
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  contribution = lambda correct: (correct - 12) / (24 - 12)  # noqa: E731 (base 12, full 24)
  pair_01, pair_23 = sweep["groups"]
  assert set(pair_01) == set(pair_23) == GROUP_KEYS
  assert pair_01["blocks"] == [0, 1] and pair_01["score"] == pytest.approx(30 / NUM_PROBLEMS)
  assert pair_01["contribution"] == pytest.approx(contribution(30)) == 1.5
  assert pair_01["contribution_alone"] == pytest.approx([contribution(14), contribution(27)])
  assert pair_23["contribution_alone"] == [pytest.approx(contribution(20)), None]
  assert pair_01["cost"]["trained_params"] == 100 + 110
  assert [l["layer"] for l in sweep["layers"]] == [0, 1, 2] and sweep["best_layer"] == 1

  rows = {r["run"]: r for r in csv.DictReader((sweep_dir / "sweep.csv").open())}
  assert rows["group02+03"]["layer"] == "2+3"
  assert float(rows["group02+03"]["contribution"]) == pytest.approx(contribution(16))
  markdown = (sweep_dir / "report.md").read_text()
  assert (f"| 0+1 | 0.750 | {pair_01['score_se']:.3f} | 1.50 | "
          f"{pair_01['contribution_se']:.2f} | 0.17, 1.25 |") in markdown
  assert "| 2+3 | 0.400 |" in markdown and "| 0.67, n/a |" in markdown
  # Only 0+1 has both blocks alone: 1.50 - max(0.17, 1.25) = +0.25; their sum 1.42.
  assert "differs by +0.25 on average (1 of 1 group above it)" in markdown
  assert "would predict 1.42 on average; the groups reached 1.50" in markdown
  assert "| blocks 0+1 | 210 |" in markdown
  for name in ("contribution.png", "curves.png"):
    height, width, _ = image.imread(sweep_dir / name).shape
    assert height > 300 and width > 600


def test_halving_rungs_are_reported_with_how_well_they_ordered_the_blocks(tmp_path, monkeypatch):
  """halving_keep=1: every block reaches the end, so each rung's order can be set against the
  final one; halving_keep=0.5 on the same results: stopped runs' curves end at their rung."""
  rung_correct = {("full", 20): 18, (0, 20): 15, (1, 20): 21, (2, 20): 12, (3, 20): 14}
  fake = FakeRL(BLOCKS, rung_correct=rung_correct)
  config = make_config(tmp_path / "sweep")  # train.steps = 60
  config.sweep.update(halving_steps="20", halving_keep=1.0)
  drawn = []
  plot_curves = report.plot_curves
  monkeypatch.setattr(report, "plot_curves", lambda results, *args: (
      drawn.append({r["run"]: len(r["reward_curve"]) for r in results}),
      plot_curves(results, *args)))
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  (rung,) = sweep["halving"]["rungs"]
  # C after 20 steps, against full RL after 20: (15, 21, 12, 14) - 12 over 18 - 12.
  assert [l["contribution"] for l in rung["layers"]] == pytest.approx([0.5, 1.5, 0, 1 / 3])
  assert all(l["went_on"] for l in rung["layers"])
  # Ranks of blocks 0-3 by C after 20 steps (3, 4, 1, 2) and at the end (BLOCKS: 2, 4, 3, 1):
  # Spearman 1 - 6 * (1 + 0 + 4 + 1) / (4 * 15) = 0.4.
  assert rung["rank_correlation_with_final"] == pytest.approx(0.4)
  assert rung["rank_correlation_blocks"] == 4
  assert (sweep["halving"]["rl_steps"], sweep["halving"]["rl_steps_without_halving"]) == (300, 300)
  markdown = (sweep_dir / "report.md").read_text()
  assert "| block 1 | 0.525 / 1.50 | 0.675 / 1.25 |" in markdown
  assert "their scores after 60 steps): after 20 steps 0.40 (4 blocks)." in markdown
  assert drawn[-1]["layer03-seed0"] == fake.steps
  rows = {r["run"]: r for r in csv.DictReader((sweep_dir / "sweep.csv").open())}
  assert [(run, r["steps"]) for run, r in rows.items()] == [
      ("base", "0"), ("full", "60"), ("layer00", "60"), ("layer01", "60"), ("layer02", "60"),
      ("layer03", "60"), ("full-step20", "20"), ("layer00-step20", "20"),
      ("layer01-step20", "20"), ("layer02-step20", "20"), ("layer03-step20", "20")]
  assert float(rows["full-step20"]["score"]) == pytest.approx(18 / NUM_PROBLEMS)
  assert float(rows["layer01-step20"]["score"]) == pytest.approx(21 / NUM_PROBLEMS)
  assert float(rows["layer01-step20"]["contribution"]) == pytest.approx(1.5)
  height, width, _ = image.imread(sweep_dir / "contribution.png").shape
  assert height > 300 and width > 600

  config.sweep.update(dir=str(tmp_path / "halved"), halving_keep=0.5)
  runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=len(BLOCKS))
  assert drawn[-1] == {"base-seed0": 0, "full-seed0": fake.steps, "layer00-seed0": fake.steps,
                       "layer01-seed0": fake.steps, "layer02-seed0-step20": 20,
                       "layer03-seed0-step20": 20}  # after 20 steps: 1 and 0 lead

  # Full RL below the base at a rung: C's sign flips there, which the report says.
  fake.rung_correct["full", 20] = 10
  config.sweep.dir = str(tmp_path / "early")
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  (warning,) = json.loads((sweep_dir / "sweep.json").read_text())["warnings"]
  assert warning.startswith("after 20 steps full RL scored 0.2500, below the base (0.3000)")
  assert warning in (sweep_dir / "report.md").read_text()


def test_each_run_cost_is_its_mean_over_seeds_and_set_beside_full_rl(tmp_path):
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS), seeds=2, layers="0,2")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  results = {r["run"]: r for r in store.load_results(sweep_dir)}

  def expected(layers):  # FakeRL.cost over seeds 0 and 1, with the wall time the sweep measured
    costs = [FakeRL.cost(layers, seed) for seed in (0, 1)]
    name = "full" if layers is None else f"layer{layers[0]:02d}"
    return {**{k: statistics.mean(c[k] for c in costs) for k in costs[0]},
            "train_seconds": statistics.mean(results[f"{name}-seed{s}"]["train_seconds"]
                                             for s in (0, 1))}
  assert sweep["full_cost"] == pytest.approx(expected(None))
  assert sweep["full_cost"]["seconds_per_step"] == pytest.approx(1.5)  # 1.0 and 2.0
  for layer in sweep["layers"]:
    assert layer["cost"] == pytest.approx(expected([layer["layer"]]))
  assert results["base-seed0"]["cost"] is None

  rows = {r["run"]: r for r in csv.DictReader((sweep_dir / "sweep.csv").open())}
  assert float(rows["layer02"]["trained_params"]) == 120
  assert rows["base"]["seconds_per_step"] == ""
  markdown = (sweep_dir / "report.md").read_text()
  # block 2: 120 parameters, 964 B of optimizer state, 2.12 KB, 0.62 s/step = 0.41x full's 1.5
  assert "| block 2 | 120 | 964 B | 2.12 KB | 0.62 | 0.41x |" in markdown
  assert "| full RL | 1,000 | 8.00 KB | 3.00 KB | 1.5 | 1.00x |" in markdown
  # mean of blocks 0 and 2: (0.10 + 0.12) / 2 of the parameters, (0.60 + 0.62) / 2 / 1.5 s/step
  assert "0.11x the trained parameters" in markdown and "0.41x the seconds per step" in markdown


def test_a_train_fn_without_costs_reports_only_the_training_time(tmp_path):
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS, costs=False), layers="1")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  results = {r["run"]: r for r in store.load_results(sweep_dir)}
  assert sweep["layers"][0]["cost"] == {**dict.fromkeys(store.COST_KEYS),
                                        "train_seconds": results["layer01-seed0"]["train_seconds"]}
  assert sweep["full_cost"]["train_seconds"] == results["full-seed0"]["train_seconds"]
  markdown = (sweep_dir / "report.md").read_text()
  assert "| block 1 | n/a | n/a | n/a | n/a | n/a |" in markdown
  assert "One block against full RL" not in markdown


def test_results_written_before_costs_and_groups_existed_still_report(tmp_path):
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS), layers="0,1")
  for path in sweep_dir.glob("runs/*/result.json"):  # as jaxlayer wrote them before
    result = store.read_json(path)
    del result["cost"], result["blocks"]
    store.write_json_atomic(path, result)
  report.write_report(sweep_dir)
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert [l["layer"] for l in sweep["layers"]] == [0, 1] and sweep["groups"] == []
  train_seconds = {r["run"]: r["train_seconds"] for r in store.load_results(sweep_dir)}
  assert sweep["layers"][0]["cost"] == {**dict.fromkeys(store.COST_KEYS),
                                        "train_seconds": train_seconds["layer00-seed0"]}


def test_runs_trained_on_different_devices_are_named_in_a_warning(tmp_path):
  """A sweep started on a mesh of 8 devices and resumed on one: its runs' memory per device and
  seconds per step do not compare, and the report says which run trained where."""
  fake, eight = FakeRL(BLOCKS), "8 cpu devices, mesh data=2 x fsdp=2 x tensor=2"
  one = "1 cpu device, mesh data=1 x fsdp=1 x tensor=1"

  def train(*args, **kwargs):  # full RL on the 8 devices, the blocks after the move on one
    devices = eight if kwargs["layers"] is None else one
    return {**fake.train(*args, **kwargs), "devices": devices}

  sweep_dir = runner.run_sweep(make_config(tmp_path / "sweep", layers="all", seeds=2),
                               train_fn=train, eval_fn=fake.eval, num_layers=len(BLOCKS))
  results = {r["run"]: r for r in store.load_results(sweep_dir)}
  assert results["full-seed0"]["devices"] == eight and results["base-seed0"]["devices"] is None
  warning = (f"the runs trained on different devices or meshes ({eight}: full-seed0, "
             f"full-seed1; {one}: layer00-seed0, layer00-seed1, layer01-seed0, layer01-seed1 "
             "and 4 more): the Cost section's memory per device")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert [w for w in sweep["warnings"] if w.startswith(warning)]
  assert warning in (sweep_dir / "report.md").read_text()
  # All on the same devices (or unnamed by a train_fn): no warning.
  same = _sweep(tmp_path / "same", FakeRL(BLOCKS), layers="0,1")
  assert not [w for w in json.loads((same / "sweep.json").read_text())["warnings"]
              if "different devices" in w]


@pytest.mark.eight_devices
def test_the_devices_a_run_trained_on_name_their_kind_count_and_mesh():
  from jaxlayer import models

  mesh = models.make_mesh(2, 2, 2)
  assert runner.devices_of(mesh) == "8 cpu devices, mesh data=2 x fsdp=2 x tensor=2"
  one = models.make_mesh(devices=mesh.devices.flat[:1])
  assert runner.devices_of(one) == "1 cpu device, mesh data=1 x fsdp=1 x tensor=1"


@pytest.mark.parametrize("cost, message", [
    ([1, 2], "must be a mapping"),
    ({"flops": 1}, r"unknown key\(s\) \['flops'\]"),
    ({"train_seconds": 1.0}, r"unknown key\(s\) \['train_seconds'\]"),
    ({"seconds_per_step": float("nan")}, "seconds_per_step=nan is not a finite number"),
    ({"trained_params": "many"}, "trained_params='many' is not a finite number"),
])
def test_a_bad_cost_from_train_fn_is_a_clear_error(tmp_path, cost, message):
  fake = FakeRL(BLOCKS)
  train = lambda *args, **kwargs: {**fake.train(*args, **kwargs), "cost": cost}  # noqa: E731
  with pytest.raises(ValueError, match=message):
    runner.run_sweep(make_config(tmp_path / "sweep", layers="0"), train_fn=train,
                     eval_fn=fake.eval, num_layers=len(BLOCKS))


def test_undefined_contributions_still_give_a_complete_report(tmp_path):
  fake = FakeRL(BLOCKS, base_correct=20, full_correct=20)
  with pytest.warns(UndefinedContributionWarning):
    sweep_dir = _sweep(tmp_path, fake)
  sweep = json.loads((sweep_dir / "sweep.json").read_text())  # strict JSON: null, never NaN
  assert all(l["contribution"] is None and l["contribution_se"] is None for l in sweep["layers"])
  assert sweep["best_layer"] is None and "S_full == S_base" in sweep["warnings"][0]
  markdown = (sweep_dir / "report.md").read_text()
  assert "## Warnings" in markdown
  # The fakes solve the same problems before and after: no noise to weigh the gain against.
  assert sweep["gain_paired_se"] == 0
  assert "inf" not in markdown and "cannot be weighed against the noise" in markdown
  assert "NaN" not in (sweep_dir / "sweep.json").read_text()
  for name in report.OUTPUT_FILES:
    assert (sweep_dir / name).stat().st_size > 0


def test_a_sweep_where_no_block_improved_on_the_base_says_so(tmp_path):
  """Base 12 and full RL 24 of 40 solved, the blocks 12 or fewer: C = (k - 12) / 12 is 0 for
  block 1 and below 0 for the others, so none is "best"."""
  sweep_dir = _sweep(tmp_path, FakeRL({0: 11, 1: 12, 2: 10, 3: 9}))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert (sweep["best_layer"], sweep["worst_layer"]) == (1, 3)
  assert report.summary_lines(sweep)[1] == (
      "no block improved on the base; the closest: block 1 (C = 0.00, score 0.300). worst: "
      "block 3 (C = -0.25, score 0.225).")
  # A sweep.json written before blocks carried s_base and s_full reads the same.
  written_before = {**sweep, "layers": [{key: value for key, value in l.items()
                                         if key not in ("s_base", "s_full")}
                                        for l in sweep["layers"]]}
  assert report.summary_lines(written_before) == report.summary_lines(sweep)
  assert ("No block improved on the base; the closest: block 1 (C = 0.00, score 0.300). Worst: "
          "block 3 (C = -0.25, score 0.225).") in (sweep_dir / "report.md").read_text()


def test_full_rl_below_the_base_ranks_the_blocks_by_score_and_warns(tmp_path):
  """Base 20 and full RL 16 of 40 solved: C = (k - 20) / -4 is largest for the block that
  solved fewest (block 3, 10: C = 2.5), which is the worst, not the best."""
  sweep_dir = _sweep(tmp_path, FakeRL({0: 14, 1: 26, 2: 20, 3: 10}, base_correct=20,
                                      full_correct=16))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert [l["contribution"] for l in sweep["layers"]] == pytest.approx([1.5, -1.5, 0.0, 2.5])
  assert (sweep["best_layer"], sweep["worst_layer"]) == (1, 3)
  assert sweep["warnings"] == [
      "full RL scored 0.4000, below the base (0.5000): C(k) divides by a negative gain, so a "
      "higher score gives a lower C, and C = 1 is no target. The best and worst blocks are "
      "those with the smallest and largest C. Train longer or with another learning rate, or "
      "evaluate on more problems."]
  assert report.summary_lines(sweep)[1:] == [
      "best: block 1 (C = -1.50, score 0.650). worst: block 3 (C = 2.50, score 0.250).",
      "1 warning: see report.md."]
  # The report says full RL lost 0.1 (not that it "gained -0.100", "-N standard errors").
  markdown = (sweep_dir / "report.md").read_text()
  loss_in_se = 0.1 / sweep["gain_paired_se"]
  assert (f"Full RL scored 0.100 below the base. The standard error of that loss is "
          f"{sweep['gain_se']:.3f} treating the two evaluations as independent, "
          f"{sweep['gain_paired_se']:.3f} from the per-problem differences (both are scored on "
          f"the same problems): the loss is {loss_in_se:.1f} standard errors.") in markdown



def test_the_paired_se_of_the_gain_pairs_base_and_full_rl_by_seed(tmp_path):
  """Seed s solves 12 + 2s problems of 40 with the base, 24 + 2s with full RL. Both on seeds
  0, 1: each problem's mean over them, as before. Full RL on seed 0 alone: its differences
  from the base's seed 0, not from the base's mean over seeds 0 and 1."""
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS, seed_shift=2), seeds=2)
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert sweep["gain_paired_seeds"] == [0, 1]
  # Problems 0-11: 0; 12-13: 1 - 0.5; 14-23: 1; 24-25: 0.5; 26-39: 0.
  both_seeds = [0.0] * 12 + [0.5] * 2 + [1.0] * 10 + [0.5] * 2 + [0.0] * 14
  assert sweep["gain_paired_se"] == pytest.approx(statistics.stdev(both_seeds) / math.sqrt(40))
  assert "scored on the same problems):" in (sweep_dir / "report.md").read_text()

  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  full_on_seed0 = [r for r in results if not (r["kind"] == "full" and r["seed"] == 1)]
  sweep = report.build_sweep_json(manifest, full_on_seed0)
  assert sweep["gain_paired_seeds"] == [0]
  seed0 = [0.0] * 12 + [1.0] * 12 + [0.0] * 16  # 24 solved against 12
  assert sweep["gain_paired_se"] == pytest.approx(statistics.stdev(seed0) / math.sqrt(40))
  assert ("On seed 0, which both ran, full RL scored 0.300 above the base, with a standard error "
          f"of {sweep['gain_paired_se']:.3f} from the per-problem differences (both are scored "
          "on the same problems):" in report.markdown_report(sweep, sweep_dir, None))
  # Sharing no seed, each averages over its own: full RL's seed 1 against base's seed 0.
  full_on_seed1 = [r for r in results if not (r["kind"] == "full" and r["seed"] == 0)]
  base_on_seed0 = [r for r in full_on_seed1 if not (r["kind"] == "base" and r["seed"] == 1)]
  sweep = report.build_sweep_json(manifest, base_on_seed0)
  assert sweep["gain_paired_seeds"] is None
  seed1_against_seed0 = [0.0] * 12 + [1.0] * 14 + [0.0] * 14  # 26 solved against 12
  assert sweep["gain_paired_se"] == pytest.approx(
      statistics.stdev(seed1_against_seed0) / math.sqrt(40))
  assert ("scored on the same problems; they share no seed, so each averages over its own):"
          in report.markdown_report(sweep, sweep_dir, None))


def _results_without(results: list[dict], kind: str, seeds: set[int]) -> list[dict]:
  """The results but those of `kind` (a result's "run" without "-seedN": "full", "layer02") on
  `seeds`."""
  return [r for r in results if not (r["run"].rsplit("-seed", 1)[0] == kind and r["seed"] in seeds)]


def test_the_negative_gain_warning_follows_the_seeds_each_c_is_over(tmp_path):
  """Base on seeds 0-2, full RL on 0, 1. Seed s solves 20 - 4s problems of 40 with the base,
  19 - 4s with full RL: over all seeds full RL gained (17 against 16 of 40), but over seeds 0,
  1, those the blocks' C are over, it lost (17 against 18), so their C divides by -1/40: block
  0 (22 - 4s) has C = (20 - 18) / (17 - 18) = -2, block 1 (17 - 4s) C = 3."""
  fake = FakeRL({0: 22, 1: 17, 2: 21}, base_correct=20, full_correct=19, seed_shift=-4)
  sweep_dir = _sweep(tmp_path, fake, seeds=3, layers="0,1,2")
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  full_on_seeds01 = _results_without(results, "full", {2})
  without_block2 = _results_without(full_on_seeds01, "layer02", {0, 1, 2})
  sweep = report.build_sweep_json(manifest, without_block2)
  assert (sweep["s_base"], sweep["s_full"]) == (pytest.approx(0.4), pytest.approx(0.425))
  assert [l["contribution"] for l in sweep["layers"]] == pytest.approx([-2.0, 3.0])
  assert sweep["warnings"] == [
      "full RL scored 0.4250, below the base (0.4500) over seeds 0, 1: C(k) divides by a "
      "negative gain, so a higher score gives a lower C, and C = 1 is no target. The best and "
      "worst blocks are those with the smallest and largest C. Train longer or with another "
      "learning rate, or evaluate on more problems."]
  assert report.summary_lines(sweep)[1] == (
      "best: block 0 (C = -2.00, score 0.450). worst: block 1 (C = 3.00, score 0.325).")
  # Block 2 on seed 2 alone shares no seed with full RL: its C is over all seeds, where full RL
  # gained (C = (13 - 16) / (17 - 16) = -3), so the warning names the blocks whose C does not.
  sweep = report.build_sweep_json(manifest, _results_without(full_on_seeds01, "layer02", {0, 1}))
  assert [l["contribution"] for l in sweep["layers"]] == pytest.approx([-2.0, 3.0, -3.0])
  # What each C divides by: 17 - 18 of 40 over seeds 0, 1; block 2's, 17 - 16 over all seeds.
  assert [(l["s_base"], l["s_full"]) for l in sweep["layers"]] == [
      (pytest.approx(0.45), pytest.approx(0.425)), (pytest.approx(0.45), pytest.approx(0.425)),
      (pytest.approx(0.4), pytest.approx(0.425))]
  assert sweep["warnings"] == [
      "full RL scored below the base on the seeds some of the C are over (block 0: 0.4250 "
      "against 0.4500 over seeds 0, 1; block 1: 0.4250 against 0.4500 over seeds 0, 1): their C "
      "divides by a negative gain, so a higher score gives a lower C, and C = 1 is no target. "
      "The best and worst blocks are ranked by C, and by -C where it divides by a negative gain. "
      "Train longer or with another learning rate, or evaluate on more problems."]
  # Every C divides by a negative gain, but over other seeds: block 0's over seeds 0, 1 (17 -
  # 18), block 1's, on seed 0 alone, over seed 0 (19 - 20: C = (17 - 20) / (19 - 20) = 3).
  only_seed0 = _results_without(without_block2, "layer01", {1, 2})
  sweep = report.build_sweep_json(manifest, _results_without(only_seed0, "layer00", {2}))
  assert [l["contribution"] for l in sweep["layers"]] == pytest.approx([-2.0, 3.0])
  assert sweep["warnings"] == [
      "full RL scored below the base on the seeds some of the C are over (block 0: 0.4250 "
      "against 0.4500 over seeds 0, 1; block 1: 0.4750 against 0.5000 over seed 0): their C "
      "divides by a negative gain, so a higher score gives a lower C, and C = 1 is no target. "
      "The best and worst blocks are ranked by C, and by -C where it divides by a negative gain. "
      "Train longer or with another learning rate, or evaluate on more problems."]


def test_a_rungs_negative_gain_warning_follows_the_seeds_each_c_is_over(tmp_path, monkeypatch):
  """After 20 steps, full RL on seeds 0, 1 solves 19 - 4s problems of 40 and the base, on
  seeds 0-2, 20 - 4s: over all seeds full RL gained (17 against 16), over seeds 0, 1, those the
  rung's C are over, it lost (17 against 18), so the plot draws no C for the rung."""
  rung_correct = {("full", 20): 19, (0, 20): 22, (1, 20): 17, (2, 20): 20, (3, 20): 18}
  fake = FakeRL({0: 22, 1: 17, 2: 20, 3: 19}, base_correct=20, full_correct=30, seed_shift=-4,
                rung_correct=rung_correct)
  config = make_config(tmp_path / "sweep", seeds=3)
  config.sweep.update(halving_steps="20", halving_keep=1.0)
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  rung_results = _results_without(store.load_rung_results(sweep_dir), "full", {2})
  sweep = report.build_sweep_json(manifest, results, rung_results)
  (rung,) = sweep["halving"]["rungs"]
  assert rung["s_full"] == pytest.approx(0.425) and sweep["s_base"] == pytest.approx(0.4)
  # Block 0 after 20 steps (22 - 4s): C = (20 - 18) / (17 - 18) over seeds 0, 1.
  assert rung["layers"][0]["contribution"] == pytest.approx(-2.0)
  assert sweep["warnings"] == [
      "after 20 steps full RL scored 0.4250, below the base (0.4500) over seeds 0, 1: C at this "
      "rung divides by a negative gain, so a higher score gives a lower C. The rung still kept "
      "the runs with the best scores; read the scores, or put the first rung later."]
  assert (rung["layers"][0]["s_base"], rung["layers"][0]["s_full"]) == (
      pytest.approx(0.45), pytest.approx(0.425))
  ax = _drawn_contribution_axes(sweep, tmp_path, monkeypatch)
  labels = [line.get_label() for line in ax.lines]
  assert not any(label.startswith("C after") for label in labels)
  assert "after 20 steps: no C, full RL not above the base" in labels


def test_no_negative_gain_warning_where_every_c_divides_by_a_gain(tmp_path):
  """Base on seeds 0-2, full RL on 0, 1. Seed s solves 12 + 4s problems of 40 with the base,
  13 + 4s with full RL: over all seeds full RL lost (15 against 16 of 40), but over seeds 0, 1,
  those the blocks' C are over, it gained (15 against 14): block 0 (14 + 4s) has C = 2, block
  1 (20 + 4s) C = 8, and no warning says C divides by a negative gain."""
  fake = FakeRL({0: 14, 1: 20}, base_correct=12, full_correct=13, seed_shift=4)
  sweep_dir = _sweep(tmp_path, fake, seeds=3, layers="0,1")
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  sweep = report.build_sweep_json(manifest, _results_without(results, "full", {2}))
  assert (sweep["s_base"], sweep["s_full"]) == (pytest.approx(0.4), pytest.approx(0.375))
  assert [l["contribution"] for l in sweep["layers"]] == pytest.approx([2.0, 8.0])
  assert sweep["warnings"] == []
  assert report.summary_lines(sweep)[1:] == [
      "best: block 1 (C = 8.00, score 0.600). worst: block 0 (C = 2.00, score 0.450)."]


def test_whether_a_block_improved_on_the_base_is_over_the_seeds_its_c_is_over(tmp_path):
  """Base on seeds 0-2, full RL and the blocks on 0, 1. Seed s solves 20 - 4s problems of 40
  with the base (16 over all seeds, 18 over seeds 0, 1), 23 - 4s with full RL, 19 - 4s with
  block 0: block 0's 17 is above the base's 16 over all seeds, but below its 18 over seeds 0,
  1, those its C is over: C = (17 - 18) / (21 - 18) = -1/3, and no block improved on it."""
  fake = FakeRL({0: 19, 1: 18}, base_correct=20, full_correct=23, seed_shift=-4)
  sweep_dir = _sweep(tmp_path, fake, seeds=3, layers="0,1")
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  for run in ("full", "layer00", "layer01"):
    results = _results_without(results, run, {2})
  sweep = report.build_sweep_json(manifest, results)
  assert (sweep["s_base"], sweep["layers"][0]["score"]) == (pytest.approx(0.4),
                                                            pytest.approx(0.425))
  assert report.summary_lines(sweep)[1] == (
      "no block improved on the base; the closest: block 0 (C = -0.33, score 0.425). worst: "
      "block 1 (C = -0.67, score 0.400).")


def test_with_equal_seeds_each_c_s_own_scores_change_no_output(tmp_path):
  """Every run on seeds 0, 1 (groups and a rung too): each C is over all of base's and full
  RL's seeds, so report.md, the summary and contribution.png are byte for byte those of the
  same sweep.json without each block's and group's s_base and s_full (as written before)."""
  fake = FakeRL({**BLOCKS, (0, 1): 25, (2, 3): 18}, seed_shift=2, rung_correct={
      ("full", 20): 18, (0, 20): 15, (1, 20): 21, (2, 20): 12, (3, 20): 14,
      ((0, 1), 20): 19, ((2, 3), 20): 13})
  config = make_config(tmp_path / "sweep", seeds=2)
  config.sweep.update(groups="0+1,2+3", halving_steps="20", halving_keep=0.5)
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  written_before = {**sweep, **{units: [{key: value for key, value in unit.items()
                                         if key not in ("s_base", "s_full")}
                                        for unit in sweep[units]]
                                for units in ("layers", "groups")}}
  assert report.markdown_report(written_before, sweep_dir, None) == report.markdown_report(
      sweep, sweep_dir, None)
  assert report.summary_lines(written_before) == report.summary_lines(sweep)
  report.plot_contribution(written_before, tmp_path / "before.png")
  report.plot_contribution(sweep, tmp_path / "now.png")
  assert (tmp_path / "before.png").read_bytes() == (tmp_path / "now.png").read_bytes()


def _binomial_se(correct_by_seed: list[int]) -> float:
  """A run group's evaluation SE: root-mean-square over seeds of sqrt(p (1 - p) / n)."""
  return math.sqrt(statistics.mean(c / NUM_PROBLEMS * (1 - c / NUM_PROBLEMS) / NUM_PROBLEMS
                                   for c in correct_by_seed))


def test_the_gain_weighed_against_the_paired_se_is_over_the_seeds_both_ran(tmp_path):
  """Seed s solves 12 + 2s problems of 40 with the base, 24 + 2s with full RL. With full RL on
  seeds 0, 1 and the base on 0-2, the gain over all seeds is (25 - 14) / 40 = 0.275, over the
  seeds both ran (25 - 13) / 40 = 0.300; the paired SE is over seeds 0, 1, so it weighs 0.300
  (4.4 standard errors), not 0.275 (4.0)."""
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS, seed_shift=2), seeds=3)
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  # Problems 0-11: 0; 12-13: 1 - 0.5; 14-23: 1; 24-25: 0.5; 26-39: 0.
  paired_se = statistics.stdev([0.0] * 12 + [0.5] * 2 + [1.0] * 10 + [0.5] * 2 + [0.0] * 14) / (
      math.sqrt(40))
  full_on_seeds01 = [r for r in results if not (r["kind"] == "full" and r["seed"] == 2)]
  sweep = report.build_sweep_json(manifest, full_on_seeds01)
  assert (sweep["gain"], sweep["gain_paired"]) == (pytest.approx(0.275), pytest.approx(0.3))
  assert sweep["gain_paired_seeds"] == [0, 1]
  assert sweep["gain_paired_se"] == pytest.approx(paired_se)
  assert f"{0.3 / paired_se:.1f}" == "4.4"
  gain_se = math.hypot(_binomial_se([24, 26]), _binomial_se([12, 14, 16]))
  assert sweep["gain_se"] == pytest.approx(gain_se)
  assert report.summary_lines(sweep)[0] == (
      f"pass@1: base 0.350 ± {_binomial_se([12, 14, 16]):.3f}, full RL 0.625 ± "
      f"{_binomial_se([24, 26]):.3f} (gain +0.275; on seeds 0, 1, which both ran, +0.300, 4.4 "
      "standard errors)")
  assert (f"Full RL scored 0.275 above the base. The standard error of that gain is "
          f"{gain_se:.3f} treating the two evaluations as independent. On seeds 0, 1, which both "
          f"ran, full RL scored 0.300 above the base, with a standard error of {paired_se:.3f} "
          "from the per-problem differences (both are scored on the same problems): the gain is "
          "4.4 standard errors.\n") in report.markdown_report(sweep, sweep_dir, None)

  # Base and full RL on the same seeds: gain_paired is gain, and the report reads as before.
  sweep = report.build_sweep_json(manifest, [r for r in full_on_seeds01 if r["seed"] != 2])
  assert sweep["gain_paired"] == sweep["gain"] == pytest.approx(0.3)
  gain_se = math.hypot(_binomial_se([24, 26]), _binomial_se([12, 14]))
  assert report.summary_lines(sweep)[0] == (
      f"pass@1: base 0.325 ± {_binomial_se([12, 14]):.3f}, full RL 0.625 ± "
      f"{_binomial_se([24, 26]):.3f} (gain +0.300, 4.4 standard errors)")
  assert (f"## Evaluation noise\n\nFull RL scored 0.300 above the base. The standard error of "
          f"that gain is {gain_se:.3f} treating the two evaluations as independent, "
          f"{paired_se:.3f} from the per-problem differences (both are scored on the same "
          "problems): the gain is 4.4 standard errors.\n\n## Best and worst block"
          ) in report.markdown_report(sweep, sweep_dir, None)


def test_the_verdict_names_the_change_the_paired_se_weighs_where_it_differs_from_the_gain(
    tmp_path):
  """Seed s solves 20 + 4s problems of 40 with the base, 19 + 4s with full RL, which ran seeds
  1, 2 only: over all seeds full RL gained (25 - 24) / 40 = +0.025, over the seeds both ran it
  lost (25 - 26) / 40 = -0.025, and the paired SE weighs that loss."""
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS, base_correct=20, full_correct=19, seed_shift=4),
                     seeds=3)
  results = [r for r in store.load_results(sweep_dir)
             if not (r["kind"] == "full" and r["seed"] == 0)]
  sweep = report.build_sweep_json(store.load_manifest(sweep_dir), results)
  assert (sweep["gain"], sweep["gain_paired"]) == (pytest.approx(0.025), pytest.approx(-0.025))
  # Per problem, over seeds 1, 2: the base solves 0-23 twice, 24-27 once; full RL 0-22 twice,
  # 23-26 once. Full minus base: -0.5 on problems 23 and 27, 0 elsewhere.
  paired_se = statistics.stdev([-0.5] * 2 + [0.0] * 38) / math.sqrt(40)
  assert sweep["gain_paired_se"] == pytest.approx(paired_se)
  assert (f"On seeds 1, 2, which both ran, full RL scored 0.025 below the base, with a standard "
          f"error of {paired_se:.3f} from the per-problem differences (both are scored on the "
          f"same problems): the loss is {0.025 / paired_se:.1f} standard errors."
          ) in report.markdown_report(sweep, sweep_dir, None)


def test_seeds_both_ran_without_a_paired_se_leave_the_gain_unweighed(tmp_path):
  """One test problem: no SE is defined, also where base and full RL ran different seeds that
  they share some of (the report then has no paired SE to weigh the gain over those seeds by)."""
  fake = FakeRL({0: 1, 1: 0, 2: 1, 3: 0}, base_correct=0, full_correct=1, num_problems=1)
  sweep_dir = _sweep(tmp_path, fake, seeds=2)
  results = [r for r in store.load_results(sweep_dir)
             if not (r["kind"] == "full" and r["seed"] == 1)]
  sweep = report.build_sweep_json(store.load_manifest(sweep_dir), results)
  assert (sweep["s_base_seeds"], sweep["s_full_seeds"], sweep["gain_paired_seeds"]) == (
      [0, 1], [0], [0])
  assert sweep["gain_se"] is sweep["gain_paired_se"] is None
  assert report.summary_lines(sweep)[0] == (
      "pass@1: base 0.000 ± n/a, full RL 1.000 ± n/a (gain +1.000)")
  assert ("Full RL scored 1.000 above the base. The standard error of that gain is n/a treating "
          "the two evaluations as independent: its standard error is undefined (a single test "
          "problem), so the gain cannot be weighed against the noise."
          ) in report.markdown_report(sweep, sweep_dir, None)


def test_a_single_test_problem_leaves_every_standard_error_undefined(tmp_path, capsys):
  """One problem: its 0/1 score has no spread, so score_se is null (it was 0.0) in sweep.json,
  empty in sweep.csv and n/a in report.md and the runs' lines; C is still defined."""
  fake = FakeRL({0: 1, 1: 0, 2: 1, 3: 0}, base_correct=0, full_correct=1, num_problems=1)
  sweep_dir = _sweep(tmp_path, fake)
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert sweep["s_base_se"] is sweep["s_full_se"] is sweep["gain_se"] is None
  assert sweep["gain_paired_se"] is None
  assert [(l["contribution"], l["score_se"], l["contribution_se"]) for l in sweep["layers"]] == [
      (1.0, None, None), (0.0, None, None), (1.0, None, None), (0.0, None, None)]
  rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
  assert [r["score_se"] for r in rows] == [""] * 6
  markdown = (sweep_dir / "report.md").read_text()
  assert ("The standard error of that gain is n/a treating the two evaluations as independent: "
          "its standard error is undefined (a single test problem), so the gain cannot be weighed "
          "against the noise.") in markdown
  assert "| block 0 | 1.000 | n/a | n/a | 1.00 | n/a |" in markdown
  assert "full-seed0: pass@1 1.0000 ± n/a (train" in capsys.readouterr().out
  assert report.summary_lines(sweep)[0] == (
      "pass@1: base 0.000 ± n/a, full RL 1.000 ± n/a (gain +1.000)")

def test_a_contribution_of_negative_zero_is_printed_as_zero(tmp_path):
  """Base 20, full RL 16 and block 0 20 of 40 solved: C(0) = 0 / -4, which floats make -0.0
  (printed "-0.00", and "-0.0" in sweep.csv, before)."""
  sweep_dir = _sweep(tmp_path, FakeRL({0: 20, 1: 18}, base_correct=20, full_correct=16),
                     layers="0,1")
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert math.copysign(1.0, sweep["layers"][0]["contribution"]) == 1.0
  assert "-0.0" not in (sweep_dir / "sweep.csv").read_text()
  assert report.summary_lines(sweep)[1] == (
      "no block improved on the base; the closest: block 0 (C = 0.00, score 0.500). worst: "
      "block 1 (C = 0.50, score 0.450).")
  markdown = (sweep_dir / "report.md").read_text()
  se = math.sqrt(0.5 * 0.5 / NUM_PROBLEMS)
  assert f"| block 0 | 0.500 | {se:.3f} | n/a | 0.00 |" in markdown
  assert "Mean C by depth: lower (input side) 0.25." in markdown
  assert "-0.0" not in markdown


def test_report_refuses_a_sweep_without_base_or_full_run(tmp_path):
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS), layers="0")
  store.result_path(sweep_dir, store.RunSpec("full", 0)).unlink()
  with pytest.raises(ValueError, match="no full RL result yet"):
    report.write_report(sweep_dir)


def test_reward_curves_of_missing_steps_are_averaged_over_the_seeds_that_have_them():
  mean = report._mean_curve([[0.0, 1.0, None], [1.0, 3.0, 5.0]])
  assert mean.tolist() == [0.5, 2.0, 5.0]


def _visible_ticks(axis) -> list[float]:
  low, high = sorted(axis.get_view_interval())
  return [float(t) for t in axis.get_majorticklocs() if low <= t <= high]


def test_reward_curves_of_a_short_run_have_ticks_at_whole_steps(monkeypatch):
  figures = []
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
  curve = [0.1, 0.3, 0.2, 0.4]
  report.plot_curves([{"kind": "full", "layer": None, "seed": 0, "reward_curve": curve},
                      {"kind": "layer", "layer": 1, "seed": 0, "reward_curve": curve}],
                     num_layers=4, title="short", path=None)
  assert _visible_ticks(figures[0].axes[0].xaxis) == [1.0, 2.0, 3.0, 4.0]  # not 1.5, 2.5, ...


def test_the_reward_curve_of_a_run_stopped_at_a_rung_ends_there(monkeypatch):
  """Full RL's 30 steps smooth over 3; block 1 stopped after 2 steps. Its curve was drawn to
  step 3 (np.convolve's "same" returns the longer of the curve and the window)."""
  figures = []
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
  report.plot_curves([{"kind": "full", "layer": None, "seed": 0, "reward_curve": [0.5] * 30},
                      {"kind": "layer", "layer": 1, "seed": 0, "reward_curve": [0.2, 0.4],
                       "stop_at": 2}], num_layers=4, title="halving", path=None)
  stopped = figures[0].axes[0].lines[0]  # the blocks' curves come before full RL's
  assert stopped.get_xdata().tolist() == [1, 2]
  # Each step's centred window of 3 holds both steps: (0.2 + 0.4) / 2.
  assert stopped.get_ydata() == pytest.approx([0.3, 0.3])


@pytest.mark.parametrize("blocks, layers, tie", [
    ({0: 20, 1: 20, 2: 20, 3: 20}, "all", "every block swept scored the same"),
    (BLOCKS, "1", "the only block swept")])
def test_a_tie_or_a_single_block_is_not_named_both_best_and_worst(tmp_path, blocks, layers, tie):
  """They were: 'best: block 0 (...). worst: block 0 (...)'."""
  sweep_dir = _sweep(tmp_path, FakeRL(blocks), layers=layers)
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  block = min(int(k) for k in blocks) if layers == "all" else int(layers)
  c = (blocks[block] - 12) / 12  # base 12, full RL 24 of 40 solved
  expected = (f"best: block {block} (C = {c:.2f}, score {blocks[block] / NUM_PROBLEMS:.3f}); "
              f"{tie}")
  assert report.summary_lines(sweep)[1] == expected + "."
  assert f"B{expected[1:]}." in (sweep_dir / "report.md").read_text()



def test_the_only_block_with_a_defined_c_is_not_said_to_tie_with_the_others(tmp_path):
  """Full RL on seed 1 scores as the base: block 1, trained on seed 1 alone, has no C, and
  block 0 (seeds 0, 1) is the only block ranked. The sweep said every block scored the same."""
  sweep_dir = _sweep(tmp_path, FakeRL(BLOCKS), seeds=2, layers="0,1")
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  base_seed1 = next(r for r in results if r["kind"] == "base" and r["seed"] == 1)
  for r in results:
    if r["kind"] == "full" and r["seed"] == 1:
      r.update({key: base_seed1[key] for key in ("score", "score_se", "per_problem")})
  with pytest.warns(UndefinedContributionWarning):
    sweep = report.build_sweep_json(manifest, _results_without(results, "layer01", {0}))
  assert [l["contribution"] is None for l in sweep["layers"]] == [False, True]
  # Block 0 against base 12 and full RL (24 + 12) / 2 of 40 over seeds 0, 1: C = 2 / 6.
  assert sweep["layers"][0]["contribution"] == pytest.approx(1 / 3)
  assert report.summary_lines(sweep)[1].endswith("; the only block swept with a defined C.")

@pytest.mark.parametrize("keep, best_and_worst", [
    (0.25, "best: block 1 (C = 1.25, score 0.675); the only block trained to the end."),
    (0.5, "best: block 1 (C = 1.25, score 0.675). worst of the blocks trained to the end: "
          "block 0 (C = 0.17, score 0.350).")])
def test_a_halving_sweeps_worst_block_is_that_of_the_blocks_trained_to_the_end(tmp_path, keep,
                                                                             best_and_worst):
  """The terminal named block 1 both best and worst when it alone trained to the end, and
  called block 0 the worst when blocks 2 and 3, stopped at the rung, scored lower."""
  fake = FakeRL(BLOCKS, rung_correct={
      ("full", 20): 18, (0, 20): 15, (1, 20): 21, (2, 20): 12, (3, 20): 14})
  config = make_config(tmp_path / "sweep")  # base 12, full RL 24 of 40 solved
  config.sweep.update(halving_steps="20", halving_keep=keep)
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert report.summary_lines(sweep)[1] == best_and_worst


def test_a_halving_sweep_whose_full_rl_ends_at_the_base_says_c_is_undefined(tmp_path,
                                                                             monkeypatch):
  """Full RL gained at the rung but ended at the base: the final C has no scale. The plot drew a
  score axis that divided by a gain of 0, and no word that C is undefined."""
  fake = FakeRL(BLOCKS, full_correct=12, rung_correct={
      ("full", 20): 18, (0, 20): 15, (1, 20): 21, (2, 20): 12, (3, 20): 14})
  config = make_config(tmp_path / "sweep")  # train.steps = 60, base 12 of 40 solved
  config.sweep.update(halving_steps="20", halving_keep=1.0)
  figures = {}
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.update({path.name: fig}))
  with pytest.warns(UndefinedContributionWarning):
    runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=len(BLOCKS))
  (ax,) = figures["contribution.png"].axes
  assert ax.child_axes == []  # no score axis
  assert [t.get_text().split("\n")[0] for t in ax.texts] == ["C(k) undefined: S_full == S_base"]
  rung_c = [line.get_ydata().tolist() for line in ax.lines
            if line.get_label().startswith("C after")]
  assert rung_c == [pytest.approx([(15 - 12) / 6, (21 - 12) / 6, 0.0, (14 - 12) / 6])]


def test_the_score_axis_of_a_halving_sweep_says_it_reads_the_final_c_only(tmp_path, monkeypatch):
  """The right axis turns C into a score with the final full RL; a rung's C (grey) has its own
  full RL, so its height there is no score it reached: the axis says which steps it is for."""
  fake = FakeRL(BLOCKS, rung_correct={("full", 20): 18, (0, 20): 15, (1, 20): 21, (2, 20): 12,
                                      (3, 20): 14})
  config = make_config(tmp_path / "sweep")  # train.steps = 60
  config.sweep.update(halving_steps="20", halving_keep=1.0)
  figures = {}
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.update({path.name: fig}))
  runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=len(BLOCKS))
  (score_axis,) = figures["contribution.png"].axes[0].child_axes
  assert score_axis.get_ylabel() == "score after 60 steps (pass@1)"


def _drawn_contribution_axes(sweep: dict, tmp_path, monkeypatch):
  """The C axes of sweep's contribution.png, drawn, so that a score axis beside them has its
  limits."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  figures = {}
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.update({path.name: fig}))
  report.plot_contribution(sweep, tmp_path / "contribution.png")
  FigureCanvasAgg(figures["contribution.png"]).draw()
  return figures["contribution.png"].axes[0]


def test_the_score_axis_reads_c_over_the_seeds_it_is_over_or_goes(tmp_path, monkeypatch):
  """Base on seeds 0-2, full RL and blocks 0, 1 on 0, 1. Seed s solves 20 - 4s problems of 40
  with the base (16 over all seeds, 18 over seeds 0, 1), 23 - 4s with full RL (21): every C is
  over seeds 0, 1, so C = 0 reads 18 / 40, C = 1 21 / 40, on seeds 0, 1."""
  fake = FakeRL({0: 19, 1: 24, 2: 22}, base_correct=20, full_correct=23, seed_shift=-4)
  sweep_dir = _sweep(tmp_path, fake, seeds=3, layers="0,1,2")
  manifest, results = store.load_manifest(sweep_dir), store.load_results(sweep_dir)
  for run in ("full", "layer00", "layer01"):
    results = _results_without(results, run, {2})
  sweep = report.build_sweep_json(manifest, _results_without(results, "layer02", {0, 1, 2}))
  ax = _drawn_contribution_axes(sweep, tmp_path, monkeypatch)
  (score_axis,) = ax.child_axes
  assert score_axis.get_ylabel() == "score over seeds 0, 1 (pass@1)"
  bottom, top = ax.get_ylim()
  assert score_axis.get_ylim() == pytest.approx((18 / 40 + bottom * 3 / 40, 18 / 40 + top * 3 / 40))
  # Block 2 on seed 2 alone shares no seed with full RL: its C is over all seeds, against 16
  # and 21 of 40, the others' against 18 and 21, so no one score axis reads every C.
  sweep = report.build_sweep_json(manifest, _results_without(results, "layer02", {0, 1}))
  ax = _drawn_contribution_axes(sweep, tmp_path, monkeypatch)
  assert ax.child_axes == []
  # Without it the title names the metric, which the plot named nowhere else.
  assert ax.get_title().splitlines()[1].startswith("pass@1: S_base = 0.400, S_full = 0.525")


def test_error_bars_are_the_spread_over_seeds_and_with_one_seed_the_standard_error():
  several_seeds = {"contribution_std": 0.12, "contribution_se": 0.05}
  one_seed = {"contribution_std": None, "contribution_se": 0.05}
  assert report.contribution_error_bars(several_seeds) == (0.12, "std over seeds")
  assert report.contribution_error_bars(one_seed) == (0.05, "± 1 SE (evaluation noise)")


def test_error_bars_of_blocks_swept_with_more_seeds_than_others_say_both_kinds(tmp_path,
                                                                             monkeypatch):
  """Blocks 0 and 1 with 2 seeds, blocks 2 and 3 with 1 (the sweep extended for some blocks):
  the legend named the first block's kind, the std over seeds, for every error bar."""
  fake = FakeRL(BLOCKS, seed_shift=1)
  figures = {}
  monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.update({path.name: fig}))
  _sweep(tmp_path, fake, seeds=2, layers="0,1")
  _sweep(tmp_path, fake, seeds=1, layers="2,3")
  sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
  assert [len(layer["seeds"]) for layer in sweep["layers"]] == [2, 2, 1, 1]
  _, labels = figures["contribution.png"].axes[0].get_legend_handles_labels()
  assert [label for label in labels if label.startswith("C(k)")] == [
      "C(k), error bars: std over seeds where a block has several, else ± 1 SE (evaluation "
      "noise)"]


def test_group_names_are_readable_over_the_points_they_overlie(tmp_path, monkeypatch):
  """Group 1+2 ends at the best block, 1: its name lay over the star and the error bars there,
  unreadable among them. It has a white backing, drawn above every point and line."""
  fake = FakeRL({**BLOCKS, (1, 2): 27})
  config = make_config(tmp_path / "sweep")
  config.sweep.groups = "1+2"
  sweep_dir = runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval,
                               num_layers=len(BLOCKS))
  ax = _drawn_contribution_axes(json.loads((sweep_dir / "sweep.json").read_text()), tmp_path,
                                monkeypatch)
  (name,) = ax.texts
  assert name.get_text() == "1+2"
  assert all(name.get_zorder() > artist.get_zorder() for artist in ax.lines + ax.collections)
  assert name.get_bbox_patch().get_facecolor()[:3] == (1.0, 1.0, 1.0)
