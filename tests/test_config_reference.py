"""scripts/config_reference.py: descriptions read from source comments, and the committed
docs/configuration.md is what the script writes from the current code."""

import importlib.util

import ml_collections

from tests.sweep_fakes import REPO

spec = importlib.util.spec_from_file_location("config_reference",
                                              REPO / "scripts" / "config_reference.py")
config_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config_reference)


def example_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # data order
  # A cache directory,
  # described over two lines.
  config.cache_dir = None

  config.train = ml_collections.ConfigDict()
  config.train.steps = 100  # RL steps
  config.train.weight_decay = 0.0

  # Overrides (None: the preset's value).
  config.train.clip_low = None
  config.train.clip_high = None
  config.train.kl = None  # KL weight
  x = 3  # not a config key
  config.train.after_code = x
  config.other_section = 2

  config.train.after_blank = 1
  config.train.multiline = (1,
                            2)  # a comment on the last line of the statement
  return config


def test_descriptions_come_from_trailing_comments_the_block_above_and_its_group():
  """A comment block above a key describes it, and the uncommented keys after it up to a blank
  line or another section; a trailing comment comes first."""
  assert config_reference.comment_descriptions(example_config) == {
      "seed": "data order",
      "cache_dir": "A cache directory, described over two lines.",
      "train": "",
      "train.steps": "RL steps",
      "train.weight_decay": "",
      "train.clip_low": "Overrides (None: the preset's value).",
      "train.clip_high": "Overrides (None: the preset's value).",
      "train.kl": "KL weight",
      "train.after_code": "Overrides (None: the preset's value).",
      "other_section": "",
      "train.after_blank": "",
      "train.multiline": "a comment on the last line of the statement",
  }


def test_every_default_key_has_a_row_with_its_default():
  text = config_reference.render()
  flat = config_reference.flatten(config_reference.default_tree())
  for key, value in flat.items():
    row = f"| `{key}` | `{config_reference._cell(config_reference._value(value))}` |"
    assert row in text, f"no row for {key}"


def test_the_committed_reference_is_up_to_date():
  committed = (REPO / "docs" / "configuration.md").read_text()
  assert committed == config_reference.render(), (
      "docs/configuration.md is out of date: run `python scripts/config_reference.py` and "
      "commit the result.")
