"""The default layer-contribution sweep: the shipped 8-block tiny model on `arithmetic`.

    jaxlayer sweep --config configs/sweep_tiny.py
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.layers=0,3,7 --config.sweep.seeds=3
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.launcher=ray  # runs as Ray tasks

Training keys and their defaults: jaxlayer/rl/config.py (train.layers, seed and run_dir are
set by the sweep for each run). A sweep directory refuses a config whose settings differ
from the ones it was started with (see sweep.force_new_dir); mesh, checkpoint and logging
may change.
"""

from ml_collections import config_dict

from jaxlayer import assets
from jaxlayer.rl.config import default_config
from jaxlayer.sweep.runner import default_sweep_config


def get_config():
  config = default_config()
  config.model.path = assets.TINY_ARITH  # a Hugging Face checkpoint directory or hub id

  config.task.name = "arithmetic"
  config.task.options.max_value = 99
  config.task.options.reward_weights = {"correct": 1.0, "format": 0.1}
  config.train.algorithm = "grpo"
  config.train.steps = 60
  config.train.learning_rate = 3e-5
  config.train.group_size = 8
  config.train.batch_size = 64
  config.rollout.max_new_tokens = 8
  config.rollout.max_prompt_tokens = 32
  config.checkpoint.every = 10
  config.logging.tensorboard = False

  config.eval = config_dict.ConfigDict()  # every key and default: jaxlayer/evaluation.py
  config.eval.num_problems = 1000  # the whole test split, the same for every run
  config.eval.metric = "pass@1"  # the score: "pass@1" (greedy) or "mean@k" (num_samples samples)
  config.eval.num_samples = 0  # k of mean@k (0: greedy pass@1 only)
  config.eval.temperature = 0.0  # of mean@k's samples (> 0 for mean@k; pass@1 is always greedy)
  config.eval.top_p = 1.0
  config.eval.max_new_tokens = 8
  config.eval.batch_size = 250  # prompts per generate call

  config.sweep = default_sweep_config()  # every key and default: jaxlayer/sweep/runner.py
  config.sweep.dir = "runs/sweep_tiny"
  return config
