"""Playing episodes safely: a broken environment ends its episode with a report, never the run.

`SafeEpisode` drives one `Env` through one episode. Every call into the environment is
checked: an exception (a `sys.exit()` too), a malformed `StepResult` (wrong type, a field of
the wrong type, a non-finite reward, a penalty that is negative or not finite), an unhashable
state key or a call that takes longer than `step_timeout_s` ends the episode with
`finish_reason == "env_error"` and the cause in `error` (whoever plays a batch of episodes
warns of their errors at once: `jaxlayer.rl.multiturn.warn_of_env_errors`). An environment
that never says `done` is cut at `max_turns`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import queue
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from jaxlayer.envs.base import Env, StepResult

FINISH_DONE = "done"  # the environment said done
FINISH_TURN_LIMIT = "turn_limit"  # max_turns steps without done
FINISH_ENV_ERROR = "env_error"  # the environment failed; see Episode.error


@dataclasses.dataclass(frozen=True)
class Turn:
  """One action and the environment's answer to it."""

  state_key: Hashable  # the anchor state the action was taken in
  action: str  # the agent's raw text
  observation: str  # the reply ("" when the step failed)
  reward: float
  valid: bool | None = None  # whether the action was well-formed (None: the env does not say)
  penalty: float = 0.0  # what the action cost this step alone (StepResult.penalty)


@dataclasses.dataclass
class Episode:
  """The record of one episode; `finish_reason` is None while it runs."""

  seed: int
  first_observation: str = ""
  turns: list[Turn] = dataclasses.field(default_factory=list)
  finish_reason: str | None = None
  error: str | None = None
  success: bool = False

  @property
  def total_reward(self) -> float:
    """The environment's rewards summed (penalties are apart: `penalties`)."""
    return sum(turn.reward for turn in self.turns)

  @property
  def gigpo_steps(self) -> list[tuple[Hashable, float]]:
    """(state_key, reward) per turn: one trajectory for `jaxlayer.rl.gigpo`."""
    return [(turn.state_key, turn.reward) for turn in self.turns]

  @property
  def penalties(self) -> list[float]:
    """Each turn's own penalty (`StepResult.penalty`), for `jaxlayer.rl.gigpo`."""
    return [turn.penalty for turn in self.turns]


class _EnvFailure(Exception):
  """An environment call failed; the message says how."""


class _EnvCaller:
  """Calls into an environment, turning an exception or an overrun into _EnvFailure.

  With a timeout, calls run one at a time on a daemon worker thread; a call that overruns
  is abandoned (a thread cannot be killed), so its environment must not be used again.
  `close` lets the worker exit (it also happens when the caller is garbage collected).
  """

  def __init__(self, timeout_s: float | None):
    self.timeout_s = timeout_s
    self._stop_worker = None
    if timeout_s is None:
      return
    self._calls: queue.SimpleQueue = queue.SimpleQueue()
    self._results: queue.SimpleQueue = queue.SimpleQueue()
    calls, results = self._calls, self._results  # the thread must not hold `self`

    def serve():
      while (fn := calls.get()) is not None:
        try:
          outcome = (True, fn())
        except BaseException as err:  # noqa: BLE001 -- handed to the calling thread
          outcome = (False, err)
        results.put(outcome)
        fn = outcome = None  # hold no reference to the episode while waiting

    threading.Thread(target=serve, name="env-worker", daemon=True).start()
    self._stop_worker = weakref.finalize(self, calls.put, None)

  def close(self) -> None:
    if self._stop_worker is not None:
      self._stop_worker()

  def __call__(self, fn: Callable[[], Any], what: str) -> Any:
    if self.timeout_s is None:
      try:
        return fn()
      # Any environment bug ends only its episode, sys.exit() too (as on the worker thread).
      except (Exception, SystemExit) as err:  # noqa: BLE001
        raise _EnvFailure(f"{what} raised {type(err).__name__}: {err}") from err
    self._calls.put(fn)
    try:
      ok, value = self._results.get(timeout=self.timeout_s)
    except queue.Empty:
      raise _EnvFailure(f"{what} did not return within step_timeout_s={self.timeout_s} s") from None
    if not ok:
      raise _EnvFailure(f"{what} raised {type(value).__name__}: {value}") from value
    return value


def _check_step_result(result: Any) -> StepResult:
  """The result itself when it is a well-formed StepResult, else _EnvFailure saying why."""
  if not isinstance(result, StepResult):
    raise _EnvFailure(f"step() returned {type(result).__name__}, expected "
                      "StepResult(observation: str, reward: float, done: bool)")
  if not isinstance(result.observation, str):
    raise _EnvFailure(
        f"step() returned observation of type {type(result.observation).__name__}, expected str")
  if not isinstance(result.reward, numbers.Real) or isinstance(result.reward, bool):
    raise _EnvFailure(
        f"step() returned reward of type {type(result.reward).__name__}, expected a float")
  if not math.isfinite(result.reward):
    raise _EnvFailure(f"step() returned a non-finite reward ({result.reward})")
  penalty = result.penalty
  if (not isinstance(penalty, numbers.Real) or isinstance(penalty, bool)
      or not (math.isfinite(penalty) and penalty >= 0)):
    raise _EnvFailure(f"step() returned penalty {penalty!r}, expected a finite float >= 0")
  for field in ("done", "success"):
    value = getattr(result, field)
    if not isinstance(value, (bool, np.bool_)):
      raise _EnvFailure(f"step() returned {field} of type {type(value).__name__}, expected bool")
  if result.valid is not None and not isinstance(result.valid, (bool, np.bool_)):
    raise _EnvFailure(f"step() returned valid of type {type(result.valid).__name__}, expected "
                      "bool or None")
  return result


def _check_state_key(key: Any) -> Hashable:
  try:
    hash(key)
  except TypeError as err:
    raise _EnvFailure(f"state_key() returned an unhashable {type(key).__name__}") from err
  return key


class SafeEpisode:
  """One episode of `env` from `seed`, resetting on construction; never raises for env bugs.

  Loop: while not `done`: show `observation` to the agent, pass its reply to `step`.
  The finished record is `episode`. After an "env_error" the env object may be in any
  state (a timed-out call may even still be running): build a fresh one for the next
  episode.
  """

  def __init__(self, env: Env, seed: int, *, max_turns: int,
               step_timeout_s: float | None = 60.0):
    if max_turns < 1:
      raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    if step_timeout_s is not None and not step_timeout_s > 0:
      raise ValueError(f"step_timeout_s must be positive or None, got {step_timeout_s}")
    self.env = env
    self.max_turns = max_turns
    self.step_timeout_s = step_timeout_s
    self.episode = Episode(seed=seed)
    self.observation = ""  # what the agent sees next
    self._state_key: Hashable = None
    self._call = _EnvCaller(step_timeout_s)
    try:
      observation = self._call(lambda: env.reset(seed), "reset()")
      if not isinstance(observation, str):
        raise _EnvFailure(f"reset() returned {type(observation).__name__}, expected str")
      self.episode.first_observation = self.observation = observation
      self._state_key = self._read_state_key()
    except _EnvFailure as failure:
      self._fail(failure)

  @property
  def done(self) -> bool:
    return self.episode.finish_reason is not None

  def step(self, action_text: str) -> Turn:
    """Play the agent's reply; returns the recorded turn (reward 0 when the step failed)."""
    if self.done:
      raise RuntimeError(f"the episode is finished ({self.episode.finish_reason}); "
                         "start a new SafeEpisode")
    if not isinstance(action_text, str):
      raise TypeError(f"action_text must be a str, got {type(action_text).__name__}")
    try:
      result = _check_step_result(
          self._call(lambda: self.env.step(action_text), "step()"))
    except _EnvFailure as failure:
      turn = Turn(self._state_key, action_text, "", 0.0)
      self.episode.turns.append(turn)
      self._fail(failure)
      return turn
    turn = Turn(self._state_key, action_text, result.observation, float(result.reward),
                valid=None if result.valid is None else bool(result.valid),
                penalty=float(result.penalty))
    self.episode.turns.append(turn)
    self.observation = result.observation
    self.episode.success = self.episode.success or bool(result.success)
    if result.done:
      self._end(FINISH_DONE)
    elif len(self.episode.turns) >= self.max_turns:
      self._end(FINISH_TURN_LIMIT)
    else:
      try:
        self._state_key = self._read_state_key()
      except _EnvFailure as failure:
        self._fail(failure)
    return turn

  def _read_state_key(self) -> Hashable:
    return _check_state_key(self._call(lambda: self.env.state_key(), "state_key()"))

  def _end(self, reason: str) -> None:
    self.episode.finish_reason = reason
    self._call.close()

  def _fail(self, failure: _EnvFailure) -> None:
    self.episode.error = str(failure)
    self._end(FINISH_ENV_ERROR)


def run_episode(env: Env, policy: Callable[[str], str], seed: int, *, max_turns: int,
                step_timeout_s: float | None = 60.0) -> Episode:
  """Play one episode with `policy` (latest observation -> reply text); returns its record."""
  play = SafeEpisode(env, seed, max_turns=max_turns, step_timeout_s=step_timeout_s)
  while not play.done:
    play.step(policy(play.observation))
  return play.episode


def summarize(episodes: Sequence[Episode]) -> dict[str, float]:
  """Metrics over finished episodes: success rate, mean return and turns, finish reasons."""
  if not episodes:
    raise ValueError("summarize() needs at least one episode")
  count = len(episodes)
  return {
      "success_rate": sum(episode.success for episode in episodes) / count,
      "mean_return": sum(episode.total_reward for episode in episodes) / count,
      "mean_turns": sum(len(episode.turns) for episode in episodes) / count,
      "turn_limit_rate": sum(e.finish_reason == FINISH_TURN_LIMIT for e in episodes) / count,
      "env_error_rate": sum(e.finish_reason == FINISH_ENV_ERROR for e in episodes) / count,
  }
