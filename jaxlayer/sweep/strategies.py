"""Layer-aware selections from a finished sweep: `topK@SWEEP_DIR` and `bottomK@SWEEP_DIR`.

Importing this module (or `jaxlayer.sweep`) adds them to the training selection grammar
(jaxlayer.rl.selection), beside its `midK`:

    topK@SWEEP_DIR     the K blocks with the largest C(k) (the paper's Only-BK; Boost-BK as a
                       learning-rate group: train.layers=all, train.lr_groups=top10@DIR=1e-5)
    bottomK@SWEEP_DIR  the K blocks with the smallest C(k) (Only-WK)
    midK               (defined in jaxlayer.rl.selection) the K middle blocks, first block
                       (L - K) // 2: half a block toward the input when L - K is odd
                       (L = 28: mid5 = 11-15; L = 36: mid5 = 15-19).

The blocks are ranked by C(k), or by -C(k) where C divides by a negative gain (full RL below
the base over the seeds C is over: C's scale is then negative), as the sweep's best and worst
blocks are (contribution.relative_improvement); with every block on the same seeds, that is
their order by score. Blocks whose C is undefined are never ranked; ties go to the lower block
index. From a sweep with successive halving (sweep.halving_steps) only topK is defined, over the
blocks that trained to the end.

The sweep must be of the model that trains: of as many blocks, and, where the sweep recorded its
base model's weights fingerprint (manifest.json, models.weights_fingerprint) and the caller
names the model (selection.ModelDir), of the same weights, wherever either checkpoint lies now.
A sweep that recorded none (`run_sweep(num_layers=...)`, which reads no checkpoint, or one from
before jaxlayer recorded it) is checked by its block count alone. A sweep started again that has
not finished (store.check_finished) ranks nothing: its sweep.json leaves out the runs since.
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxlayer import paths
from jaxlayer.rl import selection
from jaxlayer.sweep import contribution, store
from jaxlayer.text import counted

RANKED_PATTERN = r"(top|bottom)(\d+)@(.+)"


def ranked_blocks(sweep_dir: str | Path, k: int, largest: bool, num_layers: int,
                  model_dir: selection.ModelDir = None) -> list[int]:
  """The k blocks with the largest (or smallest) C(k), -C(k) where full RL lost (see the module
  docstring), in the sweep at sweep_dir, sorted; the sweep checked to be of the model in
  model_dir (see the module docstring)."""
  which = "top" if largest else "bottom"
  path = paths.local_path(sweep_dir, f"{which}{k}@SWEEP_DIR") / "sweep.json"  # ~ expanded
  if not path.is_file():
    raise selection.SelectionSourceMissing(
        f"Selection '{which}{k}@{sweep_dir}': {path} does not exist; point it at a finished "
        "sweep directory (the one `jaxlayer sweep` printed).")
  try:
    store.check_finished(path.parent, f"Selection '{which}{k}@{sweep_dir}'")
  except ValueError as unfinished:  # (a finished run of this selection needs no ranking)
    raise selection.SelectionSourceMissing(str(unfinished)) from None
  sweep = store.read_json(path)
  if sweep["num_layers"] != num_layers:
    raise ValueError(f"Selection '{which}{k}@{sweep_dir}': that sweep measured a model of "
                     f"{counted(sweep['num_layers'], 'block')}, but this model has "
                     f"{counted(num_layers, 'block')}; use a sweep of this model.")
  _check_same_model(path.parent, sweep, f"{which}{k}@{sweep_dir}", model_dir)
  halved = bool(sweep.get("halving"))
  if halved and not largest:
    raise ValueError(f"Selection '{which}{k}@{sweep_dir}': that sweep used successive halving, "
                     "so only its best blocks trained to the end and its worst are not ranked; "
                     "take the bottom blocks from a sweep without sweep.halving_steps.")
  gain_over_all_seeds = sweep["s_full"] - sweep["s_base"]
  defined = [(contribution.relative_improvement(
                  l["contribution"], contribution.divisor_gain(l, gain_over_all_seeds)),
              l["layer"])
             for l in sweep["layers"] if l["contribution"] is not None]
  if not sweep["layers"]:
    raise ValueError(f"Selection '{which}{k}@{sweep_dir}': that sweep trained no block alone "
                     "(sweep.layers='none': groups only), so it ranks none; sweep the blocks "
                     "(--config.sweep.layers=all) into it first.")
  if not defined:
    raise ValueError(f"Selection '{which}{k}@{sweep_dir}': in that sweep full RL scored as the "
                     "base (S_full == S_base), so C(k) is undefined and ranks no block; run the "
                     "sweep again so that full RL moves the score (train longer or with another "
                     "learning rate, or evaluate on more problems).")
  if not 1 <= k <= len(defined):
    reached = " (successive halving took only these to the end)" if halved else ""
    raise ValueError(f"Selection '{which}{k}@{sweep_dir}': that sweep has a defined C(k) for "
                     f"{counted(len(defined), 'block')}{reached}; choose k between 1 and "
                     f"{len(defined)}, or sweep more blocks.")
  ordered = sorted(defined, key=lambda sl: (-sl[0] if largest else sl[0], sl[1]))
  return sorted(layer for _, layer in ordered[:k])


def _check_same_model(sweep_dir: Path, sweep: dict, term: str,
                      model_dir: selection.ModelDir) -> None:
  """Raises ValueError when the sweep's base model's weights differ from those in model_dir
  (unchecked where model_dir holds no weights: a hub model `jaxlayer memory` sizes)."""
  manifest_path = sweep_dir / store.MANIFEST
  recorded = (store.read_json(manifest_path).get(store.FINGERPRINT)
              if manifest_path.is_file() else None)
  if model_dir is None or recorded is None:
    return
  from jaxlayer import models  # (the sweep package imports no model code until it needs it)
  from jaxlayer.models.hub import holds_weights

  if not holds_weights(model_dir):
    return

  found = models.weights_fingerprint(model_dir)
  if found != recorded:
    raise ValueError(
        f"Selection '{term}': that sweep measured the blocks of {sweep['model']} (weights "
        f"fingerprint {recorded}), but this model, {model_dir}, has other weights (fingerprint "
        f"{found}) with as many blocks, whose contributions the sweep did not measure. Use a "
        f"sweep of this model (`jaxlayer sweep --config.model.path={model_dir} ...`), or train "
        "the model the sweep measured.")


def _expand_ranked(match: re.Match, num_layers: int, model_dir: selection.ModelDir) -> str:
  which, k, sweep_dir = match.groups()
  blocks = ranked_blocks(sweep_dir, int(k), which == "top", num_layers, model_dir)
  return "layers." + ",".join(map(str, blocks))


selection.register_selection_macro(RANKED_PATTERN, _expand_ranked)
