"""The paper's Dr. GRPO setting: Qwen2.5-Math-1.5B (28 blocks) on MATH, one block (L14, its best).

The paper reports base 21.2, full RL 36.1, block 14 36.3 (C = 1.01), block 23 weak (C = 0.42),
but our transcription of it gives no hyperparameters for this setting. Where it is silent, the
values are those of Dr. GRPO's own code (Liu et al. 2025, sail-sg/understand-r1-zero,
examples/qwen2.5-math-1.5b.sh, run with oat), read from its source:
  - lr 1e-6, constant; AdamW with oat's betas (0.9, 0.95), no weight decay, gradients clipped
    to norm 1; clip 0.2; no KL (beta 0); one PPO epoch;
  - 128 prompts per step, 8 samples each, temperature 1.0 (top-p 1);
  - 128 responses per optimizer update (oat's train_batch_size: its learner accumulates
    gradients over 128 responses, so a step of 1,024 responses makes 8 updates);
  - responses up to 3,000 tokens (generate_max_length), which is also Dr. GRPO's constant
    loss normaliser (masked_sum / generate_max_length): rollout.max_new_tokens here;
  - prompts up to 1,024 tokens; the "Qwen-Math" template below (oat's qwen_math, written out
    as text: a system turn asking for \\boxed{}, the question as the user turn);
  - advantage R - mean R over the group, without the std (the dr_grpo preset).
Training data: MATH's train split, levels 3 to 5, as Dr. GRPO's paper trains (its 1.5B example
script reads math_12k, MATH's 12K problems outside MATH-500, instead); the paper says "MATH".
Not checked: which MATH problems and how many steps the paper trained (200 here), its
evaluation (scored here as the Qwen3 config scores: MATH-500, GSM8K, OlympiadBench, AMC;
Dr. GRPO's paper averages AIME24, AMC, MATH500, Minerva and OlympiadBench, and jaxlayer has no
AIME or Minerva task). Differs from oat: a truncated response is graded like any other (oat
scores it 0), and the old log-probs are the sampler's (oat recomputes them with the learner).
The data files: docs/reproduce_paper.md, "Dr. GRPO on Qwen2.5-Math-1.5B".

    jaxlayer train --config configs/paper_qwen2p5_math_1p5b_dr_grpo.py --config.run_dir=runs/qm_l14
    jaxlayer sweep --config configs/paper_qwen2p5_math_1p5b_dr_grpo.py  # base, full, 28 blocks
"""

from jaxlayer.evaluation import default_eval_config
from jaxlayer.rl.config import default_config
from jaxlayer.sweep.runner import default_sweep_config

# oat's qwen_math template (understand-r1-zero's train_zero_math.py), braces of \boxed{}
# doubled for str.format.
QWEN_MATH_TEMPLATE = ("<|im_start|>system\nPlease reason step by step, and put your final "
                      "answer within \\boxed{{}}.<|im_end|>\n<|im_start|>user\n{question}"
                      "<|im_end|>\n<|im_start|>assistant\n")


def get_config():
  config = default_config()
  config.model.path = "Qwen/Qwen2.5-Math-1.5B"
  config.model.dtype = "float32"  # float32 parameters, as the Qwen3 config (and oat's ZeRO-2)
  config.task.name = "math"
  config.task.template = QWEN_MATH_TEMPLATE
  # MATH's train split, levels 3-5 (records with a worked solution ending in \boxed{}), and
  # MATH-500 as the test file.
  config.task.options.data_files = {"train": "data/math_train_lvl3to5.jsonl",
                                    "test": "data/math500.jsonl"}
  config.task.options.answer_field = "solution"
  config.task.options.boxed_answer = True
  config.train.layers = "layers.14"
  config.train.algorithm = "dr_grpo"
  config.train.kl_beta = 0.0
  config.train.clip_eps_low = 0.2
  config.train.clip_eps_high = 0.2
  config.train.learning_rate = 1e-6
  config.train.adam_b2 = 0.95  # oat's adam_beta_2 (jaxlayer's default: 0.999)
  config.train.group_size = 8
  config.train.batch_size = 128 * 8
  config.train.mini_batch_size = 128
  config.train.ppo_epochs = 1
  config.train.steps = 200
  config.rollout.max_new_tokens = 3000
  config.rollout.temperature = 1.0
  config.rollout.max_prompt_tokens = 1024  # + 3,000 within the model's 4,096 positions
  # Memory, not the experiment (as configs/paper_qwen3_grpo.py): 16 prompts a generate
  # call, micro-batches of 8 responses, recomputed activations. None changes the results.
  config.rollout.prompts_per_call = 16
  config.train.micro_batch_size = 8
  config.train.remat = True
  config.checkpoint.every = 10

  # Scored as configs/paper_qwen3_grpo.py scores: MATH-500, GSM8K and OlympiadBench
  # (greedy pass@1, as oat's eval_temperature 0) and AMC 2023 (mean of 32 samples), every
  # problem of each, responses up to rollout.max_new_tokens (oat's eval_generate_max_length
  # is 3,000 too).
  config.eval = default_eval_config()
  config.eval.tasks = "math,gsm8k,olympiadbench,amc:mean@32"
  config.eval.num_problems = 0
  # (math is the training task: its test file is task.options' MATH-500, graded by the boxed
  # answer of each solution, as the training problems are.)
  config.eval.task_options = {
      "gsm8k": {"data_files": {"test": "data/gsm8k_test.jsonl"}},
      "olympiadbench": {"data_files": {"test": "data/olympiadbench.jsonl"}},
      "amc": {"data_files": {"test": "data/amc23.jsonl"}}}
  config.sweep = default_sweep_config()
  config.sweep.dir = "runs/sweep_qwen2p5_math_1p5b"
  return config
