"""Rank correlation of two sweeps' layer rankings, and `jaxlayer compare`."""

import itertools
import json
import math
import re

import pytest
from matplotlib import image
from scipy import stats

from jaxlayer import cli, locks
from jaxlayer.sweep import compare, runner
from tests.sweep_fakes import FakeRL, make_config


def _sweep(contributions: dict[int, float | None], num_layers: int = 8) -> dict:
  return {"num_layers": num_layers, "task": "arithmetic", "algorithm": "grpo",
          "layers": [{"layer": k, "contribution": c} for k, c in contributions.items()]}


def _hand_spearman(a, b):
  """1 - 6 sum d^2 / (n (n^2 - 1)) on ranks (no ties)."""
  rank = lambda xs: {x: r for r, x in enumerate(sorted(xs))}
  ra, rb = rank(a), rank(b)
  n = len(a)
  return 1 - 6 * sum((ra[x] - rb[y])**2 for x, y in zip(a, b)) / (n * (n * n - 1))


def _hand_kendall(a, b):
  """(concordant - discordant pairs) / number of pairs (no ties)."""
  pairs = list(itertools.combinations(range(len(a)), 2))
  sign = lambda v: (v > 0) - (v < 0)
  return sum(sign(a[i] - a[j]) * sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def test_rank_correlations_match_hand_computed_values_and_scipy():
  a = {0: 0.31, 1: 0.52, 2: 0.95, 3: 1.10, 4: 0.80, 5: 0.40, 6: 0.22, 7: -0.10}
  b = {0: 0.20, 1: 0.70, 2: 1.02, 3: 0.90, 4: 0.85, 5: 0.15, 6: 0.30, 7: 0.05}
  result = compare.compare_sweeps(_sweep(a), _sweep(b))
  xs, ys = list(a.values()), list(b.values())
  assert result["spearman"]["rho"] == pytest.approx(_hand_spearman(xs, ys))
  assert result["kendall"]["tau"] == pytest.approx(_hand_kendall(xs, ys))
  assert result["p_values"] == "exact over all 40,320 pairings"
  assert result["layers"] == list(range(8)) and result["num_common_layers"] == 8
  assert result["rank_a"][3] == 1 and result["rank_a"][7] == 8  # 1 = largest C


def test_p_values_of_few_blocks_are_exact_and_never_zero():
  """3 blocks: 6 orderings, with rho 1, 0.5, 0.5, -0.5, -0.5, -1 and tau 1, 1/3, 1/3, -1/3,
  -1/3, -1. The same ranking is as extreme as 2 of them (p = 1/3; the t approximation said
  0); one swap (rho 0.5, tau 1/3) as all 6 (p = 1)."""
  a = {0: 0.1, 1: 0.5, 2: 0.9}
  same = compare.compare_sweeps(_sweep(a), _sweep({0: 0.2, 1: 0.4, 2: 1.3}))
  assert (same["spearman"]["rho"], same["kendall"]["tau"]) == pytest.approx((1.0, 1.0))
  assert same["spearman"]["p_value"] == same["kendall"]["p_value"] == pytest.approx(2 / 6)
  swapped = compare.compare_sweeps(_sweep(a), _sweep({0: 0.2, 1: 1.3, 2: 0.4}))
  assert (swapped["spearman"]["rho"], swapped["kendall"]["tau"]) == pytest.approx((0.5, 1 / 3))
  assert swapped["spearman"]["p_value"] == swapped["kendall"]["p_value"] == pytest.approx(1.0)
  assert same["p_values"] == "exact over all 6 pairings"


def test_exact_p_values_count_the_orderings_as_extreme_as_the_observed_one():
  a = {0: 0.31, 1: 0.52, 2: 0.95, 3: 1.10, 4: -0.10}
  b = {0: 0.20, 1: 0.70, 2: 1.02, 3: 0.15, 4: 0.05}
  result = compare.compare_sweeps(_sweep(a), _sweep(b))
  xs, ys = list(a.values()), list(b.values())
  for name, correlation in (("spearman", _hand_spearman), ("kendall", _hand_kendall)):
    observed = abs(correlation(xs, ys))
    as_extreme = [abs(correlation(xs, list(order))) >= observed - 1e-12
                  for order in itertools.permutations(ys)]
    assert result[name]["p_value"] == pytest.approx(sum(as_extreme) / 120)


def test_p_values_of_many_blocks_are_scipys():
  a = {k: math.sin(k) for k in range(12)}
  b = {k: math.sin(k) + 0.3 * math.cos(3 * k) for k in range(12)}
  result = compare.compare_sweeps(_sweep(a, num_layers=12), _sweep(b, num_layers=12))
  xs, ys = list(a.values()), list(b.values())
  assert result["spearman"]["p_value"] == pytest.approx(stats.spearmanr(xs, ys).pvalue)
  assert result["kendall"]["p_value"] == pytest.approx(stats.kendalltau(xs, ys).pvalue)
  assert result["p_values"] == "from scipy (Spearman's by the t approximation)"


def test_p_values_of_many_blocks_are_never_below_two_in_n_factorial():
  """9 blocks ranked alike: scipy's t approximation gives p = 0, which no ordering of them can
  reach (2 of the 9! pairings are as extreme as this one)."""
  a = {k: float(k) for k in range(9)}
  result = compare.compare_sweeps(_sweep(a, num_layers=9), _sweep(a, num_layers=9))
  assert stats.spearmanr(list(a.values()), list(a.values())).pvalue == 0
  assert result["spearman"]["p_value"] == pytest.approx(2 / math.factorial(9))
  assert result["kendall"]["p_value"] >= 2 / math.factorial(9)


def test_identical_and_reversed_rankings():
  a = {k: float(k) for k in range(5)}
  assert compare.compare_sweeps(_sweep(a), _sweep(a))["spearman"]["rho"] == pytest.approx(1.0)
  reversed_ = {k: -float(k) for k in range(5)}
  result = compare.compare_sweeps(_sweep(a), _sweep(reversed_))
  assert result["spearman"]["rho"] == pytest.approx(-1.0)
  assert result["kendall"]["tau"] == pytest.approx(-1.0)


def test_a_sweep_whose_full_rl_lost_is_named_in_a_warning():
  gained, lost = _sweep({k: float(k) for k in range(4)}), _sweep({k: float(k) for k in range(4)})
  gained["gain"], lost["gain"] = 0.05, -0.02
  assert compare.compare_sweeps(gained, gained)["warnings"] == []
  (warning,) = compare.compare_sweeps(gained, lost)["warnings"]
  assert warning.startswith("in sweep B full RL scored below the base (gain -0.0200)")
  assert compare.compare_sweeps(lost, gained)["warnings"][0].startswith("in sweep A ")


def _sweep_with_gains(gain: float, s_base: float, s_full: dict[int, float]) -> dict:
  """A sweep whose gain over all seeds is `gain` and whose block k's C divides by s_full[k] -
  s_base (its C over fewer seeds than all of base's and full RL's)."""
  sweep = _sweep({k: float(k) for k in s_full})
  sweep["gain"] = gain
  for layer in sweep["layers"]:
    layer.update(s_base=s_base, s_full=s_full[layer["layer"]])
  return sweep


def test_the_upside_down_warning_follows_the_gain_each_c_divides_by():
  """Base on seeds 0-2 (0.40 over all, 0.45 over seeds 0, 1), full RL on seeds 0, 1 (0.425):
  over all seeds full RL gained 0.025, but every C, over seeds 0, 1, divides by -0.025."""
  gained = _sweep_with_gains(0.05, 0.5, {k: 0.55 for k in range(4)})
  lost_on_their_seeds = _sweep_with_gains(0.025, 0.45, {k: 0.425 for k in range(4)})
  assert compare.compare_sweeps(gained, lost_on_their_seeds)["warnings"] == [
      "in sweep B full RL scored below the base (gain -0.0250 over the seeds each C is over), "
      "so its C(k) ranks the blocks opposite to their scores: a correlation with it has the "
      "sign of one with the other sweep's worst-first ranking. Rerun that sweep with full RL "
      "gaining (longer training, another learning rate) before comparing."]
  # Over all seeds full RL lost 0.025, over seeds 0, 1, those of every C, it gained 0.025.
  gained_on_their_seeds = _sweep_with_gains(-0.025, 0.4, {k: 0.425 for k in range(4)})
  assert compare.compare_sweeps(gained, gained_on_their_seeds)["warnings"] == []
  # Blocks 0 and 1 divide by -0.025, blocks 2 and 3 by +0.025 (their C over other seeds).
  mixed = _sweep_with_gains(0.025, 0.4, {0: 0.375, 1: 0.375, 2: 0.425, 3: 0.425})
  assert compare.compare_sweeps(mixed, gained)["warnings"] == [
      "in sweep A full RL scored below the base over the seeds some blocks' C are over (gain "
      "block 0 -0.0250, block 1 -0.0250), so their C ranks those blocks opposite to their "
      "scores and the other blocks' C does not: a correlation with it mixes the two orders. "
      "Rerun that sweep with full RL gaining (longer training, another learning rate) before "
      "comparing."]


def test_only_common_blocks_with_a_defined_contribution_count():
  a = {0: 0.1, 1: 0.9, 2: 0.5, 3: None, 4: 0.7, 6: 0.3}
  b = {0: 0.2, 1: 0.6, 2: 0.8, 3: 0.4, 4: 0.5, 5: 0.1}
  result = compare.compare_sweeps(_sweep(a), _sweep(b))
  assert result["layers"] == [0, 1, 2, 4]
  common_a, common_b = [0.1, 0.9, 0.5, 0.7], [0.2, 0.6, 0.8, 0.5]
  assert result["spearman"]["rho"] == pytest.approx(_hand_spearman(common_a, common_b))


def test_too_few_common_blocks_or_different_depths_are_refused_with_advice():
  with pytest.raises(ValueError, match=r"share 2 blocks.*at least 3.*sweep.layers"):
    compare.compare_sweeps(_sweep({0: 0.1, 1: 0.5, 2: 0.3}), _sweep({1: 0.2, 2: 0.4, 5: 0.9}))
  with pytest.raises(ValueError, match="different depths \\(8 vs 28 blocks\\)"):
    compare.compare_sweeps(_sweep({0: 0.1}), _sweep({0: 0.1}, num_layers=28))
  halved = {**_sweep({1: 0.2, 2: 0.4}), "halving": {"rungs": [{"steps": 10}]}}
  with pytest.raises(ValueError, match="share 2 block.*successive halving has a final C only"):
    compare.compare_sweeps(_sweep({0: 0.1, 1: 0.5, 2: 0.3}), halved)


def test_a_constant_ranking_gives_null_correlation_not_nan():
  with pytest.warns(stats.ConstantInputWarning):
    result = compare.compare_sweeps(_sweep({0: 0.5, 1: 0.5, 2: 0.5}),
                                    _sweep({0: 0.1, 1: 0.2, 2: 0.3}))
  assert result["spearman"]["rho"] is None and result["kendall"]["tau"] is None
  json.dumps(result, allow_nan=False)


def test_the_plot_labels_do_not_overlap_and_blocks_sharing_a_point_share_its_label():
  """Long sweep names once, in the legend below both panels, not under the rank axes (where
  they ran into the title and the other panel); blocks 0 and 1 tie in both rankings."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  a = {0: 0.5, 1: 0.5, 2: 0.9, 3: 0.1, 4: 0.3}
  b = {0: 0.2, 1: 0.2, 2: 0.8, 3: 0.4, 4: 0.6}
  long_name = "sweep_qwen3-1.7b_numinamath_grpo_lr5e-6_seed0 (arithmetic, grpo)"
  fig = compare.comparison_figure(compare.compare_sweeps(_sweep(a), _sweep(b)), long_name,
                                  long_name.replace("numinamath", "code"), 8)
  FigureCanvasAgg(fig).draw()
  renderer = fig.canvas.get_renderer()
  ax_c, ax_r = fig.axes
  assert sorted(t.get_text() for t in ax_r.texts) == ["0, 1", "2", "3", "4"]
  labels = [fig._suptitle, ax_r.title, ax_c.xaxis.label, ax_c.yaxis.label, ax_r.xaxis.label,
            ax_r.yaxis.label, *fig.legends, *ax_r.texts]
  boxes = [label.get_window_extent(renderer) for label in labels]
  overlapping = [(labels[i], labels[j]) for i, j in itertools.combinations(range(len(boxes)), 2)
                 if boxes[i].overlaps(boxes[j])]
  assert overlapping == []
  assert not any(ax_c.get_tightbbox(renderer).overlaps(box) for box in boxes[4:6])



def test_where_the_sweeps_agree_both_curves_show():
  """Two sweeps of equal C: B's filled squares, drawn over A's dots and line, hid A entirely
  (the sweeps that agree best). B is dashed, its squares hollow and larger than A's dots."""
  contributions = {0: 0.2, 1: 0.9, 2: 1.1, 3: 0.4}
  fig = compare.comparison_figure(
      compare.compare_sweeps(_sweep(contributions), _sweep(contributions)), "a", "b", 8)
  line_a, line_b = fig.axes[0].get_lines()[:2]
  assert list(line_a.get_ydata()) == list(line_b.get_ydata())
  assert line_b.get_markerfacecolor() == "none" and line_b.get_linestyle() == "--"
  assert line_b.get_markersize() > line_a.get_markersize()

def _fake_sweep(directory, blocks):
  fake = FakeRL(blocks)
  return runner.run_sweep(make_config(directory), train_fn=fake.train, eval_fn=fake.eval,
                          num_layers=len(blocks))



def test_the_plot_names_each_sweeps_model(tmp_path, monkeypatch):
  """Two models of one depth (Qwen3-4B and -8B, 36 blocks each) on one task: the legend named
  the sweep directories, task and algorithm, and not which model each sweep measured."""
  labels = []
  figure = compare.comparison_figure
  monkeypatch.setattr(compare, "comparison_figure", lambda comparison, a, b, num_layers: (
      labels.extend([a, b]), figure(comparison, a, b, num_layers))[1])
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25})
  compare.compare_sweep_dirs(dir_a, dir_b, tmp_path / "cmp")
  assert labels == ["math (tiny-arith, arithmetic, grpo)", "code (tiny-arith, arithmetic, grpo)"]

def test_cli_compare_prints_and_writes_json_and_plot(tmp_path, capsys):
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20, 3: 8, 4: 16})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25, 3: 10, 4: 18})
  capsys.readouterr()
  cli.main(["compare", str(dir_a), str(dir_b), "--out", str(tmp_path / "cmp")])
  out = capsys.readouterr().out
  saved = json.loads((tmp_path / "cmp/compare.json").read_text())
  # C is affine in the score (same base and full): ranks of C are ranks of the solved counts.
  expected = stats.spearmanr([14, 27, 20, 8, 16], [13, 22, 25, 10, 18]).statistic
  assert saved["spearman"]["rho"] == pytest.approx(expected)
  # rho = 1 - 6 * 2 / 120 (blocks 1 and 2 swapped), tau = (9 - 1) / 10; as far from 0: the same
  # ranking and the 4 with one neighbour swap, and their reverses: 10 of the 120 pairings.
  assert out.startswith("5 common blocks: Spearman rho = 0.900 (p = 0.0833), Kendall tau = "
                        "0.800 (p = 0.0833; p-values exact over all 120 pairings)\n")
  assert "compare.png" in out and expected == pytest.approx(0.9)
  assert saved["sweep_a"] == str(dir_a) and saved["sweep_b"] == str(dir_b)
  height, width, _ = image.imread(tmp_path / "cmp/compare.png").shape
  assert width > height > 300


def test_cli_compare_warns_beside_its_results_not_among_them(tmp_path, capsys, monkeypatch):
  """A warning printed to standard output, among the results (`> FILE`), as 'warning: ...'."""
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25})
  monkeypatch.setattr(compare, "_upside_down",
                      lambda name, sweep: [f"in sweep {name} full RL scored below the base."])
  capsys.readouterr()
  with pytest.warns(UserWarning) as warned:
    cli.main(["compare", str(dir_a), str(dir_b), "--out", str(tmp_path / "cmp")])
  assert [str(warning.message) for warning in warned] == [
      "in sweep A full RL scored below the base.", "in sweep B full RL scored below the base."]
  assert "warning" not in capsys.readouterr().out


def test_cli_compare_replaces_an_earlier_comparison_only_with_overwrite(tmp_path):
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25})
  out = tmp_path / "cmp"
  cli.main(["compare", str(dir_a), str(dir_b), "--out", str(out)])
  written = {name: (out / name).read_bytes() for name in ("compare.json", "compare.png")}
  with pytest.raises(SystemExit) as error:
    cli.main(["compare", str(dir_b), str(dir_a), "--out", str(out)])
  assert str(error.value) == (f"jaxlayer compare: {out / 'compare.json'} exists: pass "
                              "overwrite=True (--overwrite) to replace it, or choose another "
                              "out_dir (--out).")
  assert {name: (out / name).read_bytes() for name in written} == written
  (out / "compare.json").unlink()  # a comparison cut short: its plot alone is kept too
  with pytest.raises(SystemExit,
                     match=re.escape("compare.png exists: pass overwrite=True (--overwrite)")):
    cli.main(["compare", str(dir_b), str(dir_a), "--out", str(out)])
  cli.main(["compare", str(dir_b), str(dir_a), "--out", str(out), "--overwrite"])
  assert json.loads((out / "compare.json").read_text())["sweep_a"] == str(dir_b)


def test_cli_compare_into_an_out_dir_another_process_writes_is_refused(tmp_path):
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25})
  out = tmp_path / "cmp"
  with locks.exclusive(out, "--out"), pytest.raises(SystemExit, match="cmp is in use: .* choose "
                                                     "another --out"):
    cli.main(["compare", str(dir_a), str(dir_b), "--out", str(out)])
  assert sorted(path.name for path in out.iterdir()) == [locks.LOCK_FILE]
  cli.main(["compare", str(dir_a), str(dir_b), "--out", str(out)])  # free again: it compares
  assert sorted(path.name for path in out.iterdir()) == ["compare.json", "compare.png"]


def test_cli_compare_removes_the_temporary_files_that_killed_writers_left(tmp_path,
                                                                          writers_leftovers):
  """A comparison killed (SIGKILL) while writing compare.json or compare.png left the temporary
  file in --out for good. Now the next comparison there removes those of ended processes of its
  host; a running writer's, another host's and other names stay."""
  dir_a = _fake_sweep(tmp_path / "math", {0: 14, 1: 27, 2: 20})
  dir_b = _fake_sweep(tmp_path / "code", {0: 13, 1: 22, 2: 25})
  out = tmp_path / "cmp"
  out.mkdir()
  _, kept = writers_leftovers(out)
  cli.main(["compare", str(dir_a), str(dir_b), "--out", str(out)])
  assert sorted(out.iterdir()) == sorted([*kept, out / "compare.json", out / "compare.png"])


def test_cli_compare_of_a_missing_sweep_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match="is not a finished sweep"):
    cli.main(["compare", str(tmp_path / "nope"), str(tmp_path / "nope2"), "--out",
              str(tmp_path / "cmp")])
  (tmp_path / "sweep.json").write_text("{}")  # a sweep's file given for its directory
  with pytest.raises(SystemExit) as exited:
    cli.main(["compare", str(tmp_path / "sweep.json"), str(tmp_path), "--out",
              str(tmp_path / "cmp")])
  assert exited.value.code == (f"jaxlayer compare: sweep directory='{tmp_path}/sweep.json' is a "
                               "file, not a directory: give a directory.")
