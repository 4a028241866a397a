"""Load a Hugging Face checkpoint into a jaxlayer model, and write one back."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import itertools
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxlayer import distributed, paths
from jaxlayer.models import hf_mapping, sharding
from jaxlayer.models.config import (AUTO_DTYPE, DAMAGED_FILE_FIX, ModelConfig, checkpoint_dtype,
                                     resolve_dtype)
from jaxlayer.models.qwen import Qwen, require_model
from jaxlayer.progress import progress_bar
from jaxlayer.text import counted

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "generation_config.json")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]
# save_pretrained also writes float16, in which jaxlayer does not compute.
SAVE_DTYPES = ("float32", "bfloat16", "float16")
# The safetensors dtypes of the weights loading reads (quantized ones, int8 or float8, are not).
LOADED_TENSOR_DTYPES = ("F32", "BF16", "F16", "F64")
# In the name of a decoder's tensor that holds no weights: RoPE's inverse frequencies, which
# older transformers saved.
ROTARY_BUFFER = ".rotary_emb."
# Max tensor size per safetensors shard when saving (bytes).
SHARD_BYTES = 2 * 1024**3
PROGRESS_DELAY_S = 1.0  # load and save show a progress bar once they have taken this long
# The name with which the staging directory of a save starts, in its output directory.
STAGING_PREFIX = ".jaxlayer-staging-"


def _is_weights_file(name: str) -> bool:
  return name in (SINGLE_FILE, INDEX_FILE) or fnmatch.fnmatch(name, "model-*.safetensors")


def is_checkpoint_file(name: str) -> bool:
  """Whether save_pretrained writes files of this name."""
  return name == "config.json" or name in TOKENIZER_FILES or _is_weights_file(name)


def path_str(path: tuple) -> str:
  """nnx state path ('layers', 3, 'attn', 'q_proj', 'kernel') -> 'layers.3.attn.q_proj.kernel'."""
  return ".".join(str(p) for p in path)


def named_params(model: nnx.Module) -> dict[str, jax.Array]:
  """Every parameter of `model` by dotted path."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return {path_str(path): var.get_value() for path, var in flat}


def resolve_model_dir(path_or_hub_id: str | os.PathLike,
                      hub_files: Sequence[str] = _HUB_PATTERNS) -> Path:
  """A local directory as is; otherwise a hub id fetched (or found in the HF cache): the files
  matching `hub_files` (default: config, weights and tokenizer)."""
  path = paths.local_path(path_or_hub_id, "model")
  from jaxlayer.rl.checkpoint import RUN_FILE  # (jaxlayer.rl imports this module)

  if (path / RUN_FILE).is_file():  # its config.json is the run's config, not a model's
    raise ValueError(
        f"{path} is a jaxlayer run directory, not a Hugging Face checkpoint: write one from it "
        f"with `jaxlayer export --run {path_or_hub_id} --out DIR` and pass DIR, or load it in "
        f"Python with `model, tokenizer, info = jaxlayer.evaluation.load_model("
        f"{str(path_or_hub_id)!r})` (its base model with the trained blocks).")
  if path.is_dir():
    return path
  name = str(path_or_hub_id)
  if not is_hub_id(name):
    raise FileNotFoundError(
        f"Model directory {name!r} does not exist. Pass a directory holding config.json and "
        "model.safetensors, or a Hugging Face hub id such as 'Qwen/Qwen3-1.7B'.")
  from huggingface_hub import snapshot_download

  try:
    snapshot = Path(snapshot_download(name, allow_patterns=list(hub_files)))
  except Exception as err:  # offline, unknown repo, gated repo, ...
    # Only the files asked for: `jaxlayer memory` needs config.json, not gigabytes of weights.
    only = ("" if list(hub_files) == _HUB_PATTERNS else
            "".join(f" --include {shlex.quote(pattern)}" for pattern in hub_files))
    raise FileNotFoundError(
        f"{name!r} is not a local directory and could not be fetched from the Hugging Face hub "
        f"({type(err).__name__}: {err}). Download it first (`hf download {name}{only} --local-dir "
        "DIR`) and pass DIR.") from err
  # Offline, huggingface_hub returns what the cache holds: a download cut short, or one of
  # some files only, lacks the others.
  wanted = lambda file: any(fnmatch.fnmatch(file, pattern) for pattern in hub_files)  # noqa: E731
  if wanted("config.json") and not (snapshot / "config.json").is_file():
    raise _incomplete_download(name, snapshot, "config.json")
  if wanted(SINGLE_FILE) and not holds_weights(snapshot):
    raise _incomplete_download(name, snapshot, f"weights ({SINGLE_FILE} or {INDEX_FILE})")
  return snapshot


def holds_weights(model_dir: str | os.PathLike) -> bool:
  """Whether a local checkpoint directory holds its weights (or their index), which `jaxlayer
  memory` does not fetch of a hub model."""
  return any((Path(model_dir) / name).is_file() for name in (SINGLE_FILE, INDEX_FILE))


def is_hub_id(name: str) -> bool:
  """Whether `name`, which is no local directory, names a Hugging Face hub model (ORG/NAME)."""
  return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def hub_id_of_snapshot(path: str | os.PathLike) -> str | None:
  """The hub id whose snapshot in a Hugging Face cache `path` names
  (HF_CACHE/models--ORG--NAME/snapshots/REVISION; hub ids hold no "--"), else None."""
  path = Path(path)
  cached_repo = path.parent.parent.name
  hub_id = cached_repo.removeprefix("models--").replace("--", "/")
  if path.parent.name == "snapshots" and cached_repo.startswith("models--") and is_hub_id(hub_id):
    return hub_id
  return None


def _incomplete_download(hub_id: str, snapshot: Path, missing: str) -> FileNotFoundError:
  """The error for a snapshot of `hub_id` in the Hugging Face cache that lacks `missing`."""
  return FileNotFoundError(
      f"The Hugging Face cache's snapshot of {hub_id!r} ({snapshot}) lacks its {missing}: a "
      "download cut short, or one of some of its files only. Download it whole with `hf download "
      f"{hub_id}` (online: without HF_HUB_OFFLINE=1), or pass a directory that holds the model.")


def _index_weight_map(index_file: Path) -> dict[str, str]:
  """The weight_map (tensor name -> shard file) of a sharded checkpoint's index file."""
  try:
    index = json.loads(index_file.read_text(encoding="utf-8"))
  except json.JSONDecodeError as err:
    raise ValueError(f"{index_file} is no valid JSON ({err}): {DAMAGED_FILE_FIX}") from None
  if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
    raise ValueError(
        f'{index_file} has no "weight_map" (tensor name -> shard file): {DAMAGED_FILE_FIX}')
  return index["weight_map"]


def _weight_files(model_dir: Path) -> list[Path]:
  if (model_dir / INDEX_FILE).is_file() and (model_dir / SINGLE_FILE).is_file():
    # transformers' save_pretrained over an older checkpoint leaves the older one's weights.
    raise ValueError(
        f"{model_dir} holds both {SINGLE_FILE} and {INDEX_FILE}, the weights of two "
        "checkpoints (transformers loads the first, vLLM the shards the second names): one is "
        "left from an earlier save into this directory; remove the files of the one that is "
        "not this model's.")
  if (model_dir / INDEX_FILE).is_file():
    weight_map = _index_weight_map(model_dir / INDEX_FILE)
    files = [model_dir / name for name in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
      raise FileNotFoundError(
          f"{model_dir / INDEX_FILE} names {counted(len(missing), 'missing shard')}: {missing}. "
          "The checkpoint is incomplete: copy or download the missing files again.")
    return files
  if (model_dir / SINGLE_FILE).is_file():
    return [model_dir / SINGLE_FILE]
  others = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(
      p.name for p in model_dir.glob("*.pt"))
  hint = (f" Found {others}: convert them to safetensors (transformers: "
          "`model.save_pretrained(dir, safe_serialization=True)`)." if others else "")
  raise FileNotFoundError(
      f"No weights in {model_dir}: expected {SINGLE_FILE} or {INDEX_FILE}.{hint}")


@contextlib.contextmanager
def _open_weights(file: Path) -> Iterator:
  """safe_open(file) for numpy arrays; a file that is no safetensors file is a clear error."""
  try:
    weights = safe_open(file, framework="numpy")
  except SafetensorError as err:
    raise ValueError(
        f"{file} is no readable safetensors file ({err}): {DAMAGED_FILE_FIX}") from None
  with weights as opened:
    yield opened


def stored_tensors(model_dir: str | os.PathLike,
                   names: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, tensor as stored) for each of `names` in a local checkpoint, one at a time."""
  where = {}  # tensor name -> its file
  for file in _weight_files(Path(model_dir)):
    with _open_weights(file) as f:
      where.update(dict.fromkeys(f.keys(), file))
  for name in names:
    with _open_weights(where[name]) as f:
      yield name, f.get_tensor(name)


def stored_shapes(model_dir: str | os.PathLike,
                  names: Sequence[str]) -> dict[str, tuple[int, ...]]:
  """Each of `names` in a local checkpoint and its shape as stored, from the files' headers (no
  tensor is read)."""
  shapes = {}
  for file in _weight_files(Path(model_dir)):
    with _open_weights(file) as f:
      shapes.update({name: tuple(f.get_slice(name).get_shape())
                     for name in set(names) & set(f.keys())})
  return {name: shapes[name] for name in names}


def _check_tied_copy(files: list[Path], cfg: ModelConfig) -> None:
  """With tied embeddings, an lm_head.weight in the checkpoint must be the embeddings' copy:
  transformers uses a stored lm_head.weight as it is, jaxlayer the embeddings."""
  if not cfg.tie_word_embeddings:
    return
  where = {}  # tensor name -> its file
  for file in files:
    with _open_weights(file) as f:
      where.update({name: file for name in ("lm_head.weight", "model.embed_tokens.weight")
                    if name in f.keys()})
  if "lm_head.weight" not in where:  # (released tied checkpoints store none)
    return

  def read(name: str) -> np.ndarray | None:
    if name not in where:
      return None
    with _open_weights(where[name]) as f:
      return f.get_tensor(name)

  if not np.array_equal(read("lm_head.weight"), read("model.embed_tokens.weight")):
    raise ValueError(
        "config.json ties lm_head to the embeddings (tie_word_embeddings=true) but the "
        "checkpoint's lm_head.weight differs from model.embed_tokens.weight: set "
        "tie_word_embeddings to false to use it, or remove it to use the embeddings.")


def _check_stored_tensors(files: list[Path], cfg: ModelConfig, expected: dict) -> None:
  """Raises, from the files' headers alone (before the weights load), where the checkpoint holds a
  tensor of the decoder that the model has no place for, one of another dtype or shape than the
  model's, or lacks one of the model's.

  expected: jaxlayer path -> the model's parameter there (abstract).
  """
  stored = {}  # tensor name -> its file
  for file in files:
    with _open_weights(file) as f:
      for name in f.keys():
        stored[name] = file
        mapped = hf_mapping.hf_to_jax_path(name)
        if mapped is None and name.startswith(("model.", "lm_head.")) and ROTARY_BUFFER not in name:
          raise ValueError(
              f"Checkpoint tensor {name!r} ({file.name}) has no place in a {cfg.model_type} "
              "model: it belongs to another architecture, whose logits differ (transformers "
              "drops it with a warning). Load the checkpoint with its own code, or remove the "
              "tensor if it is of no use.")
        if mapped is None or (cfg.tie_word_embeddings and name == "lm_head.weight"):
          continue  # e.g. a RoPE buffer, a value head, or a redundant copy of tied embeddings
        path, transform = mapped
        if path not in expected:
          raise ValueError(
              f"Checkpoint tensor {name!r} ({file.name}) has no place in a model with this "
              f"config.json ({cfg.num_layers} layers, model_type {cfg.model_type!r}): the config "
              "and the weights do not belong together.")
        header = f.get_slice(name)
        if header.get_dtype() not in LOADED_TENSOR_DTYPES:
          raise ValueError(
              f"Tensor {name!r} ({file.name}) is stored as {header.get_dtype()}, jaxlayer reads "
              f"{list(LOADED_TENSOR_DTYPES)}: these weights are quantized or damaged; use the "
              "unquantized checkpoint.")
        want = expected[path].shape
        want_hf = tuple(reversed(want)) if transform == hf_mapping.TRANSPOSE else want
        if tuple(header.get_shape()) != want_hf:
          raise ValueError(
              f"Tensor {name!r} has shape {tuple(header.get_shape())} but config.json implies "
              f"{want_hf} (hidden {cfg.hidden_size}, heads {cfg.num_heads}/{cfg.num_kv_heads}, "
              f"head_dim {cfg.head_dim}, intermediate {cfg.intermediate_size}, vocab "
              f"{cfg.vocab_size}).")
  missing = [name for name in (hf_mapping.jax_to_hf_name(path)[0] for path in sorted(expected))
             if name not in stored]
  if not missing:
    return
  if missing == ["lm_head.weight"]:
    fix = ("config.json's tie_word_embeddings=false asks for it: set it to true if the model "
           "ties its output layer to the embeddings (Qwen2.5 up to 3B and Qwen3 up to 4B do)")
  else:
    fix = ("the weights are incomplete or of a model other than config.json's: copy or download "
           "the checkpoint again")
  raise ValueError(f"The checkpoint in {files[0].parent} lacks {counted(len(missing), 'tensor')} "
                   f"of the model, {missing[:8]}{' ...' if len(missing) > 8 else ''}: {fix}.")


def _read_hf_tensors(files: list[Path], expected: dict):
  """Yields (jaxlayer path, numpy array in jaxlayer layout) for every tensor the model uses, of
  a checkpoint that `_check_stored_tensors` has checked.

  expected: jaxlayer path -> the model's parameter there.
  """
  for file in files:
    with _open_weights(file) as f:
      for name in f.keys():
        mapped = hf_mapping.hf_to_jax_path(name)
        if mapped is None or mapped[0] not in expected:
          continue  # e.g. a RoPE buffer, a value head, or a redundant copy of tied embeddings
        path, transform = mapped
        yield path, hf_mapping.apply_transform(f.get_tensor(name), transform)


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
  """A short hash of a local checkpoint's weights that does not depend on where they are: each
  tensor's name, shape and a sample of its values as float32 (a vector whole, a matrix's first,
  middle and last rows). The same weights in another directory, split into other files, or
  saved in float32 instead of bfloat16 match; another fine-tune of the same model does not.
  Only a few rows of each tensor are read."""
  model_dir = Path(model_dir)
  cfg = ModelConfig.from_json_file(model_dir / "config.json")
  samples = {}
  for file in _weight_files(model_dir):
    with _open_weights(file) as f:
      for name in f.keys():
        if hf_mapping.hf_to_jax_path(name) is None or (cfg.tie_word_embeddings
                                                        and name == "lm_head.weight"):
          continue  # what loading skips, so that a redundant copy changes nothing
        tensor = f.get_slice(name)
        shape = tuple(tensor.get_shape())
        rows = [tensor[:]] if len(shape) < 2 else [
            tensor[i:i + 1] for i in sorted({0, shape[0] // 2, shape[0] - 1})]
        samples[name] = (shape, np.concatenate([np.ravel(r) for r in rows]).astype(np.float32))
  digest = hashlib.sha256()
  for name in sorted(samples):
    shape, values = samples[name]
    digest.update(f"{name}{list(shape)}".encode())
    digest.update(values.tobytes())
  return digest.hexdigest()[:16]


def from_pretrained(path_or_hub_id: str | os.PathLike, dtype: str = AUTO_DTYPE,
                    mesh: jax.sharding.Mesh | None = None) -> tuple[Qwen, ModelConfig]:
  """Loads a Qwen2 / Qwen2.5 / Qwen3 checkpoint; places parameters on `mesh` when given.

  dtype: "float32" or "bfloat16", or "auto": the checkpoint's (config.json's dtype; float32 for
  a float16 checkpoint or one that names none), as transformers' from_pretrained loads it.
  """
  if dtype != AUTO_DTYPE:
    resolve_dtype(dtype)  # an unknown dtype fails before anything is read
  with distributed.failing_together("Finding the model"):  # every host must have it
    model_dir = resolve_model_dir(path_or_hub_id)
    cfg = dataclasses.replace(ModelConfig.from_json_file(model_dir / "config.json"),
                              source_dir=str(model_dir))
    files = _weight_files(model_dir)
    _check_tied_copy(files, cfg)
  jnp_dtype = resolve_dtype(checkpoint_dtype(cfg.hf_config) if dtype == AUTO_DTYPE else dtype)

  abstract = nnx.eval_shape(lambda: Qwen(cfg, dtype=jnp_dtype, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  flat = nnx.to_flat_state(abstract_state)
  expected = {path_str(path): var.get_value() for path, var in flat}

  _check_stored_tensors(files, cfg, expected)
  loaded = {}
  tensors = _read_hf_tensors(files, expected)
  for path, array in _progress(tensors, len(expected), f"load {model_dir.name}"):
    target = expected[path]
    where = (sharding.param_sharding(path, target.shape, mesh) if mesh is not None
             else jax.local_devices()[0])
    loaded[path] = jax.device_put(array.astype(target.dtype), where)
  for path, var in flat:
    var.set_value(loaded[path_str(path)])
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))
  return model, cfg


def save_pretrained(model: Qwen, out_dir: str | os.PathLike, dtype: str | None = None,
                    overwrite: bool = False) -> Path:
  """Writes config.json, safetensors and (when the source had them) the tokenizer files.

  dtype: one of SAVE_DTYPES (default: the model's). float16 keeps a bfloat16 weight exactly
  within its normal range (6.1e-5 to 65504 in magnitude; smaller ones lose bits or become 0); a
  weight beyond 65504, which would become inf, is refused before anything is written.

  Files are written to a hidden staging directory in `out_dir` (STAGING_PREFIX: on its file
  system, where a link or a mount point puts it) and moved into place at the end, config.json
  last (a previous one is removed first), so an interrupted save never leaves a half-written file
  nor a directory that looks like a whole checkpoint (the staging directory a killed save on
  this host left goes with the next save into `out_dir`: paths.remove_leftovers); an existing
  checkpoint in `out_dir` is replaced only with `overwrite=True`: its weights, and its
  tokenizer files when the model brings its source's (files of other names stay). On several
  hosts every process calls it (parameters spread over the hosts are gathered) and process 0
  writes.
  """
  require_model(model)
  out_dir = paths.local_path(out_dir, "out_dir")
  cfg = model.config
  if cfg.source_dir and Path(cfg.source_dir).resolve() == out_dir.resolve():
    raise ValueError("Refusing to write over the checkpoint the model was loaded from "
                     f"({out_dir}); choose another output directory.")
  if not overwrite and any((out_dir / n).exists()
                           for n in ("config.json", SINGLE_FILE, INDEX_FILE)):
    raise FileExistsError(f"{out_dir} already holds a checkpoint; pass overwrite=True "
                          "(CLI: --overwrite) or choose another directory.")
  target_dtype = model.dtype if dtype is None else _save_dtype(dtype)
  params = named_params(model)
  _refuse_overflow(params, target_dtype)
  # Converted one at a time and written a shard at a time: the host holds one shard beside the
  # model, never a second copy of it whole (a 7B model is 15 GB in bfloat16, 30 GB in float32).
  sizes = {hf_mapping.jax_to_hf_name(path)[0]: value.size * np.dtype(target_dtype).itemsize
           for path, value in params.items()}
  tensors = _progress(_hf_tensors(params, target_dtype), len(params), f"save {out_dir.name}")
  if distributed.is_primary():
    _write_checkpoint(tensors, sizes, cfg, target_dtype, out_dir)
  else:
    for _ in tensors:  # every process gathers each tensor with process 0, which writes it
      pass
  distributed.sync("jaxlayer: save_pretrained")
  return out_dir


def _refuse_overflow(params: dict[str, jax.Array], target_dtype) -> None:
  """Refuses, before anything is written, weights that saving in `target_dtype` would turn into
  inf; only the leaves of a wider range than `target_dtype`'s are converted to see."""
  overflowing = {}  # HF name -> its largest magnitude, out of range
  for path, value in params.items():
    if jax.numpy.finfo(value.dtype).max <= jax.numpy.finfo(target_dtype).max:
      continue
    source = distributed.to_host(value)
    with np.errstate(over="ignore"):  # (an overflow is what is looked for)
      array = source.astype(target_dtype)
    if np.any(np.isinf(array) & np.isfinite(source)):
      overflowing[hf_mapping.jax_to_hf_name(path)[0]] = float(
          np.max(np.abs(source.astype(np.float32))))
  if overflowing:
    name, largest = max(overflowing.items(), key=lambda item: item[1])
    finfo = jax.numpy.finfo(target_dtype)
    raise ValueError(
        f"Saving in {finfo.dtype.name} would turn weights of "
        f"{counted(len(overflowing), 'tensor')} into inf ({finfo.dtype.name}'s largest value is "
        f"{float(finfo.max):g}; {name} holds {largest:g}): write float32 or bfloat16 instead.")


def _hf_tensors(params: dict[str, jax.Array],
                target_dtype) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, numpy array in HF layout and `target_dtype`) for each of `params`, one at
  a time (on several hosts, every process must draw them all)."""
  for path, value in params.items():
    name, transform = hf_mapping.jax_to_hf_name(path)
    array = distributed.to_host(value).astype(target_dtype, copy=False)
    yield name, np.ascontiguousarray(hf_mapping.apply_transform(array, transform))


def _save_dtype(dtype: str):
  """A name of SAVE_DTYPES -> its numpy dtype."""
  if dtype not in SAVE_DTYPES:
    raise ValueError(f"Unknown dtype {dtype!r} to save in: choose one of {list(SAVE_DTYPES)}.")
  return np.float16 if dtype == "float16" else resolve_dtype(dtype)


def _progress(items, total: int, description: str):
  """items with a progress bar in tensors, shown only once the work has taken PROGRESS_DELAY_S
  (a multi-GB checkpoint, not the tiny ones)."""
  return progress_bar(items, total=total, desc=description, unit="tensor", leave=False,
                      delay=PROGRESS_DELAY_S, disable=not distributed.is_primary())


def _write_checkpoint(tensors: Iterable[tuple[str, np.ndarray]], sizes: dict[str, int],
                      cfg: ModelConfig, dtype, out_dir: Path) -> None:
  """Writes `tensors` (HF name, array; `sizes`: each one's bytes, in their order) and the
  source's files as a checkpoint in `out_dir`, through a staging directory there."""
  with paths.naming_a_full_disk(out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    # A killed save (SIGKILL, a preempted VM) left its staging directory: up to a whole
    # checkpoint.
    paths.remove_leftovers(out_dir, STAGING_PREFIX)
    # Inside out_dir, whose files move in from it: a rename cannot cross file systems, and a
    # sibling directory of an out_dir that is a link or a mount point is on another one.
    staging = Path(tempfile.mkdtemp(prefix=paths.marked(STAGING_PREFIX), dir=out_dir))
    try:
      _write_staged(tensors, sizes, cfg, dtype, staging, out_dir)
    finally:
      shutil.rmtree(staging, ignore_errors=True)


def _write_staged(tensors: Iterable[tuple[str, np.ndarray]], sizes: dict[str, int],
                  cfg: ModelConfig, dtype, staging: Path, out_dir: Path) -> None:
  """Writes the checkpoint into `staging`, then moves it into `out_dir`."""
  _write_safetensors(tensors, sizes, staging)
  # transformers 4's `torch_dtype` goes: readers of it would take the source's dtype for the
  # weights written here (transformers 5 writes and prefers `dtype`).
  hf_config = {key: value for key, value in cfg.hf_config.items() if key != "torch_dtype"}
  hf_config["dtype"] = np.dtype(dtype).name
  with open(staging / "config.json", "w") as f:
    json.dump(hf_config, f, indent=2)
  if cfg.source_dir:
    for name in TOKENIZER_FILES:
      if (Path(cfg.source_dir) / name).is_file():
        shutil.copy2(Path(cfg.source_dir) / name, staging / name)
  # config.json goes first and comes back last: a save cut short (a killed process) never
  # looks like a whole checkpoint, as this one's weights beside the previous one's would.
  (out_dir / "config.json").unlink(missing_ok=True)
  # The previous checkpoint's files that this one lacks: weights, and tokenizer files when
  # this one brings its source's (a model built in code keeps those already in out_dir).
  written = {file.name for file in staging.iterdir()}
  replaced = TOKENIZER_FILES if cfg.source_dir else ()
  for stale in out_dir.iterdir():
    if stale.name not in written and (_is_weights_file(stale.name) or stale.name in replaced):
      stale.unlink()
  umask = os.umask(0)
  os.umask(umask)
  for file in sorted(staging.iterdir(), key=lambda file: file.name == "config.json"):
    file.chmod(0o666 & ~umask)  # staging files are private; the checkpoint is not
    os.replace(file, out_dir / file.name)


def _write_safetensors(tensors: Iterable[tuple[str, np.ndarray]], sizes: dict[str, int],
                       out_dir: Path) -> None:
  """One file, or shards of at most SHARD_BYTES plus an index, as transformers writes them; each
  file is written once its tensors have come, so only one shard is held at a time.

  sizes: each tensor's bytes, in the order `tensors` yields them (the shards are planned from
  them, since each shard's file name counts them all).
  """
  shards, current, size = [], [], 0  # shards: the names of each file's tensors
  for name, nbytes in sizes.items():
    if current and size + nbytes > SHARD_BYTES:
      shards.append(current)
      current, size = [], 0
    current.append(name)
    size += nbytes
  shards.append(current)
  if len(shards) == 1:
    save_file(dict(tensors), out_dir / SINGLE_FILE, metadata={"format": "pt"})
    return
  weight_map, tensors = {}, iter(tensors)  # (a progress bar is iterable, not an iterator)
  for k, names in enumerate(shards, start=1):
    file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
    save_file(dict(itertools.islice(tensors, len(names))), out_dir / file,
              metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(names, file))
  with open(out_dir / INDEX_FILE, "w") as f:
    json.dump({"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}, f,
              indent=2)


def stop_token_ids(model_dir: str | os.PathLike | None, tokenizer) -> list[int]:
  """The tokenizer's EOS plus generation_config.json's eos_token_id(s) (chat models have two;
  model_dir None: a model built in memory, the tokenizer's EOS alone)."""
  ids = set() if tokenizer.eos_token_id is None else {tokenizer.eos_token_id}
  generation = None if model_dir is None else Path(model_dir) / "generation_config.json"
  if generation is not None and generation.is_file():
    eos = json.loads(generation.read_text()).get("eos_token_id")
    ids.update([eos] if isinstance(eos, int) else eos or [])
  return sorted(ids)


def load_tokenizer(path_or_hub_id: str | os.PathLike):
  """The checkpoint's tokenizer (transformers `AutoTokenizer`), with a clear error if absent."""
  from transformers import AutoTokenizer

  model_dir = resolve_model_dir(path_or_hub_id)
  if not any((model_dir / name).is_file() for name in ("tokenizer.json", "vocab.json")):
    hub_id = hub_id_of_snapshot(model_dir)
    if hub_id is not None:  # (given as the hub id or as its snapshot's directory)
      raise _incomplete_download(hub_id, model_dir, "tokenizer (tokenizer.json or vocab.json)")
    raise FileNotFoundError(f"No tokenizer files (tokenizer.json or vocab.json) in {model_dir}: "
                            "copy the tokenizer of the base model there.")
  return AutoTokenizer.from_pretrained(model_dir)
