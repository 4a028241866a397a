"""Update-step cost of layer-selective training: one block against all parameters, one run.

Same model (the ~28M Qwen2 of benchmarks/rollout.py, tied embeddings, 8 blocks), same batch
(32 responses x 96 tokens: 32 prompt + 64 response tokens), float32 on the CPU, GRPO loss,
AdamW. For each selection it reports the wall time of the compiled update step (the best of
--repeats calls after a warm-up call, the selections taking turns so that other load on the
machine slows them alike), XLA's FLOP count of the step and the rate it reaches, XLA's peak
buffer memory of the step (arguments + outputs + temporaries - donated), and the bytes of the
trainable leaves and of the optimizer state. Ratios are against the full-parameter step of
the same run; the FLOP rate is set against the ~250 GFLOP/s XLA:CPU float32 matmul ceiling
the target assumes (/work/shared/PITFALLS.md, measured on another CPU) and against the
fastest of the model's linear maps and their gradient products timed in the same run
(benchmarks/ceiling.py: this machine's ceiling of the moment).

    python benchmarks/train_step.py             # 28M model (about 2 minutes on 2 cores)
    python benchmarks/train_step.py --quick     # tiny model, smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxlayer import models  # noqa: E402
from jaxlayer.rl import losses, optimizer, selection, step  # noqa: E402
from ceiling import linear_rate  # noqa: E402
from rollout import make_checkpoint, print_table_header  # noqa: E402  (shared by the benchmarks)

CPU_MATMUL_CEILING = 250e9  # FLOP/s, XLA:CPU float32 on this machine


def make_batch(vocab: int, rows: int, prompt: int, response: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
      "input_ids": rng.integers(0, vocab, (rows, prompt + response)).astype(np.int32),
      "attention_mask": np.ones((rows, prompt + response), bool),
      "response_mask": np.ones((rows, response), np.float32),
      "is_response": np.ones(rows, np.float32),
      "old_logprobs": np.full((rows, response), -np.log(vocab), np.float32),
      "advantages": np.repeat(rng.normal(size=(rows, 1)), response, 1).astype(np.float32),
  }


def prepare(model_dir: Path, layers: str, batch: dict) -> dict:
  """The compiled update step training `layers`, its inputs, and what XLA says it costs."""
  model, cfg = models.from_pretrained(model_dir)
  chosen = selection.resolve(list(models.named_params(model)), cfg.num_layers, layers, 1e-6)
  split, params = step.split_model(model, chosen.trainable)
  tx = optimizer.make_optimizer(chosen.groups, chosen.learning_rates)
  loss = losses.LossConfig(max_response_length=batch["response_mask"].shape[1])
  update = step.make_update_step(split, tx, loss, temperature=1.0)
  opt_state = tx.init(params)
  batch = jax.device_put(batch)
  start = time.perf_counter()
  compiled = update.lower(params, opt_state, split.frozen, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes +
          memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  if layers.startswith("mid"):
    blocks = [f"layers.{i}" for i in range(cfg.num_layers)]
    layers = f"{selection.select(layers, blocks, cfg.num_layers)[0]} ({layers})"
  return dict(layers=layers, flops=flops, peak=peak, opt_bytes=step.array_bytes(opt_state),
              param_bytes=step.array_bytes(params), compile_s=compile_s,
              num_layers=cfg.num_layers, times=[],
              state=[compiled, params, opt_state, split.frozen, batch])


def time_call(row: dict) -> None:
  """Runs row's update step once (its parameters and optimizer state move on) and times it."""
  compiled, params, opt_state, frozen, batch = row["state"]
  start = time.perf_counter()
  params, opt_state, metrics = compiled(params, opt_state, frozen, batch)
  jax.block_until_ready(metrics)
  row["times"].append(time.perf_counter() - start)
  row["state"][1:3] = params, opt_state


def best_times_in_turns(rows: list[dict], repeats: int) -> None:
  """Sets each row's "seconds": the best of `repeats` timed calls after one warm-up call. The
  rows take turns, so other load on a shared machine slows every row alike instead of one."""
  for row in rows:  # warm-up
    time_call(row)
    row["times"].clear()
  for _ in range(repeats):
    for row in rows:
      time_call(row)
  for row in rows:
    row["seconds"] = min(row["times"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny model (smoke run)")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (best of)")
  args = parser.parse_args()
  name, rows, prompt, response = ("tiny", 4, 8, 8) if args.quick else ("28M", 32, 32, 64)
  with tempfile.TemporaryDirectory() as tmp:
    make_checkpoint(name, Path(tmp))
    cfg = models.ModelConfig.from_json_file(Path(tmp) / "config.json")
    # "mid1": the middle block, (L - 1) // 2 (jaxlayer.rl.selection); then the top and bottom.
    selections = ["all", "mid1", f"layers.{cfg.num_layers - 1}", "layers.0"]
    batch = make_batch(cfg.vocab_size, rows, prompt, response)
    results = [prepare(Path(tmp), layers, batch) for layers in selections]
    best_times_in_turns(results, args.repeats)
    ceiling = linear_rate(cfg, rows * (prompt + response))  # after the rows, in this run

  full = results[0]
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), float32; model {name} "
        f"({full['param_bytes'] / 4 / 1e6:.1f}M parameters, {full['num_layers']} blocks); batch "
        f"{rows} x {prompt + response} tokens ({response} response); GRPO loss, AdamW\n")
  header = ("| trains | step s | x full | GFLOP | x full | GFLOP/s | peak MB | trainable MB | "
            "opt-state MB | opt x full | compile s |")
  print_table_header(header)
  for r in results:
    print(f"| {r['layers']:15} | {r['seconds']:.3f} | {r['seconds'] / full['seconds']:.2f} | "
          f"{r['flops'] / 1e9:.1f} | {r['flops'] / full['flops']:.2f} | "
          f"{r['flops'] / r['seconds'] / 1e9:.0f} | {r['peak'] / 1e6:.0f} | "
          f"{r['param_bytes'] / 1e6:.1f} | {r['opt_bytes'] / 1e6:.1f} | "
          f"{r['opt_bytes'] / full['opt_bytes']:.3f} | {r['compile_s']:.1f} |")
  middle_row = results[1]
  rate = full["flops"] / full["seconds"]
  print(f"\nsingle middle block ({middle_row['layers']}) / full step time: "
        f"{middle_row['seconds'] / full['seconds']:.2f} (target <= 0.6)")
  print(f"optimizer state, middle block / full: {middle_row['opt_bytes'] / full['opt_bytes']:.3f}"
        f" (1/L = {1 / full['num_layers']:.3f}; the block holds "
        f"{middle_row['param_bytes'] / full['param_bytes']:.3f} of the parameters)")
  print(f"full step: {rate / 1e9:.0f} GFLOP/s = {rate / CPU_MATMUL_CEILING:.0%} of the "
        f"~{CPU_MATMUL_CEILING / 1e9:.0f} GFLOP/s XLA:CPU matmul ceiling of a quiet machine "
        f"(target >= 60%); {rate / ceiling:.0%} of the {ceiling / 1e9:.0f} GFLOP/s the fastest of "
        "the model's linear maps and their gradient products reached in this run "
        "(benchmarks/ceiling.py: a shared machine's ceiling)")


if __name__ == "__main__":
  main()
