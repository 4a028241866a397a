"""Which parameters train: the selection grammar, resolved against a model's parameter paths.

A selection is a comma-separated list of terms; the union of what they select trains and
every other parameter stays frozen at its base value.

  all                 every parameter
  layers.14           block 14: attention, MLP and the block's two norms
  layers.10-14        blocks 10 to 14 (inclusive)
  layers.3,7,12       blocks 3, 7 and 12: a bare number (or range) after a `layers.` term
                      names another whole block
  layers.14.attn      a part of a block: attn, mlp, attn_norm, mlp_norm, or any deeper
                      path such as layers.14.mlp.down_proj
  embed, lm_head, final_norm
                      the token embedding, the output projection (absent when the model
                      ties its embeddings: select `embed`), the final RMSNorm
  mid5                the 5 middle blocks (any count: mid3, mid10); needs no profiling

Any term is a dotted path prefix: it selects every parameter whose path equals it or starts
with it followed by a dot. Terms combine freely: `layers.3,layers.5.mlp,embed`.

Named selections such as `mid5` are macros: a regular expression and a function that turns
the match into a plain selection. `register_selection_macro` adds one (the sweep adds
`top5@SWEEP_DIR` / `bottom5@SWEEP_DIR`, ranked by measured layer contribution).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence

_LAYERS_TERM = re.compile(r"layers\.(\d+)(?:-(\d+))?(?:\.(.+))?")
_BARE_BLOCKS = re.compile(r"(\d+)(?:-(\d+))?")


class SelectionSourceMissing(FileNotFoundError):
  """What a named selection is read from is gone or not whole (the sweep directory of
  topK@SWEEP_DIR deleted, or started again and not finished)."""


# The model's local checkpoint directory, which a named selection measured on a model (the
# sweep of topK@SWEEP_DIR) checks is that model; None where the caller does not know it, or a
# directory without weights (a hub model's config.json, which `jaxlayer memory` reads alone):
# then only the block count can be checked.
ModelDir = str | os.PathLike | None
# (pattern matched against a whole term, expand(match, num_layers, model_dir) -> selection).
_MACROS: list[tuple[re.Pattern, Callable[[re.Match, int, ModelDir], str]]] = []


def register_selection_macro(pattern: str,
                             expand: Callable[[re.Match, int, ModelDir], str]) -> None:
  """Makes terms that fully match `pattern` expand to `expand(match, num_layers, model_dir)`.

  The expansion is itself a selection string (e.g. "layers.3,7,12"), resolved like any other.
  An `expand` that reads what it stands for from a file raises SelectionSourceMissing when that
  file is gone.
  """
  _MACROS.append((re.compile(pattern), expand))


def _middle_blocks(match: re.Match, num_layers: int, model_dir: ModelDir) -> str:
  del model_dir  # (the middle of any model)
  count = int(match.group(1))
  if not 1 <= count <= num_layers:
    raise ValueError(f"Selection 'mid{count}' needs 1 <= {count} <= {num_layers} (the model's "
                     f"number of blocks).")
  first = (num_layers - count) // 2
  return f"layers.{first}-{first + count - 1}"


register_selection_macro(r"mid(\d+)", _middle_blocks)


def _expand_macro(term: str, num_layers: int, model_dir: ModelDir) -> str | None:
  """The plain selection a named selection term stands for; None when `term` is none."""
  found = next(((m, expand) for p, expand in _MACROS if (m := p.fullmatch(term))), None)
  if found is None:
    return None
  match, expand = found
  return expand(match, num_layers, model_dir)


def named_blocks(term: str, num_layers: int, model_dir: ModelDir = None) -> list[int] | None:
  """The blocks a named selection of whole blocks (mid5, top5@SWEEP_DIR, ...) stands for on the
  model in model_dir (see ModelDir), sorted; None when `term` is no named selection."""
  expansion = _expand_macro(term, num_layers, model_dir)
  if expansion is None:
    return None
  blocks = set()
  for part in expansion.removeprefix("layers.").split(","):
    block_range = _BARE_BLOCKS.fullmatch(part.removeprefix("layers."))
    if block_range is None:
      raise ValueError(f"Selection {term!r} stands for {expansion!r}, which is not whole blocks.")
    blocks.update(_block_range(block_range, term, num_layers))
  return sorted(blocks)


def select(spec: str, param_paths: Sequence[str], num_layers: int,
           model_dir: ModelDir = None) -> list[str]:
  """The parameter paths (in model order) that `spec` selects in the model in model_dir (see
  ModelDir); a clear error for any bad term."""
  terms = [term.strip() for term in str(spec).split(",")]
  if not any(terms):
    raise ValueError("The selection is empty: name what trains, e.g. 'all', 'layers.14', "
                     "'layers.10-14', 'layers.14.mlp' or 'embed'.")
  chosen: set[str] = set()
  previous_layers_part: str | None = None  # part suffix of the last `layers.` term, "" for blocks
  for term in terms:
    if not term:
      raise ValueError(f"Selection {spec!r} has an empty term (two commas in a row, or a "
                       "trailing comma).")
    if term == "all":
      chosen.update(param_paths)
      previous_layers_part = None
      continue
    expansion = _expand_macro(term, num_layers, model_dir)
    if expansion is not None:
      chosen.update(select(expansion, param_paths, num_layers, model_dir))
      previous_layers_part = None
      continue
    bare = _BARE_BLOCKS.fullmatch(term)
    if bare:
      if previous_layers_part is None:
        raise ValueError(f"Selection term {term!r} is a bare block number: write it as "
                         f"'layers.{term}' (a bare number may only follow a 'layers.' term).")
      if previous_layers_part:
        raise ValueError(
            f"Selection term {term!r} follows a term for part '{previous_layers_part}' of a "
            f"block; it is ambiguous whether the whole block or only its "
            f"{previous_layers_part} is meant: write 'layers.{term}' or "
            f"'layers.{term}.{previous_layers_part}'.")
      prefixes = [f"layers.{i}" for i in _block_range(bare, term, num_layers)]
    elif layers := _LAYERS_TERM.fullmatch(term):
      part = layers.group(3) or ""
      prefixes = [f"layers.{i}{'.' + part if part else ''}"
                  for i in _block_range(layers, term, num_layers)]
      previous_layers_part = part
    else:
      prefixes = [term]
      previous_layers_part = None
    for prefix in prefixes:
      matched = [p for p in param_paths if p == prefix or p.startswith(prefix + ".")]
      if not matched:
        raise ValueError(_no_match_message(term, prefix, param_paths))
      chosen.update(matched)
  return [p for p in param_paths if p in chosen]


def _block_range(match: re.Match, term: str, num_layers: int) -> range:
  first = int(match.group(1))
  last = int(match.group(2)) if match.group(2) is not None else first
  if first > last:
    raise ValueError(f"Selection term {term!r}: the range runs backwards; write "
                     f"{first}-{last} as {last}-{first}.")
  if last >= num_layers:
    raise ValueError(f"Selection term {term!r}: block {last} is out of range; the model has "
                     f"{num_layers} blocks, layers.0 to layers.{num_layers - 1}.")
  return range(first, last + 1)


def _no_match_message(term: str, prefix: str, param_paths: Sequence[str]) -> str:
  if "@" in term:
    return (f"Selection term {term!r} is no known named selection: topK@SWEEP_DIR and "
            "bottomK@SWEEP_DIR are defined by `import jaxlayer.sweep.strategies` (the CLI does "
            "it); check the spelling, e.g. 'top5@runs/sweep_tiny'.")
  if _LAYERS_TERM.fullmatch(f"layers.{term}"):  # e.g. 1.mlp (a bare 1 alone is a block)
    return (f"Selection term {term!r} is a bare block number with a part: write it as "
            f"'layers.{term}' (a bare number after a 'layers.' term names a whole block).")
  if prefix == "lm_head" or prefix.startswith("lm_head."):
    return ("Selection term 'lm_head': this model ties its input and output embeddings "
            "(tie_word_embeddings=true), so there is no separate lm_head; select 'embed' to "
            "train the shared matrix.")
  if prefix.startswith("layers.") and not _BARE_BLOCKS.fullmatch(prefix.split(".")[1]):
    return (f"Selection term {term!r}: after 'layers.' comes a block number or range (layers.2, "
            "layers.1-3), then optionally a part (layers.2.mlp).")
  if prefix.startswith("layers."):
    parts = sorted({p.split(".")[2] for p in param_paths if p.startswith("layers.")})
    return (f"Selection term {term!r} matches no parameter ({prefix!r}): a block's parts are "
            f"{parts}; deeper paths look like 'layers.0.mlp.down_proj'.")
  tops = sorted({p.split(".")[0] for p in param_paths} - {"layers"})
  return (f"Selection term {term!r} matches no parameter. Choose from 'all', 'layers.N', "
          f"'layers.N-M', 'layers.N.attn' / '.mlp', 'midK', 'topK@SWEEP_DIR' / "
          f"'bottomK@SWEEP_DIR', or a top-level name: {tops}. A named selection of your own is "
          "registered in the config file: selection.register_selection_macro(PATTERN, EXPAND).")


@dataclasses.dataclass(frozen=True)
class Selection:
  """What trains and at which learning rate.

  trainable: paths of the trained parameters (model order); frozen: the others.
  groups: trainable path -> name of its learning-rate group; learning_rates: name -> rate.
  """

  trainable: tuple[str, ...]
  frozen: tuple[str, ...]
  groups: Mapping[str, str]
  learning_rates: Mapping[str, float]


DEFAULT_GROUP = "default"


def resolve(param_paths: Sequence[str], num_layers: int, layers: str, learning_rate: float,
            lr_groups: Mapping[str, float] | None = None,
            model_dir: ModelDir = None) -> Selection:
  """Resolves `layers` and optional per-group learning rates (selection -> rate) in the model
  in model_dir (see ModelDir).

  Each lr group must lie inside `layers` and groups may not overlap; the rest of `layers`
  trains at `learning_rate` (the paper's Boost-B10: `layers=all`, top-10 blocks at 1e-5).
  """
  trainable = select(layers, param_paths, num_layers, model_dir)
  groups = {path: DEFAULT_GROUP for path in trainable}
  learning_rates = {DEFAULT_GROUP: float(learning_rate)}
  owner: dict[str, str] = {}
  for index, (group_spec, rate) in enumerate((lr_groups or {}).items()):
    name = f"group{index}"
    learning_rates[name] = float(rate)
    for path in select(group_spec, param_paths, num_layers, model_dir):
      if path not in groups:
        raise ValueError(f"Learning-rate group {group_spec!r} selects {path}, which "
                         f"train.layers={layers!r} leaves frozen: widen train.layers or narrow "
                         "the group.")
      if path in owner:
        raise ValueError(f"Learning-rate groups {owner[path]!r} and {group_spec!r} both select "
                         f"{path}: give each parameter one learning rate.")
      owner[path] = group_spec
      groups[path] = name
  if all(group != DEFAULT_GROUP for group in groups.values()):
    del learning_rates[DEFAULT_GROUP]
  chosen = set(trainable)
  return Selection(trainable=tuple(trainable),
                   frozen=tuple(p for p in param_paths if p not in chosen),
                   groups=groups, learning_rates=learning_rates)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def parse_lr_groups(text: str) -> dict[str, float]:
  """'layers.10-19=1e-5; embed=1e-6' -> {'layers.10-19': 1e-5, 'embed': 1e-6} ('' -> {})."""
  groups = {}
  for item in filter(None, (item.strip() for item in str(text or "").split(";"))):
    spec, sep, rate = item.rpartition("=")
    spec = spec.strip()
    if "," in spec and any(_is_number(term.rpartition("=")[2]) for term in spec.split(",")
                           if "=" in term):  # (a sweep directory may hold a '=')
      raise ValueError(f"train.lr_groups item {item!r} joins groups by ',': separate them with "
                       "';', e.g. 'layers.10-19=1e-5;layers.0-9=5e-6'.")
    try:
      if not sep or not spec:
        raise ValueError
      groups[spec] = float(rate)
    except ValueError:
      raise ValueError(f"train.lr_groups item {item!r} is not SELECTION=RATE; write e.g. "
                       "'layers.10-19=1e-5;layers.0-9=5e-6'.") from None
    if not groups[spec] > 0:  # NaN too
      raise ValueError(f"train.lr_groups item {item!r}: a learning rate must be > 0.")
  return groups
