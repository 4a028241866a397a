"""Seconds per GRPO step (rollout + reward + update): jaxlayer against TRL's GRPOTrainer, one run.

Both sides train the same random Qwen2 checkpoint (benchmarks/rollout.py's ~0.85M and ~28M
configs, written by transformers, with a byte-level tokenizer of the model's vocabulary) on
the `arithmetic` task's prompts with its reward, float32 on the CPU: 4 prompts x G=8
responses of exactly 64 new tokens per step (no end-of-sequence stop: TRL generates with
min_new_tokens=64, jaxlayer with no stop tokens), GRPO loss (sequence-mean-token-mean,
clip 0.2), no KL, one update per step, AdamW. TRL runs with bf16=False, use_vllm=False and
activation (gradient) checkpointing off, its fastest CPU setting. Each side's first steps
are warm-up (jaxlayer's compile time is reported on its own); the median of the following
steps is compared. jaxlayer trains all parameters (as TRL does) and, beside it, the single
middle block, on 1 device and again on one CPU device per core (--devices): a data-parallel
mesh whose devices each hold the model and take a share of the rollouts and of the update's
rows. The last columns give the least time this machine's matmuls allow for the
full-parameter step, timed in the same run (benchmarks/ceiling.py), and TRL's time over it:
the largest speed-up any implementation built on XLA:CPU's matmuls could reach.

    python benchmarks/grpo_vs_trl.py            # 0.85M and 28M (a few minutes on 2 cores)
    python benchmarks/grpo_vs_trl.py --quick    # 0.85M only, few steps (smoke run)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jaxlayer import models  # noqa: E402
from jaxlayer.rl import train  # noqa: E402
from jaxlayer.rl.config import default_config  # noqa: E402
from jaxlayer.tasks import Problem, get_task  # noqa: E402
import ceiling  # noqa: E402
from rollout import CONFIGS, device_counts_of, make_checkpoint, print_table_header  # noqa: E402

PROMPTS, GROUP, NEW_TOKENS = 4, 8, 64
TASK_OPTIONS = dict(num_train=512, num_test=16)


def save_tokenizer(directory: Path, vocab_size: int) -> None:
  """Byte-level BPE with exactly `vocab_size` entries (bytes, pair merges, end-of-text last)."""
  from tokenizers import Tokenizer, decoders, models as tokenizer_models, pre_tokenizers

  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {symbol: i for i, symbol in enumerate(alphabet)}
  merges = []
  for a, b in itertools.product(alphabet, repeat=2):
    if len(vocab) >= vocab_size - 1:
      break
    vocab[a + b] = len(vocab)
    merges.append((a, b))
  vocab["<|endoftext|>"] = len(vocab)
  tokenizer = Tokenizer(tokenizer_models.BPE(vocab=vocab, merges=merges))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                       pad_token="<|endoftext|>").save_pretrained(directory)


def make_trainer(model_dir: Path, run_dir: Path, layers: str, steps: int,
                 devices: int = 1) -> train._Trainer:
  """jaxlayer's GRPO loop on this benchmark's work, ready to run `steps` steps on a
  data-parallel mesh of the first `devices` devices."""
  cfg = default_config()
  cfg.mesh.update(data=devices, fsdp=1, num_devices=devices)
  cfg.model.path, cfg.run_dir = str(model_dir), str(run_dir)
  cfg.task.name = "arithmetic"
  cfg.task.options.update(TASK_OPTIONS)
  cfg.train.update(layers=layers, algorithm="grpo", kl_beta=0.0, steps=steps,
                   learning_rate=1e-6, group_size=GROUP, batch_size=PROMPTS * GROUP)
  cfg.rollout.update(max_new_tokens=NEW_TOKENS, temperature=1.0)
  cfg.logging.update(tensorboard=False, progress=False)
  trainer = train._Trainer(train.plan(cfg), None)
  trainer.stop_ids = []  # exactly NEW_TOKENS tokens per response, as TRL's min_new_tokens
  return trainer


def jaxlayer_seconds(model_dir: Path, run_dir: Path, layers: str, steps: int, warmup: int,
                     devices: int):
  """(first step incl. compile, median of the later steps, the trainer) of jaxlayer's loop."""
  trainer = make_trainer(model_dir, run_dir, layers, warmup + steps, devices)
  times = []
  for _ in range(warmup + steps):
    start = time.perf_counter()
    result, _ = trainer.run_step()
    times.append(time.perf_counter() - start)
    assert result["response_length"] == NEW_TOKENS
  return times[0], statistics.median(times[warmup:]), trainer


def floor_seconds(trainer: train._Trainer, model_dir: Path) -> float:
  """The least time this machine's matmuls allow for the trainer's step (ceiling.py): the
  update's FLOPs (XLA's cost analysis, on a rollout batch) plus the rollout's."""
  rollouts, weights, _ = trainer._collect(jax.random.PRNGKey(0))
  batch = trainer._device_batch(functools.partial(trainer._make_batch, rollouts, weights),
                                np.arange(PROMPTS * GROUP))
  cost = trainer.update.lower(trainer.params, trainer.opt_state, trainer.split.frozen,
                              batch).compile().cost_analysis()
  # XLA counts the FLOPs of one device's share of a partitioned program.
  update_flops = (cost[0] if isinstance(cost, list) else cost)["flops"] * trainer.plan.mesh.size
  rows, seq = batch["input_ids"].shape
  cfg = models.ModelConfig.from_json_file(model_dir / "config.json")
  return (update_flops / ceiling.linear_rate(cfg, rows * seq)
          + ceiling.rollout_seconds(cfg, PROMPTS, seq - NEW_TOKENS, GROUP, NEW_TOKENS))


class _StepTimer(transformers.TrainerCallback):
  def __init__(self):
    self.times, self._start = [], None

  def on_step_begin(self, args, state, control, **kwargs):
    self._start = time.perf_counter()

  def on_step_end(self, args, state, control, **kwargs):
    self.times.append(time.perf_counter() - self._start)


def trl_seconds(model_dir: Path, out_dir: Path, steps: int, warmup: int) -> float:
  """Median seconds per GRPOTrainer step after `warmup` steps."""
  import datasets
  from trl import GRPOConfig, GRPOTrainer

  task = get_task("arithmetic", **TASK_OPTIONS)
  dataset = datasets.Dataset.from_list([{"prompt": p.prompt, "answer": p.answer}
                                        for p in task.train_problems()])

  def reward(prompts, completions, answer, **_):
    return task.rewards([Problem(p, a) for p, a in zip(prompts, answer)], completions).total

  args = GRPOConfig(
      output_dir=str(out_dir), per_device_train_batch_size=PROMPTS * GROUP,
      num_generations=GROUP, max_completion_length=NEW_TOKENS,
      generation_kwargs={"min_new_tokens": NEW_TOKENS}, temperature=1.0, loss_type="grpo",
      beta=0.0, learning_rate=1e-6, bf16=False, use_cpu=True, use_vllm=False,
      activation_checkpointing=False, max_steps=warmup + steps, logging_steps=10**6,
      report_to="none", save_strategy="no", seed=0, disable_tqdm=True)
  timer = _StepTimer()
  trainer = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=args,
                        train_dataset=dataset, callbacks=[timer],
                        processing_class=transformers.AutoTokenizer.from_pretrained(model_dir))
  trainer.train()
  return statistics.median(timer.times[warmup:])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="0.85M model only, 2 timed steps "
                      "after 1 warm-up (smoke run)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per side (median)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per side")
  parser.add_argument("--models", default="0.85M,28M", help="comma-separated: 0.85M, 28M")
  parser.add_argument("--devices", default=f"1,{os.cpu_count()}",
                      help="comma-separated CPU device counts to run jaxlayer on")
  args = parser.parse_args()
  device_counts, _ = device_counts_of(args.devices)  # the trainers' meshes take the first ones
  names = ["0.85M"] if args.quick else args.models.split(",")
  unknown = sorted(set(names) - {"0.85M", "28M"})
  if unknown:
    parser.error(f"unknown --models {unknown}; choose from 0.85M, 28M")
  steps, warmup = (2, 1) if args.quick else (args.steps, args.warmup)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), float32; {PROMPTS} prompts x G={GROUP} x "
        f"{NEW_TOKENS} new tokens per step, GRPO loss, no KL\n")
  header = ("| model | devices | TRL s/step | jaxlayer full s/step | speed-up | "
            "jaxlayer single block s/step | speed-up | jaxlayer compile s | floor s/step (full) | "
            "largest speed-up |")
  print_table_header(header)
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      model_dir = Path(tmp) / name
      make_checkpoint(name, model_dir)
      save_tokenizer(model_dir, CONFIGS[name]["vocab_size"])
      middle = f"layers.{(CONFIGS[name]['num_hidden_layers'] - 1) // 2}"
      jaxlayer_rows, floor = [], None
      for devices in device_counts:
        first, full, trainer = jaxlayer_seconds(model_dir, Path(tmp) / f"{name}-{devices}-full",
                                                "all", steps, warmup, devices)
        floor = floor or floor_seconds(trainer, model_dir)  # the work's: the same for each row
        _, block, _ = jaxlayer_seconds(model_dir, Path(tmp) / f"{name}-{devices}-block", middle,
                                       steps, warmup, devices)
        jaxlayer_rows.append((devices, first, full, block))
      trl = trl_seconds(model_dir, Path(tmp) / f"{name}-trl", steps, warmup)
      for devices, first, full, block in jaxlayer_rows:
        print(f"| {name} | {devices} | {trl:.2f} | {full:.2f} | {trl / full:.1f}x | {block:.2f} "
              f"({middle}) | {trl / block:.1f}x | {first - full:.1f} | {floor:.2f} | "
              f"{trl / floor:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
