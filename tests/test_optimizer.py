"""AdamW over the trainable leaves: per-group learning rates, schedules, clipping."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlayer.rl import optimizer


def test_each_group_steps_at_its_own_rate():
  params = {"a": jnp.ones(3), "b": jnp.ones(2), "c": jnp.ones(4)}
  grads = {"a": jnp.full(3, 0.3), "b": jnp.full(2, -2.0), "c": jnp.full(4, 5.0)}
  tx = optimizer.make_optimizer({"a": "default", "b": "default", "c": "group0"},
                                {"default": 5e-6, "group0": 1e-5}, max_grad_norm=None)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is lr * g / (|g| + eps): -lr * sign(g) to rounding.
  np.testing.assert_allclose(updates["a"], -5e-6, rtol=1e-4)
  np.testing.assert_allclose(updates["b"], 5e-6, rtol=1e-4)
  np.testing.assert_allclose(updates["c"], -1e-5, rtol=1e-4)


def test_a_max_grad_norm_of_0_clips_nothing():
  params, grads = {"a": jnp.ones(2)}, {"a": jnp.array([0.5, -2.0])}
  tx = optimizer.make_optimizer({"a": "default"}, {"default": 1e-3}, max_grad_norm=0.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["a"], [-1e-3, 1e-3], rtol=1e-4)  # -lr * sign(g)


def test_matches_optax_adamw_with_clipping():
  rng = np.random.default_rng(0)
  params = {"a": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=5))}
  tx = optimizer.make_optimizer({"a": "default", "b": "default"}, {"default": 1e-3},
                                weight_decay=0.1, max_grad_norm=0.5)
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-3, weight_decay=0.1))
  state, ref_state = tx.init(params), reference.init(params)
  for step in range(3):
    grads = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
    updates, state = tx.update(grads, state, params)
    expected, ref_state = reference.update(grads, ref_state, params)
    for k in params:
      np.testing.assert_allclose(updates[k], expected[k], rtol=1e-6)


def test_warmup_then_constant_and_cosine():
  constant = optimizer.learning_rate_schedule(1e-3, schedule="constant", warmup_updates=4,
                                              total_updates=100)
  assert [float(constant(i)) for i in (0, 2, 4, 50)] == pytest.approx([0, 5e-4, 1e-3, 1e-3])
  cosine = optimizer.learning_rate_schedule(1e-3, schedule="cosine", warmup_updates=0,
                                            total_updates=100)
  assert float(cosine(50)) == pytest.approx(5e-4) and float(cosine(100)) == pytest.approx(0.0)
  # No update left after the warm-up: the warm-up, then 0 (optax refuses a decay over 0 steps).
  short = optimizer.learning_rate_schedule(1e-3, schedule="cosine", warmup_updates=3,
                                           total_updates=3)
  assert [float(short(i)) for i in (0, 3, 4)] == pytest.approx([0, 1e-3, 0])
  with pytest.raises(ValueError, match="Unknown train.lr_schedule 'linear'"):
    optimizer.learning_rate_schedule(1e-3, schedule="linear", warmup_updates=0, total_updates=1)


def test_cosine_after_a_warmup_equals_transformers_schedule():
  """The learning rate at each update of a 10-update run with 3 warm-up updates, as the
  Trainer's get_cosine_schedule_with_warmup sets it: warm-up included in the 10, 0 at the end."""
  import torch
  import transformers

  torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
  reference = transformers.get_cosine_schedule_with_warmup(
      torch_optimizer, num_warmup_steps=3, num_training_steps=10).lr_lambdas[0]
  cosine = optimizer.learning_rate_schedule(1e-3, schedule="cosine", warmup_updates=3,
                                            total_updates=10)
  assert [float(cosine(i)) for i in range(11)] == pytest.approx(
      [1e-3 * reference(i) for i in range(11)], abs=1e-9)


def test_advancing_the_schedules_moves_their_count_and_leaves_adam_as_it_is():
  """Three planned updates skipped in a warm-up over 4: the next update runs at lr(3) = 3/4 of
  the peak, as AdamW's first step (-lr * sign(g): its moments and count were not moved)."""
  params = {"a": jnp.ones(2)}
  tx = optimizer.make_optimizer({"a": "default"}, {"default": 1e-3}, warmup_updates=4)
  state = optimizer.advance_schedules(tx.init(params), 3)
  updates, _ = tx.update({"a": jnp.array([0.5, -2.0])}, state, params)
  np.testing.assert_allclose(updates["a"], [-7.5e-4, 7.5e-4], rtol=1e-4)
