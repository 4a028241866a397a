"""The compiled pieces of an RL step: response log-probs and the update on a rollout batch.

The model's parameters are split once into a flat dict of trainable leaves {path: array}
(the only thing that is differentiated, optimised and checkpointed) and the frozen rest
(an `nnx.State` passed to every call, never written). Differentiating only the trainable
leaves means JAX does no backward work below the lowest trainable block. The trainable
leaves are float32 master copies whatever the model's dtype (`MASTER_DTYPE`).

A batch is a dict of arrays, B responses to prompts left-padded to P tokens, responses
right-padded to R tokens:
  input_ids       [B, P+R] int32   prompt then response
  attention_mask  [B, P+R] bool    real tokens
  response_mask   [B, R] float32   loss weight: 1 on response tokens, 0 on padding / dropped
  is_response     [B] float32      1 on a response (one that overlong filtering drops too), 0
                                   on a filler row: the per-response normalisers count these
  old_logprobs    [B, R] float32   log-probs under the sampling policy (the PPO old policy)
  advantages      [B, R] float32   per token (GRPO repeats a response's value on its tokens)
  ref_logprobs    [B, R] float32   reference log-probs, only when the KL term is on
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxlayer.models import Qwen, path_str
from jaxlayer.models.qwen import map_chunks
from jaxlayer.models.sharding import traced_on
from jaxlayer.rl import losses, optimizer

# Longer responses go through the output projection and its log-softmax in chunks of at most
# this many positions: with a 152k vocabulary one 3,072-token response's logits are 1.9 GB in
# float32, and each of their copies in the backward pass as much. With remat, the backward
# pass recomputes one chunk at a time, so a chunk's logits (311 MB) are all that exist at once.
LOGITS_POSITION_CHUNK = 512

# The trained leaves are held, optimised and checkpointed in float32 whatever the model's
# dtype: at RL's learning rates (~1e-6) an AdamW step moves a weight by ~1e-6, far below
# bfloat16's spacing (~1e-4 at 0.02, ~8e-3 at 1.0), so bfloat16 leaves would round nearly every
# update away (a bfloat16 run at lr 1e-6 left 99% of its block's weights as they were). Each
# forward pass casts them to the model's dtype (`SplitModel.merge`); the frozen rest stays as
# loaded, so the extra memory is the trained leaves' float32 copy only.
MASTER_DTYPE = jnp.float32


@dataclasses.dataclass(frozen=True)
class SplitModel:
  """A model's structure and frozen parameters; `merge(trainable)` rebuilds the model."""

  graphdef: nnx.GraphDef
  frozen: nnx.State
  trainable_paths: dict[str, tuple]  # dotted path -> nnx state path
  model_dtypes: dict[str, jnp.dtype]  # dotted path -> the model's dtype of that leaf

  def merge(self, trainable: dict[str, jax.Array], frozen: nnx.State | None = None) -> Qwen:
    """The model with these trainable values in the model's dtype (works inside `jit`; shares
    the values where they already have it, as float32 models' do)."""
    state = nnx.from_flat_state({
        self.trainable_paths[path]: nnx.Param(_as_dtype(value, self.model_dtypes[path]))
        for path, value in trainable.items()})
    return nnx.merge(self.graphdef, state, self.frozen if frozen is None else frozen)


def _as_dtype(value, dtype):
  """`value` (an array, or a jax.ShapeDtypeStruct when sizing) in `dtype`."""
  if value.dtype == dtype:
    return value
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(value.shape, dtype, sharding=value.sharding)
  return value.astype(dtype)


def split_model(model: Qwen, trainable: Sequence[str]) -> tuple[SplitModel, dict[str, jax.Array]]:
  """(structure + frozen parameters, trainable parameters {path: float32 array}) for these
  paths (`MASTER_DTYPE`)."""
  wanted = set(trainable)
  is_trainable = lambda path, _: path_str(path) in wanted  # noqa: E731
  graphdef, trainable_state, frozen = nnx.split(model, is_trainable, ...)
  flat = nnx.to_flat_state(trainable_state)
  values = {path_str(path): var.get_value() for path, var in flat}
  missing = sorted(wanted - set(values))
  if missing:
    raise ValueError(f"The model has no parameters {missing}.")
  split = SplitModel(graphdef, frozen, {path_str(path): path for path, _ in flat},
                     {path: value.dtype for path, value in values.items()})
  return split, {path: _as_dtype(value, MASTER_DTYPE) for path, value in values.items()}


def response_logprobs(model: Qwen, batch: dict, temperature: float, remat: bool = False,
                      group: int = 1):
  """Log-probs and entropies [B, R] of the response tokens under the model (teacher forced);
  remat: recompute each block's activations, and the output projection with its log-softmax,
  in the backward pass (see `Qwen.__call__`); group > 1: rows come in groups of `group`
  responses to one prompt, whose prompt part the model then runs once (`Qwen.__call__`'s
  shared_prompt)."""
  responses = batch["response_mask"].shape[1]
  prompt_len = batch["input_ids"].shape[1] - responses
  # The logit at position t predicts token t+1: responses are predicted from P-1 to P+R-2.
  hidden = model(batch["input_ids"], batch["attention_mask"], num_last=responses + 1,
                 remat=remat, shared_prompt=(group, prompt_len) if group > 1 else None,
                 head=False)[:, :-1]  # [B, R, d_model]
  tokens = batch["input_ids"][:, -responses:]  # [B, R]

  def head(hidden, tokens):  # logits [B, r, vocab]: with a large vocabulary, the largest
    return losses.token_logprobs(model.logits(hidden), tokens, temperature)

  return map_chunks(jax.checkpoint(head) if remat else head, (hidden, tokens),
                    LOGITS_POSITION_CHUNK)


def make_logprob_fn(split: SplitModel, temperature: float, group: int = 1,
                    mesh: jax.sharding.Mesh | None = None):
  """jit: (trainable, frozen, batch) -> response log-probs [B, R] (for the reference policy);
  group as in `response_logprobs`; mesh: the mesh the parameters and batch are on."""

  def logprobs(trainable, frozen, batch):
    return response_logprobs(split.merge(trainable, frozen), batch, temperature, group=group)[0]

  return jax.jit(traced_on(mesh, logprobs))


def optimizer_shardings(tx: optax.GradientTransformation, params: dict, mesh: jax.sharding.Mesh):
  """The optimizer state's shardings: each moment laid out like its parameter, the rest (step
  counts) replicated. `params` may be arrays or jax.ShapeDtypeStructs with shardings."""
  replicated = NamedSharding(mesh, PartitionSpec())

  def sharding_of(path, _):
    key = getattr(path[-1], "key", None) if path else None
    return params[key].sharding if isinstance(key, str) and key in params else replicated

  return jax.tree_util.tree_map_with_path(sharding_of, jax.eval_shape(tx.init, params))


def init_optimizer(tx: optax.GradientTransformation, params: dict[str, jax.Array],
                   mesh: jax.sharding.Mesh):
  """(optimizer state, its shardings: `optimizer_shardings`). Fixed shardings keep the update
  step's inputs and outputs alike, so it compiles once."""
  shardings = optimizer_shardings(tx, params, mesh)
  return jax.jit(tx.init, out_shardings=shardings)(params), shardings


def make_update_step(split: SplitModel, tx: optax.GradientTransformation,
                     loss_cfg: losses.LossConfig, temperature: float, *, micro_batches: int = 1,
                     remat: bool = False, group: int = 1, param_shardings=None,
                     opt_shardings=None):
  """jit: (trainable, opt_state, frozen, batch) -> (trainable, opt_state, metrics).

  One optimizer update on one mini-batch (none when it has no loss token: metrics'
  `loss_tokens` is 0, and only the learning-rate schedule moves on), whose gradient is
  accumulated over `micro_batches` forward / backward passes (groups i, i + n, i + 2n, ... of
  `group` rows form micro-batch i, so each stays spread over the data-parallel devices); the
  loss equals the whole mini-batch's. With `remat` the backward pass recomputes each block's
  activations instead of storing them. group > 1: the batch's rows come in groups of `group`
  responses to one prompt, whose prompt part each forward pass computes once
  (`response_logprobs`).
  `trainable` and `opt_state` are donated and come back with the given shardings (default:
  whatever the compiler picks); with them, the step is traced on their mesh (`traced_on`).
  """

  def loss_fn(trainable, frozen, batch, normaliser):
    logps, entropy = response_logprobs(split.merge(trainable, frozen), batch, temperature, remat,
                                       group)
    loss, metrics = losses.policy_loss(logps, batch["old_logprobs"], batch["advantages"],
                                       batch["response_mask"], batch.get("ref_logprobs"),
                                       loss_cfg, normaliser)
    metrics["entropy"] = losses.masked_mean(jax.lax.stop_gradient(entropy),
                                            batch["response_mask"])
    return loss, metrics

  def accumulate(grads, micro_batch, trainable, frozen, normaliser):
    (loss, metrics), micro_grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainable, frozen, micro_batch, normaliser)
    tokens = micro_batch["response_mask"].sum()
    return jax.tree.map(jnp.add, grads, micro_grads), (loss, metrics, tokens)

  def update(trainable, opt_state, frozen, batch):
    normaliser = losses.normaliser(loss_cfg, batch["response_mask"], batch["is_response"])
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(
        x.shape[0] // (micro_batches * group), micro_batches, group, *x.shape[1:]), 0, 1
    ).reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:]), batch)
    grads, (loss, metrics, tokens) = jax.lax.scan(
        lambda g, mb: accumulate(g, mb, trainable, frozen, normaliser),
        jax.tree.map(jnp.zeros_like, trainable), micro)
    # Token-mean diagnostics of the micro-batches, weighted by their token counts.
    metrics = {k: (v * tokens).sum() / jnp.maximum(tokens.sum(), 1.0) for k, v in metrics.items()}
    updates, new_opt_state = tx.update(grads, opt_state, trainable)
    # A mini-batch without a loss token (every group dropped by dynamic sampling or overlong
    # filtering) has no gradient: AdamW would still move every weight on its momentum (and
    # weight decay), training on no data. It leaves the parameters and AdamW's state as they
    # are; the learning-rate schedule moves on (`optimizer.advance_schedules`).
    has_tokens = tokens.sum() > 0
    trainable, opt_state = jax.tree.map(
        lambda new, old: jnp.where(has_tokens, new, old),
        (optax.apply_updates(trainable, updates), new_opt_state),
        (trainable, optimizer.advance_schedules(opt_state)))
    finite = jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(trainable)]).all()
    metrics = dict(metrics, loss=loss.sum(), grad_norm=optax.tree.norm(grads),
                   params_finite=finite.astype(jnp.float32), loss_tokens=tokens.sum())
    return trainable, opt_state, metrics

  if param_shardings is None:
    return jax.jit(update, donate_argnums=(0, 1))
  mesh = next(iter(param_shardings.values())).mesh
  return jax.jit(traced_on(mesh, update), donate_argnums=(0, 1),
                 out_shardings=(param_shardings, opt_shardings,
                                NamedSharding(mesh, PartitionSpec())))


def backward_activation_bytes(split: SplitModel, trainable: dict, batch: dict,
                              temperature: float, remat: bool) -> int:
  """Bytes of activations the backward pass of one forward over `batch` keeps: its residuals
  other than the parameters and the batch themselves. Traced with abstract shapes only: the
  model's leaves and `batch` may be jax.ShapeDtypeStructs (a model built with nnx.eval_shape),
  so a model too large for this machine can be sized."""

  def activations(trainable, frozen, batch):
    inputs = {id(leaf) for leaf in jax.tree.leaves((trainable, frozen, batch))}

    def total_logprob(params):
      return response_logprobs(split.merge(params, frozen), batch, temperature, remat)[0].sum()

    kept = jax.tree.leaves(jax.vjp(total_logprob, trainable)[1])  # the vjp holds the residuals
    return [leaf for leaf in kept if id(leaf) not in inputs]

  return array_bytes(jax.eval_shape(activations, trainable, split.frozen, batch))


def array_bytes(tree) -> int:
  """Bytes held by the array leaves of a pytree (parameters, optimizer state, activations),
  each leaf whole (all devices' shards together)."""
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
             if hasattr(leaf, "dtype"))
