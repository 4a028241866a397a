"""Every training setting with its default: the one place `configs/*.py` start from.

A config file returns `default_config()` with some values changed; the command line
overrides any key: `jaxlayer train --config configs/grpo_arithmetic.py --config.train.layers=mid5`.
Keys whose default is None (placeholders) take the algorithm preset's value
(`jaxlayer.rl.algorithms.ALGORITHMS`) or are required (`model.path`, `run_dir`).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from jaxlayer.text import closest

# Keys that may change when a run resumes from its run directory; any other difference means
# a different experiment, which must not be mixed into the same checkpoints.
# (train.micro_batch_size and train.remat only change how an update's gradient is computed,
# and rollout.prompts_per_call and rollout.replicate_params how the same samples are batched
# and placed: change them to resume a run that ran out of memory.)
RESUMABLE_KEYS = ("train.steps", "train.micro_batch_size", "train.remat",
                  "rollout.prompts_per_call", "rollout.replicate_params", "run_dir",
                  "compilation_cache_dir",
                  "checkpoint.every",
                  "checkpoint.keep",
                  "logging.tensorboard", "logging.samples_per_step", "logging.progress",
                  "logging.eval_every",
                  "mesh.data", "mesh.fsdp", "mesh.tensor", "mesh.num_devices")
# ... and every key of these sections: the eval section and env.eval_options set how
# logging.eval_every scores the model, which training never reads.
RESUMABLE_SECTIONS = ("eval", "env.eval_options")
# Keys with a value by default that take None too (their comment says what it means): as for
# the keys whose default is None, `--config.KEY=None` on the command line sets it.
NONE_TAKING_KEYS = ("env.step_timeout_s",)
# Sections that code other than training reads, and checks: the eval section
# (jaxlayer.evaluation.eval_settings) and the sweep section (jaxlayer.sweep.run_sweep).
CHECKED_ELSEWHERE = ("eval", "sweep")


def require_config(config, sections: tuple[str, ...], example: str) -> None:
  """Raises a one-line error naming the fix when `config` is not an ml_collections ConfigDict
  with these sections (a dict, None, or a training config given to the sweep)."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"config must be an ml_collections ConfigDict, such as {example}, got "
                    f"{type(config).__name__}.")
  missing = [name for name in sections if name not in config]
  if missing:
    raise ValueError(f"config has no {' or '.join(missing)} section: start from {example}.")
  known = default_config()
  with known.unlocked():
    for name in CHECKED_ELSEWHERE:  # (a section without keys: its keys are not checked here)
      known[name] = ml_collections.ConfigDict()
  check_known_keys(config, known)


def check_known_keys(config, defaults, section: str = "") -> None:
  """Raises a ValueError naming the first key of `config` that `defaults` lacks, and the known
  key closest to it: a key misspelt in a config file (`config.train.layer = "layers.3"`) or put
  in the wrong section (`config.eval_every = 5`) was added to the config and read by nothing,
  and the run trained every block. The keys of a section that has none by default
  (task.options, eval.task_options, ...) are its reader's to check. section: the dotted name of
  `config` in the whole config ("" for the whole config)."""
  prefix = f"{section}." if section else ""
  for key in config.keys():
    if key not in defaults:
      guess = closest(key, _dotted_keys(defaults))
      raise ValueError(f"config key {prefix}{key} is no jaxlayer setting (nothing would read it)"
                       + (f"; did you mean {prefix}{guess}?" if guess else ".")
                       + " Every key and its default: docs/configuration.md.")
    default = defaults[key]
    if hasattr(default, "keys") and default.keys() and hasattr(config[key], "keys"):
      check_known_keys(config[key], default, prefix + key)


def _dotted_keys(section) -> list[str]:
  """Every key of `section` and of its sections, dotted ("train", "train.layers", ...)."""
  return [dotted for key in section.keys() for dotted in (key, *(
      f"{key}.{inner}" for inner in (_dotted_keys(section[key])
                                     if hasattr(section[key], "keys") else ())))]


def default_config() -> ml_collections.ConfigDict:
  """Every training key with its default (docs/configuration.md), for `jaxlayer.rl.train.train`;
  model.path and run_dir must be set. A key takes a value of its type: `config.run_dir =
  str(path)`, not a pathlib.Path."""
  config = ml_collections.ConfigDict()
  config.run_dir = config_dict.placeholder(str)  # required: checkpoints, metrics, config copy
  config.seed = 0  # data order, sampling and mini-batch shuffling (>= 0)
  # Persistent XLA compilation cache (jax_compilation_cache_dir): runs with the same shapes
  # (a sweep's runs, a resumed run) reuse compiled code across processes. None: JAX's setting.
  config.compilation_cache_dir = config_dict.placeholder(str)

  config.model = ml_collections.ConfigDict()
  config.model.path = config_dict.placeholder(str)  # required: HF directory or hub id
  # "float32" or "bfloat16": the frozen weights and the computation (the trained leaves and
  # their optimizer state are float32 either way: rl.step.MASTER_DTYPE). `jaxlayer eval` of a
  # Hugging Face directory also takes "auto": the checkpoint's own dtype.
  config.model.dtype = "float32"

  config.task = ml_collections.ConfigDict()
  config.task.name = "arithmetic"  # a key of jaxlayer.tasks.TASKS
  config.task.options = ml_collections.ConfigDict()  # keyword arguments of the task
  config.task.template = "{question}"  # prompt template (jaxlayer.tasks.format_prompt)
  config.task.use_chat_template = False  # wrap the prompt in the tokenizer's chat template
  config.task.system_prompt = config_dict.placeholder(str)  # chat template's system message
  # Variables the chat template reads, e.g. {"enable_thinking": False} for Qwen3 (set in the
  # config file, or on the command line as a Python dict:
  # --config.task.chat_template_kwargs='{"enable_thinking": False}'; there
  # --config.task.chat_template_kwargs.KEY=... changes a key the file set).
  config.task.chat_template_kwargs = ml_collections.ConfigDict()

  # A multi-turn environment (jaxlayer.envs) instead of a task: set env.name (and
  # train.algorithm="gigpo"); the task section is then unused.
  config.env = ml_collections.ConfigDict()
  config.env.name = config_dict.placeholder(str)  # a key of jaxlayer.envs.ENVS
  config.env.options = ml_collections.ConfigDict()  # keyword arguments of the environment
  # Options that evaluation (`jaxlayer eval`, the sweep's scoring, logging.eval_every) sets over
  # env.options, e.g. {"split": "eval_in_distribution"}: training plays env.options alone (a
  # run may resume with other eval_options; a sweep may not).
  config.env.eval_options = ml_collections.ConfigDict()
  config.env.max_turns = 10  # actions per episode (the environment may end it sooner)
  config.env.history = 0  # past (observation, action) turns shown in the context
  # Context text, fields {instructions} {history} {observation}; rollout.max_prompt_tokens
  # caps its length (the oldest tokens go).
  config.env.template = "{instructions}\n{history}{observation}\n"
  config.env.use_chat_template = False  # the tokenizer's chat template instead of the template
  # Variables that chat template reads, as task.chat_template_kwargs (set in the config file).
  config.env.chat_template_kwargs = ml_collections.ConfigDict()
  config.env.step_timeout_s = 60.0  # an env call running longer ends its episode (None: no limit)
  config.env.num_eval_episodes = 100  # evaluation: greedy episodes on the fixed seeds 0..N-1

  config.train = ml_collections.ConfigDict()
  config.train.layers = "all"  # selection grammar: jaxlayer.rl.selection
  config.train.lr_groups = ""  # per-group rates "SELECTION=LR;SELECTION=LR" inside layers
  config.train.algorithm = "grpo"  # grpo | dr_grpo | dapo | gigpo (jaxlayer.rl.algorithms)
  config.train.steps = 100  # RL steps (rollout batch + updates)
  config.train.learning_rate = 5e-6  # AdamW peak rate (the paper's)
  # constant | cosine (to 0 at the last step, so a resumed cosine run keeps its train.steps)
  config.train.lr_schedule = "constant"
  config.train.warmup_steps = 0  # linear warm-up, in RL steps
  config.train.weight_decay = 0.0  # AdamW decoupled weight decay (trainable leaves only)
  config.train.adam_b1 = 0.9  # AdamW first-moment decay
  config.train.adam_b2 = 0.999  # AdamW second-moment decay
  config.train.adam_eps = 1e-8  # AdamW denominator epsilon
  config.train.max_grad_norm = 1.0  # global-norm clipping over trainable leaves (0: off)
  # With an environment, a "response" below is an episode: group_size episodes per seed,
  # batch_size episodes per RL step; an update takes the turns of mini_batch_size episodes.
  config.train.group_size = 8  # responses per prompt (G >= 2)
  config.train.batch_size = 64  # responses per RL step (a multiple of group_size)
  # Responses per update (None: the batch); a multiple of group_size takes whole groups.
  config.train.mini_batch_size = config_dict.placeholder(int)
  # Responses per forward / backward pass: an update accumulates the gradient over
  # mini_batch_size / micro_batch_size passes (None: one pass). Bounds activation memory only.
  config.train.micro_batch_size = config_dict.placeholder(int)
  # Recompute each block's activations (and the output projection's) in the backward pass
  # instead of storing them: the update keeps one block's activations instead of all of them,
  # for ~1/3 more compute.
  config.train.remat = False
  config.train.ppo_epochs = 1  # passes over the rollout batch per RL step
  config.train.advantage_eps = 1e-6  # added to the group std (GRPO, DAPO; GiGPO with "std")
  config.train.dynamic_sampling_max_rounds = 4  # rollout rounds to fill a DAPO batch
  # GiGPO (jaxlayer.rl.gigpo): A = A_episode + omega * A_step.
  config.train.gigpo_gamma = 0.95  # discount of the step returns that anchor groups compare
  config.train.gigpo_omega = 1.0  # weight of the step advantage
  config.train.gigpo_normalize = "std"  # "std": divide by the group's std; "none": mean only
  # Algorithm overrides (None: the preset's value).
  config.train.clip_eps_low = config_dict.placeholder(float)
  config.train.clip_eps_high = config_dict.placeholder(float)
  config.train.kl_beta = config_dict.placeholder(float)  # KL(k3) weight; 0 keeps no reference
  config.train.aggregation = config_dict.placeholder(str)  # a key of losses.AGGREGATIONS
  config.train.dynamic_sampling = config_dict.placeholder(bool)
  config.train.overlong_filtering = config_dict.placeholder(bool)
  config.train.overlong_buffer_fraction = config_dict.placeholder(float)

  config.rollout = ml_collections.ConfigDict()
  config.rollout.max_new_tokens = 64  # response length limit (tokens)
  config.rollout.temperature = 1.0  # sampling temperature of the rollouts (> 0)
  # Longer training prompts are skipped (env: the context is cut); with max_new_tokens at most
  # the model's max_position_embeddings (with YaRN: original_max_position_embeddings x factor).
  config.rollout.max_prompt_tokens = 1024
  # Prompts sampled per generate call (env: seeds, each with group_size episodes); 0 (or more
  # than a step's): a whole step's at once. The KV cache holds prompts_per_call * group_size
  # rows of prompt + response tokens; the samples are the same whatever the value.
  config.rollout.prompts_per_call = 0
  # Gather the parameters onto every device for the rollout, so that each device decodes its
  # rows in its own loop instead of the mesh running one loop with collectives at every token
  # (on 2 CPU devices with mesh.fsdp=2 the 0.85M model's rollout took a quarter of the time).
  # Holds a full copy of the model per device while sampling; the samples are the same.
  # Evaluation follows it unless eval.replicate_params is set.
  config.rollout.replicate_params = False

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = 1  # mesh axis sizes (one may be -1: the remaining devices)
  config.mesh.fsdp = -1  # parameters and batch split over this axis (-1: the rest)
  config.mesh.tensor = 1  # tensor parallelism: heads and MLP columns split
  config.mesh.num_devices = 0  # use the first N devices (0: all; on a CPU: makes N devices)

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every = 10  # RL steps between checkpoints (the last step always saves)
  config.checkpoint.keep = 3  # newest checkpoints kept

  config.logging = ml_collections.ConfigDict()
  config.logging.tensorboard = True  # event files in RUN_DIR/tensorboard
  config.logging.samples_per_step = 2  # completions written to RUN_DIR/samples.jsonl
  config.logging.progress = True  # tqdm progress bar
  # Score the model as trained so far on the test problems every N RL steps and at the end
  # (0: never), with the eval section's settings (jaxlayer.evaluation; the defaults when the
  # config has none), logged as eval/TASK/METRIC beside the step's metrics (and eval/score, the
  # mean over several eval.tasks). Training is unchanged by it.
  config.logging.eval_every = 0
  return config
