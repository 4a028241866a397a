"""The optimizer over the trainable parameters: AdamW per learning-rate group, global clipping.

Freezing happens here and only here, by construction of what the optimizer sees: the train
step splits the model's parameters into the trainable ones (`Selection.trainable`) and the
frozen rest, differentiates the loss with respect to the trainable ones only, and hands this
optimizer that subtree alone. The usual alternative, `optax.multi_transform` over every
parameter with `set_to_zero` on the frozen label, also keeps no optimizer state for frozen
leaves, but it still needs a (zero) gradient for every frozen leaf and writes every frozen
leaf back after `apply_updates` each step: for one trained block out of 28, that is the whole
model's memory traffic for nothing. Here frozen leaves have no gradient, no optimizer state
and are never written, so they stay bit-identical to the base checkpoint.
Within the trainable subtree, `optax.partition` gives each learning-rate group its own AdamW
(the paper's Boost-B10 trains its top blocks at twice the base rate).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

SCHEDULES = ("constant", "cosine")
# Schedules whose learning rate at a step depends on the run's length (total_updates).
LENGTH_DEPENDENT_SCHEDULES = ("cosine",)


def learning_rate_schedule(peak: float, *, schedule: str, warmup_updates: int,
                           total_updates: int) -> optax.Schedule:
  """Linear warm-up from 0 to `peak` over `warmup_updates`, then constant or cosine to 0."""
  if schedule == "constant":
    if warmup_updates == 0:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup_updates), optax.constant_schedule(peak)],
        [warmup_updates])
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_updates,
                                              max(total_updates, warmup_updates + 1))
  raise ValueError(f"Unknown train.lr_schedule {schedule!r}: choose one of {list(SCHEDULES)}.")


def make_optimizer(groups: Mapping[str, str], learning_rates: Mapping[str, float], *,
                   schedule: str = "constant", warmup_updates: int = 0, total_updates: int = 1,
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, max_grad_norm: float | None = 1.0
                   ) -> optax.GradientTransformation:
  """AdamW for a flat dict of trainable parameters {path: array}; `groups` maps path -> group.

  `max_grad_norm` clips the global norm over all trainable leaves (None or 0: no clipping).
  """
  per_group = {
      name: optax.adamw(learning_rate_schedule(rate, schedule=schedule,
                                               warmup_updates=warmup_updates,
                                               total_updates=total_updates),
                        b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
      for name, rate in learning_rates.items()
  }
  labels = dict(groups)
  adamw = optax.partition(per_group, labels)
  if not max_grad_norm:
    return adamw
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def advance_schedules(opt_state, updates: int = 1):
  """`opt_state` with every learning-rate schedule's count moved on by `updates`, the rest
  (AdamW's moments and its bias-correction count) as it is: the state after updates that
  were planned but skipped for lack of data (works inside `jit`). veRL steps its scheduler
  once per RL step whatever its updates did, and TRL's trainer on every optimizer step, which
  it never skips for lack of data: in both, the learning rate follows the updates planned."""
  is_schedule = lambda node: isinstance(node, optax.ScaleByScheduleState)  # noqa: E731
  return jax.tree.map(
      lambda node: node._replace(count=node.count + updates) if is_schedule(node) else node,
      opt_state, is_leaf=is_schedule)
