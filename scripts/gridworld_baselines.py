"""Success rates of scripted policies on the grid world, and how often GiGPO anchor states recur.

The numbers a trained model is measured against: an untrained model sits near "always
invalid" or "random moves"; "shortest path" is the ceiling.

  PYTHONPATH=. python scripts/gridworld_baselines.py --size 3 --max_turns 6 --episodes 2000
"""

import argparse
import random

import numpy as np

from jaxlayer.envs import GridWorld, run_episode, summarize
from jaxlayer.rl.gigpo import gigpo_advantages

MOVES = ["north", "south", "east", "west"]


def shortest_path(observation: str) -> str:
  words = observation.split()
  x, y = map(int, words[words.index("pos") + 1].split(","))
  goal_x, goal_y = map(int, words[words.index("goal") + 1].split(","))
  if x != goal_x:
    return "east" if goal_x > x else "west"
  return "north" if goal_y > y else "south"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=3)
  parser.add_argument("--max_turns", type=int, default=6)
  parser.add_argument("--max_goal_distance", type=int, default=2)
  parser.add_argument("--episodes", type=int, default=2000)
  parser.add_argument("--group_size", type=int, default=8)
  args = parser.parse_args()
  rng = random.Random(0)

  def make():
    return GridWorld(args.size, args.max_turns, args.max_goal_distance)

  policies = {"always invalid": lambda _: "?", "random moves": lambda _: rng.choice(MOVES),
              "shortest path": shortest_path}
  for name, policy in policies.items():
    metrics = summarize([run_episode(make(), policy, seed, max_turns=args.max_turns)
                         for seed in range(args.episodes)])
    print(f"{name:>15}: success {metrics['success_rate']:.3f}, return "
          f"{metrics['mean_return']:+.3f}, turns {metrics['mean_turns']:.2f}")

  shared, sizes = [], []
  for seed in range(args.episodes // args.group_size):
    group = [run_episode(make(), policies["random moves"], seed, max_turns=args.max_turns)
             for _ in range(args.group_size)]
    result = gigpo_advantages([episode.gigpo_steps for episode in group])
    steps = sum(result.anchor_group_sizes)
    shared.append(sum(n for n in result.anchor_group_sizes if n > 1) / steps)
    sizes.append(steps / len(result.anchor_group_sizes))
  print(f"groups of {args.group_size} random-move trajectories: mean anchor group size "
        f"{np.mean(sizes):.2f}, steps in a shared anchor state {np.mean(shared):.1%}")


if __name__ == "__main__":
  main()
