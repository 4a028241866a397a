"""Hugging Face `config.json` -> `ModelConfig`, the one description of a Qwen decoder."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3")
SUPPORTED_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Loading in "auto" takes the checkpoint's dtype (checkpoint_dtype), as transformers 5 does.
AUTO_DTYPE = "auto"
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn")
SUPPORTED_ACTIVATIONS = ("silu", "swish")  # transformers' two names of SiLU
# transformers' default head_dim when config.json has none (Qwen3Config's is 128).
DEFAULT_HEAD_DIM = {"qwen3": 128}
DEFAULT_MAX_POSITIONS = 32768  # Qwen2Config's and Qwen3Config's max_position_embeddings
# The way out when a checkpoint's file cannot be read (a copy or download that broke off).
DAMAGED_FILE_FIX = "it is damaged or cut short; copy or download it again."


@dataclasses.dataclass(frozen=True)
class FieldRule:
  """What one key of config.json may hold: a JSON value of exactly one of `types`, as
  transformers' strict config classes take it (2.0 is no int, 1 no float, true no number),
  above `above`, or null where `nullable` (null then stands for the default)."""

  types: tuple[type, ...]
  expected: str  # the rule in words, for messages
  above: float | None = None
  nullable: bool = False
  model_types: tuple[str, ...] = SUPPORTED_MODEL_TYPES  # the models that read the key

  def accepts(self, value: Any) -> bool:
    if value is None:
      return self.nullable
    return type(value) in self.types and (self.above is None or value > self.above)


_SIZE = FieldRule((int,), "an integer >= 1 (no decimal point)", above=0)
_FLAG = FieldRule((bool,), "true or false (no quotes)")
_ROPE_SETTINGS = FieldRule((dict,), 'an object (e.g. {"rope_type": "default", "rope_theta": '
                           '1000000.0}) or null', nullable=True)
# The keys of config.json that shape the model, checked before any weight is read (rope_theta
# wherever it stands); hidden_act and the rope scaling entries are checked where they are read.
CONFIG_FIELDS = {
    "vocab_size": _SIZE,
    "hidden_size": _SIZE,
    "intermediate_size": _SIZE,
    "num_hidden_layers": _SIZE,
    "num_attention_heads": _SIZE,
    # null: one key/value head per query head
    "num_key_value_heads": FieldRule((int,), "an integer >= 1 (no decimal point) or null", above=0,
                                     nullable=True),
    "head_dim": _SIZE,
    "max_position_embeddings": _SIZE,
    "rms_norm_eps": FieldRule((float,), "a decimal number > 0 (e.g. 1e-06 or 1.0)", above=0),
    "rope_theta": FieldRule((int, float), "a number > 0 (e.g. 1000000.0)", above=0),
    "rope_parameters": _ROPE_SETTINGS,
    "rope_scaling": _ROPE_SETTINGS,
    "tie_word_embeddings": _FLAG,
    "attention_bias": dataclasses.replace(_FLAG, model_types=("qwen3",)),  # Qwen2 ignores it
    "use_sliding_window": _FLAG,
    "sliding_window": FieldRule((int,), "an integer or null", nullable=True),
    "max_window_layers": FieldRule((int,), "an integer (no decimal point)"),
}


def _check_field(name: str, value: Any) -> None:
  """Refuses `value` of config.json's key `name` where CONFIG_FIELDS does (a clear error)."""
  rule = CONFIG_FIELDS[name]
  if not rule.accepts(value):
    raise ValueError(f"config.json's {name} is {json.dumps(value)}, not {rule.expected}: set it "
                     "to the model's value in that form.")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding settings of config.json, resolved as transformers resolves them.

  "linear" divides every frequency by `factor`. "yarn" (arXiv 2309.00071) divides the
  frequencies that turn less than beta_slow times over the pretraining context by `factor`,
  keeps those that turn more than beta_fast times, ramps linearly between them, and scales
  cos and sin by `attention_factor`.
  """

  theta: float = 10000.0
  rope_type: str = "default"
  factor: float = 1.0
  original_max_position_embeddings: int | None = None  # yarn: the pretraining context
  attention_factor: float = 1.0
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  truncate: bool = True

  def inverse_frequencies(self, head_dim: int) -> np.ndarray:
    """[head_dim // 2] float32, in the float32 arithmetic of transformers' RoPE functions."""
    wavelengths = self.theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    if self.rope_type == "linear":
      return 1.0 / wavelengths / self.factor
    if self.rope_type == "default":
      return 1.0 / wavelengths
    low, high = self._yarn_correction_range(head_dim)
    if low == high:
      high += 0.001  # as transformers: keeps the ramp finite
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolated = 1 - ramp  # 1: the frequency is kept, 0: divided by factor
    return (1.0 / (self.factor * wavelengths) * (1 - extrapolated)
            + 1.0 / wavelengths * extrapolated)

  def _yarn_correction_range(self, head_dim: int) -> tuple[float, float]:
    """The dimensions at which frequencies turn beta_fast and beta_slow times over the context."""
    def dimension(turns):
      context = self.original_max_position_embeddings
      return head_dim * math.log(context / (turns * 2 * math.pi)) / (2 * math.log(self.theta))
    low, high = dimension(self.beta_fast), dimension(self.beta_slow)
    if self.truncate:
      low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "RopeConfig":
    """Reads `rope_parameters` (transformers 5), or `rope_scaling` and `rope_theta` (older)."""
    # transformers 5 reads a `rope_scaling` in place of `rope_parameters`, not merged into it.
    params, scaling = hf.get("rope_parameters") or {}, hf.get("rope_scaling")
    rope = scaling or params
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    _check_field("rope_theta", theta)
    if scaling and params.get("rope_theta", theta) != theta:
      raise ValueError(
          f"config.json has rope_scaling beside rope_parameters, whose rope_theta="
          f"{params['rope_theta']} transformers then ignores (it uses {theta}): move the "
          "rope_scaling entries into rope_parameters.")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(
          f"Unsupported rope_type {rope_type!r} in config.json: jaxlayer supports "
          f"{list(SUPPORTED_ROPE_TYPES)}. Remove the rope scaling entry to use plain RoPE.")
    if rope_type == "default":
      return cls(theta=float(theta))
    if "factor" not in rope:
      raise ValueError(f"config.json's rope_type {rope_type!r} lacks its factor: add \"factor\" "
                       "(the context length it extends to / the pretraining one, e.g. 4.0).")
    factor = rope["factor"]
    if rope_type == "linear":
      return cls(theta=float(theta), rope_type=rope_type, factor=_scaling_factor(factor))
    # A top-level original_max_position_embeddings wins, as in transformers (Phi-3's layout).
    context = hf.get("original_max_position_embeddings",
                     rope.get("original_max_position_embeddings",
                              hf.get("max_position_embeddings", DEFAULT_MAX_POSITIONS)))
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
      raise ValueError(f"config.json's original_max_position_embeddings={context!r} for yarn is "
                       "not a positive integer: set it to the pretraining context (e.g. 32768).")
    if factor is None:  # transformers then extends to max_position_embeddings
      factor = hf.get("max_position_embeddings", DEFAULT_MAX_POSITIONS) / context
    factor = _scaling_factor(factor)
    beta_fast, beta_slow = rope.get("beta_fast") or 32.0, rope.get("beta_slow") or 1.0
    if beta_fast < beta_slow:
      raise ValueError(f"config.json's yarn beta_fast={beta_fast} is below beta_slow="
                       f"{beta_slow}: use the paper's 32 and 1 (drop both keys).")
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
      mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
      attention_factor = (_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
                          if mscale and mscale_all_dim else _yarn_mscale(factor))
    return cls(theta=float(theta), rope_type=rope_type, factor=factor,
               original_max_position_embeddings=context,
               attention_factor=float(attention_factor), beta_fast=float(beta_fast),
               beta_slow=float(beta_slow), truncate=bool(rope.get("truncate", True)))


def _scaling_factor(factor: Any) -> float:
  if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
    raise ValueError(f"config.json's rope scaling factor={factor!r} is not a number >= 1: set "
                     "it to the context length it extends to / the pretraining one (e.g. 4.0).")
  return float(factor)


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
  """YaRN's attention temperature sqrt(1/t) = 0.1 ln(factor) + 1 (mscale scales the log)."""
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a Qwen2 / Qwen2.5 / Qwen3-dense decoder (and DeepSeek-R1-Distill-Qwen)."""

  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope: RopeConfig
  rms_norm_eps: float
  tie_word_embeddings: bool
  max_position_embeddings: int
  # The full HF config dict, kept so `save_pretrained` writes back every key it was given.
  hf_config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
  # Directory the checkpoint was read from (its tokenizer files travel with exports).
  source_dir: str | None = dataclasses.field(default=None, compare=False)

  @property
  def max_positions(self) -> int:
    """The longest sequence (prompt + response) the model takes: max_position_embeddings, or,
    with YaRN, the context it extends to (original_max_position_embeddings x factor), as vLLM
    reads Qwen's long-context recipe, which leaves max_position_embeddings as it was."""
    if self.rope.rope_type == "yarn":
      extended = int(self.rope.original_max_position_embeddings * self.rope.factor)
      return max(self.max_position_embeddings, extended)
    return self.max_position_embeddings

  @property
  def max_positions_text(self) -> str:
    """max_positions and where it comes from, for messages."""
    if self.max_positions == self.max_position_embeddings:
      return f"max_position_embeddings={self.max_position_embeddings}"
    return (f"YaRN context of {self.max_positions} positions (original_max_position_embeddings="
            f"{self.rope.original_max_position_embeddings} x factor {self.rope.factor:g})")

  @property
  def qkv_bias(self) -> bool:
    """Qwen2 has biases on q/k/v; Qwen3 replaces them with per-head q/k RMSNorm."""
    return self.model_type == "qwen2"

  @property
  def qk_norm(self) -> bool:
    return self.model_type == "qwen3"

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "ModelConfig":
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type {model_type!r}: jaxlayer supports {list(SUPPORTED_MODEL_TYPES)} "
          "(Qwen2, Qwen2.5, Qwen3 dense, DeepSeek-R1-Distill-Qwen)."
      )
    for name, rule in CONFIG_FIELDS.items():
      if name in hf and model_type in rule.model_types:
        _check_field(name, hf[name])
    rope = RopeConfig.from_hf_dict(hf)
    _check_supported(hf)
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads") if k not in hf]
    if missing:
      raise ValueError(f"config.json lacks required keys {missing}: add them (transformers' "
                       "save_pretrained writes every key of the architecture).")
    num_heads = hf["num_attention_heads"]
    num_kv_heads = hf.get("num_key_value_heads") or num_heads
    if num_heads % num_kv_heads:
      raise ValueError(
          f"config.json's num_attention_heads={num_heads} is no multiple of num_key_value_heads="
          f"{num_kv_heads} (each key/value head serves a group of query heads): set both to "
          "the model's values.")
    return cls(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=hf.get("head_dim") or DEFAULT_HEAD_DIM.get(model_type,
                                                            hf["hidden_size"] // num_heads),
        rope=rope,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        max_position_embeddings=hf.get("max_position_embeddings", DEFAULT_MAX_POSITIONS),
        hf_config=dict(hf),
    )

  @classmethod
  def from_json_file(cls, path: str | Path) -> "ModelConfig":
    """The config of a model directory's config.json (`path`); a clear error where it lacks
    one."""
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(
          f"No {path.name} in {path.parent}: a Hugging Face model directory holds its "
          f"{path.name} beside the weights; pass the whole model directory (copy or download it "
          "again if files are missing) or a hub id.")
    try:
      hf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
      raise ValueError(f"{path} is no valid JSON ({err}): {DAMAGED_FILE_FIX}") from None
    if not isinstance(hf, dict):
      raise ValueError(f"{path} holds no JSON object: {DAMAGED_FILE_FIX}")
    return cls.from_hf_dict(hf)


def _sliding_layers(hf: dict[str, Any]) -> list[int]:
  """The blocks that transformers gives a sliding window (its Qwen2/Qwen3 config rules)."""
  if not hf.get("use_sliding_window", False) or hf.get("sliding_window") is None:
    return []
  types = hf.get("layer_types") or [
      "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
      for i in range(hf.get("num_hidden_layers", 0))]
  return [i for i, kind in enumerate(types) if kind == "sliding_attention"]


def _check_supported(hf: dict[str, Any]) -> None:
  """Refuses settings that would make the model differ from transformers' (one line each)."""
  act = hf.get("hidden_act", "silu")
  if act not in SUPPORTED_ACTIVATIONS:
    raise ValueError(f"Unsupported hidden_act {act!r} in config.json: jaxlayer supports "
                     f"{list(SUPPORTED_ACTIVATIONS)} (the SwiGLU of Qwen models).")
  if hf.get("attention_bias") and hf["model_type"] == "qwen3":
    raise ValueError("Unsupported attention_bias=true in a qwen3 config.json: jaxlayer's Qwen3 "
                     "has no q/k/v/o biases (attention_bias=false, as in released Qwen3).")
  sliding = _sliding_layers(hf)
  if sliding:
    raise ValueError(
        f"Unsupported sliding-window attention in config.json (use_sliding_window=true, "
        f"sliding_window={hf['sliding_window']}, on blocks {sliding}): jaxlayer attends over "
        "all positions; use_sliding_window=false gives the same model on sequences no longer "
        "than sliding_window.")
  quantization = hf.get("quantization_config")
  if quantization:
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
    raise ValueError(
        f"Unsupported quantization_config (quant_method {method!r}) in config.json: jaxlayer "
        "loads unquantized weights (float32, bfloat16 or float16); use the checkpoint that was "
        "quantized (e.g. Qwen/Qwen3-8B for Qwen/Qwen3-8B-FP8).")
  architectures = hf.get("architectures") or []
  if isinstance(architectures, str):  # one name written without its list: transformers reads it
    architectures = [architectures]
  if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
    raise ValueError(f"Unsupported architectures {architectures} in config.json: jaxlayer loads "
                     "causal language models (Qwen2ForCausalLM, Qwen3ForCausalLM), whose "
                     "checkpoints hold lm_head.weight or tie it to the embeddings.")


def checkpoint_dtype(hf: dict[str, Any]) -> str:
  """The dtype a checkpoint loads in with AUTO_DTYPE: config.json's `dtype` (transformers 4:
  `torch_dtype`) where jaxlayer computes in it, else float32 (a float16 checkpoint, whose values
  float32 holds exactly, or one that names no dtype)."""
  stored = hf.get("dtype") or hf.get("torch_dtype")
  return stored if stored in SUPPORTED_DTYPES else "float32"


def resolve_dtype(dtype: str | Any) -> Any:
  """'float32' / 'bfloat16' (or the jnp dtype itself) -> jnp dtype; anything else is an error."""
  for name, jnp_dtype in SUPPORTED_DTYPES.items():
    if dtype == name or dtype == jnp_dtype:
      return jnp_dtype
  raise ValueError(f"Unknown dtype {dtype!r}: choose one of {list(SUPPORTED_DTYPES)}.")
