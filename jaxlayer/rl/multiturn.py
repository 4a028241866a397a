"""Multi-turn rollouts on text environments (jaxlayer.envs) and their GiGPO training batch.

One RL sample per turn: its prompt is the context the agent saw (the environment's
instructions, the last `history` turns, the current observation), its response the action
the model sampled. Each turn, the live episodes are sampled together in batched
`sampling.generate` calls (rollout.prompts_per_call seeds' episodes each); the context grows
turn by turn up to the history window. In the training batch the context is the prompt part,
so only the model's own action tokens carry a loss (`response_mask`); environment text never
does. Each action's tokens get the GiGPO
advantage of their turn, A = A_episode + omega * A_step (`jaxlayer.rl.gigpo`).

    rollouts = play_episodes(model, tokenizer, lambda: envs.get_env("gridworld"), seeds=[3, 4],
                             group_size=8, max_turns=6, max_new_tokens=8, temperature=1.0,
                             eos_token_ids=[eos], pad_token_id=eos, seed=0)
    batch, stats = gigpo_batch(rollouts, group_size=8, ...)   # rl.step's batch layout

Episodes that end in an environment error (see `envs.SafeEpisode`) are reported in the
metrics and left out of the advantages and the loss: a crashed simulator says nothing about
the policy. Episodes cut at the turn limit train like any other.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import logging
import math
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxlayer import envs, sampling, tasks
from jaxlayer.envs.episode import FINISH_ENV_ERROR
from jaxlayer.options import check_option_types
from jaxlayer.rl import gigpo
from jaxlayer.text import counted, unknown_name

logger = logging.getLogger(__name__)

# Episode seeds: evaluation plays seeds 0..N-1; training seeds start above this, so the two
# never share a task instance.
TRAIN_SEED_OFFSET = 2**20
TEMPLATE_FIELDS = ("instructions", "history", "observation")
# The most frequent causes of environment errors that warn_of_env_errors names; it counts the
# rest (each episode's own is in its record: samples.jsonl, an evaluation's generations).
NAMED_ENV_ERROR_CAUSES = 5


@dataclasses.dataclass(frozen=True)
class ContextFormat:
  """How a turn's context is written.

  template: plain-text context with fields {instructions} (the env's rules), {history} (the
    shown past turns, each "observation\\naction\\n") and {observation} (the current one).
  history: past turns shown (0: the current observation only).
  use_chat_template: instead of the template, the tokenizer's chat template over the
    messages system = instructions, then user = observation / assistant = action per turn.
  chat_template_kwargs: variables that chat template reads (Qwen3: {"enable_thinking": False}).
  max_tokens: a longer context loses its oldest tokens (counted in `context_truncated`).
  """

  template: str = "{instructions}\n{history}{observation}\n"
  history: int = 0
  use_chat_template: bool = False
  max_tokens: int = 1024
  chat_template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.history < 0:
      raise ValueError(f"env.history must be >= 0 (past turns shown), got {self.history}.")
    if self.max_tokens < 1:
      raise ValueError(f"the context limit (rollout.max_prompt_tokens) must be >= 1, got "
                       f"{self.max_tokens}.")
    try:
      fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
    except ValueError as err:
      raise ValueError(f"env.template {self.template!r} is not a format string: {err} (write "
                       "literal braces as {{ and }}).") from None
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown:
      raise ValueError(f"env.template uses unknown field(s) {unknown}; its fields are "
                       f"{list(TEMPLATE_FIELDS)}.")
    if self.chat_template_kwargs and not self.use_chat_template:
      raise ValueError(f"env.chat_template_kwargs {dict(self.chat_template_kwargs)} are for a "
                       "chat template, but env.use_chat_template is False: set "
                       "env.use_chat_template=True, or leave env.chat_template_kwargs empty.")
    if "observation" not in fields and not self.use_chat_template:
      raise ValueError("env.template must contain {observation}: the agent would never see "
                       "the environment.")

  def render(self, instructions: str, past: Sequence[tuple[str, str]], observation: str,
             tokenizer=None) -> str:
    """The context text; past: every earlier (observation, action) pair of the episode."""
    shown = list(past)[len(past) - self.history:] if self.history else []
    if not self.use_chat_template:
      return self.template.format(instructions=instructions, observation=observation,
                                  history="".join(f"{obs}\n{act}\n" for obs, act in shown))
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
      raise ValueError("env.use_chat_template=True needs a tokenizer with a chat template; this "
                       "one has none: set env.use_chat_template=False (plain env.template).")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for obs, act in shown:
      messages += [{"role": "user", "content": obs}, {"role": "assistant", "content": act}]
    messages.append({"role": "user", "content": observation})
    return tasks.chat_prompt(tokenizer, messages, self.chat_template_kwargs)


@dataclasses.dataclass(frozen=True)
class EnvSettings:
  """A config's env section (and the GiGPO keys), validated: see `env_settings`."""

  name: str
  options: dict  # the environment's keyword arguments
  max_turns: int
  context: ContextFormat
  step_timeout_s: float | None
  num_eval_episodes: int
  # Where the options come from, for messages: "env.options", or for evaluation
  # "env.options with env.eval_options".
  options_source: str = "env.options"

  def make_env(self) -> envs.Env:
    return envs.get_env(self.name, **self.options)

  def check_env(self) -> None:
    """Builds one environment and plays its reset as an episode does (the observation must be
    a str, the state key hashable), so bad options or a broken reset fail before the run does
    instead of ending every episode in an environment error. An environment that shows past
    turns itself (`Env.shows_past_turns`) with env.history > 0 fails too."""
    failure = f"environment {self.name!r} with {self.options_source}={self.options} fails"
    try:
      env = self.make_env()
    except Exception as err:
      raise ValueError(f"{failure}: {type(err).__name__}: {err}") from err
    if getattr(env, "shows_past_turns", False) and self.context.history:
      raise ValueError(f"environment {self.name!r} with {self.options_source}={self.options} "
                       "shows the past turns in each observation itself: set env.history=0 "
                       f"(env.history={self.context.history} would show them twice).")
    play = envs.SafeEpisode(env, eval_seeds(1)[0], max_turns=1,
                            step_timeout_s=self.step_timeout_s)
    if play.done:
      raise ValueError(f"{failure}: {play.episode.error}")


def _as_dict(options) -> dict:
  return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def env_settings(config, *, evaluation: bool = False) -> EnvSettings:
  """The env section of a jaxlayer.rl config, checked (clear errors; nothing built).

  Args:
    config: a jaxlayer.rl config.
    evaluation: the settings of the episodes played for evaluation: env.options with
      env.eval_options merged over them (training plays env.options alone). Both sets of
      options are checked either way.
  """
  env = config.env
  if env.name not in envs.ENVS:
    raise ValueError("env.name: " + unknown_name("environment", env.name, envs.ENVS, "envs.ENVS"))
  options = _as_dict(env.options)
  eval_overrides = _as_dict(env.get("eval_options", {}))
  eval_options = {**options, **eval_overrides}
  for what, given, merged in (("env.options", options, options),
                              ("env.eval_options", eval_overrides, eval_options)):
    try:
      inspect.signature(envs.ENVS[env.name]).bind(**merged)
    except TypeError as err:
      raise ValueError(f"{what} {given} do not fit environment {env.name!r}: {err}.") from None
    check_option_types(envs.ENVS[env.name], merged, f"{what} of environment {env.name!r}")
  for key, lowest in (("max_turns", 1), ("history", 0), ("num_eval_episodes", 1)):
    value = env[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
      raise ValueError(f"env.{key} must be an integer >= {lowest}, got {value!r}.")
  timeout = env.step_timeout_s
  if timeout is not None and not timeout > 0:
    raise ValueError(f"env.step_timeout_s must be > 0 seconds or None (no limit), got {timeout}.")
  train = config.train
  if not 0.0 <= train.gigpo_gamma <= 1.0:
    raise ValueError(f"train.gigpo_gamma must lie in [0, 1], got {train.gigpo_gamma}.")
  if not math.isfinite(train.gigpo_omega):
    raise ValueError(f"train.gigpo_omega must be finite, got {train.gigpo_omega}.")
  if train.gigpo_normalize not in gigpo.NORMALIZATIONS:
    raise ValueError(f"train.gigpo_normalize={train.gigpo_normalize!r}: choose one of "
                     f"{list(gigpo.NORMALIZATIONS)}.")
  context = ContextFormat(template=env.template, history=env.history,
                          use_chat_template=env.use_chat_template,
                          max_tokens=config.rollout.max_prompt_tokens,
                          chat_template_kwargs=dict(env.get("chat_template_kwargs", {})))
  if evaluation and eval_overrides:
    options, source = eval_options, "env.options with env.eval_options"
  else:
    source = "env.options"
  return EnvSettings(name=env.name, options=options, max_turns=env.max_turns, context=context,
                     step_timeout_s=timeout, num_eval_episodes=env.num_eval_episodes,
                     options_source=source)


@dataclasses.dataclass(frozen=True)
class TurnSample:
  """What the model saw and sampled at one turn (one training row)."""

  prompt_ids: list[int]  # the context tokens the action was sampled from
  tokens: np.ndarray  # [n] int32: the action's tokens, the end-of-sequence token included
  logprobs: np.ndarray  # [n] float32: their log-probs under the sampling distribution
  truncated: bool  # the action hit max_new_tokens without an end-of-sequence token
  context_truncated: bool  # the context was cut to ContextFormat.max_tokens


@dataclasses.dataclass(frozen=True)
class EpisodeRollout:
  """One episode's record and one sample per recorded turn (`samples[t]` <-> `turns[t]`)."""

  episode: envs.Episode
  samples: list[TurnSample]

  @property
  def trainable(self) -> bool:
    return self.episode.finish_reason != FINISH_ENV_ERROR


class _BuiltOnReset(envs.Env):
  """Builds its environment inside `reset`, so a constructor that raises (or hangs) is an
  environment error of that one episode, caught by SafeEpisode like any other."""

  def __init__(self, make_env: Callable[[], envs.Env]):
    self.make_env = make_env
    self.env: envs.Env | None = None

  @property
  def name(self) -> str:
    if self.env is None:
      return "environment (not built)"
    return getattr(self.env, "name", "") or type(self.env).__name__

  @property
  def instructions(self) -> str:
    return getattr(self.env, "instructions", "") or ""

  def reset(self, seed: int) -> str:
    self.env = self.make_env()
    return self.env.reset(seed)

  def step(self, action_text: str) -> envs.StepResult:
    return self.env.step(action_text)

  def state_key(self):
    return self.env.state_key()


def _past_turns(episode: envs.Episode) -> list[tuple[str, str]]:
  observations = [episode.first_observation] + [turn.observation for turn in episode.turns]
  return [(observations[t], turn.action) for t, turn in enumerate(episode.turns)]


def play_episodes(model, tokenizer, make_env: Callable[[], envs.Env], seeds: Sequence[int], *,
                  group_size: int, max_turns: int, max_new_tokens: int, temperature: float,
                  eos_token_ids: Sequence[int], pad_token_id: int, seed: int,
                  context: ContextFormat = ContextFormat(), top_p: float = 1.0,
                  step_timeout_s: float | None = 60.0, batch_rows: int | None = None,
                  first_episode: int = 0) -> list[EpisodeRollout]:
  """Plays `group_size` episodes from each seed with the model; returns them seed by seed
  (entry i * group_size + j is episode j of seeds[i], the sampler's order).

  make_env: builds a fresh environment (one per episode: environments hold state).
  Each turn, the contexts of all live episodes are sampled by `sampling.generate` in calls of
  `batch_rows` rows (default: the number of episodes), the last one filled up, so every call
  has the same batch shape; the samples do not depend on batch_rows. temperature=0 decodes
  greedily. An episode ends when its environment says done, after `max_turns` actions, or on
  an environment error (reported in its record, silently: the caller warns,
  `warn_of_env_errors`). A context longer than
  context.max_tokens loses its oldest tokens (TurnSample.context_truncated), silently: the
  caller warns (`CutContextsWarning`).

  first_episode: the number of the first episode: episode e draws each turn's samples as row
  first_episode + e of the sampler (`sampling.generate`'s row_ids), so episodes played in
  several calls of consecutive first_episode draw what they would draw in one call.
  """
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}.")
  plays = [envs.SafeEpisode(_BuiltOnReset(make_env), s, max_turns=max_turns,
                            step_timeout_s=step_timeout_s)
           for s in seeds for _ in range(group_size)]
  rows = len(plays) if batch_rows is None else batch_rows
  if rows < 1:
    raise ValueError(f"batch_rows must be >= 1 (rows per generate call), got {batch_rows}.")
  instructions = [play.env.instructions for play in plays]
  samples: list[list[TurnSample]] = [[] for _ in plays]
  for turn in range(max_turns):
    live = [k for k, play in enumerate(plays) if not play.done]
    if not live:
      break
    texts = [context.render(instructions[k], _past_turns(plays[k].episode), plays[k].observation,
                            tokenizer) for k in live]
    encoded = tasks.encode_prompts(tokenizer, texts, use_chat_template=context.use_chat_template)
    cut = [len(ids) > context.max_tokens for ids in encoded]
    prompts = [ids[-context.max_tokens:] or [pad_token_id] for ids in encoded]
    out = sampling.generate(
        model, prompts, max_new_tokens=max_new_tokens, num_samples=1, temperature=temperature,
        top_p=top_p if temperature else 1.0, eos_token_ids=eos_token_ids,
        seed=_turn_seed(seed, turn), pad_token_id=pad_token_id, prompts_per_call=rows,
        row_ids=[first_episode + k for k in live])
    lengths = out.lengths.tolist()
    actions = tokenizer.batch_decode([out.tokens[r, :lengths[r]] for r in range(len(live))],
                                     skip_special_tokens=True)
    for r, k in enumerate(live):
      samples[k].append(TurnSample(
          prompt_ids=prompts[r], tokens=out.tokens[r, :lengths[r]].copy(),
          logprobs=out.logprobs[r, :lengths[r]].copy(),
          truncated=out.finish_reasons[r] == "length", context_truncated=cut[r]))
      plays[k].step(actions[r])
  return [EpisodeRollout(play.episode, turn_samples) for play, turn_samples in zip(plays, samples)]


@dataclasses.dataclass
class CutContextsWarning:
  """Warns how many contexts exceeded rollout.max_prompt_tokens and lost their oldest tokens
  (with `then` after the fix) at the first call given cut contexts, silent after: a training
  run holds one for its rollouts (its metric `context_truncated` tracks the cuts of every step)
  and one for its evaluations (logging.eval_every); an evaluation on its own (`jaxlayer eval`)
  warns once for all its episodes."""

  then: str = ""
  warned: bool = False

  def __call__(self, cut: Sequence[bool], max_tokens: int) -> None:
    """cut: TurnSample.context_truncated of every sample; max_tokens: their context's."""
    if self.warned or not any(cut):
      return
    logger.warning("%d of %s exceeded rollout.max_prompt_tokens=%d and lost their oldest tokens "
                   "(the instructions first): raise rollout.max_prompt_tokens or lower "
                   "env.history.%s", sum(cut), counted(len(cut), "context"), max_tokens, self.then)
    self.warned = True


def warn_of_env_errors(episodes: Sequence[envs.Episode], env_name: str, when: str) -> None:
  """Logs one warning for the episodes that ended in an environment error, if any: how many of
  all, and each distinct cause once with the number of episodes it ended, the most frequent
  first (NAMED_ENV_ERROR_CAUSES of them; the others counted).

  when: where they were played, for the message ("at step 7", "in this evaluation").
  """
  causes = collections.Counter(episode.error for episode in episodes
                               if episode.finish_reason == FINISH_ENV_ERROR)
  if not causes:
    return
  named = causes.most_common(NAMED_ENV_ERROR_CAUSES)
  listed = [f"{cause} ({counted(count, 'episode')})" for cause, count in named]
  others = sum(causes.values()) - sum(count for _, count in named)
  if others:
    listed.append(f"{counted(len(causes) - len(named), 'other cause')} "
                  f"({counted(others, 'episode')})")
  logger.warning("environment %r: %d of %s ended in an environment error %s: %s", env_name,
                 sum(causes.values()), counted(len(episodes), "episode"), when,
                 "; ".join(listed))


def _turn_seed(seed: int, turn: int) -> int:
  return int(np.random.default_rng([seed, turn]).integers(2**31 - 1))


def train_seeds(run_seed: int, position: int, count: int) -> list[int]:
  """Environment seeds of the task instances at data positions position..position+count-1."""
  return [TRAIN_SEED_OFFSET + int(np.random.default_rng([run_seed, p]).integers(2**30))
          for p in range(position, position + count)]


def eval_seeds(count: int) -> list[int]:
  """The fixed evaluation seeds 0..count-1 (disjoint from `train_seeds`)."""
  if count > TRAIN_SEED_OFFSET:
    raise ValueError(f"at most {TRAIN_SEED_OFFSET} evaluation episodes, got {count}.")
  return list(range(count))


def pow2_rows(n: int, multiple: int) -> int:
  """n rounded up to multiple * 2^k: few distinct batch shapes, at most 2x padding."""
  units = max(-(-n // multiple), 1)
  return multiple * 2 ** math.ceil(math.log2(units))


def gigpo_batch(rollouts: Sequence[EpisodeRollout], *, group_size: int, gamma: float,
                omega: float, normalize: str, epsilon: float, max_new_tokens: int,
                pad_token_id: int, num_mini_batches: int = 1,
                row_multiple: int = 1) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """The rl.step batch of every turn of the trainable episodes, GiGPO advantage per token.

  rollouts: `play_episodes` output, consecutive groups of `group_size` episodes of one seed.
  Rows: one per turn, trainable episodes in order and their turns in order; the context
  left-padded to a bucketed prompt length, the action right-padded to max_new_tokens.
  `response_mask` is 1 exactly on the action's sampled tokens, `advantages` holds the turn's
  GiGPO advantage on those tokens (0 elsewhere). The row count is padded (filler rows carry no
  loss, and `is_response` 0: no aggregation counts them) to num_mini_batches equal
  mini-batches of row_multiple * 2^k rows each, so steps with similar turn counts share
  compiled code.
  Returns (batch, stats): anchor_group_size (mean size of the anchor-state groups) and
  trained_turns.
  """
  if len(rollouts) % group_size:
    raise ValueError(f"{len(rollouts)} episodes do not split into groups of {group_size}.")
  rows, anchor_sizes = [], []  # rows: (TurnSample, advantage)
  for start in range(0, len(rollouts), group_size):
    group = [r for r in rollouts[start:start + group_size] if r.trainable and r.samples]
    if not group:
      continue
    advantages = gigpo.gigpo_advantages([r.episode.gigpo_steps for r in group], gamma=gamma,
                                        omega=omega, normalize=normalize, epsilon=epsilon,
                                        penalties=[r.episode.penalties for r in group])
    anchor_sizes += advantages.anchor_group_sizes
    for rollout, per_turn in zip(group, advantages.combined):
      rows += [(sample, float(a)) for sample, a in zip(rollout.samples, per_turn)]
  count = len(rows)
  per_mini = pow2_rows(-(-count // num_mini_batches), row_multiple)
  total = per_mini * num_mini_batches
  prompt_len = sampling.bucket(max((len(s.prompt_ids) for s, _ in rows), default=1))
  width = prompt_len + max_new_tokens
  batch = {
      "input_ids": np.full((total, width), pad_token_id, np.int32),
      "attention_mask": np.zeros((total, width), bool),
      "response_mask": np.zeros((total, max_new_tokens), np.float32),
      "is_response": (np.arange(total) < count).astype(np.float32),  # filler rows: 0
      "old_logprobs": np.zeros((total, max_new_tokens), np.float32),
      "advantages": np.zeros((total, max_new_tokens), np.float32),
  }
  batch["attention_mask"][count:, prompt_len - 1] = True  # filler rows: one visible token
  for row, (sample, advantage) in enumerate(rows):
    prompt, n = sample.prompt_ids, len(sample.tokens)
    batch["input_ids"][row, prompt_len - len(prompt):prompt_len] = prompt
    batch["input_ids"][row, prompt_len:prompt_len + n] = sample.tokens
    batch["attention_mask"][row, prompt_len - len(prompt):prompt_len + n] = True
    batch["response_mask"][row, :n] = 1.0
    batch["old_logprobs"][row, :n] = sample.logprobs
    batch["advantages"][row, :n] = advantage
  stats = {"anchor_group_size": float(np.mean(anchor_sizes)) if anchor_sizes else 0.0,
           "trained_turns": float(count)}
  return batch, stats


def rollout_metrics(rollouts: Sequence[EpisodeRollout]) -> dict[str, float]:
  """Per-step metrics: mean return ("reward"), success rate, episode length, env errors, ...;
  valid_reply_fraction (the share of replies the environment called valid, verl-agent's
  valid_action_ratio) when the environment says which are."""
  summary = envs.summarize([r.episode for r in rollouts])
  samples = [s for r in rollouts for s in r.samples]
  judged = [turn.valid for r in rollouts for turn in r.episode.turns if turn.valid is not None]
  validity = {"valid_reply_fraction": float(np.mean(judged))} if judged else {}
  return {
      **validity,
      "reward": summary["mean_return"],
      "success_rate": summary["success_rate"],
      "episode_length": summary["mean_turns"],
      "turn_limit_rate": summary["turn_limit_rate"],
      "env_errors": float(sum(not r.trainable for r in rollouts)),
      "action_length": float(np.mean([len(s.tokens) for s in samples])) if samples else 0.0,
      "truncated_fraction": float(np.mean([s.truncated for s in samples])) if samples else 0.0,
      "context_truncated": (float(np.mean([s.context_truncated for s in samples]))
                            if samples else 0.0),
  }


def episode_record(episode: envs.Episode) -> dict:
  """A JSON-ready transcript of one episode (samples.jsonl, eval generations); its
  final_observation is the environment's reply to the last action (how the episode ended)."""
  observations = [episode.first_observation] + [turn.observation for turn in episode.turns]
  return {
      "seed": episode.seed, "success": episode.success, "return": episode.total_reward,
      "turns": len(episode.turns), "finish_reason": episode.finish_reason,
      "error": episode.error,
      "transcript": [{"observation": observations[t], "action": turn.action,
                      "reward": turn.reward, "valid": turn.valid, "penalty": turn.penalty}
                     for t, turn in enumerate(episode.turns)],
      "final_observation": observations[-1],
  }
