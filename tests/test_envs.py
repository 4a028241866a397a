"""The environment interface, the grid world, the safe episode runner and the adapters."""

import gc
import importlib.util
import math
import random
import re
import sys
import threading
import time
import types

import numpy as np
import pytest

from jaxlayer.envs import (Env, GridWorld, GymTextEnv, SafeEpisode, StepResult, get_env,
                           run_episode, summarize)
from jaxlayer.envs import external
from jaxlayer.envs.gridworld import parse_action
from jaxlayer.rl.gigpo import gigpo_advantages


def toward_goal(observation: str) -> str:
  """The shortest-path move read from "pos x,y goal gx,gy"."""
  words = observation.split()
  x, y = map(int, words[words.index("pos") + 1].split(","))
  goal_x, goal_y = map(int, words[words.index("goal") + 1].split(","))
  if x != goal_x:
    return "east" if goal_x > x else "west"
  return "north" if goal_y > y else "south"


# --- grid world ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, move", [
    ("north", (0, 1)), ("Go East.", (1, 0)), ("  WEST  ", (-1, 0)), ("s", (0, -1)),
    ("n\nsouth", (0, 1)), ("east, then north", (1, 0)),
    ("northeast", None), ("I go north", None), ("", None), ("\nnorth", None), ("go", None),
    ("上", None), ("4", None),
])
def test_parse_action(text, move):
  assert parse_action(text) == move


def test_same_seed_same_episode_and_seeds_vary_the_layout():
  actions = ["east", "north", "nonsense", "west", "south", "north"]
  runs = []
  for _ in range(2):
    env = GridWorld(size=4, max_turns=6, max_goal_distance=3)
    trace = [env.reset(seed=7), env.state_key()]
    for action in actions:
      result = env.step(action)
      trace.append(result)
      if result.done:
        break
      trace.append(env.state_key())
    runs.append(trace)
  assert runs[0] == runs[1]
  env = GridWorld()
  assert len({env.reset(seed) for seed in range(30)}) > 10


def test_layout_goal_within_reach_and_observations_short():
  env = GridWorld(size=3, max_goal_distance=2)
  for seed in range(50):
    observation = env.reset(seed)
    x, y, goal_x, goal_y = env.state_key()
    assert 1 <= abs(x - goal_x) + abs(y - goal_y) <= 2
    assert observation == f"pos {x},{y} goal {goal_x},{goal_y}"
    assert all(0 <= value < 3 for value in (x, y, goal_x, goal_y))


def test_moves_walls_invalid_actions_and_goal():
  env = GridWorld(size=3, max_turns=10)
  seed = next(s for s in range(10_000) if env.reset(s) == "pos 0,0 goal 1,1")
  env.reset(seed)
  assert env.step("west") == StepResult("wall pos 0,0 goal 1,1", 0.0, False, valid=True)
  assert env.step("dance") == StepResult("invalid action pos 0,0 goal 1,1", -0.1, False,
                                         valid=False)
  assert env.step("x" * 100_000).observation.startswith("invalid action")
  assert env.step("north") == StepResult("pos 0,1 goal 1,1", 0.0, False, valid=True)
  assert env.state_key() == (0, 1, 1, 1)
  assert env.step("e") == StepResult("goal reached", 1.0, True, success=True, valid=True)
  with pytest.raises(RuntimeError, match="call reset"):
    env.step("north")


def test_turn_limit_is_respected():
  env = GridWorld(max_turns=3)
  env.reset(0)
  results = [env.step("nonsense") for _ in range(3)]
  assert [r.done for r in results] == [False, False, True]
  assert results[-1].observation.startswith("out of turns")
  assert [r.reward for r in results] == [-0.1, -0.1, -0.1]
  # The runner's own limit cuts the episode earlier.
  episode = run_episode(GridWorld(max_turns=50), lambda _: "nonsense", 0, max_turns=4)
  assert (len(episode.turns), episode.finish_reason, episode.success) == (4, "turn_limit", False)
  assert episode.total_reward == pytest.approx(-0.4)


def test_shortest_path_policy_always_succeeds():
  episodes = [run_episode(GridWorld(), toward_goal, seed, max_turns=6) for seed in range(40)]
  assert all(e.success and e.finish_reason == "done" for e in episodes)
  for episode in episodes:
    x, y, goal_x, goal_y = episode.turns[0].state_key
    assert len(episode.turns) == abs(x - goal_x) + abs(y - goal_y)
    assert episode.total_reward == 1.0


def test_bad_grid_options_are_named():
  with pytest.raises(ValueError, match="size must be at least 2"):
    GridWorld(size=1)
  with pytest.raises(ValueError, match=r"max_goal_distance must be in \[1, 4\]"):
    GridWorld(size=3, max_goal_distance=5)
  with pytest.raises(ValueError, match="max_turns"):
    GridWorld(max_turns=0)
  with pytest.raises(TypeError, match="seed must be an int"):
    GridWorld().reset("0")


def test_states_recur_across_a_group_and_feed_gigpo():
  # One group: 8 trajectories from the same seed. A random policy revisits states across
  # trajectories, so anchor groups larger than one exist.
  rng = random.Random(0)
  group = [run_episode(GridWorld(), lambda _: rng.choice(["north", "south", "east", "west"]),
                       3, max_turns=6) for _ in range(8)]
  assert len({episode.turns[0].state_key for episode in group}) == 1
  result = gigpo_advantages([episode.gigpo_steps for episode in group])
  assert max(result.anchor_group_sizes) >= 8
  assert [len(a) for a in result.combined] == [len(e.turns) for e in group]
  # At the shared start state a step toward the goal beats a step away from it.
  start = group[0].first_observation
  toward = run_episode(GridWorld(), toward_goal, 3, max_turns=6)
  away = run_episode(GridWorld(), lambda obs: {"north": "south", "south": "north", "east": "west",
                                               "west": "east"}[toward_goal(obs)], 3, max_turns=6)
  assert start == toward.first_observation
  result = gigpo_advantages([toward.gigpo_steps, away.gigpo_steps])
  assert result.step[0][0] > 0 > result.step[1][0]


def test_summarize():
  good = run_episode(GridWorld(), toward_goal, 0, max_turns=6)
  bad = run_episode(GridWorld(), lambda _: "?", 0, max_turns=2)
  broken = run_episode(BrokenEnv("raise", at_turn=1), toward_goal, 0, max_turns=6)
  metrics = summarize([good, bad, broken])
  assert metrics["success_rate"] == pytest.approx(1 / 3)
  assert metrics["mean_return"] == pytest.approx((1.0 - 0.2 + 0.0) / 3)
  assert metrics["mean_turns"] == pytest.approx((len(good.turns) + 2 + 1) / 3)
  assert metrics["turn_limit_rate"] == pytest.approx(1 / 3)
  assert metrics["env_error_rate"] == pytest.approx(1 / 3)


# --- broken environments: the episode ends and is reported, the run goes on ----------------

class BrokenEnv(Env):
  """A grid world that misbehaves in one way from turn `at_turn` on (0: at reset)."""

  name = "broken"

  def __init__(self, fault: str, at_turn: int = 1, release: threading.Event | None = None):
    self.fault = fault
    self.at_turn = at_turn
    self.release = release
    self.inner = GridWorld(max_turns=20)
    self.turns = 0

  def reset(self, seed):
    if self.at_turn == 0 and self.fault == "raise":
      raise OSError("simulator crashed")
    if self.at_turn == 0 and self.fault == "malformed":
      return None
    return self.inner.reset(seed)

  def step(self, action_text):
    self.turns += 1
    result = self.inner.step(action_text)
    if self.turns < self.at_turn or self.fault == "unhashable_key":
      return result
    if self.fault == "raise":
      raise ValueError("boom")
    if self.fault == "hang":
      self.release.wait()
    if self.fault == "never_done":
      return StepResult("pos ? goal ?", 0.0, False)
    return {
        "tuple": ("obs", 0.0, False),
        "observation": StepResult(None, 0.0, False),
        "reward_str": StepResult("obs", "1.0", False),
        "reward_nan": StepResult("obs", math.nan, False),
        "reward_inf": StepResult("obs", -math.inf, True),
        "done_str": StepResult("obs", 0.0, "yes"),
        "valid_str": StepResult("obs", 0.0, False, valid="yes"),
        "penalty_negative": StepResult("obs", 0.0, False, penalty=-0.1),
        "penalty_nan": StepResult("obs", 0.0, False, penalty=math.nan),
    }[self.fault]

  def state_key(self):
    if self.fault == "unhashable_key" and self.turns >= self.at_turn:
      return ["not", "hashable"]
    return self.inner.state_key()


@pytest.mark.parametrize("fault, message", [
    ("raise", "step() raised ValueError: boom"),
    ("tuple", "step() returned tuple, expected StepResult"),
    ("observation", "observation of type NoneType, expected str"),
    ("reward_str", "reward of type str, expected a float"),
    ("reward_nan", "non-finite reward (nan)"),
    ("reward_inf", "non-finite reward (-inf)"),
    ("done_str", "done of type str, expected bool"),
    ("valid_str", "valid of type str, expected bool or None"),
    ("penalty_negative", "penalty -0.1, expected a finite float >= 0"),
    ("penalty_nan", "penalty nan, expected a finite float >= 0"),
    ("unhashable_key", "state_key() returned an unhashable list"),
])
def test_broken_step_ends_the_episode_with_a_report(fault, message):
  episodes = [run_episode(env, lambda _: "nonsense", seed=0, max_turns=4)
              for env in (GridWorld(), BrokenEnv(fault, at_turn=2), GridWorld())]
  healthy, broken, after = episodes
  assert broken.finish_reason == "env_error"
  assert message in broken.error
  assert len(broken.turns) == 2  # the failing turn is recorded
  if fault != "unhashable_key":  # that fault comes after a good step
    assert broken.turns[-1].reward == 0.0 and broken.turns[-1].observation == ""
  # The episodes around it ran normally.
  assert healthy.error is None and after.error is None
  assert healthy.finish_reason == after.finish_reason == "turn_limit"
  assert [t.state_key for t in healthy.turns] == [t.state_key for t in after.turns]
  # GiGPO takes the broken trajectory's recorded steps like any other.
  gigpo_advantages([e.gigpo_steps for e in episodes])


class ExitingGridWorld(GridWorld):
  """A grid world whose simulator calls sys.exit() at its first step."""

  def step(self, action_text):
    sys.exit("simulator gone")


@pytest.mark.parametrize("step_timeout_s", [5.0, None])
def test_an_env_that_calls_sys_exit_ends_only_its_episode(step_timeout_s):
  # Without a timeout (no worker thread) the SystemExit went through: it ended the run.
  episode = run_episode(ExitingGridWorld(), lambda observation: "north", 0, max_turns=3,
                        step_timeout_s=step_timeout_s)
  assert (episode.finish_reason, len(episode.turns)) == ("env_error", 1)
  assert episode.error == "step() raised SystemExit: simulator gone"


@pytest.mark.parametrize("fault, message", [
    ("raise", "reset() raised OSError: simulator crashed"),
    ("malformed", "reset() returned NoneType, expected str"),
])
def test_broken_reset_ends_the_episode_with_a_report(fault, message):
  play = SafeEpisode(BrokenEnv(fault, at_turn=0), 0, max_turns=6)
  assert play.done and play.episode.finish_reason == "env_error"
  assert message in play.episode.error
  assert play.episode.turns == []
  with pytest.raises(RuntimeError, match="episode is finished"):
    play.step("north")


def test_env_that_never_ends_is_cut_at_the_turn_limit():
  episode = run_episode(BrokenEnv("never_done", at_turn=1), lambda _: "north", 0, max_turns=5)
  assert (episode.finish_reason, len(episode.turns), episode.error) == ("turn_limit", 5, None)


def test_env_step_that_hangs_is_abandoned_after_the_timeout():
  release = threading.Event()
  try:
    plays = [SafeEpisode(env, 0, max_turns=4, step_timeout_s=0.2)
             for env in (BrokenEnv("hang", at_turn=2, release=release), GridWorld())]
    while not all(play.done for play in plays):
      for play in plays:
        if not play.done:
          play.step("nonsense")
    hung, healthy = (play.episode for play in plays)
    assert hung.finish_reason == "env_error"
    assert "step() did not return within step_timeout_s=0.2 s" in hung.error
    assert len(hung.turns) == 2
    assert healthy.finish_reason == "turn_limit" and len(healthy.turns) == 4
  finally:
    release.set()


def _env_workers() -> set[threading.Thread]:
  return {t for t in threading.enumerate() if t.name == "env-worker"}


def test_worker_threads_end_with_their_episodes():
  # Only this test's workers count: other tests' abandoned (hung) workers may end meanwhile.
  before = _env_workers()
  for seed in range(20):
    run_episode(GridWorld(), toward_goal, seed, max_turns=6, step_timeout_s=5.0)
  abandoned = SafeEpisode(GridWorld(), 0, max_turns=6, step_timeout_s=5.0)
  abandoned.step("north")
  del abandoned  # dropped mid-episode: its worker ends when it is garbage collected
  gc.collect()
  deadline = time.monotonic() + 10
  while _env_workers() - before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert not _env_workers() - before


def test_caller_errors_are_raised_not_swallowed():
  play = SafeEpisode(GridWorld(), 0, max_turns=3)
  with pytest.raises(TypeError, match="action_text must be a str"):
    play.step(None)
  with pytest.raises(ValueError, match="max_turns must be at least 1"):
    SafeEpisode(GridWorld(), 0, max_turns=0)


# --- registry and adapters -----------------------------------------------------------------

def test_registry():
  env = get_env("gridworld", size=4, max_turns=9)
  assert isinstance(env, GridWorld) and (env.size, env.max_turns) == (4, 9)
  with pytest.raises(ValueError, match=r"unknown environment 'grid' \(did you mean 'gridworld'"
                                       r"\?\); registered: \['alfworld', 'gridworld'\]\. Register "
                                       r"your own environment in the config file \(for the "
                                       r"command line\) or before it is named: "
                                       r"envs.ENVS\['grid'\] = YourClass\."):
    get_env("grid")
  with pytest.raises(TypeError, match="bad options for environment 'gridworld'.*colour"):
    get_env("gridworld", colour="red")


@pytest.mark.parametrize("options, complaint", [
    # '3' failed later with "'<' not supported between instances of 'str' and 'int'".
    ({"size": "3"}, "option 'size' takes int, got '3' (str)."),
    ({"size": True}, "option 'size' takes int, got True (bool)."),
    ({"goal_reward": "1"}, "option 'goal_reward' takes float, got '1' (str)."),
])
def test_an_environment_option_of_the_wrong_type_is_named_with_the_type_it_takes(options,
                                                                                   complaint):
  with pytest.raises(ValueError, match=re.escape(f"environment 'gridworld': {complaint}")):
    get_env("gridworld", **options)
  assert get_env("gridworld", goal_reward=1).goal_reward == 1  # an int for a float


@pytest.mark.skipif(importlib.util.find_spec("alfworld") is not None,
                    reason="alfworld is installed")
def test_alfworld_without_the_package_says_how_to_install_it():
  with pytest.raises(ImportError, match="pip install alfworld && alfworld-download"):
    get_env("alfworld", config_path="base_config.yaml")


class FakeGymnasiumEnv:
  """gymnasium's API: reset(seed=...) -> (obs, info); step -> 5-tuple."""

  def reset(self, *, seed=None, options=None):
    self.position = seed % 3
    return f"at {self.position}", {}

  def step(self, action):
    self.position += 1 if action == "right" else 0
    won = self.position == 3
    return f"at {self.position}", np.float32(won), won, False, {"won": won}


def test_gym_text_env_adapter():
  play = SafeEpisode(GymTextEnv(FakeGymnasiumEnv(), name="line"), 4, max_turns=5)
  assert play.observation == "at 1"
  play.step("left")
  play.step("right")
  play.step("right")
  episode = play.episode
  assert [t.state_key for t in episode.turns] == ["at 1", "at 1", "at 2"]
  assert [t.reward for t in episode.turns] == [0.0, 0.0, 1.0]
  assert episode.success and episode.finish_reason == "done"


class FakeGymEnvWithIntegerDone:
  """Old gym's step: (observation, reward, done, info), done written as 0 / 1."""

  def reset(self, seed=None):
    self.position = 0
    return "at 0"

  def step(self, action):
    self.position += 1
    return f"at {self.position}", 1.0, int(self.position == 2), {"won": self.position == 2}


def test_gym_text_env_reads_an_integer_done():
  # done=1 was an env error ("done of type int"): every episode of such an env was untrained.
  episode = run_episode(GymTextEnv(FakeGymEnvWithIntegerDone()), lambda observation: "go", 0,
                        max_turns=5, step_timeout_s=None)
  assert (episode.finish_reason, episode.error, len(episode.turns)) == ("done", None, 2)
  assert episode.success and episode.total_reward == 2.0


class FakeGymEnvReturning:
  """A gym-style env whose step returns `output`."""

  def __init__(self, output):
    self.output = output

  def reset(self, seed=None):
    return "at 0"

  def step(self, action):
    return self.output


@pytest.mark.parametrize("output, message", [
    # Was "step() raised TypeError: object of type 'NoneType' has no len()".
    (None, "FakeGymEnvReturning.step returned NoneType, expected (observation, reward, done, "
     "info) or gymnasium's (observation, reward, terminated, truncated, info)"),
    # Was "not enough values to unpack (expected 4, got 3)".
    (("at 1", 0.0, True), "step returned tuple of length 3, expected (observation, reward"),
    # Each was read as True: the episode ended at its first step, as a success for "won".
    (("at 1", 0.0, "False", {}), "done is 'False' (str), expected a bool (or 0 / 1)"),
    (("at 1", 0.0, None, False, {}), "terminated is None (NoneType), expected a bool"),
    (("at 1", 0.0, False, 2, {}), "truncated is 2 (int), expected a bool (or 0 / 1)"),
    (("at 1", 1.0, True, {"won": "no"}), "info[\"won\"] is 'no' (str), expected a bool"),
])
def test_gym_text_env_names_a_step_output_it_cannot_read(output, message):
  episode = run_episode(GymTextEnv(FakeGymEnvReturning(output)), lambda observation: "go", 0,
                        max_turns=3, step_timeout_s=None)
  assert (episode.finish_reason, len(episode.turns)) == ("env_error", 1)
  assert "step() raised TypeError: " in episode.error and message in episode.error
  assert not episode.success


def test_gym_text_env_reads_won_none_as_not_won():
  # None: the env does not say (it was read so before the flags were checked).
  env = FakeGymEnvReturning(("at 1", 0.0, True, {"won": None}))
  episode = run_episode(GymTextEnv(env), lambda observation: "go", 0, max_turns=3,
                        step_timeout_s=None)
  assert (episode.finish_reason, episode.error, episode.success) == ("done", None, False)


class FakeAlfredBatchEnv:
  """ALFWorld's batch env (init_env(batch_size=1)): its shapes, and TextWorld's game order
  (textworld/gym/envs/textworld_batch.py): seed(s) shuffles the games with RandomState(s),
  reset() starts the next game of that order (all of it, then reshuffled), skip(k) passes k."""

  def __init__(self, games):
    self.games = games
    self.seeds = []

  def seed(self, seed):
    self.seeds.append(seed)
    rng = np.random.RandomState(seed)
    order = list(self.games)
    rng.shuffle(order)

    def cycle():
      yield from list(order)
      while True:
        rng.shuffle(order)
        yield from list(order)

    self._games = cycle()

  def skip(self, count):
    for _ in range(count):
      next(self._games)

  def reset(self):
    self.game = next(self._games)
    return (f"You are in the {self.game}. Your task is to: put a mug on the table.",), {
        "admissible_commands": [["go to table 1", "take mug 1"]], "won": [False]}

  def step(self, actions):
    assert isinstance(actions, list) and len(actions) == 1
    won = actions[0] == "put mug 1 in/on table 1"
    return (("Nothing happens.",), (float(won),), (won,),
            {"admissible_commands": [["look"]], "won": [won]})


KITCHENS = [f"kitchen {n}" for n in range(6)]  # the stand-in split's games


@pytest.fixture
def alfworld_stand_in(tmp_path, monkeypatch):
  """A stand-in alfworld package (get_environment -> suite -> init_env -> FakeAlfredBatchEnv)
  and a config file; returns (config path, the calls it saw, the splits of the suites built)."""
  calls, suites_built = {}, []

  def get_environment(env_type):
    def build(config, train_eval):
      calls.update(env_type=env_type, config=config, split=train_eval)
      suites_built.append(train_eval)
      games = KITCHENS if config["dataset"]["data_path"] else []
      return types.SimpleNamespace(num_games=len(games),
                                   init_env=lambda batch_size: FakeAlfredBatchEnv(games))
    return build

  environment = types.ModuleType("alfworld.agents.environment")
  environment.get_environment = get_environment
  for name, module in (("alfworld", types.ModuleType("alfworld")),
                       ("alfworld.agents", types.ModuleType("alfworld.agents")),
                       ("alfworld.agents.environment", environment)):
    monkeypatch.setitem(sys.modules, name, module)
  config_path = tmp_path / "base_config.yaml"
  config_path.write_text("env:\n  type: AlfredTWEnv\ndataset:\n  data_path: json/train\n")
  return config_path, calls, suites_built


def test_alfworld_adapter_with_a_stand_in_package(alfworld_stand_in):
  config_path, calls, suites_built = alfworld_stand_in
  env = get_env("alfworld", config_path=str(config_path), split="eval_out_of_distribution",
                reply_format="command")
  assert calls == {"env_type": "AlfredTWEnv",
                   "config": {"env": {"type": "AlfredTWEnv"},
                              "dataset": {"data_path": "json/train"}},
                   "split": "eval_out_of_distribution"}
  observation = env.reset(5)
  game = re.search(r"kitchen \d", observation)[0]
  assert observation == (f"You are in the {game}. Your task is to: put a mug on the table.\n"
                         "Admissible actions: go to table 1, take mug 1")
  assert env.state_key() == f"You are in the {game}. Your task is to: put a mug on the table."
  assert env.step("look") == StepResult("Nothing happens.\nAdmissible actions: look", 0.0, False)
  assert env.step("put mug 1 in/on table 1") == StepResult(
      "Nothing happens.\nAdmissible actions: look", 10.0, True, success=True)
  # ALFWorld's suite reads every game of its split when built: once per split, not per episode.
  for _ in range(3):
    get_env("alfworld", config_path=str(config_path), split="eval_out_of_distribution")
  get_env("alfworld", config_path=str(config_path), split="train")
  assert suites_built == ["eval_out_of_distribution", "train"]


def test_alfworld_seeds_index_the_games_of_the_split(alfworld_stand_in):
  config_path = str(alfworld_stand_in[0])

  def game_of(seed):
    return re.search(r"kitchen \d", get_env("alfworld", config_path=config_path).reset(seed))[0]

  # The evaluation seeds 0..5 play each of the 6 games once (seeding TextWorld's shuffle with
  # the episode seed played 4 distinct games of 6, two of them twice); seed 6 + s plays
  # seed s's game, and the same seed always the same game.
  games = [game_of(seed) for seed in range(len(KITCHENS))]
  assert sorted(games) == KITCHENS
  assert [game_of(len(KITCHENS) + seed) for seed in (0, 3)] == [games[0], games[3]]
  assert game_of(2) == games[2]


def test_alfworld_without_games_says_where_they_come_from(alfworld_stand_in):
  config_path = alfworld_stand_in[0]
  config_path.write_text("env:\n  type: AlfredTWEnv\ndataset:\n  data_path: ''\n")
  with pytest.raises(ValueError, match=r"ALFWorld found no games of split 'train' under the "
                     r"dataset paths of .*base_config.yaml: run `alfworld-download` and set "
                     r"ALFWORLD_DATA to the folder it filled \(default ~/.cache/alfworld\)"):
    get_env("alfworld", config_path=str(config_path))


# --- ALFWorld as verl-agent plays it -------------------------------------------------------

@pytest.mark.parametrize("reply, command, valid", [
    # verl-agent's alfworld_projection: the text between the first <action> and </action>,
    # lower-cased and stripped, valid with <think> and </think> and no Chinese character.
    ("<think>the mug is there</think><action>take mug 1</action>", "take mug 1", True),
    ("<think>x</think>\n<action>  Go To Table 1 \n</action>", "go to table 1", True),
    ("<think>x</think><ACTION>Look</Action>", "look", True),
    # not an admissible command: still valid, sent as written (the game answers "Nothing
    # happens.")
    ("<think>x</think><action>fly to the moon</action>", "fly to the moon", True),
    ("<think>x</think><action>look</action><action>take mug 1</action>", "look", True),
    ("<think>x</think></action>look<action>", "", True),  # first </action> before <action>
    # no action tags: the last 30 characters are sent, lower-cased, and the reply is invalid
    ("I would like to go to the table number 1 now", "o go to the table number 1 now", False),
    ("Take Mug 1", "take mug 1", False),
    ("<think>x</think><action>look", "<think>x</think><action>look", False),
    ("", "", False),
    # tagged, but without both think tags (matched as written), or with Chinese characters
    ("<action>look</action>", "look", False),
    ("<think>x<action>look</action>", "look", False),
    ("<THINK>x</THINK><action>look</action>", "look", False),
    ("<think>看</think><action>look</action>", "look", False),
])
def test_verl_agent_projection(reply, command, valid):
  assert external.verl_agent_projection(reply) == (command, valid)


PROMPT_REQUEST = (
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process "
    "MUST be enclosed within <think> </think> tags. \n"
    "Once you've finished your reasoning, you should choose an admissible action for current "
    "step and present it within <action> </action> tags.\n")


def test_alfworld_prompts_follow_verl_agents_templates(alfworld_stand_in):
  """verl-agent's ALFWORLD_TEMPLATE_NO_HIS at the first step, then ALFWORLD_TEMPLATE with the
  last history_length (observation, command sent) pairs, oldest first, numbered from step 1."""
  env = get_env("alfworld", config_path=str(alfworld_stand_in[0]), history_length=2)
  assert (env.instructions, env.shows_past_turns) == ("", True)
  first = env.reset(4)
  start = re.search(r"You are in the kitchen \d\. Your task is to: put a mug on the table\.",
                    first)[0]
  assert first == (
      "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
      f"Your current observation is: {start}\n"
      "Your admissible actions of the current situation are: ['go to table 1'\n 'take mug 1'].\n"
      "\n" + PROMPT_REQUEST)
  assert env.state_key() == start  # the anchor state: the bare observation
  replies = ["<think>a</think><action>Look</action>", "go to table 1",
             "<think>b</think><action>take mug 1</action>"]
  prompts = [env.step(reply).observation for reply in replies]
  assert env.state_key() == "Nothing happens."

  def later(taken, pairs):
    history = "\n".join(f"[Observation {n}: '{seen}', Action {n}: '{command}']"
                        for n, seen, command in pairs)
    return ("\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task "
            "is to: put a mug on the table.\n"
            f"Prior to this step, you have already taken {taken} step(s). Below are the most "
            f"recent {len(pairs)} observations and the corresponding actions you took: "
            f"{history}\n"
            f"You are now at step {taken + 1} and your current observation is: Nothing happens.\n"
            "Your admissible actions of the current situation are: ['look'].\n\n"
            + PROMPT_REQUEST)

  assert prompts == [
      later(1, [(1, start, "look")]),
      later(2, [(1, start, "look"), (2, "Nothing happens.", "go to table 1")]),
      later(3, [(2, "Nothing happens.", "go to table 1"), (3, "Nothing happens.", "take mug 1")]),
  ]
  # history_length=0: the first step's template at every step (verl-agent's, task and all).
  env = get_env("alfworld", config_path=str(alfworld_stand_in[0]), history_length=0)
  env.reset(4)
  assert not env.shows_past_turns
  assert env.step(replies[0]).observation == (
      "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
      "Your current observation is: Nothing happens.\n"
      "Your admissible actions of the current situation are: ['look'].\n\n" + PROMPT_REQUEST)


def test_alfworld_sends_the_projected_command_and_penalises_invalid_replies(alfworld_stand_in):
  config_path = str(alfworld_stand_in[0])
  sent = []

  def play(reply, **options):
    env = get_env("alfworld", config_path=config_path, **options)
    env.reset(0)
    real_step = env.env.batch_env.step
    env.env.batch_env.step = lambda actions: sent.append(actions) or real_step(actions)
    result = env.step(reply)
    return result.reward, result.done, result.valid, result.penalty

  win = "put mug 1 in/on table 1"
  assert play(f"<think>done</think><action>{win}</action>") == (10.0, True, True, 0.0)
  # A bare command (30 characters or fewer) reaches the game as it is, and is penalised: the
  # penalty is apart from the game's reward (GiGPO takes it from this step alone).
  assert play(win.upper()) == (10.0, True, False, 0.1)
  assert play("<think>x</think><action>look</action>") == (0.0, False, True, 0.0)
  assert play("look around") == (0.0, False, False, 0.1)
  assert play("look around", invalid_action_penalty=0.5) == (0.0, False, False, 0.5)
  assert play("look around", invalid_action_penalty=0) == (0.0, False, False, 0.0)
  # The old format: the reply is the command, its validity unjudged.
  assert play("look around", reply_format="command") == (0.0, False, None, 0.0)
  assert sent == [[win], [win], ["look"], ["look around"], ["look around"], ["look around"],
                  ["look around"]]


@pytest.mark.parametrize("options, message", [
    ({"reply_format": "tags"}, r"alfworld reply_format='tags': choose one of \['verl-agent', "
     r"'command'\]"),
    ({"history_length": -1}, r"alfworld history_length=-1: past turns shown, an integer >= 0"),
    ({"history_length": 2.0}, r"environment 'alfworld': option 'history_length' takes int, got "
     r"2.0 \(float\)"),
    ({"invalid_action_penalty": -0.1}, r"alfworld invalid_action_penalty=-0.1: the reward an "
     r"invalid reply loses, a number >= 0"),
    ({"invalid_action_penalty": math.nan}, r"alfworld invalid_action_penalty=nan"),
    # A string raised TypeError from math.isfinite; True made each invalid reply an env error.
    ({"invalid_action_penalty": "0.1"}, r"environment 'alfworld': option "
     r"'invalid_action_penalty' takes float, got '0.1' \(str\)"),
    ({"invalid_action_penalty": True}, r"environment 'alfworld': option "
     r"'invalid_action_penalty' takes float, got True \(bool\)"),
])
def test_bad_alfworld_options_are_named_before_alfworld_is_imported(options, message):
  with pytest.raises(ValueError, match=message):
    get_env("alfworld", config_path="base_config.yaml", **options)


def test_a_first_observation_without_a_task_is_named():
  with pytest.raises(ValueError, match=r"^ALFWorld's first observation states no task \('Your "
                     r"task is to: '\): 'You are in a room\.'$"):
    external.verl_agent_prompt("Nothing happens.", {}, [("You are in a room.", "look")],
                               history_length=2)
