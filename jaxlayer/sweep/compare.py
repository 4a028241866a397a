"""Do two sweeps rank the blocks alike? Spearman and Kendall correlation of their C(k).

Correlations are taken over the blocks both sweeps measured with a defined C (the paper
reports Spearman 0.76 between two math datasets, 0.59 between math and code). Their two-sided
p-values are exact up to EXACT_P_MAX_BLOCKS common blocks: the share of all n! pairings of the
two sweeps' C whose correlation is at least as far from 0 (so never below 2 / n!: 1/3 for 3
blocks); beyond, scipy's (Spearman: the t approximation; Kendall: exact without ties), raised
to that floor of 2 / n! where they fall below it (the t approximation gives 0 for identical
rankings, and less than any ordering could reach for nearly identical ones).
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np

from jaxlayer import locks, paths
from jaxlayer.plots import integer_ticks, save_figure
from jaxlayer.sweep import contribution, store
from jaxlayer.text import counted

MIN_COMMON_LAYERS = 3
OUTPUT_FILES = ("compare.json", "compare.png")
EXACT_P_MAX_BLOCKS = 8  # 8! = 40,320 pairings


def load_sweep(sweep_dir: str | os.PathLike) -> dict:
  path = paths.local_path(sweep_dir, "sweep directory") / "sweep.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {sweep_dir} is not a finished sweep. Run "
                            "`jaxlayer sweep --config ...` to completion first.")
  store.check_finished(path.parent, f"Comparing {sweep_dir}")
  return store.read_json(path)


def _contributions(sweep: dict) -> dict[int, float]:
  return {l["layer"]: l["contribution"] for l in sweep["layers"] if l["contribution"] is not None}


def compare_sweeps(sweep_a: dict, sweep_b: dict) -> dict:
  """Rank correlations of two sweep.json dictionaries over their common blocks."""
  if sweep_a["num_layers"] != sweep_b["num_layers"]:
    raise ValueError(
        f"the sweeps are of models with different depths ({sweep_a['num_layers']} vs "
        f"{sweep_b['num_layers']} blocks), so block k means different things in each. Compare "
        "sweeps of the same model (or of models with the same number of blocks).")
  c_a, c_b = _contributions(sweep_a), _contributions(sweep_b)
  common = sorted(set(c_a) & set(c_b))
  if len(common) < MIN_COMMON_LAYERS:
    halved = any(sweep.get("halving") for sweep in (sweep_a, sweep_b))
    raise ValueError(
        f"the sweeps share {counted(len(common), 'block')} with a defined C(k) ({common}); a rank "
        f"correlation needs at least {MIN_COMMON_LAYERS}. Sweep more common blocks "
        "(--config.sweep.layers) in both, and check that S_full != S_base in each."
        + (" A sweep with successive halving has a final C only for the blocks that trained to "
           "the end: raise sweep.halving_keep, or compare sweeps without halving." if halved
           else ""))
  a = np.array([c_a[k] for k in common])  # [common blocks]
  b = np.array([c_b[k] for k in common])  # [common blocks]
  from scipy import stats  # loaded on use: sweep workers never compare

  spearman = stats.spearmanr(a, b)
  kendall = stats.kendalltau(a, b)
  exact = len(common) <= EXACT_P_MAX_BLOCKS
  if exact:
    spearman_p, kendall_p = _exact_p_values(a, b)
  else:
    # No pairing is rarer than the observed ranking and its reverse: 2 of the n! pairings.
    floor = 2 / math.factorial(len(common))
    spearman_p, kendall_p = (float(np.maximum(p, floor))  # (NaN, a constant C, stays NaN)
                             for p in (spearman.pvalue, kendall.pvalue))
  return {
      "layers": common,
      "num_common_layers": len(common),
      "contribution_a": a.tolist(),
      "contribution_b": b.tolist(),
      "rank_a": stats.rankdata(-a).tolist(),  # 1 = largest C
      "rank_b": stats.rankdata(-b).tolist(),
      "spearman": {"rho": _finite_or_none(spearman.statistic),
                   "p_value": _finite_or_none(spearman_p)},
      "kendall": {"tau": _finite_or_none(kendall.statistic),
                  "p_value": _finite_or_none(kendall_p)},
      "p_values": f"exact over all {math.factorial(len(common)):,} pairings" if exact
                  else "from scipy (Spearman's by the t approximation)",
      "warnings": [warning for name, sweep in (("A", sweep_a), ("B", sweep_b))
                   for warning in _upside_down(name, sweep)],
  }


def _negative_gains(sweep: dict) -> dict[int, float]:
  """Block -> the gain its C divides by, of the blocks with a defined C whose gain is negative:
  s_full - s_base over the seeds its C is over, or, in a sweep.json written before blocks
  carried those, the gain over all seeds."""
  gains = {l["layer"]: contribution.divisor_gain(l, sweep.get("gain", 0.0))
           for l in sweep["layers"] if l["contribution"] is not None}
  return {layer: gain for layer, gain in gains.items() if gain < 0}


def _upside_down(name: str, sweep: dict) -> list[str]:
  """The warning for a sweep whose C(k) = gain_k / gain divide by a negative gain (full RL below
  the base over the seeds each C is over), which orders those blocks opposite to their scores:
  all of its C, or some (a sweep whose blocks ran different seeds)."""
  lost = _negative_gains(sweep)
  if not lost:
    return []
  rerun = ("Rerun that sweep with full RL gaining (longer training, another learning rate) "
           "before comparing.")
  each = ", ".join(f"{contribution.unit_name(layer)} {gain:+.4f}" for layer, gain in lost.items())
  if len(lost) < len(_contributions(sweep)):
    return [f"in sweep {name} full RL scored below the base over the seeds some blocks' C are "
            f"over (gain {each}), so their C ranks those blocks opposite to their scores and the "
            f"other blocks' C does not: a correlation with it mixes the two orders. {rerun}"]
  gains = set(lost.values())
  gain = f"gain {next(iter(gains)):+.4f}" if len(gains) == 1 else f"gain {each}"
  over = "" if gains == {sweep.get("gain")} else " over the seeds each C is over"
  return [f"in sweep {name} full RL scored below the base ({gain}{over}), so its C(k) ranks the "
          "blocks opposite to their scores: a correlation with it has the sign of one with the "
          f"other sweep's worst-first ranking. {rerun}"]


def _exact_p_values(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """Two-sided permutation p-values of Spearman's rho and Kendall's tau-b: the share of the
  n! orderings of b against a whose statistic is as far from 0 as the observed one, or
  further (ties included: an ordering changes neither sample's ties). NaN for a constant C."""
  from scipy import stats

  rank_a, rank_b = stats.rankdata(a), stats.rankdata(b)
  # Each statistic is a numerator over a denominator that no ordering changes; the first
  # ordering of itertools.permutations is the observed one.
  permuted_b = rank_b[np.array(list(itertools.permutations(range(len(b)))))]  # [n!, n]
  spearman = (permuted_b - rank_b.mean()) @ (rank_a - rank_a.mean())  # Pearson's r of ranks
  i, j = np.triu_indices(len(a), k=1)
  kendall = np.sign(permuted_b[:, i] - permuted_b[:, j]) @ np.sign(rank_a[i] - rank_a[j])

  def share_as_extreme(numerators: np.ndarray) -> float:
    if not numerators.any():  # a constant C: no correlation to test
      return math.nan
    return float(np.mean(np.abs(numerators) >= abs(numerators[0]) - 1e-9))

  return share_as_extreme(spearman), share_as_extreme(kendall)


def _finite_or_none(value) -> float | None:
  """scipy returns NaN for a constant ranking; JSON stores that as null."""
  value = float(value)
  return value if np.isfinite(value) else None


def _label(sweep: dict, sweep_dir: Path) -> str:
  """'sweep_8b (Qwen3-8B-Base, math, grpo)': the sweeps compared may be of two models of one
  depth (Qwen3-4B and -8B)."""
  model = Path(str(sweep["model"])).name  # (a hub id's name, or a directory's)
  return f"{sweep_dir.name} ({model}, {sweep['task']}, {sweep['algorithm']})"


def comparison_figure(comparison: dict, label_a: str, label_b: str, num_layers: int):
  """Left: C(k) of both sweeps against block index. Right: rank against rank, each point named
  by its block(s). The sweeps are named once, as A and B, in the legend below both."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(12, 5), layout="constrained")
  ax_c, ax_r = fig.subplots(1, 2, width_ratios=[1.6, 1])
  layers = comparison["layers"]
  # B dashed, with hollow squares around A's dots: where the sweeps agree, A still shows.
  ax_c.plot(layers, comparison["contribution_a"], "o-", color="tab:blue", markersize=5,
            label=f"A: {label_a}")
  ax_c.plot(layers, comparison["contribution_b"], "s--", color="tab:red", markersize=9,
            markerfacecolor="none", label=f"B: {label_b}")
  ax_c.axhline(1.0, color="tab:green", linestyle="--", linewidth=1, label="C = 1: full RL")
  ax_c.axhline(0.0, color="gray", linestyle=":", linewidth=1, label="C = 0: base")
  ax_c.set_xlim(-0.7, num_layers - 0.3)
  ax_c.set_xticks(range(num_layers))
  if num_layers > 24:
    ax_c.tick_params(axis="x", labelsize=7)
  ax_c.set_xlabel("block index k")
  ax_c.set_ylabel("layer contribution C(k)")
  ax_c.grid(alpha=0.3)
  fig.legend(*ax_c.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8,
             frameon=False)

  n = len(layers)
  ax_r.plot([1, n], [1, n], color="gray", linestyle="--", linewidth=1)
  ax_r.scatter(comparison["rank_a"], comparison["rank_b"], color="tab:purple", zorder=3)
  # Blocks tied in both rankings share a point, and its label.
  at_point = {}
  for layer, ra, rb in zip(layers, comparison["rank_a"], comparison["rank_b"]):
    at_point.setdefault((ra, rb), []).append(str(layer))
  for point, names in at_point.items():
    ax_r.annotate(", ".join(names), point, textcoords="offset points", xytext=(4, 3),
                  fontsize=8)
  ax_r.set_xlabel("rank in A (1 = largest C)", fontsize=9)
  ax_r.set_ylabel("rank in B (1 = largest C)", fontsize=9)
  integer_ticks(ax_r.xaxis)
  integer_ticks(ax_r.yaxis)
  ax_r.set_xlim(n + 0.6, 0.4)  # ranks 1..n, 1 on the right and at the top
  ax_r.set_ylim(n + 0.6, 0.4)
  ax_r.set_aspect("equal")
  ax_r.grid(alpha=0.3)
  rho, tau = comparison["spearman"]["rho"], comparison["kendall"]["tau"]
  ax_r.set_title(f"Spearman {_fmt(rho)} (p = {_fmt(comparison['spearman']['p_value'], '.2g')}), "
                 f"Kendall {_fmt(tau)}", fontsize=10)
  fig.suptitle(f"Layer rankings over {n} common blocks (numbers: block index)", fontsize=11)
  return fig


def _fmt(value, spec: str = "z.2f") -> str:
  return "n/a" if value is None else format(value, spec)


def compare_sweep_dirs(dir_a: str | os.PathLike, dir_b: str | os.PathLike,
                       out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
  """Compares two sweep directories; writes compare.json and compare.png into out_dir, where
  an earlier comparison is replaced only with overwrite=True."""
  dir_a, dir_b, out_dir = Path(dir_a), Path(dir_b), paths.local_path(out_dir, "--out")
  with locks.exclusive(out_dir, "--out", tidy=True):  # a second one into out_dir is refused
    paths.remove_temporary_leftovers(out_dir)  # compare.json or .png of a killed writer
    return _compare_into(dir_a, dir_b, out_dir, overwrite)


def _compare_into(dir_a: Path, dir_b: Path, out_dir: Path, overwrite: bool) -> dict:
  """compare_sweep_dirs under out_dir's lock."""
  existing = [out_dir / name for name in OUTPUT_FILES if (out_dir / name).exists()]
  if existing and not overwrite:
    raise FileExistsError(f"{existing[0]} exists: pass overwrite=True (--overwrite) to replace "
                          "it, or choose another out_dir (--out).")
  sweep_a, sweep_b = load_sweep(dir_a), load_sweep(dir_b)
  comparison = {"sweep_a": str(dir_a), "sweep_b": str(dir_b),
                **compare_sweeps(sweep_a, sweep_b)}
  store.write_json_atomic(out_dir / "compare.json", comparison)
  save_figure(comparison_figure(comparison, _label(sweep_a, dir_a), _label(sweep_b, dir_b),
                                sweep_a["num_layers"]), out_dir / "compare.png")
  return comparison
