"""Multi-turn rollouts and GiGPO training on a tiny random Qwen2: the turn limit, the growing
context, broken environments, loss masks and gradients, GiGPO advantages in the loss, learning
on the grid world, resume, evaluation, the command line and config errors."""

import contextlib
import io
import json
import logging
import threading
import types
from pathlib import Path

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxlayer import cli, envs, evaluation, models, sampling
from jaxlayer.envs import Env, GridWorld, StepResult, external
from jaxlayer.rl import checkpoint, losses, metrics, multiturn, train
from jaxlayer.rl import step as rl_step
from jaxlayer.rl.config import default_config
from jaxlayer.rl.gigpo import gigpo_advantages
from jaxlayer.sweep import report, runner
from tests import hf_fixtures
from tests.test_envs import KITCHENS, FakeAlfredBatchEnv

# A 2x2 world, the goal one step away, 3 turns. A random tiny model replies with bytes: about
# 2% of its replies walk into the goal. Reward: 1 at the goal, -0.1 per unparseable reply.
GRID = {"size": 2, "max_goal_distance": 1, "max_turns": 3}
MAX_TURNS = 3
MAX_NEW_TOKENS = 3
# Right-aligned to 31 characters: every grid context is 32 tokens, so the sampler and the
# update compile once for all turns and steps (the shipped config does the same).
TEMPLATE = "{observation:>31}\n"
CONFIG_FILE = Path(__file__).parents[1] / "configs" / "gigpo_gridworld.py"


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """Runs with the same shapes share compiled update steps through JAX's persistent cache."""
  return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture(scope="module")
def tiny(tiny_qwen2_dir):
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  return model, models.load_tokenizer(tiny_qwen2_dir)


def grid_config(model_dir, run_dir, compile_cache, **train_overrides):
  """12 GiGPO steps of 16 seeds x 8 episodes on the 2x2 world; every parameter at a high rate."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(model_dir), str(run_dir)
  cfg.compilation_cache_dir = compile_cache
  cfg.env.name = "gridworld"
  cfg.env.options.update(GRID)
  cfg.env.update(max_turns=MAX_TURNS, template=TEMPLATE, step_timeout_s=None,
                 num_eval_episodes=64)
  cfg.train.update(algorithm="gigpo", layers="all", steps=12, learning_rate=3e-2, group_size=8,
                   batch_size=128, kl_beta=0.0)
  cfg.train.update(train_overrides)
  cfg.rollout.update(max_new_tokens=MAX_NEW_TOKENS, max_prompt_tokens=40)
  cfg.mesh.num_devices = 1
  cfg.checkpoint.update(every=cfg.train.steps, keep=2)
  cfg.logging.update(progress=False, tensorboard=False)
  cfg.eval = ml_collections.ConfigDict({"metric": "pass@1", "batch_size": 64,
                                        "temperature": 0.0, "num_samples": 0})
  return cfg


def batch_of(rollouts, group_size, **overrides):
  settings = dict(group_size=group_size, gamma=0.95, omega=1.0, normalize="std", epsilon=1e-6,
                  max_new_tokens=MAX_NEW_TOKENS, pad_token_id=0)
  settings.update(overrides)
  return multiturn.gigpo_batch(rollouts, **settings)


# --- environments that misbehave ----------------------------------------------------------

class Endless(Env):
  """Never says done; the observation names the seed and the turn."""

  name = "endless"
  instructions = "Say anything you like."  # turn 0's context: 36 tokens, later ones more

  def reset(self, seed):
    self.seed, self.turn = seed, 0
    return f"room {seed} turn 0"

  def step(self, action_text):
    self.turn += 1
    return StepResult(f"room {self.seed} turn {self.turn}", 0.0, False)

  def state_key(self):
    return self.turn


class Faulty(Endless):
  """Endless, failing in one way from its `at_turn`-th step on."""

  name = "faulty"

  def __init__(self, fault, at_turn=1, release=None):
    self.fault, self.at_turn, self.release = fault, at_turn, release

  def step(self, action_text):
    result = super().step(action_text)
    if self.turn < self.at_turn:
      return result
    if self.fault == "raise":
      raise ValueError("boom")
    if self.fault == "hang":
      self.release.wait()
    return (result.observation, result.reward, result.done)  # "malformed": a bare tuple


def no_simulator():
  raise OSError("no simulator")


# --- the context ---------------------------------------------------------------------------

PAST = [("start", "go north"), ("pos 0,1", "east"), ("wall pos 0,1", "south")]


def test_plain_context_shows_the_last_history_turns():
  context = multiturn.ContextFormat(template="{instructions}\n{history}now: {observation}\n",
                                    history=2)
  assert context.render("Walk.", PAST, "pos 0,0") == (
      "Walk.\npos 0,1\neast\nwall pos 0,1\nsouth\nnow: pos 0,0\n")
  assert multiturn.ContextFormat(template="{observation}|", history=0).render(
      "Walk.", PAST, "pos 0,0") == "pos 0,0|"


def test_chat_context_alternates_observations_and_actions(tiny):
  tokenizer = tiny[1]
  context = multiturn.ContextFormat(use_chat_template=True, history=1)
  with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
    context.render("Walk.", PAST, "pos 0,0", tokenizer)
  tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)  # a copy to change
  tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                             "{% if add_generation_prompt %}<assistant>{% endif %}")
  assert context.render("Walk.", PAST, "pos 0,0", tokenizer) == (
      "<system>Walk.\n<user>wall pos 0,1\n<assistant>south\n<user>pos 0,0\n<assistant>")


def test_chat_contexts_are_sampled_as_transformers_tokenizes_the_conversation(tmp_path,
                                                                              monkeypatch):
  # R1-Distill's template writes its BOS and its tokenizer adds one to any text: the sampled
  # context has it once, as apply_chat_template's own ids do.
  from tests import hf_fixtures

  model_dir = hf_fixtures.save_chat_model(tmp_path, "r1-distill-qwen")
  model, _ = models.from_pretrained(model_dir)
  tokenizer = models.load_tokenizer(model_dir)
  sampled, generate = [], sampling.generate
  monkeypatch.setattr(sampling, "generate", lambda model, prompt_ids, **options: (
      sampled.extend(prompt_ids), generate(model, prompt_ids, **options))[1])
  context = multiturn.ContextFormat(use_chat_template=True, history=1, max_tokens=200)
  multiturn.play_episodes(model, tokenizer, lambda: GridWorld(**GRID), [0], group_size=1,
                          max_turns=1, max_new_tokens=2, temperature=0.0, eos_token_ids=[0],
                          pad_token_id=0, seed=0, context=context)
  env = GridWorld(**GRID)
  messages = [{"role": "system", "content": env.instructions},
              {"role": "user", "content": env.reset(0)}]
  assert sampled == [tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]]


def test_env_chat_template_kwargs_reach_qwen3s_template(tmp_path):
  # env.chat_template_kwargs: Qwen3's agent contexts with thinking off, as transformers writes
  # them; set without env.use_chat_template, they are refused with the fix.
  from tests import hf_fixtures

  tokenizer = models.load_tokenizer(hf_fixtures.save_chat_model(tmp_path, "qwen3"))
  config = default_config()
  config.env.update(name="gridworld", use_chat_template=True, history=1)
  config.env.chat_template_kwargs = {"enable_thinking": False}
  context = multiturn.env_settings(config).context
  messages = [{"role": "system", "content": "Walk."}, {"role": "user", "content": "wall pos 0,1"},
              {"role": "assistant", "content": "south"}, {"role": "user", "content": "pos 0,0"}]
  assert context.render("Walk.", PAST, "pos 0,0", tokenizer) == tokenizer.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
  assert context.render("Walk.", PAST, "pos 0,0", tokenizer).endswith("<think>\n\n</think>\n\n")
  config.env.use_chat_template = False
  with pytest.raises(ValueError, match="env.use_chat_template is False: set "
                     "env.use_chat_template=True"):
    multiturn.env_settings(config)


# --- the rollout loop ---------------------------------------------------------------------

ROLLOUT_CONTEXT = multiturn.ContextFormat(template="{instructions}\n{history}{observation}\n",
                                          history=1, max_tokens=40)


@pytest.fixture(scope="module")
def mixed_rollout(tiny):
  """One real rollout of 8 episodes (one per seed): endless ones, broken ones, grid worlds.

  Returns (rollouts, the prompt rows of the sampler's compiled calls, the log text)."""
  release = threading.Event()
  factories = iter([Endless(), Faulty("raise", 2), Faulty("malformed", 1),
                    Faulty("hang", 2, release), Endless(), None, GridWorld(**GRID), Endless()])

  def make_env():
    env = next(factories)
    return no_simulator() if env is None else env

  calls = []
  real_prefill = sampling._prefill

  def counting_prefill(graphdef, state, ids, *args, **kwargs):
    calls.append(ids.shape[0])
    return real_prefill(graphdef, state, ids, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch, _log_capture() as log:
    patch.setattr(sampling, "_prefill", counting_prefill)
    try:
      model, tokenizer = tiny
      rollouts = multiturn.play_episodes(
          model, tokenizer, make_env, list(range(8)), group_size=1, max_turns=MAX_TURNS,
          max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, eos_token_ids=[tokenizer.eos_token_id],
          pad_token_id=tokenizer.pad_token_id, seed=0, context=ROLLOUT_CONTEXT,
          step_timeout_s=0.5)
    finally:
      release.set()
  return rollouts, calls, log.getvalue()


@contextlib.contextmanager
def _log_capture():
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  logger = logging.getLogger("jaxlayer")
  logger.addHandler(handler)
  try:
    yield stream
  finally:
    logger.removeHandler(handler)


ENDLESS = (0, 4, 7)  # the episodes of mixed_rollout that play Endless


def test_rollout_stops_at_the_turn_limit_and_the_context_grows(tiny, mixed_rollout):
  rollouts, calls, log = mixed_rollout
  # One batched call per turn, every turn the same batch shape (one row per episode).
  assert calls == [8] * MAX_TURNS
  tokenizer = tiny[1]
  for rollout in (rollouts[i] for i in ENDLESS):
    episode = rollout.episode
    assert (episode.finish_reason, len(episode.turns), len(rollout.samples)) == (
        "turn_limit", MAX_TURNS, MAX_TURNS)
    for t, sample in enumerate(rollout.samples):
      shown = "" if t == 0 else f"room {episode.seed} turn {t - 1}\n{episode.turns[t - 1].action}\n"
      full = tokenizer(f"{Endless.instructions}\n{shown}room {episode.seed} turn {t}\n")[
          "input_ids"]
      assert sample.prompt_ids == full[-40:]  # the oldest tokens go past max_tokens
      assert sample.context_truncated == (len(full) > 40)
      assert tokenizer.decode(sample.tokens, skip_special_tokens=True) == episode.turns[t].action
  assert any(s.context_truncated for i in ENDLESS for s in rollouts[i].samples)
  assert not any(rollouts[i].samples[0].context_truncated for i in ENDLESS)
  # The rollout cuts silently; its caller warns (a training run once, an evaluation once).
  assert "exceeded rollout.max_prompt_tokens" not in log
  cut = [s.context_truncated for r in rollouts for s in r.samples]
  warning = multiturn.CutContextsWarning(then=" Then.")
  with _log_capture() as warned:
    warning([False] * len(cut), 40)  # none cut: silent, and it may still warn
    warning(cut, 40)
    warning(cut, 40)  # warned once
  assert warning.warned and warned.getvalue() == (
      f"{sum(cut)} of {len(cut)} contexts exceeded rollout.max_prompt_tokens=40 and lost their "
      "oldest tokens (the instructions first): raise rollout.max_prompt_tokens or lower "
      "env.history. Then.\n")
  assert [r.episode.seed for r in rollouts] == list(range(8))


def test_an_evaluation_warns_of_its_cut_contexts_once(tiny, monkeypatch):
  """An evaluation warned of cut contexts at each of its rollouts (batch_size episodes each).
  Now it warns once, counting the contexts of all its episodes."""
  monkeypatch.setitem(envs.ENVS, Endless.name, Endless)
  rollouts, real_play = [], multiturn.play_episodes
  monkeypatch.setattr(multiturn, "play_episodes",
                      lambda *a, **k: rollouts.append(real_play(*a, **k)) or rollouts[-1])
  env = multiturn.EnvSettings(name=Endless.name, options={}, max_turns=MAX_TURNS,
                              context=ROLLOUT_CONTEXT, step_timeout_s=None, num_eval_episodes=4)
  model, tokenizer = tiny
  with _log_capture() as log:
    result = evaluation.evaluate_env(model, tokenizer, env, max_new_tokens=MAX_NEW_TOKENS,
                                     batch_size=2, progress=False)
  cut = [[s.context_truncated for r in rollout for s in r.samples] for rollout in rollouts]
  assert len(cut) == 2 and all(any(flags) for flags in cut)  # two rollouts, both cut
  assert log.getvalue() == (
      f"{sum(map(sum, cut))} of 12 contexts exceeded rollout.max_prompt_tokens=40 and lost their "
      "oldest tokens (the instructions first): raise rollout.max_prompt_tokens or lower "
      "env.history.\n")
  # eval.json's episodes give the share, as the training metric does (it was not there).
  assert result.episodes["pass@1"]["context_truncated"] == sum(map(sum, cut)) / 12


def test_an_episode_record_shows_how_the_episode_ended():
  # The transcript pairs each action with the observation it answered: the reply to the last
  # action ("goal reached", "out of turns ...") was in no record.
  def episode(policy):
    return envs.run_episode(GridWorld(size=2, max_turns=2, max_goal_distance=1),
                            policy, seed=0, max_turns=5)

  stuck = multiturn.episode_record(episode(lambda observation: "nonsense"))
  assert stuck["final_observation"].startswith("out of turns pos ")
  assert stuck["transcript"][-1]["observation"].startswith("invalid action pos ")
  moves = ["north", "south", "east", "west"]
  solved = [record for record in (multiturn.episode_record(episode(lambda _, m=m: m))
                                  for m in moves) if record["success"]]
  assert solved and all(r["final_observation"] == "goal reached" for r in solved)


def test_episodes_sampled_in_smaller_calls_are_the_same(tiny):
  model, tokenizer = tiny
  play = lambda **kwargs: multiturn.play_episodes(  # noqa: E731
      model, tokenizer, lambda: GridWorld(size=3, max_goal_distance=2, max_turns=MAX_TURNS),
      [11, 12, 13], group_size=2, max_turns=MAX_TURNS, max_new_tokens=MAX_NEW_TOKENS,
      temperature=1.0, eos_token_ids=[tokenizer.eos_token_id],
      pad_token_id=tokenizer.pad_token_id, seed=5, context=ROLLOUT_CONTEXT, **kwargs)
  whole, in_fours = play(), play(batch_rows=4)  # 6 episodes: calls of 4 + 2 filled up to 4
  assert [multiturn.episode_record(r.episode) for r in in_fours] == [
      multiturn.episode_record(r.episode) for r in whole]
  for a, b in zip(whole, in_fours):
    for x, y in zip(a.samples, b.samples):
      np.testing.assert_array_equal(x.tokens, y.tokens)
      np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
  assert len({r.episode.turns[0].action for r in whole}) > 1  # the episodes differ


def test_env_mean_at_k_plays_the_same_episodes_at_any_batch_size(tiny):
  """mean@2 of 3 episode seeds with the same sampling seed: one rollout of all 6 episodes and
  three rollouts of one seed's 2 play the same episodes."""
  model, tokenizer = tiny
  env = multiturn.EnvSettings(
      name="gridworld", options=dict(size=3, max_goal_distance=2, max_turns=MAX_TURNS),
      max_turns=MAX_TURNS, context=ROLLOUT_CONTEXT, step_timeout_s=None, num_eval_episodes=3)

  def sampled_episodes(batch_size):
    result = evaluation.evaluate_env(model, tokenizer, env, max_new_tokens=MAX_NEW_TOKENS,
                                     batch_size=batch_size, num_samples=2, seed=4, progress=False)
    return [g for g in result.generations if g["decoding"] == "sampled"], result.per_problem

  (whole, whole_scores), (in_pairs, pair_scores) = sampled_episodes(6), sampled_episodes(2)
  assert in_pairs == whole and pair_scores == whole_scores
  assert len({str(g["transcript"]) for g in whole}) > 1  # the episodes differ


def test_env_scores_are_each_seeds_mean_success_over_its_episodes(tiny, monkeypatch):
  """3 episode seeds whose second episode (of each rollout row pair) succeeds: pass@1 plays
  seeds 0, 1, 2 once (only seed 1's is a second row), mean@2 each seed twice (one of two)."""
  real_play = multiturn.play_episodes

  def play(*args, **kwargs):
    rollouts = real_play(*args, **kwargs)
    for r, rollout in enumerate(rollouts):
      rollout.episode.success = r % 2 == 1
    return rollouts

  monkeypatch.setattr(multiturn, "play_episodes", play)
  env = multiturn.EnvSettings(
      name="gridworld", options=dict(size=3, max_goal_distance=2, max_turns=MAX_TURNS),
      max_turns=MAX_TURNS, context=ROLLOUT_CONTEXT, step_timeout_s=None, num_eval_episodes=3)
  model, tokenizer = tiny
  result = evaluation.evaluate_env(model, tokenizer, env, max_new_tokens=MAX_NEW_TOKENS,
                                   batch_size=6, num_samples=2, seed=4, progress=False)
  assert result.per_problem == {"pass@1": [0.0, 1.0, 0.0], "mean@2": [0.5, 0.5, 0.5]}
  assert result.scores == {"pass@1": pytest.approx(1 / 3), "mean@2": 0.5}


def test_broken_environments_end_their_episodes_and_the_rollout_goes_on(mixed_rollout):
  rollouts, _, log = mixed_rollout
  episodes = [r.episode for r in rollouts]
  assert episodes[6].error is None and episodes[6].finish_reason in ("done", "turn_limit")
  expected_errors = {1: "step() raised ValueError: boom", 2: "step() returned tuple",
                     3: "step() did not return within step_timeout_s=0.5 s",
                     5: "reset() raised OSError: no simulator"}
  for index, message in expected_errors.items():
    assert episodes[index].finish_reason == "env_error"
    assert message in episodes[index].error
  assert log == ""  # the rollout's caller warns of them (warn_of_env_errors)
  assert [len(episodes[i].turns) for i in (1, 2, 3, 5)] == [2, 1, 2, 0]
  # Every recorded turn has its sample; the episodes that failed are left out of the loss.
  assert all(len(r.samples) == len(r.episode.turns) for r in rollouts)
  trainable = (*ENDLESS, 6)
  batch, stats = batch_of(rollouts, group_size=1)
  assert stats["trained_turns"] == sum(len(episodes[i].turns) for i in trainable)
  assert batch["response_mask"].sum() == sum(len(s.tokens) for i in trainable
                                             for s in rollouts[i].samples)
  assert multiturn.rollout_metrics(rollouts)["env_errors"] == 4


class FaultyBySeed(Endless):
  """Endless, whose first step fails one way for seeds 1, 4, ... and another for 2, 5, ..."""

  name = "faulty_by_seed"

  def step(self, action_text):
    result = super().step(action_text)
    if self.seed % 3 == 1:
      raise KeyError("x")
    if self.seed % 3 == 2:
      return (result.observation, result.reward, result.done)
    return result


def test_an_evaluation_warns_of_its_env_errors_once_counting_each_cause(tiny, monkeypatch):
  """Each episode that ended in an environment error logged its own warning: an environment
  that always fails printed a line per episode (128 per step of the ALFWorld config). Now an
  evaluation (a training step too) warns once, counting the episodes of each cause."""
  monkeypatch.setitem(envs.ENVS, FaultyBySeed.name, FaultyBySeed)
  env = multiturn.EnvSettings(name=FaultyBySeed.name, options={}, max_turns=MAX_TURNS,
                              context=ROLLOUT_CONTEXT, step_timeout_s=None, num_eval_episodes=6)
  model, tokenizer = tiny
  with _log_capture() as log:  # 3 rollouts of 2 episodes
    evaluation.evaluate_env(model, tokenizer, env, max_new_tokens=MAX_NEW_TOKENS, batch_size=2,
                            progress=False)
  assert [line for line in log.getvalue().splitlines() if "environment" in line] == [
      "environment 'faulty_by_seed': 4 of 6 episodes ended in an environment error in this "
      "evaluation: step() raised KeyError: 'x' (2 episodes); step() returned tuple, expected "
      "StepResult(observation: str, reward: float, done: bool) (2 episodes)"]


def test_the_env_error_warning_names_the_most_frequent_causes_and_counts_the_others():
  errors = ["a", "b", "b", "c", "d", "e", "f", "g", "g", "g"]
  episodes = [envs.Episode(seed=i, finish_reason=multiturn.FINISH_ENV_ERROR, error=error)
              for i, error in enumerate(errors)] + [envs.Episode(seed=10, finish_reason="done")]
  with _log_capture() as log:
    multiturn.warn_of_env_errors(episodes, "grid", "at step 3")
    multiturn.warn_of_env_errors(episodes[-1:], "grid", "at step 4")  # no error: silent
  assert log.getvalue() == (
      "environment 'grid': 10 of 11 episodes ended in an environment error at step 3: g (3 "
      "episodes); b (2 episodes); a (1 episode); c (1 episode); d (1 episode); 2 other causes "
      "(2 episodes)\n")


# --- the training batch: masks, gradients, advantages -------------------------------------

def test_only_the_action_tokens_carry_loss_and_gradient(tiny, mixed_rollout):
  rollouts = mixed_rollout[0]
  batch, stats = batch_of(rollouts, group_size=1)
  prompt_len = batch["input_ids"].shape[1] - MAX_NEW_TOKENS
  samples = [s for r in rollouts if r.trainable for s in r.samples]
  assert stats["trained_turns"] == len(samples) and len(batch["input_ids"]) >= len(samples)
  # The response mask is 1 exactly on each action's sampled tokens, its context is the prompt.
  for row, sample in enumerate(samples):
    n = len(sample.tokens)
    np.testing.assert_array_equal(batch["response_mask"][row], [1.0] * n + [0.0] * (3 - n))
    np.testing.assert_array_equal(batch["input_ids"][row, prompt_len:prompt_len + n],
                                  sample.tokens)
    np.testing.assert_array_equal(
        batch["input_ids"][row, prompt_len - len(sample.prompt_ids):prompt_len],
        sample.prompt_ids)
  assert not batch["response_mask"][len(samples):].any()  # filler rows
  # every turn is a response of the batch, whatever its length; no filler row is one
  assert len(batch["input_ids"]) > len(samples)
  np.testing.assert_array_equal(batch["is_response"],
                                np.arange(len(batch["input_ids"])) < len(samples))

  # d loss / d logits is non-zero exactly at the positions that predict an action token: the
  # environment's text and the earlier turns in the context get no gradient.
  logits = nnx.jit(lambda model, ids, mask: model(ids, mask))(
      tiny[0], batch["input_ids"], batch["attention_mask"])  # [rows, P+R, vocab]
  batch = dict(batch, advantages=np.where(batch["response_mask"] > 0, 1.0, 0.0))
  cfg = losses.LossConfig(aggregation="token-mean")

  @jax.jit
  def loss_of(logits):
    def model(ids, mask, num_last, remat, shared_prompt, head):  # a stand-in whose final
      return logits[:, -num_last:]  # hidden states are the logits, and whose output
    model.logits = lambda hidden: hidden  # projection is the identity
    logps, _ = rl_step.response_logprobs(model, batch, 1.0)
    return losses.policy_loss(logps, batch["old_logprobs"], batch["advantages"],
                              batch["response_mask"], None, cfg)[0]

  grads = np.asarray(jax.jit(jax.grad(loss_of))(logits))
  predicts_action = np.zeros(grads.shape[:2], bool)  # position p predicts token p + 1
  predicts_action[:, prompt_len - 1:-1] = batch["response_mask"] > 0
  np.testing.assert_array_equal(np.abs(grads).sum(-1) > 0, predicts_action)
  noise = np.random.default_rng(0).normal(size=logits.shape) * ~predicts_action[..., None]
  assert float(loss_of(logits + noise)) == float(loss_of(logits))


def test_gigpo_advantages_reach_the_loss_on_each_actions_tokens(
    tiny_qwen2_dir, tmp_path, compile_cache, monkeypatch):
  rollouts, batches = [], []
  real_play, real_make_update = multiturn.play_episodes, rl_step.make_update_step
  monkeypatch.setattr(multiturn, "play_episodes",
                      lambda *a, **k: rollouts.append(real_play(*a, **k)) or rollouts[-1])

  def recording_make_update(*args, **kwargs):
    update = real_make_update(*args, **kwargs)

    def recording_update(trainable, opt_state, frozen, batch):
      batches.append({k: np.asarray(v) for k, v in batch.items()})
      return update(trainable, opt_state, frozen, batch)
    return recording_update

  monkeypatch.setattr(rl_step, "make_update_step", recording_make_update)
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", compile_cache, steps=1, gigpo_gamma=0.8,
                    gigpo_omega=0.5, gigpo_normalize="none")
  train.train(cfg)
  (played,), (batch,) = rollouts, batches  # one step, one update
  expected_rows, step_advantages = [], []
  for start in range(0, len(played), 8):
    group = played[start:start + 8]
    assert len({r.episode.seed for r in group}) == 1
    advantages = gigpo_advantages([r.episode.gigpo_steps for r in group], gamma=0.8, omega=0.5,
                                  normalize="none")
    for rollout, combined in zip(group, advantages.combined):
      expected_rows += list(zip(rollout.samples, combined))
    step_advantages += [a for per_turn in advantages.step for a in per_turn]
  assert any(step_advantages)  # states recur and their returns differ: A_step matters here
  prompt_len = batch["input_ids"].shape[1] - MAX_NEW_TOKENS
  for row, (sample, advantage) in enumerate(expected_rows):
    n = len(sample.tokens)
    np.testing.assert_array_equal(batch["input_ids"][row, prompt_len:prompt_len + n],
                                  sample.tokens)
    np.testing.assert_allclose(batch["advantages"][row, :n], np.float32(advantage), rtol=1e-6)
    assert not batch["advantages"][row, n:].any() and batch["response_mask"][row, :n].all()
  assert not batch["response_mask"][len(expected_rows):].any()
  row = metrics.read_metrics(cfg.run_dir)[0]
  assert row["trained_turns"] == len(expected_rows)


# --- training -----------------------------------------------------------------------------

def test_short_gigpo_run_raises_the_success_rate(tiny_qwen2_dir, tmp_path, compile_cache):
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", compile_cache)
  # The sweep's own evaluation, as mean@8: 8 sampled episodes (a fixed sampling seed) on each
  # of the fixed seeds 0..63; 16 seeds per rollout, the training rollout's 128 rows.
  cfg.eval.update(metric="mean@k", num_samples=8, temperature=1.0, batch_size=128)
  before = runner.default_eval_fn(cfg, model=None, seed=0, progress_position=0)
  result = train.train(cfg)
  after = runner.default_eval_fn(cfg, model=result.model, seed=0, progress_position=0)
  assert before["metric"] == after["metric"] == "mean@8"
  assert len(before["per_problem"]) == len(after["per_problem"]) == 64
  start, end = np.mean(before["per_problem"]), np.mean(after["per_problem"])
  # Measured: 0.051 before, 0.283 after (0.297, 0.279 with config.seed 1, 2): the random
  # model's replies rarely parse as a move; after 12 steps it mostly moves.
  assert end >= start + 0.1, (start, end)

  rows = metrics.read_metrics(cfg.run_dir)
  assert [r["step"] for r in rows] == list(range(1, 13))
  for key in ("reward", "success_rate", "episode_length", "env_errors", "anchor_group_size",
              "loss", "entropy", "rollout_seconds", "seconds_per_step", "valid_reply_fraction"):
    assert all(np.isfinite(r[key]) for r in rows), key
  # More replies parse as a move (measured: valid replies 0.045 at the first two steps, 0.47 to
  # 0.52 at the last three).
  for key in ("success_rate", "valid_reply_fraction"):
    assert np.mean([r[key] for r in rows[-3:]]) > np.mean([r[key] for r in rows[:3]]) + 0.1, key
  assert all(1 <= r["episode_length"] <= MAX_TURNS and r["anchor_group_size"] > 1 for r in rows)
  assert all(0 < r["rollout_seconds"] < r["seconds_per_step"] for r in rows)
  samples = [json.loads(line) for line in
             (Path(cfg.run_dir) / metrics.SAMPLES_FILE).read_text().splitlines()]
  assert len(samples) == 24 and samples[0]["transcript"][0]["observation"].startswith("pos ")


class Flaky(GridWorld):
  """The 2x2 grid world whose simulator crashes at the first step of every 5th seed."""

  def __init__(self, **options):
    super().__init__(**GRID, **options)

  def reset(self, seed):
    self.crashes = seed % 5 == 0
    return super().reset(seed)

  def step(self, action_text):
    if self.crashes:
      raise RuntimeError("simulator lost")
    return super().step(action_text)


def test_a_step_of_env_errors_only_skips_its_updates_and_moves_the_schedule_past_them(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  """Every episode an environment error: no update (the weights and AdamW's state stay), and
  the learning-rate schedule moves on by the step's 4 planned updates (128 episodes, mini-
  batches of 32), as veRL's scheduler steps once per RL step whatever its updates did."""
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None, mini_batch_size=32)
  trainer = train._Trainer(train.plan(cfg), None)
  failed = [multiturn.EpisodeRollout(
      envs.Episode(seed=i, finish_reason=multiturn.FINISH_ENV_ERROR, error="step() raised"), [])
      for i in range(128)]
  monkeypatch.setattr(multiturn, "play_episodes", lambda *a, **k: failed)
  before = {k: np.asarray(v) for k, v in trainer.params.items()}
  is_schedule = lambda node: isinstance(node, optax.ScaleByScheduleState)  # noqa: E731
  schedules = lambda state: [node.count for node in jax.tree.leaves(  # noqa: E731
      state, is_leaf=is_schedule) if is_schedule(node)]
  others = lambda state: [np.asarray(leaf) for leaf in jax.tree.leaves(  # noqa: E731
      jax.tree.map(lambda node: None if is_schedule(node) else node, state,
                   is_leaf=is_schedule))]
  adam_before = others(trainer.opt_state)
  with _log_capture() as log:
    result, _ = trainer._run_env_step()
  assert log.getvalue() == ("environment 'gridworld': 128 of 128 episodes ended in an "
                            "environment error at step 1: step() raised (128 episodes)\n")
  assert result["env_errors"] == 128 and "loss" not in result
  assert schedules(trainer.opt_state) and all(int(count) == 4
                                              for count in schedules(trainer.opt_state))
  for old, new in zip(adam_before, others(trainer.opt_state), strict=True):
    np.testing.assert_array_equal(new, old)
  for k, value in trainer.params.items():
    np.testing.assert_array_equal(np.asarray(value), before[k], err_msg=k)


def contexts_cut_warnings(log):
  """The lines of a _log_capture that warn of cut contexts (its fake episodes' environment
  errors are warned of too)."""
  return [line for line in log.getvalue().splitlines() if "contexts exceeded" in line]


def test_cut_contexts_are_warned_of_once_per_run(tiny_qwen2_dir, tmp_path, monkeypatch):
  """Contexts past rollout.max_prompt_tokens were warned of at every rollout, a flood over a
  long run. Now a run warns at its first rollout that cuts any, naming the metric that tracks
  the cuts from then on; the next run warns again."""
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None, batch_size=16)
  cut = multiturn.TurnSample(prompt_ids=[1], tokens=np.array([2], np.int32),
                             logprobs=np.zeros(1, np.float32), truncated=False,
                             context_truncated=True)
  rollouts = [multiturn.EpisodeRollout(envs.Episode(
      seed=i, finish_reason=multiturn.FINISH_ENV_ERROR, error="step() raised"), [cut])
      for i in range(16)]
  monkeypatch.setattr(multiturn, "play_episodes", lambda *a, **k: rollouts)
  for _ in range(2):  # two runs
    trainer = train._Trainer(train.plan(cfg), None)
    with _log_capture() as log:
      for _ in range(2):  # two steps, each cutting every context
        assert trainer._run_env_step()[0]["context_truncated"] == 1.0
    assert contexts_cut_warnings(log) == [
        "16 of 16 contexts exceeded rollout.max_prompt_tokens=40 and lost their oldest tokens "
        "(the instructions first): raise rollout.max_prompt_tokens or lower env.history. Warned "
        "once: from here on the metric context_truncated tracks the share of contexts cut at "
        "each step."]


def test_a_runs_evaluations_warn_of_cut_contexts_once(tiny_qwen2_dir, tmp_path, monkeypatch):
  """Each evaluation of logging.eval_every warned of the contexts it cut, one warning more at
  every evaluation of a long run. Now a run's evaluations warn once, at the first that cuts
  any; the next run warns again."""
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None, batch_size=16)
  cfg.env.num_eval_episodes = 4
  cfg.logging.eval_every = 1
  cut = multiturn.TurnSample(prompt_ids=[1], tokens=np.array([2], np.int32),
                             logprobs=np.zeros(1, np.float32), truncated=False,
                             context_truncated=True)

  def play(model, tokenizer, make_env, seeds, group_size, **kwargs):
    return [multiturn.EpisodeRollout(envs.Episode(
        seed=seed, finish_reason=multiturn.FINISH_ENV_ERROR, error="step() raised"), [cut])
        for seed in seeds for _ in range(group_size)]

  monkeypatch.setattr(multiturn, "play_episodes", play)
  for _ in range(2):  # two runs
    trainer = train._Trainer(train.plan(cfg), None)
    with _log_capture() as log:
      for _ in range(2):  # two evaluations, each cutting every context
        assert train._evaluate(trainer, cfg, position=0) == ({"eval/gridworld/pass@1": 0.0}, 0.0)
    assert contexts_cut_warnings(log) == [
        "4 of 4 contexts exceeded rollout.max_prompt_tokens=40 and lost their oldest tokens (the "
        "instructions first): raise rollout.max_prompt_tokens or lower env.history. Warned once "
        "for all the evaluations of this run (logging.eval_every)."]


def test_env_rollout_calls_hold_at_most_a_steps_episodes(tiny_qwen2_dir, tmp_path, monkeypatch):
  """rollout.prompts_per_call above a step's seeds samples the step's episodes in one call, as a
  task's rollout does (the memory estimate's KV cache): 2 seeds x 8 episodes, not 8 x 8 rows
  mostly filler."""
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None, batch_size=16)
  cfg.rollout.prompts_per_call = 8
  trainer = train._Trainer(train.plan(cfg), None)
  calls = []

  def play(*args, **kwargs):
    calls.append(kwargs["batch_rows"])
    return [multiturn.EpisodeRollout(envs.Episode(
        seed=i, finish_reason=multiturn.FINISH_ENV_ERROR, error="step() raised"), [])
        for i in range(16)]

  monkeypatch.setattr(multiturn, "play_episodes", play)
  trainer._run_env_step()
  assert calls == [16]


def test_env_errors_do_not_stop_training_and_a_killed_run_resumes_exactly(
    tiny_qwen2_dir, tmp_path, compile_cache, monkeypatch):
  monkeypatch.setitem(envs.ENVS, "flaky", Flaky)

  def flaky_config(run_dir):
    cfg = grid_config(tiny_qwen2_dir, run_dir, compile_cache, steps=4)
    cfg.env.name = "flaky"
    cfg.env.options = {}
    cfg.checkpoint.every = 2
    return cfg

  reference = train.train(flaky_config(tmp_path / "reference"))
  rows = metrics.read_metrics(tmp_path / "reference")
  seeds_per_step = 16
  crashed = [sum(seed % 5 == 0 for seed in multiturn.train_seeds(0, seeds_per_step * s,
                                                                  seeds_per_step))
             for s in range(4)]
  assert sum(crashed) > 0
  assert [r["env_errors"] for r in rows] == [8 * c for c in crashed]  # G episodes per seed
  assert all(np.isfinite(r["loss"]) for r in rows)

  class Killed(Exception):
    pass

  def kill_at_step_3(step, _):
    if step == 3:  # after the step-2 checkpoint, before the step-4 one
      raise Killed

  cfg = flaky_config(tmp_path / "run")
  with pytest.raises(Killed):
    train.train(cfg, on_step=kill_at_step_3)
  assert checkpoint.Checkpointer(tmp_path / "run").all_steps() == [2]
  resumed = train.train(cfg)
  assert resumed.reward_history == reference.reward_history
  expected = models.named_params(reference.model)
  for path, value in models.named_params(resumed.model).items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[path]), err_msg=path)
  # The data position is the number of seeds consumed.
  manager = ocp.CheckpointManager((tmp_path / "run" / checkpoint.CHECKPOINT_DIR).absolute())
  try:
    meta = manager.restore(4, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  finally:
    manager.close()
  assert meta == {"step": 4, "data_position": 4 * seeds_per_step}


# --- evaluation, command line, sweep --------------------------------------------------------

def test_cli_sweep_and_eval_on_the_shipped_config(tiny_qwen2_dir, tmp_path, compile_cache,
                                                  capsys, monkeypatch):
  monkeypatch.setattr(report, "plot_contribution", lambda sweep, path: path.touch())
  monkeypatch.setattr(report, "plot_curves", lambda results, num_layers, title, path: path.touch())
  # The shipped config on the test model, with the shapes of the runs above (shared compiles).
  overrides = [
      f"--config.model.path={tiny_qwen2_dir}", f"--config.compilation_cache_dir={compile_cache}",
      f"--config.sweep.dir={tmp_path / 'sweep'}", "--config.sweep.layers=1",
      "--config.train.steps=1", "--config.train.batch_size=128", "--config.train.kl_beta=0.0",
      "--config.train.learning_rate=0.03", f"--config.rollout.max_new_tokens={MAX_NEW_TOKENS}",
      f"--config.env.max_turns={MAX_TURNS}", "--config.env.num_eval_episodes=64",
      "--config.eval.batch_size=64", "--config.mesh.num_devices=1",
      "--config.logging.progress=False", "--config.checkpoint.every=1",
      *(f"--config.env.options.{key}={value}" for key, value in GRID.items())]
  cli.main(["sweep", "--config", str(CONFIG_FILE), *overrides])
  results = {path.parent.name: json.loads(path.read_text())
             for path in (tmp_path / "sweep").rglob("result.json")}
  assert sorted(results) == ["base-seed0", "full-seed0", "layer01-seed0"]
  for result in results.values():
    assert (result["metric"], result["num_problems"]) == ("pass@1", 64)
    assert set(result["per_problem"]) <= {0.0, 1.0}
    assert result["score"] == np.mean(result["per_problem"])
  assert len(results["full-seed0"]["reward_curve"]) == 1
  full_run = next((tmp_path / "sweep").rglob("full-seed0")) / "train"
  assert 0 <= metrics.read_metrics(full_run)[0]["success_rate"] <= 1
  # The sweep's report names the environment (it named the config's unused task.name).
  assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["task"] == "gridworld"
  assert "· gridworld · gigpo" in (tmp_path / "sweep" / "report.md").read_text().splitlines()[0]

  out = tmp_path / "eval"
  cli.main(["eval", "--config", str(CONFIG_FILE), "--model", str(full_run), "--out", str(out),
            "--save-generations", *overrides])
  assert "gridworld (64 episodes): pass@1" in capsys.readouterr().out  # was "64 problems"
  task = json.loads((out / evaluation.EVAL_FILE).read_text())["tasks"]["gridworld"]
  assert task["per_problem"]["pass@1"] == results["full-seed0"]["per_problem"]
  assert task["episodes"]["pass@1"]["env_error_rate"] == 0.0
  generations = [json.loads(line) for line in (out / evaluation.GENERATIONS_FILE).open()]
  assert [g["seed"] for g in generations] == list(range(64))
  assert [g["score"] for g in generations] == task["per_problem"]["pass@1"]
  assert all(g["transcript"][0]["observation"].startswith("pos ") for g in generations)


# --- config errors: raised before any weight is loaded --------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"env.name": None}, r"train.algorithm='gigpo' trains an agent in a multi-turn environment: "
     r"set env.name"),
    ({"train.algorithm": "grpo"}, r"env.name='gridworld' is a multi-turn environment: train it "
     r"with train.algorithm='gigpo'"),
    ({"env.name": "gridwold"}, r"env.name: unknown environment 'gridwold' \(did you mean "
     r"'gridworld'\?\); registered: \['alfworld', 'gridworld'\]"),
    ({"env.options": {"colour": "red"}}, r"env.options \{'colour': 'red'\} do not fit environment "
     r"'gridworld'"),
    ({"env.eval_options": {"colour": "red"}}, r"env.eval_options \{'colour': 'red'\} do not fit "
     r"environment 'gridworld'"),
    ({"env.options": {"size": "3"}}, r"env.options of environment 'gridworld': option 'size' "
     r"takes int, got '3' \(str\)"),
    ({"env.eval_options": {"size": 3.0}}, r"env.eval_options of environment 'gridworld': option "
     r"'size' takes int, got 3.0 \(float\)"),
    ({"env.max_turns": 0}, r"env.max_turns must be an integer >= 1"),
    ({"env.history": -1}, r"env.history must be an integer >= 0"),
    ({"env.template": "{obs}"}, r"env.template uses unknown field\(s\) \['obs'\]"),
    ({"env.template": "{instructions}"}, r"env.template must contain \{observation\}"),
    ({"env.step_timeout_s": 0.0}, r"env.step_timeout_s must be > 0 seconds or None"),
    ({"train.gigpo_gamma": 1.5}, r"train.gigpo_gamma must lie in \[0, 1\]"),
    ({"train.gigpo_normalize": "mean_std"}, r"train.gigpo_normalize='mean_std': choose one of "
     r"\['std', 'none'\]"),
    ({"train.dynamic_sampling": True}, r"train.dynamic_sampling: settings of single-turn tasks"),
    ({"rollout.max_prompt_tokens": 254}, r"rollout.max_prompt_tokens=254 context tokens \+ "
     r"rollout.max_new_tokens=3 = 257 positions, beyond the model's max_position_embeddings=256"),
])
def test_bad_env_configs_fail_before_loading(overrides, message, tiny_qwen2_dir, tmp_path,
                                             monkeypatch):
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the config was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  for key, value in overrides.items():
    section, name = key.split(".")
    cfg[section][name] = value
  with pytest.raises(ValueError, match=message):
    train.train(cfg)


def test_env_options_the_env_rejects_fail_before_loading(tiny_qwen2_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the env was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.env.options.size = 1
  with pytest.raises(ValueError, match=r"environment 'gridworld' with env.options=.* fails: "
                     r"ValueError: gridworld size must be at least 2"):
    train.train(cfg)


@pytest.mark.parametrize("family, chat_template_kwargs, message", [
    (None, {}, r"env.use_chat_template=True needs a tokenizer with a chat template"),
    ("qwen3", {"enable_thinkng": False}, r"chat_template_kwargs \['enable_thinkng'\]: the "
     r"tokenizer's chat template reads no such variable"),
])
def test_contexts_the_chat_template_cannot_write_fail_before_loading(
    family, chat_template_kwargs, message, tiny_qwen2_dir, tmp_path, monkeypatch):
  # They failed at the first rollout, after the model had loaded.
  from tests import hf_fixtures

  model_dir = hf_fixtures.save_chat_model(tmp_path / family, family) if family else tiny_qwen2_dir
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the context checks"))
  cfg = grid_config(model_dir, tmp_path / "run", None)
  cfg.env.use_chat_template = True
  cfg.env.chat_template_kwargs = chat_template_kwargs
  with pytest.raises(ValueError, match=message):
    train.train(cfg)


class ResetReturnsBytes(GridWorld):
  def reset(self, seed):
    return super().reset(seed).encode()


class UnhashableStateKey(GridWorld):
  def state_key(self):
    return list(super().state_key())


@pytest.mark.parametrize("env_class, message", [
    (ResetReturnsBytes, r"fails: reset\(\) returned bytes, expected str"),
    (UnhashableStateKey, r"fails: state_key\(\) returned an unhashable list"),
])
def test_env_whose_reset_is_broken_fails_before_loading(env_class, message, tiny_qwen2_dir,
                                                        tmp_path, monkeypatch):
  # Such an env ended every episode in an env error: a whole run of steps with no update.
  monkeypatch.setitem(envs.ENVS, "broken", env_class)
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the env was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.env.name = "broken"
  with pytest.raises(ValueError, match=r"environment 'broken' with env.options=.* " + message):
    train.train(cfg)


class SplitGame(Env):
  """One turn; the episode succeeds on the held-out split only (which split is played shows)."""

  def __init__(self, split: str = "train"):
    self.split = split

  def reset(self, seed):
    return f"split {self.split}"

  def step(self, action_text):
    return StepResult("over", 0.0, done=True, success=self.split == "held_out")

  def state_key(self):
    return self.split


def test_evaluation_plays_env_eval_options_over_env_options_and_training_does_not(
    tiny, tiny_qwen2_dir, tmp_path, monkeypatch):
  # Evaluation took env.options as they were: the ALFWorld config scored C(k) on training games.
  monkeypatch.setitem(envs.ENVS, "split_game", SplitGame)
  model, tokenizer = tiny
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.env.name = "split_game"
  cfg.env.options = ml_collections.ConfigDict({"split": "train"})
  cfg.env.eval_options = ml_collections.ConfigDict({"split": "held_out"})
  cfg.env.num_eval_episodes = 2
  assert multiturn.env_settings(cfg).make_env().reset(0) == "split train"  # training's
  result = evaluation.evaluate_from_config(cfg, model, tokenizer)
  assert [g["transcript"][0]["observation"] for g in result.generations] == ["split held_out"] * 2
  assert result.scores == {"pass@1": 1.0}
  assert result.prompt["options"] == {"split": "held_out"}  # eval.json's record of them


def test_bad_env_eval_options_fail_before_a_run_that_evaluates_loads_its_weights(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  # They failed at the first evaluation, after logging.eval_every steps of training.
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the env was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.env.eval_options = ml_collections.ConfigDict({"size": 1})
  cfg.logging.eval_every = 1
  with pytest.raises(ValueError, match=r"^environment 'gridworld' with env.options with "
                     r"env.eval_options=\{.*'size': 1.*\} fails: ValueError: gridworld size must "
                     r"be at least 2, got 1$"):
    train.train(cfg)


def test_eval_replies_too_long_for_the_contexts_fail_before_a_run_that_evaluates_loads(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  # They failed at the first evaluation, after logging.eval_every steps of training, naming
  # the sampler's "prompts[0]" and "max_new_tokens" rather than the settings to change.
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the eval was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.eval.max_new_tokens = 217
  cfg.logging.eval_every = 1
  with pytest.raises(ValueError, match=r"^rollout.max_prompt_tokens=40 context tokens \+ "
                     r"eval.max_new_tokens=217 = 257 positions, beyond the model's "
                     r"max_position_embeddings=256: lower eval.max_new_tokens or "
                     r"rollout.max_prompt_tokens \(the oldest context tokens are cut\).$"):
    train.train(cfg)
  cfg.eval.max_new_tokens = 216  # 256 positions: fits
  evaluation.check_eval_fits(cfg, None, models.ModelConfig.from_json_file(
      Path(tiny_qwen2_dir) / "config.json"))


def test_a_run_resumes_with_other_env_eval_options_but_not_other_env_options(
    tiny_qwen2_dir, tmp_path, monkeypatch):
  # env.eval_options only set how logging.eval_every scores the model, as the eval section does.
  stored = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  stored.env.eval_options = ml_collections.ConfigDict({"size": 3})
  monkeypatch.setattr(checkpoint, "read_run_files",
                      lambda run_dir: (stored, {"trainable": ["embed"], "base_model": "m"}))
  monkeypatch.setattr(checkpoint, "check_base_model", lambda *args: None)
  resumed = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  resumed.env.eval_options = ml_collections.ConfigDict({"size": 4, "max_goal_distance": 2})
  check = lambda config: train._check_resumable(  # noqa: E731
      tmp_path / "run", config, tiny_qwen2_dir, {"embed": 3e-2}, step=4)
  assert check(resumed) is None
  resumed.env.options.size = 3
  with pytest.raises(ValueError, match=r"a different config \(env.options.size: 2 -> 3\)"):
    check(resumed)


def test_cli_says_how_to_set_an_env_option_the_config_file_lacks(tmp_path):
  # It pointed to docs/configuration.md, which cannot list an environment's own arguments.
  with pytest.raises(SystemExit, match=r"--config.env.options.config_path: env.options has no "
                     r"key 'config_path' \(its keys: max_goal_distance, max_turns, size\). The "
                     r"command line changes only the env.options the config file sets: add "
                     r"config.env.options.config_path = VALUE to the file.$"):
    cli.main(["train", "--config", str(CONFIG_FILE), "--config.env.name=alfworld",
              "--config.env.options.config_path=base_config.yaml"])
  with pytest.raises(SystemExit, match=r"--config.env.eval_options.size: env.eval_options has no "
                     r"key 'size' \(its keys: none\). The command line changes only the "
                     r"env.eval_options the config file sets: add config.env.eval_options.size = "
                     r"VALUE to the file.$"):
    cli.main(["eval", "--config", str(CONFIG_FILE), "--model", str(tmp_path),
              "--config.env.eval_options.size=3"])


def test_shipped_config_plans_with_gigpo(tmp_path):
  cfg = cli.load_config(["--config", str(CONFIG_FILE), f"--config.run_dir={tmp_path}"], "gigpo")
  planned = train.plan(cfg)
  assert planned.algorithm == train.algorithms.ALGORITHMS["gigpo"]
  assert (cfg.train.gigpo_gamma, cfg.train.gigpo_omega, cfg.train.gigpo_normalize) == (
      0.95, 1.0, "std")
  assert planned.prompts_per_step == 8  # seeds per step
  assert evaluation.task_names(cfg) == ["gridworld"]


# --- ALFWorld as verl-agent plays it (a stand-in for ALFWorld's games) ------------------------

ALFWORLD_CONFIG_FILE = (Path(__file__).parents[1] / "configs"
                        / "paper_qwen2p5_1p5b_alfworld_gigpo.py")


@pytest.fixture
def alfworld_games(monkeypatch):
  """ALFWorld's suite of a split replaced by test_envs' stand-in batch env of six kitchens."""
  suite = types.SimpleNamespace(num_games=len(KITCHENS),
                                init_env=lambda batch_size: FakeAlfredBatchEnv(KITCHENS))
  monkeypatch.setattr(external, "_alfworld_suite", lambda config_path, split: suite)


def test_invalid_replies_cost_their_penalty_in_the_gigpo_advantages(alfworld_games):
  """Episode A wins at once with a bare command (no tags: invalid, penalty 0.1); episode B
  looks with a bare command (invalid), then wins with a tagged reply. verl-agent's rules
  (apply_invalid_action_penalty, after the returns): the penalty comes off the invalid step's
  own episode score and step return only. By hand (gamma 0.95, omega 1, no std): returns 10
  and 10; episode scores A: 9.9; B: 9.9, 10; their mean, each episode weighing as one (verl-
  agent: each step), (9.9 + 9.95) / 2 = 9.925: A_E = -0.025; -0.025, +0.075. Step returns 9.9
  (A); 9.5 - 0.1 = 9.4 and 10 (B); A's and B's first steps share the start state: A_S =
  +0.25, -0.25; B's second is alone: 0. A = 0.225; -0.275, 0.075. (The penalty as a reward
  gave B the return 9.9 on both steps: A = 0.25; -0.25, 0.)"""
  replies = [["PUT MUG 1 IN/ON TABLE 1"],
             ["look", "<think>b</think><action>put mug 1 in/on table 1</action>"]]
  rollouts = []
  for script in replies:
    episode = envs.run_episode(envs.get_env("alfworld", config_path="base_config.yaml"),
                               lambda _, script=iter(script): next(script), seed=3, max_turns=2)
    sample = multiturn.TurnSample(prompt_ids=[1], tokens=np.array([2], np.int32),
                                  logprobs=np.zeros(1, np.float32), truncated=False,
                                  context_truncated=False)
    rollouts.append(multiturn.EpisodeRollout(episode, [sample] * len(episode.turns)))
  turns = [turn for r in rollouts for turn in r.episode.turns]
  assert [(turn.reward, turn.valid, turn.penalty) for turn in turns] == [
      (10.0, False, 0.1), (0.0, False, 0.1), (10.0, True, 0.0)]
  batch, _ = batch_of(rollouts, group_size=2, normalize="none")
  np.testing.assert_allclose(batch["advantages"][:3, 0], [0.225, -0.275, 0.075], atol=1e-9)
  metrics = multiturn.rollout_metrics(rollouts)
  assert metrics["reward"] == 10.0  # the games' rewards: the penalties are apart
  assert metrics["valid_reply_fraction"] == pytest.approx(1 / 3)  # verl-agent's valid ratio
  record = multiturn.episode_record(rollouts[1].episode)
  assert [(t["valid"], t["penalty"]) for t in record["transcript"]] == [(False, 0.1), (True, 0.0)]


def test_env_history_beside_an_env_that_shows_past_turns_fails_before_loading(
    alfworld_games, tiny_qwen2_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(models, "from_pretrained",
                      lambda *a, **k: pytest.fail("weights loaded before the env was checked"))
  cfg = grid_config(tiny_qwen2_dir, tmp_path / "run", None)
  cfg.env.name = "alfworld"
  cfg.env.options = ml_collections.ConfigDict({"config_path": "base_config.yaml"})
  cfg.env.history = 2
  with pytest.raises(ValueError, match=r"^environment 'alfworld' with env.options=.* shows the "
                     r"past turns in each observation itself: set env.history=0 \(env.history=2 "
                     r"would show them twice\).$"):
    train.train(cfg)


def test_alfworld_paper_config_is_verl_agents_run_alfworld(alfworld_games, tmp_path):
  """configs/paper_qwen2p5_1p5b_alfworld_gigpo.py against verl-agent's
  examples/gigpo_trainer/run_alfworld.sh, planned on a 28-block stand-in of Qwen2.5-1.5B (its
  32,768 positions): 16 games x 8 episodes a step, lr 1e-6, KL 0.01, gamma 0.95, omega 1, std
  normalisation, 50 turns, 2,048 + 512 tokens, 150 steps; block 14 alone. Its first context is
  verl-agent's: Qwen2.5's chat template over one user turn holding verl-agent's prompt."""
  tokenizer_dir = hf_fixtures.save_chat_model(tmp_path / "qwen2.5", "qwen2.5-instruct")
  model_config = json.loads((tokenizer_dir / "config.json").read_text())
  (tokenizer_dir / "config.json").write_text(json.dumps(
      {**model_config, "num_hidden_layers": 28, "layer_types": ["full_attention"] * 28,
       "max_position_embeddings": 32768}))
  cfg = cli.load_config(["--config", str(ALFWORLD_CONFIG_FILE),
                         f"--config.model.path={tokenizer_dir}",
                         f"--config.run_dir={tmp_path / 'run'}", "--config.mesh.num_devices=1"],
                        "paper")
  planned = train.plan(cfg)
  assert planned.algorithm == train.algorithms.ALGORITHMS["gigpo"]
  assert {path.split(".")[1] for path in planned.selection.trainable} == {"14"}
  assert planned.prompts_per_step == 16 and cfg.train.group_size == 8
  assert (cfg.train.learning_rate, cfg.train.kl_beta, cfg.train.steps) == (1e-6, 0.01, 150)
  assert (cfg.train.gigpo_gamma, cfg.train.gigpo_omega, cfg.train.gigpo_normalize) == (
      0.95, 1.0, "std")
  assert (cfg.rollout.max_prompt_tokens, cfg.rollout.max_new_tokens) == (2048, 512)
  settings = multiturn.env_settings(cfg)
  assert (settings.max_turns, settings.context.history) == (50, 0)
  assert settings.options == {"config_path": "base_config.yaml", "split": "train",
                              "success_reward": 10.0, "reply_format": "verl-agent",
                              "history_length": 2, "invalid_action_penalty": 0.1}
  scored = multiturn.env_settings(cfg, evaluation=True)  # jaxlayer eval, the sweep's scoring
  assert scored.options == {**settings.options, "split": "eval_in_distribution"}
  assert scored.num_eval_episodes == 140  # valid_seen's games
  settings.check_env()
  env = settings.make_env()
  observation = env.reset(0)
  assert observation.startswith("\nYou are an expert agent operating in the ALFRED Embodied "
                                "Environment.\nYour current observation is: You are in the ")
  tokenizer = models.load_tokenizer(tokenizer_dir)
  assert settings.context.render(env.instructions, [], observation, tokenizer) == (
      tokenizer.apply_chat_template([{"role": "user", "content": observation}], tokenize=False,
                                    add_generation_prompt=True))
