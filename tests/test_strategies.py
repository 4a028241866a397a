"""`topK@SWEEP_DIR` / `bottomK@SWEEP_DIR` in the training selection grammar (Only-BK, Only-WK,
Boost-BK)."""

import pytest

from jaxlayer.rl import selection
from jaxlayer.sweep import store, strategies

NUM_LAYERS = 6
# Hand-made sweep: block 2 is best, blocks 1 and 3 tie, block 4 undefined, block 5 negative.
CONTRIBUTIONS = {0: 0.2, 1: 0.9, 2: 1.1, 3: 0.9, 4: None, 5: -0.3}
PATHS = (["embed.embedding"] +
         [f"layers.{i}.{part}" for i in range(NUM_LAYERS)
          for part in ("attn.q_proj.kernel", "mlp.up_proj.kernel", "attn_norm.scale")] +
         ["final_norm.scale", "lm_head.kernel"])


S_BASE, S_FULL = 0.3, 0.5


def _layers(contributions: dict) -> list[dict]:
  """sweep.json's layers: each block's C and its score S_BASE + C (S_FULL - S_BASE)."""
  return [{"layer": k, "contribution": c, "score": S_BASE + (c or 0.0) * (S_FULL - S_BASE)}
          for k, c in contributions.items()]


def _sweep_json(layers: list[dict], **more) -> dict:
  """A hand-made sweep.json of NUM_LAYERS blocks: base and full RL score S_BASE and S_FULL."""
  return {"num_layers": NUM_LAYERS, "s_base": S_BASE, "s_full": S_FULL, "layers": layers, **more}


@pytest.fixture
def sweep_dir(tmp_path):
  store.write_json_atomic(tmp_path / "sweep.json", _sweep_json(_layers(CONTRIBUTIONS)))
  return tmp_path


def _blocks(paths):
  return sorted({int(p.split(".")[1]) for p in paths if p.startswith("layers.")})


def test_top_and_bottom_blocks_by_contribution(sweep_dir):
  # top2: block 2 (1.1), then the 0.9 tie goes to the lower index, block 1.
  assert _blocks(selection.select(f"top2@{sweep_dir}", PATHS, NUM_LAYERS)) == [1, 2]
  assert _blocks(selection.select(f"top3@{sweep_dir}", PATHS, NUM_LAYERS)) == [1, 2, 3]
  # bottom2: block 5 (-0.3) and block 0 (0.2); block 4 (undefined) is never ranked.
  assert _blocks(selection.select(f"bottom2@{sweep_dir}", PATHS, NUM_LAYERS)) == [0, 5]
  selected = selection.select(f"top1@{sweep_dir}", PATHS, NUM_LAYERS)
  assert selected == [p for p in PATHS if p.startswith("layers.2.")]  # the whole block only


def test_blocks_are_ranked_by_score_when_full_rl_ended_below_the_base(tmp_path):
  """S_base 0.5, S_full 0.4: C = (S_k - 0.5) / -0.1 is largest for the lowest score (block 3,
  0.25: C = 2.5) and smallest for the highest (block 1, 0.65: C = -1.5)."""
  scores = {0: 0.35, 1: 0.65, 2: 0.5, 3: 0.25}
  layers = [{"layer": k, "score": s, "contribution": (s - 0.5) / (0.4 - 0.5)}
            for k, s in scores.items()]
  store.write_json_atomic(tmp_path / "sweep.json", {"num_layers": NUM_LAYERS, "s_base": 0.5,
                                                    "s_full": 0.4, "layers": layers})
  assert _blocks(selection.select(f"top1@{tmp_path}", PATHS, NUM_LAYERS)) == [1]
  assert _blocks(selection.select(f"top2@{tmp_path}", PATHS, NUM_LAYERS)) == [1, 2]
  assert _blocks(selection.select(f"bottom1@{tmp_path}", PATHS, NUM_LAYERS)) == [3]


def test_a_halving_sweep_ranks_only_the_blocks_that_trained_to_the_end(tmp_path):
  """Successive halving stopped blocks 0, 1, 4 and 5 early: their final C is unknown, so the
  bottom of the survivors would not be the worst blocks."""
  store.write_json_atomic(tmp_path / "sweep.json", _sweep_json(
      _layers({2: 1.1, 3: 0.9}), halving={"rungs": [{"steps": 10}]}))
  assert _blocks(selection.select(f"top1@{tmp_path}", PATHS, NUM_LAYERS)) == [2]
  with pytest.raises(ValueError, match="used successive halving, so only its best blocks"):
    selection.select(f"bottom1@{tmp_path}", PATHS, NUM_LAYERS)
  with pytest.raises(ValueError, match=r"2 blocks \(successive halving took only these"):
    selection.select(f"top3@{tmp_path}", PATHS, NUM_LAYERS)


def test_sweep_selection_combines_with_other_terms(sweep_dir):
  selected = selection.select(f"top1@{sweep_dir},embed", PATHS, NUM_LAYERS)
  assert "embed.embedding" in selected and _blocks(selected) == [2]


def test_boost_top_blocks_with_a_learning_rate_group(sweep_dir):
  chosen = selection.resolve(PATHS, NUM_LAYERS, "all", 5e-6,
                             selection.parse_lr_groups(f"top2@{sweep_dir}=1e-5"))
  rates = {path: chosen.learning_rates[chosen.groups[path]] for path in chosen.trainable}
  assert {p for p, r in rates.items() if r == 1e-5} == {
      p for p in PATHS if p.startswith(("layers.1.", "layers.2."))}
  assert rates["embed.embedding"] == rates["layers.0.mlp.up_proj.kernel"] == 5e-6
  assert chosen.trainable == tuple(PATHS)


def test_bad_sweep_selections_name_the_problem(sweep_dir, tmp_path):
  with pytest.raises(ValueError, match=r"for 5 blocks; choose k between 1 and 5"):
    selection.select(f"top6@{sweep_dir}", PATHS, NUM_LAYERS)
  with pytest.raises(ValueError, match="a model of 6 blocks, but this model has 28 blocks"):
    strategies.ranked_blocks(sweep_dir, 2, largest=True, num_layers=28)
  with pytest.raises(ValueError, match="a model of 6 blocks, but this model has 1 block;"):
    strategies.ranked_blocks(sweep_dir, 1, largest=True, num_layers=1)  # was "has 1 blocks"
  with pytest.raises(FileNotFoundError, match="finished sweep directory"):
    selection.select(f"top2@{tmp_path / 'missing'}", PATHS, NUM_LAYERS)


def test_a_sweep_directory_under_the_home_directory(sweep_dir, monkeypatch):
  """`top2@~/sweep`: no shell expands a ~ after the @, so the selection does (as run_dir's)."""
  monkeypatch.setenv("HOME", str(sweep_dir.parent))
  selected = selection.select(f"top2@~/{sweep_dir.name}", PATHS, NUM_LAYERS)
  assert _blocks(selected) == [1, 2]
  with pytest.raises(ValueError, match=r"top2@SWEEP_DIR='gs://bucket/sweep' is a URL"):
    selection.select("top2@gs://bucket/sweep", PATHS, NUM_LAYERS)


def test_a_sweep_whose_full_rl_did_not_move_the_score_ranks_no_block(tmp_path):
  """S_full == S_base leaves every C undefined: the error said 'choose k between 1 and 0'."""
  store.write_json_atomic(tmp_path / "sweep.json", _sweep_json(_layers({0: None, 1: None,
                                                                        2: None})))
  with pytest.raises(ValueError, match=r"full RL scored as the base \(S_full == S_base\), so "
                     r"C\(k\) is undefined and ranks no block; run the sweep again"):
    selection.select(f"top2@{tmp_path}", PATHS, NUM_LAYERS)


def test_a_sweep_of_groups_only_ranks_no_block(tmp_path):
  """sweep.layers='none': the error said 'choose k between 1 and 0, or sweep more blocks'."""
  store.write_json_atomic(tmp_path / "sweep.json", _sweep_json([]))
  with pytest.raises(ValueError, match=r"that sweep trained no block alone \(sweep.layers='none'"
                     r": groups only\), so it ranks none; sweep the blocks"):
    selection.select(f"bottom1@{tmp_path}", PATHS, NUM_LAYERS)
