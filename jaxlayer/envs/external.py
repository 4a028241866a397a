"""Adapters for environment suites outside jaxlayer (ALFWorld, TextWorld, gym-style text envs).

`GymTextEnv` wraps any object with a gym or gymnasium style text API as an `Env`; its
anchor state is the latest observation text, as in verl-agent's GiGPO. `alfworld_env`
builds an ALFWorld environment that way when the `alfworld` package is installed; by default
it talks to the agent as verl-agent (GiGPO's reference code) does: `verl_agent_prompt`,
`verl_agent_projection`.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlayer.envs.base import Env, StepResult

ALFWORLD_INSTALL_HINT = (
    "the 'alfworld' environment needs the alfworld package and its game files: "
    "`pip install alfworld && alfworld-download`, then pass config_path= the YAML config "
    "(configs/base_config.yaml in https://github.com/alfworld/alfworld)")
# The seed of the one order of a split's games that episode seeds index (see _AlfworldGames).
ALFWORLD_GAME_ORDER_SEED = 0
# How the agent replies to ALFWorld: verl-agent's prompt and <action> tags, or the bare command.
REPLY_FORMATS = ("verl-agent", "command")

# The text of verl-agent's ALFWorld prompts (agent_system/environments/prompts/alfworld.py):
# the first step's (ALFWORLD_TEMPLATE_NO_HIS) and the later steps' (ALFWORLD_TEMPLATE).
_VERL_AGENT_REQUEST = (
    "Your admissible actions of the current situation are: [{admissible}].\n\n"
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process "
    "MUST be enclosed within <think> </think> tags. \n"
    "Once you've finished your reasoning, you should choose an admissible action for current "
    "step and present it within <action> </action> tags.\n")
_VERL_AGENT_FIRST_STEP = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
    "Your current observation is: {observation}\n" + _VERL_AGENT_REQUEST)
_VERL_AGENT_LATER_STEP = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: "
    "{task}\n"
    "Prior to this step, you have already taken {taken} step(s). Below are the most recent "
    "{shown} observations and the corresponding actions you took: {history}\n"
    "You are now at step {current} and your current observation is: {observation}\n"
    + _VERL_AGENT_REQUEST)
_TASK_MARKER = "Your task is to: "
_CJK = re.compile("[\u4e00-\u9fff]")  # verl-agent calls a reply with Chinese characters invalid
_UNTAGGED_TAIL = 30  # characters of an untagged reply that verl-agent sends to the game
_STEP_FORMS = ("(observation, reward, done, info) or gymnasium's (observation, reward, "
               "terminated, truncated, info)")


def _unbatch(value: Any) -> Any:
  """The single element of a batch of one (list/tuple of length 1, or a dict of those)."""
  if isinstance(value, dict):
    return {key: _unbatch(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)) and len(value) == 1:
    return value[0]
  return value


def _flag(value: Any, what: str) -> bool:
  """value as a bool: a bool, or 0 / 1 as gym-style envs often write done; else TypeError."""
  if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                             and value in (0, 1)):
    return bool(value)
  raise TypeError(f"{what} is {value!r} ({type(value).__name__}), expected a bool (or 0 / 1)")


class GymTextEnv(Env):
  """An `Env` over a gym-style text environment object.

  The wrapped object must have `reset(seed=...)` (or `seed(seed)` and `reset()`) returning
  the observation or (observation, info), and `step(action)` returning
  (observation, reward, done, info) or gymnasium's (observation, reward, terminated,
  truncated, info), its flags (done, terminated, truncated, info["won"]) bools or 0 / 1.
  batch_of_one: every value comes as a batch of one (ALFWorld's and TextWorld's batch envs)
  and is unwrapped. success is info["won"] when present.
  reward_fn(reward, info) replaces the reward (TextWorld's step returns the score so far, not
  the step's reward: give it a reward_fn). project(reply) -> (command, valid) turns the
  agent's reply into the command sent (default: the reply itself, validity unreported); an
  invalid reply's step has penalty invalid_action_penalty (`StepResult.penalty`, apart from
  the reward). describe(observation, info, past) is the text shown to the agent, past being
  the episode's earlier (observation, command) pairs (the anchor state stays the raw
  observation); shows_past_turns says that text holds past turns.
  """

  def __init__(self, env: Any, *, name: str = "external", instructions: str = "",
               batch_of_one: bool = False,
               reward_fn: Callable[[Any, dict], float] | None = None,
               project: Callable[[str], tuple[str, bool]] | None = None,
               invalid_action_penalty: float = 0.0,
               describe: Callable[[str, dict, Sequence[tuple[str, str]]], str] | None = None,
               shows_past_turns: bool = False):
    self.env = env
    self.name = name
    self.instructions = instructions
    self.batch_of_one = batch_of_one
    self.reward_fn = reward_fn
    self.project = project
    self.invalid_action_penalty = invalid_action_penalty
    self.describe = describe
    self.shows_past_turns = shows_past_turns
    self._observation: str | None = None
    self._past: list[tuple[str, str]] = []  # (raw observation, command sent) per step

  def reset(self, seed: int) -> str:
    if "seed" in inspect.signature(self.env.reset).parameters:
      output = self.env.reset(seed=seed)
    elif callable(getattr(self.env, "seed", None)):
      self.env.seed(seed)
      output = self.env.reset()
    else:
      raise TypeError(f"{type(self.env).__name__} can be seeded neither by reset(seed=...) "
                      "nor by seed(seed)")
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], dict):
      observation, info = output
    else:
      observation, info = output, {}
    self._past = []
    return self._show(self._one(observation), self._one(info))

  def step(self, action_text: str) -> StepResult:
    command, valid = (action_text, None) if self.project is None else self.project(action_text)
    output = self.env.step([command] if self.batch_of_one else command)
    if not isinstance(output, (tuple, list)) or len(output) not in (4, 5):
      length = f" of length {len(output)}" if isinstance(output, (tuple, list)) else ""
      raise TypeError(f"{type(self.env).__name__}.step returned {type(output).__name__}{length}, "
                      f"expected {_STEP_FORMS}")
    if len(output) == 5:
      observation, reward, terminated, truncated, info = output
      done = _flag(self._one(terminated), "terminated") | _flag(self._one(truncated), "truncated")
    else:
      observation, reward, done, info = output
      done = _flag(self._one(done), "done")
    info = self._one(info) if isinstance(info, dict) else {}
    reward = self._one(reward)
    if self.reward_fn is not None:
      reward = self.reward_fn(reward, info)
    self._past.append((self._observation, command))
    shown = self._show(self._one(observation), info)
    won = info.get("won")  # None: not reported
    success = won is not None and _flag(won, 'info["won"]')
    return StepResult(shown, reward, done, success=success, valid=valid,
                      penalty=self.invalid_action_penalty if valid is False else 0.0)

  def state_key(self) -> str:
    if self._observation is None:
      raise RuntimeError(f"{self.name}: call reset(seed) before state_key()")
    return self._observation

  def _one(self, value: Any) -> Any:
    return _unbatch(value) if self.batch_of_one else value

  def _show(self, observation: Any, info: dict) -> str:
    """Remember the raw observation (the anchor state); return the text for the agent."""
    self._observation = observation
    if self.describe is None:
      return observation
    return self.describe(observation, info, self._past)


def _with_admissible_commands(observation: str, info: dict,
                              past: Sequence[tuple[str, str]]) -> str:
  del past  # the command format shows past turns through env.history
  commands = info.get("admissible_commands")
  if not commands:
    return observation
  return f"{observation}\nAdmissible actions: {', '.join(commands)}"


def verl_agent_projection(reply: str) -> tuple[str, bool]:
  """The command verl-agent sends ALFWorld for an agent's reply, and whether the reply is valid.

  The rules of verl-agent's alfworld_projection: the command is the lower-cased text between
  the first "<action>" and the first "</action>" (tags in any case), stripped; it is not
  checked against the admissible commands (the game answers one it does not know with "Nothing
  happens."). A reply without both action tags sends its last 30 characters, lower-cased, and
  is invalid. A tagged reply is invalid too without both "<think>" and "</think>" (in lower
  case) or with a Chinese character.

  Args:
    reply: the agent's whole reply.

  Returns:
    (command, valid).
  """
  lowered = reply.lower()
  start, end = lowered.find("<action>"), lowered.find("</action>")
  if start < 0 or end < 0:
    return lowered[-_UNTAGGED_TAIL:], False
  command = lowered[start + len("<action>"):end].strip()
  reasoned = "<think>" in reply and "</think>" in reply
  return command, reasoned and not _CJK.search(reply)


def verl_agent_prompt(observation: str, info: dict, past: Sequence[tuple[str, str]], *,
                      history_length: int) -> str:
  """verl-agent's ALFWorld prompt for the current step (AlfWorldEnvironmentManager's).

  Args:
    observation: the game's current observation.
    info: the game's info; its "admissible_commands" are listed, "help" left out.
    past: the episode's earlier (observation, command sent) pairs, the first observation (which
      states the task) first.
    history_length: the most recent pairs shown; 0 shows none (nor the task after step 1).

  Returns:
    The prompt: the first step's template, or with history_length > 0 and a past, the template
    with the task, the step counts and the last pairs as "[Observation n: '...', Action n:
    '...']" lines.
  """
  admissible = "\n ".join(f"'{command}'" for command in info.get("admissible_commands") or []
                          if command != "help")
  if not past or not history_length:
    return _VERL_AGENT_FIRST_STEP.format(observation=observation, admissible=admissible)
  first = past[0][0]
  if _TASK_MARKER not in first:
    raise ValueError(f"ALFWorld's first observation states no task ({_TASK_MARKER!r}): "
                     f"{first[:200]!r}")
  task = first[first.index(_TASK_MARKER) + len(_TASK_MARKER):].strip()
  shown = past[-history_length:]
  first_shown = len(past) - len(shown) + 1
  history = "\n".join(f"[Observation {n}: '{seen}', Action {n}: '{command}']"
                      for n, (seen, command) in enumerate(shown, first_shown))
  return _VERL_AGENT_LATER_STEP.format(
      task=task, taken=len(past), shown=len(shown), history=history, current=len(past) + 1,
      observation=observation, admissible=admissible)


@functools.cache
def _alfworld_suite(config_path: str, split: str) -> Any:
  """ALFWorld's suite of one split (its AlfredTWEnv), built once per process: building it reads
  every game of the split from disk, too slow to repeat for each episode."""
  try:
    import yaml
    from alfworld.agents.environment import get_environment
  except ImportError as err:
    raise ImportError(ALFWORLD_INSTALL_HINT) from err
  with open(config_path, encoding="utf-8") as config_file:
    config = yaml.safe_load(config_file)
  suite = get_environment(config["env"]["type"])(config, train_eval=split)
  if not suite.num_games:
    raise ValueError(f"ALFWorld found no games of split {split!r} under the dataset paths of "
                     f"{config_path}: run `alfworld-download` and set ALFWORLD_DATA to the "
                     "folder it filled (default ~/.cache/alfworld)")
  return suite


class _AlfworldGames:
  """ALFWorld's single-game batch env whose `reset(seed)` plays game seed mod num_games of one
  fixed order of the split: TextWorld's `seed` shuffles the games, `skip` passes some over.
  Seeds 0..num_games-1 (evaluation's) play every game once; `seed(s)` alone would pick the
  first game of an order shuffled by s, at random with repeats."""

  def __init__(self, batch_env: Any, num_games: int):
    self.batch_env = batch_env
    self.num_games = num_games

  def reset(self, seed: int) -> Any:
    self.batch_env.seed(ALFWORLD_GAME_ORDER_SEED)
    self.batch_env.skip(seed % self.num_games)
    return self.batch_env.reset()

  def step(self, actions: list[str]) -> Any:
    return self.batch_env.step(actions)


def alfworld_env(config_path: str | os.PathLike, split: str = "train", success_reward: float = 10.0,
                 reply_format: str = "verl-agent", history_length: int = 2,
                 invalid_action_penalty: float = 0.1) -> GymTextEnv:
  """ALFWorld's text environment (the suite the paper's GiGPO runs use) as an `Env`.

  config_path: ALFWorld's YAML config; split: "train", "eval_in_distribution" or
  "eval_out_of_distribution". Reward: success_reward when the task is won, else 0 (as in
  verl-agent). Seed s plays game s mod num_games of the split in one fixed order: the same
  game for the same seed, so a GiGPO group plays one game, and evaluation's seeds
  0..num_games-1 play each game once. The suite is built once per (config_path, split); each
  call makes a new single-game env of it.

  reply_format "verl-agent" (verl-agent's defaults): each observation is verl-agent's whole
  prompt (`verl_agent_prompt`: the task, the last history_length observations and commands,
  the current observation, the admissible commands; no instructions), the reply reasons in
  <think> and names the command in <action> (`verl_agent_projection` picks the command sent),
  and a reply verl-agent calls invalid costs invalid_action_penalty. "command": the reply is
  the command, the observation lists the admissible commands, past turns are env.history's,
  nothing is penalised.
  """
  if reply_format not in REPLY_FORMATS:
    raise ValueError(f"alfworld reply_format={reply_format!r}: choose one of "
                     f"{list(REPLY_FORMATS)}")
  if isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 0:
    raise ValueError(f"alfworld history_length={history_length!r}: past turns shown, an integer "
                     ">= 0 (verl-agent's: 2)")
  penalty = invalid_action_penalty
  if (isinstance(penalty, bool) or not isinstance(penalty, numbers.Real)
      or not (math.isfinite(penalty) and penalty >= 0)):
    raise ValueError(f"alfworld invalid_action_penalty={invalid_action_penalty!r}: the reward "
                     "an invalid reply loses, a number >= 0 (verl-agent's: 0.1)")
  suite = _alfworld_suite(config_path, split)
  games = _AlfworldGames(suite.init_env(batch_size=1), suite.num_games)

  def reward_fn(reward, info):
    return success_reward * float(bool(info.get("won", False)))

  if reply_format == "command":
    return GymTextEnv(
        games, name="alfworld", batch_of_one=True,
        instructions="You are a household agent. Reply with one admissible action.",
        reward_fn=reward_fn, describe=_with_admissible_commands)
  return GymTextEnv(
      games, name="alfworld", batch_of_one=True, reward_fn=reward_fn,
      project=verl_agent_projection, invalid_action_penalty=invalid_action_penalty,
      describe=functools.partial(verl_agent_prompt, history_length=history_length),
      shows_past_turns=history_length > 0)
