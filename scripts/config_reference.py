"""Writes docs/configuration.md, the configuration reference, from the code that defines it.

    python scripts/config_reference.py           # rewrite docs/configuration.md
    python scripts/config_reference.py --check   # exit 1 (and say so) if it is out of date

Each key's default comes from calling the functions that build the config
(jaxlayer.rl.config.default_config, jaxlayer.evaluation.default_eval_config,
jaxlayer.sweep.runner.default_sweep_config); its description is the comment beside it in
their source, read with `tokenize`, so descriptions live in one place, the code:

    config.seed = 0  # data order, sampling        -> "data order, sampling"
    # Persistent XLA compilation cache ...         -> the comment above a setting describes it;
    config.compilation_cache_dir = ...                a setting with no comment of its own takes
                                                      the last such comment of its group (up to
                                                      a blank line or another section).

Then, per file in configs/, the keys its get_config() sets to something else than the defaults.
tests/test_config_reference.py fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import io
import sys
import textwrap
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "configuration.md"
CONFIGS = REPO / "configs"


def section_builders() -> list[tuple[str, Callable[[], ml_collections.ConfigDict]]]:
  """(key prefix, function) for every function that defines config keys, outermost first."""
  from jaxlayer import evaluation
  from jaxlayer.rl.config import default_config
  from jaxlayer.sweep import launchers, runner

  return [("", default_config), ("eval.", evaluation.default_eval_config),
          ("sweep.", runner.default_sweep_config), ("sweep.ray.", launchers.default_ray_config)]


def default_tree() -> ml_collections.ConfigDict:
  """The training defaults with the eval and sweep sections every sweep config adds."""
  builders = dict(section_builders())
  config = builders[""]()
  config.eval = builders["eval."]()
  config.sweep = builders["sweep."]()
  return config


def comment_descriptions(function: Callable) -> dict[str, str]:
  """`config.a.b = value` assignments in `function`'s source -> "a.b": its comment."""
  source = textwrap.dedent(inspect.getsource(function))
  lines = source.splitlines()
  comments = {}  # line number -> comment text
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip("#").strip()
  assignments = sorted((node for node in ast.walk(ast.parse(source))
                        if isinstance(node, ast.Assign) and len(node.targets) == 1),
                       key=lambda node: node.lineno)
  descriptions, group_comment, previous_end, previous_section = {}, "", 0, ""
  for node in assignments:
    key = _attribute_path(node.targets[0])
    if key is None:
      continue
    section = key.rpartition(".")[0]
    if section != previous_section or any(not lines[n - 1].strip()
                                           for n in range(previous_end + 1, node.lineno)):
      group_comment = ""  # a blank line or another section ends a group
    above = _comment_block_above(node.lineno, lines, comments)
    group_comment = above or group_comment
    trailing = " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1)
                        if n in comments and not lines[n - 1].lstrip().startswith("#"))
    descriptions[key] = " — ".join(filter(None, [trailing, above])) or group_comment
    previous_end, previous_section = node.end_lineno, section
  return descriptions


def _attribute_path(target: ast.expr) -> str | None:
  """`config.a.b` -> "a.b"; None for anything else."""
  parts = []
  while isinstance(target, ast.Attribute):
    parts.append(target.attr)
    target = target.value
  if not (isinstance(target, ast.Name) and target.id == "config") or not parts:
    return None
  return ".".join(reversed(parts))


def _comment_block_above(line: int, lines: list[str], comments: dict[int, str]) -> str:
  """The full-line comments directly above `line` (1-based), joined."""
  block = []
  n = line - 1
  while n >= 1 and n in comments and lines[n - 1].lstrip().startswith("#"):
    block.append(comments[n])
    n -= 1
  return " ".join(reversed(block))


def all_descriptions() -> dict[str, str]:
  descriptions = {}
  for prefix, function in section_builders():
    for key, text in comment_descriptions(function).items():
      descriptions[prefix + key] = text
  return descriptions


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """Dotted key -> value (ConfigDict iterates its keys sorted); an empty section is one entry."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def _value(value: Any) -> str:
  """repr(value), with the installed package's directory written <jaxlayer> (no local paths)."""
  import jaxlayer

  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return repr(value).replace(str(Path(jaxlayer.__file__).parent), "<jaxlayer>")


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def load_config_file(path: Path) -> ml_collections.ConfigDict:
  """A configs/*.py file's get_config(), loaded as `jaxlayer --config` does."""
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _first_line(path: Path) -> str:
  docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
  return docstring.strip().splitlines()[0] if docstring.strip() else ""


def render() -> str:
  """The whole of docs/configuration.md."""
  descriptions = all_descriptions()  # in the order the source defines the keys
  position = {key: index for index, key in enumerate(descriptions)}

  def in_source_order(keys):
    return sorted(keys, key=lambda key: (position.get(key, len(position)), key))

  flat = flatten(default_tree())
  out = [
      "# Configuration reference",
      "",
      "<!-- Generated by scripts/config_reference.py from the code; do not edit by hand. -->",
      "",
      "A config file (`configs/*.py`) returns `jaxlayer.rl.config.default_config()` with some "
      "values changed. `jaxlayer train`, `memory`, `eval` and `sweep` add the `eval` section, "
      "with its defaults, to a config that has none, and `jaxlayer sweep` the `sweep` section. "
      "Any key can be overridden on the command line:",
      "",
      "```bash",
      "jaxlayer train --config configs/grpo_arithmetic.py "
      "--config.model.path=jaxlayer/assets/tiny-arith --config.run_dir=runs/arith_l3 "
      "--config.train.layers=layers.3 --config.train.steps=50",
      "```",
      "",
      "A default of `None` means what its row says: required (`model.path`, `run_dir`), the "
      "algorithm preset's value (`jaxlayer/rl/algorithms.py`), another key's, or none. Where the "
      "keys are defined: the training "
      "keys in `jaxlayer/rl/config.py`, `eval` in `jaxlayer/evaluation.py` "
      "(`default_eval_config`), `sweep` in `jaxlayer/sweep/runner.py` (`default_sweep_config`) "
      "and `sweep.ray` in `jaxlayer/sweep/launchers.py`. `<jaxlayer>` stands for the "
      "installed package's directory. A key that is none of these (`config.train.layer` for "
      "`train.layers`), in a config file or on the command line, is an error that names the "
      "closest; the keys of a dict (`task.options`, `eval.task_options`, ...) are its task's or "
      "environment's.",
  ]
  sections: dict[str, list[str]] = {}
  for key in in_source_order(flat):
    section = "sweep" if key.startswith("sweep.") else key.split(".")[0] if "." in key else ""
    sections.setdefault(section, []).append(key)
  for section, keys in sections.items():
    out += ["", f"## {section or 'Top level'}", "", "| key | default | description |",
            "|---|---|---|"]
    for key in keys:
      out.append(f"| `{key}` | `{_cell(_value(flat[key]))}` | {_cell(descriptions.get(key, ''))} |")

  out += ["", "## The shipped configs", "",
          "What each file in `configs/` changes from the defaults above (keys it adds are marked "
          "*new*).", ""]
  for path in sorted(CONFIGS.glob("*.py")):
    config_flat = flatten(load_config_file(path))
    changed = [(key, config_flat[key]) for key in in_source_order(config_flat)
               if key not in flat or _value(flat[key]) != _value(config_flat[key])]
    out += [f"### `configs/{path.name}`", "", _first_line(path), "",
            "| key | value |", "|---|---|"]
    for key, value in changed:
      marker = " *new*" if key not in flat else ""
      out.append(f"| `{key}`{marker} | `{_cell(_value(value))}` |")
    out.append("")
  return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="only check that the file is current")
  args = parser.parse_args(argv)
  text = render()
  if args.check:
    if not OUTPUT.is_file() or OUTPUT.read_text() != text:
      print(f"{OUTPUT.relative_to(REPO)} is out of date: run python scripts/config_reference.py")
      return 1
    return 0
  OUTPUT.parent.mkdir(parents=True, exist_ok=True)
  OUTPUT.write_text(text)
  print(f"wrote {OUTPUT}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
