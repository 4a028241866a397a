"""Rollout speed: jaxlayer.sampling.generate against transformers' generate (PyTorch), one run.

Both sides load the same random Qwen2 checkpoint (written here by transformers), run in
float32 on the CPU, sample (temperature 1, no top-k / top-p) exactly --new-tokens tokens per
sequence (no EOS), and are timed after a warm-up call; jaxlayer's compile time is reported
on its own. Rows:
  * batch 32 (32 prompts x 32 tokens) on a ~0.85M and a ~28M model;
  * batch 256 (32 prompts x 8 samples) on the 28M model, transformers with
    num_return_sequences=8;
  * group sampling (4 prompts x 256 tokens, 8 samples each, one prefill per prompt) against
    jaxlayer prefilling 32 independent copies of the prompts.
Each row runs jaxlayer on 1 device and again on one CPU device per core (--devices): a
data-parallel mesh whose devices each hold the model and decode their share of the rows in
their own loop. Each row also shows the ceiling this machine's matmuls put on the row's work,
timed in the same run (benchmarks/ceiling.py, on one device or split over all, whichever is
faster), and the reference's time over it: the largest speed-up any implementation built on
XLA:CPU's matmuls could reach.

    python benchmarks/rollout.py            # the full table (a few minutes on 2 cores)
    python benchmarks/rollout.py --quick    # a tiny smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ceiling import rollout_seconds, work_flops  # noqa: E402
from jaxlayer import distributed, models, sampling  # noqa: E402

CONFIGS = {  # name: Qwen2 config (tied embeddings)
    "0.85M": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=384, vocab_size=512),
    "28M": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=2, intermediate_size=1536, vocab_size=8192),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64, vocab_size=128),
}


def make_checkpoint(name: str, directory: Path) -> transformers.PreTrainedModel:
  config = transformers.Qwen2Config(tie_word_embeddings=True, max_position_embeddings=4096,
                                    **CONFIGS[name])
  torch.manual_seed(0)
  hf_model = transformers.AutoModelForCausalLM.from_config(config).eval()
  hf_model.save_pretrained(directory)
  return hf_model


def device_counts_of(text: str) -> tuple[list[int], list]:
  """--devices "1,2" -> ([1, 2], the devices): as many CPU devices as the largest count, made
  before JAX starts (jaxlayer.distributed.data_parallel_devices)."""
  counts = sorted({int(n) for n in text.split(",")})
  return counts, distributed.data_parallel_devices(max(counts))


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def jax_generate(model, prompts, new_tokens, num_samples=1):
  def run():
    out = sampling.generate(model, prompts, max_new_tokens=new_tokens, num_samples=num_samples,
                            temperature=1.0, eos_token_ids=[], seed=0)
    assert out.mask.all(), "every sequence must get exactly new_tokens tokens"
  return run


def hf_generate(hf_model, prompts, new_tokens, num_samples=1):
  ids = torch.tensor(prompts)

  def run():
    with torch.no_grad():
      out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                              temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, num_return_sequences=num_samples,
                              pad_token_id=0, eos_token_id=None)
    assert out.shape == (len(prompts) * num_samples, ids.shape[1] + new_tokens)
  return run


def print_table_header(header: str) -> None:
  """Prints a Markdown table's header line and the separator line under it."""
  print(header)
  print("|" + "|".join("-" * len(column) for column in header.split("|")[1:-1]) + "|")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny model and sizes (smoke test)")
  parser.add_argument("--repeats", type=int, default=2,
                      help="least timed calls per row, best of (short rows get up to 30)")
  parser.add_argument("--models", default="0.85M,28M", help="comma-separated: 0.85M, 28M")
  parser.add_argument("--devices", default=f"1,{os.cpu_count()}",
                      help="comma-separated CPU device counts to run jaxlayer on")
  args = parser.parse_args()
  device_counts, devices_made = device_counts_of(args.devices)
  if args.quick:
    names, batch, prompt_len, new_tokens, samples, group_prompt_len = ["tiny"], 4, 8, 8, 2, 16
  else:
    names = args.models.split(",")
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
      parser.error(f"unknown --models {unknown}; choose from {sorted(CONFIGS)}")
    batch, prompt_len, new_tokens, samples, group_prompt_len = 32, 32, 64, 8, 256
  group_prompts = batch // samples
  rng = np.random.RandomState(0)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), float32; {new_tokens} new tokens per sequence\n")
  header = (f"| {'model':6} | {'work':42} | {'devices':7} | {'jaxlayer tok/s':>14} | "
            f"{'GFLOP/s':>7} | {'compile s':>9} | {'reference':24} | {'reference tok/s':>15} | "
            f"{'speed-up':>8} | {'ceiling tok/s':>13} | {'largest speed-up':>16} |")
  print_table_header(header)

  def row(name, work, devices, tokens, flops, floor_s, jax_fn, ref_fn,
          ref_name="transformers generate"):
    first = timed(jax_fn)  # compiles
    # Short rows get more calls (up to ~10 s of the reference's time): the best of more calls
    # depends less on what else this shared machine runs at the moment.
    repeats = min(30, max(args.repeats, int(10 / timed(ref_fn))))
    # Alternate the two and keep each one's best time: other load on the machine slows both.
    jax_s, ref_s = (min(times) for times in zip(*[(timed(jax_fn), timed(ref_fn))
                                                  for _ in range(repeats)]))
    print(f"| {name:6} | {work:42} | {devices:7} | {tokens / jax_s:14,.0f} | "
          f"{flops / jax_s / 1e9:7.1f} | {first - jax_s:9.1f} | {ref_name:24} | "
          f"{tokens / ref_s:15,.0f} | {ref_s / jax_s:7.2f}x | {tokens / floor_s:13,.0f} | "
          f"{ref_s / floor_s:15.2f}x |", flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      hf_model = make_checkpoint(name, Path(tmp) / name)
      prompts = rng.randint(0, CONFIGS[name]["vocab_size"], (batch, prompt_len)).tolist()
      long_prompts = rng.randint(0, CONFIGS[name]["vocab_size"],
                                 (group_prompts, group_prompt_len)).tolist()
      for devices in device_counts:
        mesh = (models.make_mesh(data=devices, fsdp=1, devices=devices_made[:devices])
                if devices > 1 else None)
        model, cfg = models.from_pretrained(Path(tmp) / name, mesh=mesh)
        row(name, f"batch {batch}: {batch} prompts x {prompt_len} tokens", devices,
            batch * new_tokens, work_flops(cfg, batch, prompt_len, 1, new_tokens),
            rollout_seconds(cfg, batch, prompt_len, 1, new_tokens),
            jax_generate(model, prompts, new_tokens), hf_generate(hf_model, prompts, new_tokens))
        if name == "0.85M":
          continue
        rows = batch * samples
        row(name, f"batch {rows}: {batch} prompts x {samples} samples", devices,
            rows * new_tokens, work_flops(cfg, batch, prompt_len, samples, new_tokens),
            rollout_seconds(cfg, batch, prompt_len, samples, new_tokens),
            jax_generate(model, prompts, new_tokens, samples),
            hf_generate(hf_model, prompts, new_tokens, samples))
        row(name, f"group: {group_prompts} prompts x {group_prompt_len} tokens x {samples} "
            "samples", devices, batch * new_tokens,
            work_flops(cfg, group_prompts, group_prompt_len, samples, new_tokens),
            rollout_seconds(cfg, group_prompts, group_prompt_len, samples, new_tokens),
            jax_generate(model, long_prompts, new_tokens, samples),
            jax_generate(model, [p for p in long_prompts for _ in range(samples)], new_tokens),
            ref_name=f"jaxlayer, {batch} prefills")


if __name__ == "__main__":
  main()
