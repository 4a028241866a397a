"""The compiled update: what it changes, its gradients, its cost, and data parallelism."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlayer import models, sampling
from jaxlayer.rl import losses, optimizer, selection, step

LOSS = losses.LossConfig(aggregation="sequence-mean-token-mean", kl_beta=0.0)


def _batch(vocab, rows=8, prompt=5, response=6, seed=0, group=1):
  """A rollout-like batch: left-padded prompts, right-padded responses, random advantages;
  each `group` consecutive rows answer the same prompt."""
  rng = np.random.default_rng(seed)
  prompt_lens = np.repeat(rng.integers(2, prompt + 1, rows // group), group)
  response_lens = rng.integers(1, response + 1, rows)
  ids = rng.integers(0, vocab, (rows, prompt + response)).astype(np.int32)
  ids[:, :prompt] = np.repeat(ids[::group, :prompt], group, axis=0)
  attention = np.zeros((rows, prompt + response), bool)
  for r in range(rows):
    attention[r, prompt - prompt_lens[r]:prompt + response_lens[r]] = True
  response_mask = attention[:, prompt:].astype(np.float32)
  return {"input_ids": ids, "attention_mask": attention, "response_mask": response_mask,
          "is_response": np.ones(rows, np.float32),
          "old_logprobs": rng.normal(-5.7, 0.3, (rows, response)).astype(np.float32),
          "advantages": np.repeat(rng.normal(size=(rows, 1)), response, 1).astype(np.float32)}


def _trainer_parts(model_dir, layers, mesh=None, lr=1e-2, dtype="float32"):
  model, cfg = models.from_pretrained(model_dir, mesh=mesh, dtype=dtype)
  chosen = selection.resolve(list(models.named_params(model)), cfg.num_layers, layers, lr)
  split, params = step.split_model(model, chosen.trainable)
  tx = optimizer.make_optimizer(chosen.groups, chosen.learning_rates, max_grad_norm=None)
  return split, params, tx


def test_a_bfloat16_models_trained_leaves_are_float32_copies_that_keep_small_updates(
    tiny_qwen2_dir):
  base, _ = models.from_pretrained(tiny_qwen2_dir, dtype="bfloat16")
  base_params = {k: np.asarray(v) for k, v in models.named_params(base).items()}
  split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.1", lr=1e-6, dtype="bfloat16")
  assert {v.dtype for v in params.values()} == {jnp.dtype(jnp.float32)}
  # The model they make is the bfloat16 model, bit for bit.
  for path, value in models.named_params(split.merge(params)).items():
    assert value.dtype == jnp.bfloat16
    assert np.asarray(value).tobytes() == base_params[path].tobytes(), path
  update = step.make_update_step(split, tx, LOSS, temperature=1.0)
  new, _, _ = update(params, tx.init(params), split.frozen, _batch(300))
  moved = []
  for path, value in new.items():
    before, after = base_params[path].astype(np.float32), np.asarray(value)
    # Adam's first step moves each weight by the learning rate: every float32 copy moves, where
    # in bfloat16 (spacing ~1e-4 at 0.02) almost every weight would have kept its value.
    moved.append((after != before).ravel())
    assert np.mean(moved[-1]) > 0.9, path  # (on an H100, 15 of a 16-value bias)
    # (less where a gradient is near Adam's eps; more by float32's rounding: 6e-8 at 1.0)
    moves = np.abs(after - before)
    assert moves.max() < 1.15e-6 and np.median(moves) == pytest.approx(1e-6, rel=0.05), path
    assert np.mean(after.astype(jnp.bfloat16) == base_params[path]) > 0.9, path
  assert np.mean(np.concatenate(moved)) > 0.95


def test_updates_touch_only_the_selected_leaves(tiny_qwen2_dir):
  base, _ = models.from_pretrained(tiny_qwen2_dir)
  base_params = {k: np.asarray(v) for k, v in models.named_params(base).items()}
  split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.0.mlp,final_norm")
  trainable = set(params)
  opt_state = tx.init(params)
  update = step.make_update_step(split, tx, LOSS, temperature=1.0)
  for seed in range(3):
    params, opt_state, metrics = update(params, opt_state, split.frozen, _batch(300, seed=seed))
  after = models.named_params(split.merge(params))

  assert trainable == {"layers.0.mlp.gate_proj.kernel", "layers.0.mlp.up_proj.kernel",
                       "layers.0.mlp.down_proj.kernel", "final_norm.scale"}
  for path, value in after.items():
    if path in trainable:
      assert not np.array_equal(np.asarray(value), base_params[path]), f"{path} did not change"
    else:
      assert np.asarray(value).tobytes() == base_params[path].tobytes(), f"{path} changed"
  # The optimizer state holds the two Adam moments of the trainable leaves and nothing else.
  state_keys = {getattr(path[-1], "key", None)
                for path, _ in jax.tree_util.tree_leaves_with_path(opt_state)}
  assert state_keys - {None} == trainable
  moments = sum(v.nbytes for v in jax.tree.leaves(opt_state) if v.ndim > 0)
  assert moments == 2 * sum(v.nbytes for v in params.values())
  assert metrics["params_finite"] == 1.0


def test_the_frozen_parameters_passed_are_the_ones_used(tiny_qwen2_dir):
  """A compiled call computes with the frozen state it is given, not the one split off."""
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  trainable = ["layers.1.mlp.up_proj.kernel"]
  split, params = step.split_model(model, trainable)
  other_split, _ = step.split_model(jax.tree.map(lambda x: 2 * x, model), trainable)
  batch = _batch(300)
  expected = step.make_logprob_fn(other_split, 1.0)(params, other_split.frozen, batch)
  got = step.make_logprob_fn(split, 1.0)(params, other_split.frozen, batch)
  assert not np.allclose(expected, step.make_logprob_fn(split, 1.0)(params, split.frozen, batch))
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_an_infinite_step_reports_weights_that_are_not_finite(tiny_qwen2_dir):
  """An infinite step leaves infinite weights after a finite loss and gradient: params_finite
  is what tells the run it diverged."""
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "layers.1")
  sgd = optax.sgd(np.inf)
  _, _, metrics = step.make_update_step(split, sgd, LOSS, 1.0)(
      params, sgd.init(params), split.frozen, _batch(300))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert metrics["params_finite"] == 0.0
  # One leaf out of many is enough.
  first = min(params)
  one_infinite = optax.stateless(lambda updates, _: {
      k: v * (np.inf if k == first else -1.0) for k, v in updates.items()})
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "layers.1")
  new, _, metrics = step.make_update_step(split, one_infinite, LOSS, 1.0)(
      params, one_infinite.init(params), split.frozen, _batch(300))
  assert [k for k, v in new.items() if not np.isfinite(v).all()] == [first]
  assert metrics["params_finite"] == 0.0


def _full_model_gradients(model, batch, loss_config) -> dict[str, np.ndarray]:
  """The loss's gradient on every parameter of `model` (none frozen), by path, in float64."""
  graphdef, state = nnx.split(model)

  def full_loss(state):
    logps, _ = step.response_logprobs(nnx.merge(graphdef, state), batch, 1.0)
    return losses.policy_loss(logps, batch["old_logprobs"], batch["advantages"],
                              batch["response_mask"], None, loss_config)[0]

  return {models.path_str(p): np.asarray(v.get_value(), np.float64)
          for p, v in nnx.to_flat_state(jax.jit(jax.grad(full_loss))(state))}


def test_update_equals_full_gradient_restricted_to_the_selection(tiny_qwen2_dir):
  """Differentiating the trainable leaves alone gives the full model's gradient on them."""
  batch = _batch(300)
  model, cfg = models.from_pretrained(tiny_qwen2_dir)
  full_grads = _full_model_gradients(model, batch, LOSS)
  chosen = selection.resolve(list(full_grads), cfg.num_layers, "layers.1.attn", 1.0)
  split, params = step.split_model(model, chosen.trainable)
  before = {k: np.asarray(v) for k, v in params.items()}
  sgd = optax.sgd(1.0)  # new = old - gradient
  new_params, _, _ = step.make_update_step(split, sgd, LOSS, 1.0)(
      params, sgd.init(params), split.frozen, batch)
  assert set(new_params) == {p for p in full_grads if p.startswith("layers.1.attn.")}
  for k in new_params:
    np.testing.assert_allclose(before[k] - np.asarray(new_params[k]), full_grads[k],
                               rtol=1e-4, atol=1e-8)


def test_learning_rate_groups_move_each_leaf_by_its_own_rate_in_the_runs_update(
    tiny_qwen2_dir, tmp_path):
  """Boost-BK end to end: train.lr_groups through the run's plan, optimizer and update step.
  AdamW's first step (bias-corrected m = g, v = g^2) moves a weight by -lr g / (|g| + eps),
  with g the gradient after global-norm clipping: block 1 at 3e-3, the rest at 1e-3."""
  from jaxlayer.rl import train
  from jaxlayer.rl.config import default_config

  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(tiny_qwen2_dir), str(tmp_path / "run")
  cfg.train.update(layers="layers.0,layers.1", learning_rate=1e-3, lr_groups="layers.1=3e-3",
                   kl_beta=0.0, group_size=2, batch_size=8, max_grad_norm=0.5)
  cfg.rollout.update(max_new_tokens=6, max_prompt_tokens=16)
  cfg.mesh.num_devices = 1
  planned = train.plan(cfg)
  batch = _batch(300)
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  grads = _full_model_gradients(model, batch, planned.loss)
  split, params = step.split_model(model, planned.selection.trainable)
  grads = {k: grads[k] for k in params}
  grad_norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
  clip = min(1.0, 0.5 / grad_norm)
  tx = train.plan_optimizer(planned)
  before = {k: np.asarray(v, np.float64) for k, v in params.items()}
  new, _, metrics = step.make_update_step(split, tx, planned.loss, 1.0)(
      params, tx.init(params), split.frozen, batch)
  assert clip < 1.0 and float(metrics["grad_norm"]) == pytest.approx(grad_norm, rel=1e-4)
  for k, g in grads.items():
    rate = 3e-3 if k.startswith("layers.1.") else 1e-3
    expected = -rate * clip * g / (clip * np.abs(g) + 1e-8)
    # Where the clipped gradient is near eps the move follows its float32 rounding almost one
    # for one (~0.4% on a gradient entry of 3e-9 here): 0.1% of the rate covers that, and a
    # wrong rate is off by a factor of 3.
    np.testing.assert_allclose(np.asarray(new[k], np.float64) - before[k], expected,
                               rtol=2e-3, atol=1e-3 * rate, err_msg=k)


def test_a_mini_batch_without_loss_tokens_leaves_the_parameters_and_adam_as_they_are(
    tiny_qwen2_dir):
  """A mini-batch whose every response is dropped (DAPO's dynamic sampling out of rounds,
  overlong filtering) has no gradient: AdamW must not step on its momentum alone."""
  split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.1")
  update = step.make_update_step(split, tx, LOSS, temperature=1.0)
  params, opt_state, _ = update(params, tx.init(params), split.frozen, _batch(300))
  before = {k: np.asarray(v) for k, v in params.items()}
  moments_before = [np.asarray(x) for x in jax.tree.leaves(opt_state)]
  dropped = dict(_batch(300, seed=1))
  dropped["response_mask"] = np.zeros_like(dropped["response_mask"])
  params, opt_state, metrics = update(params, opt_state, split.frozen, dropped)
  assert metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0
  for k, value in params.items():
    np.testing.assert_array_equal(np.asarray(value), before[k], err_msg=k)
  # AdamW's moments and counts stay; only the learning-rate schedule's count moves on (below).
  moments_after = jax.tree.leaves(optimizer.advance_schedules(opt_state, -1))
  for old, new in zip(moments_before, moments_after, strict=True):
    np.testing.assert_array_equal(np.asarray(new), old)


def test_a_skipped_update_moves_the_learning_rate_schedule_on(tiny_qwen2_dir):
  """veRL steps its learning-rate scheduler once per RL step whatever its updates did, and
  TRL's trainer on every optimizer step, which it never skips for lack of data: the learning
  rate follows the updates planned. A warm-up from 0 over 4 updates, one update skipped (no
  loss token): the first real update runs at lr(1) = peak / 4, and as AdamW's first step
  (the skip left its moments and bias-correction count alone) it moves each weight by
  lr(1) against its gradient's sign. Had the skip held the schedule back, lr(0) = 0."""
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "layers.1")
  peak = 1e-3
  tx = optimizer.make_optimizer({path: "all" for path in params}, {"all": peak},
                                warmup_updates=4, total_updates=8, max_grad_norm=None)
  update = step.make_update_step(split, tx, LOSS, temperature=1.0)
  batch = _batch(300)
  dropped = dict(batch, response_mask=np.zeros_like(batch["response_mask"]))

  def loss(trainable):
    logps, _ = step.response_logprobs(split.merge(trainable), batch, 1.0)
    return losses.policy_loss(logps, batch["old_logprobs"], batch["advantages"],
                              batch["response_mask"], None, LOSS)[0]

  grads = {k: np.asarray(g, np.float64) for k, g in jax.jit(jax.grad(loss))(params).items()}
  before = {k: np.asarray(v, np.float64) for k, v in params.items()}
  params, opt_state, _ = update(params, tx.init(params), split.frozen, dropped)
  params, _, _ = update(params, opt_state, split.frozen, batch)
  for k, g in grads.items():
    expected = -(peak / 4) * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(np.asarray(params[k], np.float64) - before[k], expected,
                               rtol=2e-3, atol=3e-8, err_msg=k)

def test_remat_gives_the_same_update_and_keeps_only_the_block_inputs(tiny_qwen2_dir):
  """train.remat: the same gradient step; the backward pass keeps each block's input instead of
  its activations, and the final hidden states instead of the logits (counted on the traced
  program: XLA:CPU itself does not act on remat)."""
  batch = _batch(300, rows=4, prompt=8, response=24)
  sgd = optax.sgd(1.0)  # new = old - gradient
  # Block 0 trains and block 1 is frozen above it, inside a loop of 2 micro-batches.
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "layers.0")
  updated = {}
  for remat in (False, True):
    copy = {k: jnp.array(v) for k, v in params.items()}
    updated[remat] = step.make_update_step(split, sgd, LOSS, 1.0, remat=remat, micro_batches=2)(
        copy, sgd.init(copy), split.frozen, batch)[0]
  for k in params:
    np.testing.assert_allclose(updated[True][k], updated[False][k], rtol=1e-5, atol=1e-7)
    assert not np.array_equal(updated[True][k], params[k]), k

  split, params, _ = _trainer_parts(tiny_qwen2_dir, "all")
  model_cfg = models.ModelConfig.from_json_file(f"{tiny_qwen2_dir}/config.json")
  kept = {remat: step.backward_activation_bytes(split, params, batch, 1.0, remat)
          for remat in (False, True)}
  tokens = batch["input_ids"].size
  block_inputs = model_cfg.num_layers * tokens * model_cfg.hidden_size * 4  # float32
  response_logits = batch["response_mask"].size * model_cfg.vocab_size * 4
  assert block_inputs <= kept[True] < kept[False] / 3
  # Nor is the response logits' log-softmax kept: the backward pass recomputes it.
  assert kept[True] < block_inputs + response_logits


def test_long_sequences_run_in_chunks_with_the_same_log_probs_and_update(tiny_qwen2_dir,
                                                                          monkeypatch):
  """Responses of 24 tokens through the output projection in 5 chunks of at most 5 positions,
  and attending in 4 chunks of at most 7 queries (their prompts, run once for their group of
  2, in 2 chunks): the log-probs and entropies, and the gradient step with remat (each chunk
  recomputed), equal those of the sequences in one piece."""
  batch = _batch(300, rows=4, prompt=8, response=24, group=2)
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "all")
  sgd = optax.sgd(1.0)  # new = old - gradient

  def run():
    logprobs = jax.jit(lambda m: step.response_logprobs(m, batch, 0.7, group=2))(
        split.merge(params))
    copy = {k: jnp.array(v) for k, v in params.items()}
    update = step.make_update_step(split, sgd, LOSS, 0.7, remat=True, group=2)
    return logprobs, update(copy, sgd.init(copy), split.frozen, batch)[0]

  (whole_logprobs, whole_entropy), whole_update = run()
  monkeypatch.setattr(step, "LOGITS_POSITION_CHUNK", 5)
  monkeypatch.setattr(models.qwen, "ATTENTION_QUERY_CHUNK", 7)
  (logprobs, entropy), updated = run()
  np.testing.assert_allclose(logprobs, whole_logprobs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(entropy, whole_entropy, rtol=1e-6, atol=1e-6)
  for k in params:
    np.testing.assert_allclose(updated[k], whole_update[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_grouped_update_runs_each_prompt_once_and_equals_the_plain_one(tiny_qwen2_dir):
  """Rows in groups of 4 responses to one prompt: the update that runs each prompt once (also
  with 2 micro-batches of whole groups, and with remat) equals the update over whole rows."""
  batch = _batch(300, rows=16, group=4)
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "all")
  tx = optax.sgd(1.0)  # new = old - gradient
  updated, losses_of = {}, {}
  for group, micro_batches, remat in ((1, 1, False), (4, 1, False), (4, 2, True)):
    copy = {k: jnp.array(v) for k, v in params.items()}
    update = step.make_update_step(split, tx, LOSS, 1.0, micro_batches=micro_batches,
                                   remat=remat, group=group)
    updated[group, micro_batches], _, metrics = update(copy, tx.init(copy), split.frozen, batch)
    losses_of[group, micro_batches] = float(metrics["loss"])
  for key in ((4, 1), (4, 2)):
    assert losses_of[key] == pytest.approx(losses_of[1, 1], rel=1e-5)
    for k in params:
      np.testing.assert_allclose(updated[key][k], updated[1, 1][k], rtol=1e-5, atol=1e-7,
                                 err_msg=f"{key} {k}")
      assert not np.array_equal(updated[key][k], params[k]), k
  # So do the reference policy's log-probs (KL on).
  reference = {g: step.make_logprob_fn(split, 1.0, group=g)(params, split.frozen, batch)
               for g in (1, 4)}
  np.testing.assert_allclose(reference[4], reference[1], atol=1e-5)
  # Prompt tokens are computed once per group: 4 prompts, not 16 rows, in the first block.
  text = jax.jit(lambda p: step.response_logprobs(split.merge(p), batch, 1.0, group=4)).lower(
      params).as_text()
  tokens = 4 * 5 + 16 * 6
  assert f"tensor<{tokens}x32xf32>" in text and f"tensor<{16 * 11}x32xf32>" not in text


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
def test_micro_batches_normalise_over_the_whole_update_batch(tiny_qwen2_dir, aggregation):
  """DAPO's token-mean divides by the loss tokens of the whole update batch, GRPO's response
  means by its responses, Dr. GRPO's token sums by (responses x max response length), a
  constant: not per micro-batch (whose token counts differ here). Row 2 is a response that
  overlong filtering masks: it counts among the responses (TRL's batch mean, veRL's global
  batch). Row 5 is a filler row (a dropped group at zero weight): it counts nowhere. 4
  micro-batches give the gradient of the definition over the 7 responses, written out below."""
  batch = _batch(300, rows=8, response=6)
  batch["response_mask"][[2, 5]] = 0.0
  batch["is_response"][5] = 0.0
  cfg = losses.LossConfig(aggregation=aggregation, max_response_length=6)
  split, params, _ = _trainer_parts(tiny_qwen2_dir, "layers.1")
  mask = batch["response_mask"]
  tokens_per_micro_batch = mask.reshape(4, 2, -1).sum(axis=(1, 2))  # rows i, i + 4: see step
  assert len(set(tokens_per_micro_batch.tolist())) > 1
  responses = 7
  token_weights = {"token-mean": mask / mask.sum(),
                   "sequence-mean-token-mean":
                       mask / np.maximum(mask.sum(axis=1, keepdims=True), 1) / responses,
                   "sequence-mean-token-sum-norm": mask / (responses * 6)}[aggregation]

  def defined_loss(trainable):
    logps, _ = step.response_logprobs(split.merge(trainable), batch, 1.0)
    per_token, _ = losses.clipped_surrogate(logps, batch["old_logprobs"], batch["advantages"],
                                            0.2, 0.2)
    return (per_token * token_weights).sum()

  expected = jax.jit(jax.grad(defined_loss))(params)
  logps, entropy = (np.asarray(v, np.float64)
                    for v in step.response_logprobs(split.merge(params), batch, 1.0))
  ratio = np.exp(logps - batch["old_logprobs"])  # [rows, response]
  sgd = optax.sgd(1.0)  # new = old - gradient
  before = {k: np.asarray(v) for k, v in params.items()}
  new, _, metrics = step.make_update_step(split, sgd, cfg, 1.0, micro_batches=4)(
      params, sgd.init(params), split.frozen, batch)
  for k in new:
    # (atol: float32 rounding of weights near 1.0, spacing 1.2e-7)
    np.testing.assert_allclose(before[k] - np.asarray(new[k]), expected[k], rtol=1e-4,
                               atol=2e-7, err_msg=k)
  # The diagnostics are token means over the whole batch, whatever its micro-batches hold.
  low = (ratio < 0.8) & (batch["advantages"] < 0)
  high = (ratio > 1.2) & (batch["advantages"] > 0)
  token_means = {name: (values * mask).sum() / mask.sum() for name, values in
                 {"ratio_mean": ratio, "entropy": entropy, "clip_fraction_low": low,
                  "clip_fraction_high": high}.items()}
  assert token_means["ratio_mean"] != pytest.approx(1.0, abs=1e-3)
  assert {name: float(metrics[name]) for name in token_means} == pytest.approx(token_means,
                                                                              rel=1e-4)


def test_the_entropy_metric_is_the_mean_over_response_tokens_only(tiny_qwen2_dir):
  """At temperature 0.02 the tiny model's entropy varies from position to position (at 1.0 it
  is ~log(300) everywhere), so a mean that took the padding and masked rows in would show."""
  batch = _batch(300)
  batch["response_mask"][[2, 5]] = 0.0
  mask = batch["response_mask"]
  split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.1")
  _, entropy = step.response_logprobs(split.merge(params), batch, 0.02)
  entropy = np.asarray(entropy, np.float64)  # [rows, response]
  expected = (entropy * mask).sum() / mask.sum()
  assert entropy.mean() != pytest.approx(expected, rel=1e-2)
  _, _, metrics = step.make_update_step(split, tx, LOSS, 0.02)(params, tx.init(params),
                                                              split.frozen, batch)
  assert float(metrics["entropy"]) == pytest.approx(expected, rel=1e-4)


def test_the_kl_term_takes_the_batchs_reference_log_probs(tiny_qwen2_dir):
  """With kl_beta > 0 the step's KL is k3 of the policy against the batch's ref_logprobs."""
  batch = _batch(300)
  mask = batch["response_mask"]
  split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.1")
  logps = np.asarray(step.response_logprobs(split.merge(params), batch, 1.0)[0], np.float64)
  batch["ref_logprobs"] = batch["old_logprobs"]
  log_ratio = batch["ref_logprobs"] - logps  # [rows, response]
  expected = ((np.exp(log_ratio) - log_ratio - 1) * mask).sum() / mask.sum()
  update = step.make_update_step(split, tx, losses.LossConfig(kl_beta=0.1), 1.0)
  _, _, metrics = update(params, tx.init(params), split.frozen, batch)
  assert float(metrics["kl"]) == pytest.approx(expected, rel=1e-4)


def test_top_block_update_is_cheaper_than_bottom_block_and_full(tiny_qwen2_dir):
  """No backward work below the lowest trainable block (XLA's FLOP count of the step)."""
  batch = _batch(300)
  flops = {}
  for layers in ("layers.1", "layers.0", "all"):
    split, params, tx = _trainer_parts(tiny_qwen2_dir, layers)
    compiled = step.make_update_step(split, tx, LOSS, 1.0).lower(
        params, tx.init(params), split.frozen, batch).compile()  # GPUs count compiled code only
    flops[layers] = compiled.cost_analysis()["flops"]
  assert flops["layers.1"] < 0.9 * flops["layers.0"] < 0.9 * 0.9 * flops["all"]


def test_response_logprobs_match_the_samplers(tiny_qwen2_dir):
  """Teacher-forced log-probs of sampled tokens equal the sampler's (the PPO old policy)."""
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
  out = sampling.generate(model, prompts, max_new_tokens=6, num_samples=2, temperature=0.7,
                          eos_token_ids=[0], seed=3)
  width = 5
  ids = np.zeros((4, width + 6), np.int32)
  attention = np.zeros_like(ids, bool)
  for row, index in enumerate(out.prompt_index):
    prompt = prompts[index]
    ids[row, width - len(prompt):width] = prompt
    attention[row, width - len(prompt):width] = True
  ids[:, width:] = out.tokens
  attention[:, width:] = out.mask
  batch = {"input_ids": ids, "attention_mask": attention,
           "response_mask": out.mask.astype(np.float32)}
  logps, _ = step.response_logprobs(model, batch, temperature=0.7)
  np.testing.assert_allclose(np.where(out.mask, logps, 0.0), out.logprobs, atol=2e-5)


@pytest.mark.eight_devices
def test_sharded_update_equals_single_device(tiny_qwen2_dir):
  """Data parallel x fsdp on 8 CPU devices, the gradient accumulated over 2 micro-batches of
  8 rows, gives the one-device, one-pass update (to rounding). Activations stay split by rows:
  the devices gather weights and sum gradients, and move no activations between them."""
  host_batches = [_batch(300, rows=16, seed=seed) for seed in range(2)]
  # The second holds a response that overlong filtering masks and a filler row: the batch's
  # count of responses (the normaliser) is summed over the devices.
  host_batches[1]["response_mask"][[3, 6]] = 0.0
  host_batches[1]["is_response"][6] = 0.0
  results = []
  for mesh, micro_batches in ((models.make_mesh(1, 1, 1, devices=jax.devices()[:1]), 1),
                              (models.make_mesh(4, 2, 1), 2)):
    split, params, tx = _trainer_parts(tiny_qwen2_dir, "layers.1", mesh=mesh, lr=1e-3)
    opt_state, opt_shardings = step.init_optimizer(tx, params, mesh)
    # AdamW's moments are split as their parameters are, not whole on every device.
    moments = [(leaf, params[path[-1].key]) for path, leaf in
               jax.tree_util.tree_leaves_with_path(opt_state) if getattr(path[-1], "key", None)
               in params]
    assert len(moments) == 2 * len(params)
    assert all(m.sharding.is_equivalent_to(p.sharding, p.ndim) for m, p in moments)
    update = step.make_update_step(split, tx, LOSS, 1.0, micro_batches=micro_batches,
                                   param_shardings={k: v.sharding for k, v in params.items()},
                                   opt_shardings=opt_shardings)
    batches = [{k: jax.device_put(v, models.batch_sharding(mesh, v.ndim))
                for k, v in batch.items()} for batch in host_batches]
    compiled = update.lower(params, opt_state, split.frozen, batches[0]).compile()
    for batch in batches:
      params, opt_state, metrics = compiled(params, opt_state, split.frozen, batch)
    results.append(({k: np.asarray(v) for k, v in params.items()}, metrics, compiled.as_text()))
  (single, single_metrics, _), (sharded, sharded_metrics, text) = results
  assert "all-gather" in text and "all-to-all" not in text and "collective-permute" not in text
  assert sharded["layers.1.mlp.up_proj.kernel"].shape == single["layers.1.mlp.up_proj.kernel"].shape
  # Adam moves every entry by about the learning rate (1e-3) whatever its gradient's size, so
  # rounding in a near-zero gradient entry shows at that scale: compare at 2% of a step.
  for k in single:
    np.testing.assert_allclose(sharded[k], single[k], rtol=0, atol=2e-5)
  for name in ("loss", "grad_norm", "entropy"):
    assert float(sharded_metrics[name]) == pytest.approx(float(single_metrics[name]), rel=1e-5)


@pytest.mark.eight_devices
def test_grouped_update_on_a_mesh_keeps_each_group_on_its_device(tiny_qwen2_dir):
  """The update that runs each prompt once, data parallel on 8 devices holding a group each,
  equals the one-device update over whole rows; its only collectives are the all-reduces of the
  gradient and the metrics (no data moves between devices to pack prompts with their
  responses)."""
  batch = _batch(300, rows=16, group=2)
  results = []
  for mesh, group in ((models.make_mesh(1, 1, 1, devices=jax.devices()[:1]), 1),
                      (models.make_mesh(8, 1, 1), 2)):  # data parallel: parameters replicated
    split, params, _ = _trainer_parts(tiny_qwen2_dir, "all", mesh=mesh)
    tx = optax.sgd(1.0)
    update = step.make_update_step(split, tx, LOSS, 1.0, group=group)
    sharded = {k: jax.device_put(v, models.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    compiled = update.lower(params, tx.init(params), split.frozen, sharded).compile()
    results.append((compiled(params, tx.init(params), split.frozen, sharded), compiled.as_text()))
  ((single, _, single_metrics), _), ((grouped, _, grouped_metrics), text) = results
  assert "collective-permute" not in text and "all-to-all" not in text and "all-gather" not in text
  assert float(grouped_metrics["loss"]) == pytest.approx(float(single_metrics["loss"]), rel=1e-5)
  for k in single:
    np.testing.assert_allclose(grouped[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
