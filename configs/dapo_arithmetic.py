"""DAPO on generated arithmetic: clip-higher (0.2 / 0.28), token-mean loss, dynamic sampling
(groups whose answers are all right or all wrong are replaced by new prompts, up to 4 rollout
rounds), soft overlong penalty over the last 20% of rollout.max_new_tokens, no KL. Same task
and sizes as configs/grpo_arithmetic.py.

    jaxlayer train --config configs/dapo_arithmetic.py --config.model.path=DIR \
        --config.run_dir=runs/arith_dapo
"""

from jaxlayer.rl.config import default_config


def get_config():
  config = default_config()
  config.task.name = "arithmetic"
  config.task.options.max_value = 99
  config.task.options.reward_weights = {"correct": 1.0, "format": 0.1}
  config.train.algorithm = "dapo"
  config.train.steps = 200
  config.train.learning_rate = 1e-5
  config.train.group_size = 8
  config.train.batch_size = 64
  config.train.dynamic_sampling_max_rounds = 4
  config.rollout.max_new_tokens = 8
  config.rollout.max_prompt_tokens = 32
  config.checkpoint.every = 25
  return config
