"""Memory one device needs for a training run, sized from its plan before anything loads.

`estimate(plan)` gives the bytes one device of the plan's mesh holds for each part of a run:
the weights as the partition rules split them, the float32 master copy of the trained leaves
of a bfloat16 model (`rl.step.MASTER_DTYPE`), the KL reference's copy of the trained leaves,
their gradients and optimizer state, one generate call's KV cache (and the whole
weights on every device with rollout.replicate_params), and what the update's backward pass
keeps of one micro-batch (a multi-turn run's at its most turns: a row per turn). Where the
config evaluates (a sweep's config, or logging.eval_every), evaluation, a phase of its own,
gets its parts too: the weights (during training, the state kept between steps) and one
generate call's KV cache. Shapes come from abstract tracing (`nnx.eval_shape`,
`jax.eval_shape`): nothing is allocated, so a model far larger than this machine can be sized.
Compiler temporaries are not counted: leave headroom. The activations are those of a device's
whole rows (an upper bound where the update runs each prompt once for its group, or where a
tensor axis splits the heads).

`compile_update(plan)` compiles the update step from the same shapes for this machine's
backend and returns XLA's own per-device count of its arguments, outputs and temporaries.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding

from jaxlayer import evaluation, models, sampling
from jaxlayer.models.hub import path_str
from jaxlayer.models.sharding import batch_shards, partition_spec
from jaxlayer.text import counted
from jaxlayer.rl import multiturn
from jaxlayer.rl import step as rl_step
from jaxlayer.rl import train


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes on one device, per part of training and, where the config evaluates, of
  evaluation (a phase of its own, `eval_phase`: the sweep's scoring and `jaxlayer eval`, or
  logging.eval_every's evaluations during training), and the device's memory where JAX
  reports it."""

  parts: dict[str, int]
  eval_parts: dict[str, int]
  device_limit: int | None
  eval_phase: str = ""

  @property
  def total(self) -> int:
    return sum(self.parts.values())

  @property
  def eval_total(self) -> int:
    return sum(self.eval_parts.values())

  @property
  def peak(self) -> int:
    """The larger of the two phases."""
    return max(self.total, self.eval_total)

  def table(self) -> str:
    """Each phase's parts and total, one per line, then the device's memory."""
    rows = [*self.parts.items(), ("total", self.total)]
    if self.eval_parts:
      rows += [("", None), (f"{self.eval_phase}:", None),
               *self.eval_parts.items(), ("total", self.eval_total)]
    if self.device_limit is not None:
      rows.append(("device memory", self.device_limit))
    width = max(len(name) for name, size in rows if size is not None)
    lines = [name if size is None else f"{name:<{width}}  {readable_bytes(size):>10}"
             for name, size in rows]
    if self.device_limit is not None:
      share = self.peak / self.device_limit
      lines[-1] += f"  ({share:.0%} of it at the peak{': does not fit' if share > 1 else ''})"
    return "\n".join(lines)


def readable_bytes(size: float) -> str:
  """Bytes in GB, MB or KB (powers of 1000), to three significant digits."""
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
    if size >= scale:
      value = size / scale
      return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
  return f"{size:.0f} B"


def _bytes(tree) -> int:
  """Bytes of the array leaves of a pytree of arrays or jax.ShapeDtypeStructs, on one device:
  a leaf with a sharding counts its shard's shape."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def device_limit() -> int | None:
  """The first local device's memory in bytes (GPU, TPU); None where JAX does not report it."""
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def _abstract_run(plan_: train.TrainPlan):
  """(the model, its split, the trained leaves, the optimizer and its state) of `plan_` as
  shapes laid out on the plan's mesh (jax.ShapeDtypeStructs with shardings): nothing
  allocated."""
  mesh = plan_.mesh
  dtype = models.resolve_dtype(plan_.config.model.dtype)
  abstract = nnx.eval_shape(lambda: models.Qwen(plan_.model_config, dtype=dtype,
                                                rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  model = nnx.merge(graphdef, nnx.from_flat_state({
      path: var.replace(jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=NamedSharding(
          mesh, partition_spec(path_str(path), var.shape, mesh))))
      for path, var in nnx.to_flat_state(state)}))
  split, trained = rl_step.split_model(model, plan_.selection.trainable)
  tx = train.plan_optimizer(plan_)
  opt_state = jax.tree.map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      jax.eval_shape(tx.init, trained), rl_step.optimizer_shardings(tx, trained, mesh))
  return model, split, trained, tx, opt_state


def estimate(plan_: train.TrainPlan) -> MemoryEstimate:
  """Bytes per device of each part of the run `plan_` describes (see the module docstring)."""
  cfg, mesh = plan_.config, plan_.mesh
  rollout = cfg.rollout
  model, split, trained_on_mesh, _, opt_state = _abstract_run(plan_)
  on_mesh = models.named_params(model)
  micro_batches = plan_.mini_batch_size // plan_.micro_batch_size

  parts = {"weights": _bytes(on_mesh)}
  if models.resolve_dtype(cfg.model.dtype) != rl_step.MASTER_DTYPE:
    parts["float32 master copy of the trained leaves"] = _bytes(trained_on_mesh)
  if plan_.loss.kl_beta > 0:
    parts["KL reference (trained leaves)"] = _bytes(trained_on_mesh)
  # Accumulating over micro-batches holds the running sum beside each micro-batch's gradient.
  parts["gradients"] = _bytes(trained_on_mesh) * (2 if micro_batches > 1 else 1)
  parts["optimizer state"] = _bytes(opt_state)
  whole_weights = rl_step.array_bytes(on_mesh)  # every leaf whole
  if rollout.replicate_params:
    parts["rollout: whole weights on each device"] = whole_weights
  per_call, group = plan_.prompts_per_call, cfg.train.group_size
  # A task's prompts are prefilled once for their G samples; an environment's episodes each
  # have a context of their own.
  prompts, samples = (per_call * group, 1) if cfg.env.name else (per_call, group)
  parts["rollout: KV cache of one generate call"] = _kv_cache_bytes(
      model, mesh, prompts, samples, rollout.max_new_tokens, rollout.max_prompt_tokens)
  rows = update_rows(plan_) // micro_batches // batch_shards(mesh)
  seq = _update_length(cfg)
  batch = {"input_ids": jax.ShapeDtypeStruct((rows, seq), jnp.int32),
           "attention_mask": jax.ShapeDtypeStruct((rows, seq), bool),
           "response_mask": jax.ShapeDtypeStruct((rows, rollout.max_new_tokens), jnp.float32)}

  def activations(remat: bool) -> int:
    return rl_step.backward_activation_bytes(split, trained_on_mesh, batch, rollout.temperature,
                                             remat)

  kept = activations(cfg.train.remat)
  parts[f"update: activations kept ({counted(rows, 'sequence')} per device)"] = kept
  if cfg.train.remat:  # each block's activations come back, one block at a time
    blocks = _backward_blocks(plan_.selection.trainable, plan_.model_config.num_layers)
    parts["update: one block's recomputed activations"] = (
        (activations(False) - kept) // max(blocks, 1))
  phase, eval_parts = _eval_parts(cfg, model, mesh, parts, whole_weights)
  return MemoryEstimate(parts=parts, eval_parts=eval_parts, device_limit=device_limit(),
                        eval_phase=phase)


def update_rows(plan_: train.TrainPlan) -> int:
  """The most rows of one update (a mini-batch): a multi-turn run has a row per turn, up to
  env.max_turns per episode, padded as multiturn.gigpo_batch pads them."""
  if not plan_.config.env.name:
    return plan_.mini_batch_size
  micro_batches = plan_.mini_batch_size // plan_.micro_batch_size
  return multiturn.pow2_rows(plan_.mini_batch_size * plan_.config.env.max_turns,
                             micro_batches * batch_shards(plan_.mesh))


def _update_length(cfg: ml_collections.ConfigDict) -> int:
  """Tokens of an update's rows: the longest prompt bucket and the longest response."""
  return sampling.bucket(cfg.rollout.max_prompt_tokens) + cfg.rollout.max_new_tokens


@dataclasses.dataclass(frozen=True)
class CompiledUpdate:
  """XLA's byte counts for one device running one update step, as compiled for this machine's
  backend (`jax.stages.Compiled.memory_analysis`)."""

  backend: str
  arguments: int  # trained and frozen parameters, optimizer state, one mini-batch
  outputs: int  # the new trained parameters and optimizer state, the metrics
  aliased: int  # of the outputs, those written over their donated arguments
  temporaries: int  # gradients, activations and the compiler's scratch buffers

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries

  def table(self) -> str:
    rows = [("arguments (parameters, optimizer state, a mini-batch)", self.arguments),
            ("outputs not written over their arguments", self.outputs - self.aliased),
            ("temporaries (gradients, activations, scratch)", self.temporaries),
            ("total", self.total)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {readable_bytes(size):>10}" for name, size in rows)


def compile_update(plan_: train.TrainPlan) -> CompiledUpdate:
  """Compiles the update step of `plan_` from shapes alone (nothing allocated, the weights not
  read) for this machine's backend and reads XLA's byte counts for one device: these include
  what `estimate` cannot see, the compiler's temporaries. Run it on the machine that will
  train (a TPU host sizes TPU programs; a CPU sizes XLA:CPU's). Rows per update: the
  mini-batch (`update_rows`: a multi-turn run's at its most turns)."""
  cfg, mesh = plan_.config, plan_.mesh
  _, split, trained, tx, opt_state = _abstract_run(plan_)
  update = train.plan_update_step(plan_, split, tx,
                                  {path: leaf.sharding for path, leaf in trained.items()},
                                  jax.tree.map(lambda leaf: leaf.sharding, opt_state))
  rows, responses, seq = update_rows(plan_), cfg.rollout.max_new_tokens, _update_length(cfg)
  shapes = {"input_ids": ((rows, seq), jnp.int32), "attention_mask": ((rows, seq), bool),
            "is_response": ((rows,), jnp.float32),
            **{key: ((rows, responses), jnp.float32)
               for key in ("response_mask", "old_logprobs", "advantages")}}
  if plan_.loss.kl_beta > 0:
    shapes["ref_logprobs"] = ((rows, responses), jnp.float32)
  batch = {key: jax.ShapeDtypeStruct(
      shape, dtype, sharding=models.batch_sharding(mesh, len(shape)))
      for key, (shape, dtype) in shapes.items()}
  analysis = update.lower(trained, opt_state, split.frozen, batch).compile().memory_analysis()
  return CompiledUpdate(backend=jax.default_backend(),
                        arguments=analysis.argument_size_in_bytes,
                        outputs=analysis.output_size_in_bytes,
                        aliased=analysis.alias_size_in_bytes,
                        temporaries=analysis.temp_size_in_bytes)


def _eval_parts(cfg: ml_collections.ConfigDict, model: models.Qwen, mesh: jax.sharding.Mesh,
                training_parts: dict[str, int], whole_weights: int) -> tuple[str, dict[str, int]]:
  """(the phase, its parts) of evaluation, where the config evaluates (none: ("", {})): the
  weights, or during training (logging.eval_every) the training state that stays between
  steps, and the KV cache of one generate call, the largest of any pass's (evaluation's
  `call_shape`: the greedy pass's eval.batch_size prompts, a mean@k pass's prompt rows of
  some of a problem's k samples each; prompts taken to be up to rollout.max_prompt_tokens
  long)."""
  during_training = cfg.logging.get("eval_every", 0) > 0
  if "eval" not in cfg or not ("sweep" in cfg or during_training):
    return "", {}
  settings = evaluation.eval_settings(cfg)
  if during_training:  # gradients and activations live inside the update step only
    phase = "evaluation during training (logging.eval_every)"
    parts = {name: size for name, size in training_parts.items()
             if not name.startswith(("gradients", "rollout:", "update:"))}
  else:
    phase, parts = "evaluation (jaxlayer eval, the sweep's scoring)", {
        "weights": training_parts["weights"]}
  if settings["replicate_params"]:
    parts["whole weights on each device"] = whole_weights
  # Each pass's calls: greedy, and k samples of each prompt for every k a task samples.
  passes = {1} | {evaluation.task_num_samples(cfg, name) for name in evaluation.task_names(cfg)}
  batch = settings["batch_size"]
  problems = (cfg.env.num_eval_episodes if cfg.env.name else settings["num_problems"]) or batch
  caches = []
  for samples in passes - {0}:
    if cfg.env.name:  # one context per episode and sample
      prompts, samples = evaluation.prompts_per_call(batch, samples, problems) * samples, 1
    else:
      prompts, samples = evaluation.call_shape(batch, samples, problems, batch_shards(mesh))
    caches.append(_kv_cache_bytes(model, mesh, prompts, samples, settings["max_new_tokens"],
                                  cfg.rollout.max_prompt_tokens))
  parts["KV cache of one generate call"] = max(caches)
  return phase, parts


def _backward_blocks(trainable: tuple[str, ...], num_layers: int) -> int:
  """Blocks the backward pass goes through: from the top down to the lowest trained one (all
  of them when the embedding trains)."""
  lowest = min((0 if path.startswith("embed.") else int(path.split(".")[1])
                for path in trainable if path.startswith(("embed.", "layers."))),
               default=num_layers)
  return num_layers - lowest


def _kv_cache_bytes(model: models.Qwen, mesh: jax.sharding.Mesh, prompts: int, samples: int,
                    max_new: int, prompt_tokens: int) -> int:
  """One device's share of the KV cache of a generate call of `prompts` prompts of up to
  `prompt_tokens` tokens, `samples` samples of up to `max_new` tokens each."""
  shards = batch_shards(mesh)
  prompts = sampling.bucket(prompts, shards)
  ids = jax.ShapeDtypeStruct((prompts, sampling.bucket(prompt_tokens)), jnp.int32)
  cache = jax.eval_shape(
      lambda model, ids: model.prefill(ids, ids > 0, rows=prompts * samples, max_new=max_new)[1],
      model, ids)
  # Every buffer but the slot index is split over the batch (sampling's prefill).
  return sum(_bytes(x) // (shards if x.ndim else 1) for x in jax.tree.leaves(cache))
