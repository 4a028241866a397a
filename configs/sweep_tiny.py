"""The default layer-contribution sweep: the shipped 8-block tiny model on `arithmetic`.

    jaxlayer sweep --config configs/sweep_tiny.py
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.layers=0,3,7 --config.sweep.seeds=3
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.groups=adjacent  # pairs k, k+1
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.halving_steps=15,30  # cheaper
    jaxlayer sweep --config configs/sweep_tiny.py --config.sweep.launcher=ray  # runs as Ray tasks

Training keys and their defaults: jaxlayer/rl/config.py (train.layers, seed and run_dir are
set by the sweep for each run). A sweep directory refuses a config whose settings differ
from the ones it was started with (see sweep.force_new_dir); mesh, checkpoint, logging,
train.micro_batch_size and train.remat may change.
"""

from jaxlayer import assets
from jaxlayer.evaluation import default_eval_config
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

  config.eval = default_eval_config()  # every key and default: jaxlayer/evaluation.py
  config.eval.num_problems = 1000  # the whole test split, the same for every run
  config.eval.max_new_tokens = 8  # greedy pass@1 (the default metric) of 8-token answers
  config.eval.batch_size = 250

  config.sweep = default_sweep_config()  # every key and default: jaxlayer/sweep/runner.py
  config.sweep.dir = "runs/sweep_tiny"
  return config
