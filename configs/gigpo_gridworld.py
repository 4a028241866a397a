"""GiGPO on the built-in grid world (jaxlayer.envs.GridWorld): a multi-turn agent run on CPU.

The agent reads "pos x,y goal gx,gy" and replies north, south, east or west; reaching the
goal pays 1, an unparseable reply costs 0.1. Each RL step plays 8 seeds x 8 episodes of up
to 4 turns; GiGPO's step advantages compare actions taken in the same cell across a group.

    jaxlayer train --config configs/gigpo_gridworld.py --config.run_dir=runs/grid_full
    jaxlayer train --config configs/gigpo_gridworld.py --config.run_dir=runs/grid_l4 \
        --config.train.layers=layers.4
    jaxlayer eval --config configs/gigpo_gridworld.py --model runs/grid_full
    jaxlayer sweep --config configs/gigpo_gridworld.py

Evaluation (and the sweep's score) is the success rate of greedy episodes on the fixed seeds
0..env.num_eval_episodes-1, reported as pass@1. Every key: jaxlayer/rl/config.py.

Measured on the shipped tiny model (full RL, 100 steps, 2-core CPU, ~4-6 s per step): greedy
success 0.000 -> 0.225, sampled (mean@4 at temperature 1) 0.001 -> 0.303; moving at random
scores 0.32 (scripts/gridworld_baselines.py --size 3 --max_turns 4), the shortest path 1.0.
"""

from jaxlayer import assets
from jaxlayer.evaluation import default_eval_config
from jaxlayer.rl.config import default_config
from jaxlayer.sweep.runner import default_sweep_config


def get_config():
  config = default_config()
  config.model.path = assets.TINY_ARITH  # 64 positions: keep contexts short

  config.env.name = "gridworld"
  config.env.options.size = 3
  config.env.options.max_goal_distance = 2
  config.env.options.max_turns = 4
  config.env.max_turns = 4
  config.env.history = 0  # the observation holds the whole state
  # Right-aligned to 31 characters: every context has the same length (32 tokens), so the
  # sampler and the update compile once for all turns and steps.
  config.env.template = "{observation:>31}\n"
  config.env.step_timeout_s = None  # the grid world cannot hang: no worker threads
  config.env.num_eval_episodes = 200

  config.train.algorithm = "gigpo"
  config.train.gigpo_gamma = 0.95
  config.train.gigpo_omega = 1.0
  config.train.gigpo_normalize = "std"
  config.train.steps = 100
  config.train.learning_rate = 1e-3
  config.train.group_size = 8
  config.train.batch_size = 64  # episodes per step: 8 seeds x 8
  config.rollout.max_new_tokens = 6
  config.rollout.max_prompt_tokens = 40
  config.checkpoint.every = 25
  config.logging.tensorboard = False

  config.eval = default_eval_config()  # every key and default: jaxlayer/evaluation.py
  config.eval.metric = "pass@1"  # greedy success rate over env.num_eval_episodes seeds
  config.eval.num_samples = 0
  config.eval.temperature = 0.0
  config.eval.batch_size = 200  # episodes played together

  config.sweep = default_sweep_config()  # every key and default: jaxlayer/sweep/runner.py
  config.sweep.dir = "runs/sweep_gigpo_gridworld"
  return config
