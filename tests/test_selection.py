"""The selection grammar against real parameter paths, and its error messages."""

import pytest

from jaxlayer.models import ModelConfig
from jaxlayer.rl import selection
from jaxlayer.rl.train import param_shapes
from tests import hf_fixtures


def _paths(model_type, **overrides):
  hf = hf_fixtures.tiny_config(model_type, num_hidden_layers=4, **overrides).to_dict()
  return list(param_shapes(ModelConfig.from_hf_dict(hf)))


QWEN2 = _paths("qwen2")  # untied: has lm_head.kernel; q/k/v biases
QWEN3 = _paths("qwen3", tie_word_embeddings=True)  # tied: no lm_head; q/k norms
BLOCK = ["attn.q_proj.kernel", "attn.q_proj.bias", "attn.k_proj.kernel", "attn.k_proj.bias",
         "attn.v_proj.kernel", "attn.v_proj.bias", "attn.o_proj.kernel", "attn_norm.scale",
         "mlp.gate_proj.kernel", "mlp.up_proj.kernel", "mlp.down_proj.kernel", "mlp_norm.scale"]


def block(i, part=""):
  return sorted(f"layers.{i}.{name}" for name in BLOCK if name.startswith(part))


def select(spec, paths=QWEN2):
  return sorted(selection.select(spec, paths, 4))


def test_paths_are_the_documented_ones():
  assert sorted(p for p in QWEN2 if p.startswith("layers.2.")) == block(2)
  assert {p for p in QWEN2 if not p.startswith("layers.")} == {
      "embed.embedding", "final_norm.scale", "lm_head.kernel"}


@pytest.mark.parametrize("spec, expected", [
    ("layers.2", block(2)),
    ("layers.1-2", block(1) + block(2)),
    ("layers.0,3", block(0) + block(3)),
    ("layers.0,2-3", block(0) + block(2) + block(3)),
    ("layers.3.attn", block(3, "attn.")),
    ("layers.3.mlp", block(3, "mlp.")),
    ("layers.3.mlp_norm", ["layers.3.mlp_norm.scale"]),
    ("layers.1.mlp.down_proj", ["layers.1.mlp.down_proj.kernel"]),
    ("embed", ["embed.embedding"]),
    ("lm_head", ["lm_head.kernel"]),
    ("layers.3, layers.1.mlp ,embed", sorted(block(3) + block(1, "mlp.") + ["embed.embedding"])),
    ("mid2", block(1) + block(2)),
    ("mid1", block(1)),  # (4 - 1) // 2 = 1: half a block toward the input
])
def test_grammar(spec, expected):
  assert select(spec) == sorted(expected)


def test_all_and_model_order():
  assert selection.select("all", QWEN2, 4) == QWEN2
  assert selection.select("layers.3,layers.0", QWEN2, 4) == [p for p in QWEN2
                                                            if p.startswith(("layers.0.",
                                                                             "layers.3."))]


def test_attn_includes_qwen3_qk_norms_but_not_the_attn_norm():
  chosen = select("layers.0.attn", QWEN3)
  assert "layers.0.attn.q_norm.scale" in chosen and "layers.0.attn.k_norm.scale" in chosen
  assert "layers.0.attn_norm.scale" not in chosen


def test_mid5_on_28_blocks_is_11_to_15():
  paths = [f"layers.{i}.mlp.up_proj.kernel" for i in range(28)]
  assert selection.select("mid5", paths, 28) == [f"layers.{i}.mlp.up_proj.kernel"
                                                 for i in range(11, 16)]
  assert selection.named_blocks("mid5", 28) == [11, 12, 13, 14, 15]
  assert selection.named_blocks("layers.11-15", 28) is None  # no named selection


def test_registered_macro_expands(monkeypatch):
  monkeypatch.setattr(selection, "_MACROS", list(selection._MACROS))  # registered for this test
  selection.register_selection_macro(r"odd_blocks", lambda m, n, model_dir: "layers." + ",".join(
      str(i) for i in range(1, n, 2)))
  assert select("odd_blocks") == block(1) + block(3)


@pytest.mark.parametrize("spec, message", [
    ("layers.4", r"block 4 is out of range; the model has 4 blocks, layers.0 to layers.3"),
    ("layers.2-7", r"block 7 is out of range.*layers.0 to layers.3"),
    ("layers.3-1", r"runs backwards"),
    ("layers.1.atn", r"matches no parameter.*\['attn', 'attn_norm', 'mlp', 'mlp_norm'\]"),
    ("embeddings", r"'embeddings' matches no parameter.*\['embed', 'final_norm', 'lm_head'\]\. "
     r"A named selection of your own is registered in the config file: "
     r"selection.register_selection_macro\(PATTERN, EXPAND\)\.$"),
    ("3", r"bare block number: write it as 'layers.3'"),
    # A part after a bare number (layers.0,1.mlp): it named no parameter and listed the choices.
    ("layers.0,1.mlp", r"^Selection term '1.mlp' is a bare block number with a part: write it "
     r"as 'layers.1.mlp' \(a bare number after a 'layers.' term names a whole block\)\.$"),
    ("layers.1.mlp,2", r"ambiguous.*'layers.2' or 'layers.2.mlp'"),
    ("layers.1,,embed", r"empty term"),
    ("", r"selection is empty"),
    ("mid9", r"mid9.*1 <= 9 <= 4"),
    ("mid0", r"^Selection 'mid0' needs 1 <= 0 <= 4"),
    ("tpo5@runs/sweep", r"no known named selection.*import jaxlayer.sweep.strategies"),
    # A block number cut short or misspelt is no part name (the error listed the parts).
    ("layers.1-", r"^Selection term 'layers.1-': after 'layers.' comes a block number or range "
     r"\(layers.2, layers.1-3\), then optionally a part \(layers.2.mlp\)\.$"),
    ("layers.one", r"^Selection term 'layers.one': after 'layers.' comes a block number"),
    # A sweep's ranking without its sweep: the choices name the topK@SWEEP_DIR form.
    ("top3", r"'top3' matches no parameter.*'topK@SWEEP_DIR' / 'bottomK@SWEEP_DIR'"),
])
def test_bad_selections_are_explained(spec, message):
  with pytest.raises(ValueError, match=message):
    select(spec)


def test_lm_head_of_a_tied_model_points_to_embed():
  with pytest.raises(ValueError, match="ties its input and output embeddings.*select 'embed'"):
    select("lm_head", QWEN3)


def test_resolve_learning_rate_groups():
  chosen = selection.resolve(QWEN2, 4, "all", 5e-6,
                             selection.parse_lr_groups("layers.2-3=1e-5; embed=1e-6"))
  assert chosen.trainable == tuple(QWEN2) and chosen.frozen == ()
  assert dict(chosen.learning_rates) == {"default": 5e-6, "group0": 1e-5, "group1": 1e-6}
  assert {p for p, g in chosen.groups.items() if g == "group0"} == set(block(2) + block(3))
  assert chosen.groups["embed.embedding"] == "group1"
  assert chosen.groups["layers.0.mlp.up_proj.kernel"] == "default"


def test_groups_that_cover_the_selection_leave_no_default_rate():
  """train.learning_rate trains nothing when the groups split all of train.layers among them:
  it is no learning-rate group (the run's summary would list it for no parameter)."""
  chosen = selection.resolve(QWEN2, 4, "layers.1-2", 5e-6,
                             selection.parse_lr_groups("layers.1=1e-5; layers.2=2e-5"))
  assert dict(chosen.learning_rates) == {"group0": 1e-5, "group1": 2e-5}
  assert {path: chosen.groups[path] for path in chosen.trainable} == {
      **{path: "group0" for path in block(1)}, **{path: "group1" for path in block(2)}}


def test_resolve_frozen_is_the_complement():
  chosen = selection.resolve(QWEN2, 4, "layers.1", 1e-3)
  assert set(chosen.trainable) == set(block(1))
  assert set(chosen.frozen) == set(QWEN2) - set(block(1))
  assert set(chosen.learning_rates) == {"default"}


@pytest.mark.parametrize("layers, groups, message", [
    ("layers.1", "layers.2=1e-5", r"'layers.2' selects layers.2.* train.layers='layers.1' "
     "leaves frozen"),
    ("all", "layers.1=1e-5;layers.1.mlp=2e-5", r"both select layers.1.mlp"),
])
def test_bad_learning_rate_groups(layers, groups, message):
  with pytest.raises(ValueError, match=message):
    selection.resolve(QWEN2, 4, layers, 1e-3, selection.parse_lr_groups(groups))


def test_lr_groups_syntax_error():
  with pytest.raises(ValueError, match="'layers.2:1e-5' is not SELECTION=RATE"):
    selection.parse_lr_groups("layers.2:1e-5")
  for rate in ("0", "-1e-5", "nan"):  # (0 trains nothing, NaN makes every weight NaN)
    with pytest.raises(ValueError, match=f"'embed={rate}': a learning rate must be > 0"):
      selection.parse_lr_groups(f"embed={rate}")
  # Joined by ',' as selections are: the first group's rate was read as part of a sweep's path.
  with pytest.raises(ValueError, match=r"'top2@runs/sweep=1e-5,top3@runs/sweep=2e-5' joins "
                     "groups by ',': separate them with ';'"):
    selection.parse_lr_groups("top2@runs/sweep=1e-5,top3@runs/sweep=2e-5")
  # A '=' in a sweep directory's name is no group's rate.
  assert selection.parse_lr_groups("top2@runs/lr=1e-5/sweep,embed=2e-5") == {
      "top2@runs/lr=1e-5/sweep,embed": 2e-5}
