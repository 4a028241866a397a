"""GRPO on generated two-number arithmetic ("37+45=" -> "82"): a quick, CPU-sized run.

    jaxlayer train --config configs/grpo_arithmetic.py --config.model.path=DIR \
        --config.run_dir=runs/arith_l1 --config.train.layers=layers.1

Every key and its default: jaxlayer/rl/config.py.
"""

from jaxlayer.rl.config import default_config


def get_config():
  config = default_config()
  config.task.name = "arithmetic"
  config.task.options.max_value = 99
  config.task.options.reward_weights = {"correct": 1.0, "format": 0.1}
  config.train.algorithm = "grpo"
  config.train.steps = 200
  config.train.learning_rate = 1e-5
  config.train.group_size = 8
  config.train.batch_size = 64
  config.rollout.max_new_tokens = 8
  config.rollout.max_prompt_tokens = 32
  config.checkpoint.every = 25
  return config
