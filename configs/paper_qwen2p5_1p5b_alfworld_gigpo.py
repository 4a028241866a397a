"""The paper's GiGPO setting: Qwen2.5-1.5B-Instruct on ALFWorld, one block (L14, its best).

The values are those of verl-agent's examples/gigpo_trainer/run_alfworld.sh (GiGPO's reference
code; the paper's own were not checked against them): 16 games x 8 episodes per step, up to
50 turns each, lr 1e-6, KL 0.01 (k3, verl-agent's low_var_kl), gamma 0.95, omega 1, std
normalisation, 150 steps, prompts up to 2,048 tokens and replies up to 512. The agent talks
as in verl-agent: one user turn of verl-agent's prompt (the task, the last 2 observations and
commands, the current observation, the admissible commands), a reply that reasons in <think>
and names its command in <action>; an invalid reply costs 0.1. Needs ALFWorld, its games and
its base_config.yaml (docs/reproduce_paper.md, "GiGPO on ALFWorld"), and 8 devices of 80 GB
for one block (`jaxlayer memory`: 51 GB per device; full RL 82 GB, more than an H100 holds).

    jaxlayer train --config configs/paper_qwen2p5_1p5b_alfworld_gigpo.py \
        --config.run_dir=runs/alf_l14
    jaxlayer eval --config configs/paper_qwen2p5_1p5b_alfworld_gigpo.py --model runs/alf_l14
    jaxlayer sweep --config configs/paper_qwen2p5_1p5b_alfworld_gigpo.py  # base, full, 28 blocks

Training plays the train split's games; evaluation (`jaxlayer eval`, the sweep's scoring,
logging.eval_every) plays valid_seen's (env.eval_options: split=eval_in_distribution).
"""

from jaxlayer.evaluation import default_eval_config
from jaxlayer.rl.config import default_config
from jaxlayer.sweep.runner import default_sweep_config


def get_config():
  config = default_config()
  config.model.path = "Qwen/Qwen2.5-1.5B-Instruct"
  config.train.layers = "layers.14"  # "all": full-parameter RL

  config.env.name = "alfworld"
  config.env.options.config_path = "base_config.yaml"  # ALFWorld's (docs/reproduce_paper.md)
  config.env.options.split = "train"
  config.env.options.success_reward = 10.0
  config.env.options.reply_format = "verl-agent"  # "command": the reply is the command
  config.env.options.history_length = 2  # the prompt shows the last 2 observations and commands
  config.env.options.invalid_action_penalty = 0.1
  config.env.history = 0  # the environment's prompt already shows the past turns
  config.env.use_chat_template = True  # one user turn: verl-agent's prompt
  config.env.max_turns = 50
  # Evaluation plays valid_seen's 140 games, each once (valid_unseen: eval_out_of_distribution,
  # 134 games).
  config.env.eval_options.split = "eval_in_distribution"
  config.env.num_eval_episodes = 140

  config.train.algorithm = "gigpo"
  config.train.gigpo_gamma = 0.95
  config.train.gigpo_omega = 1.0
  config.train.gigpo_normalize = "std"
  config.train.learning_rate = 1e-6
  config.train.kl_beta = 0.01
  config.train.group_size = 8
  config.train.batch_size = 16 * 8  # episodes per step: 16 games x 8
  config.train.steps = 150  # verl-agent's 150 epochs of one 16-game batch
  config.rollout.max_prompt_tokens = 2048
  config.rollout.max_new_tokens = 512
  # Memory, not the experiment (as configs/paper_qwen3_grpo.py): an update's 128 episodes are
  # up to 6,400 turns of 2,560 tokens, whose activations in one pass would take ~7,600 GB per
  # device on 8 devices. Accumulated over micro-batches of 8 episodes (400 turns) with
  # recomputed activations, `jaxlayer memory` on 8 devices gives 51 GB per device for one
  # block, 82 GB for full RL. Neither changes the results.
  config.train.micro_batch_size = 8
  config.train.remat = True

  config.eval = default_eval_config()  # greedy pass@1 (verl-agent samples at 0.4)
  config.sweep = default_sweep_config()
  config.sweep.dir = "runs/sweep_qwen2p5_1p5b_alfworld"
  return config
