"""`jaxlayer <command>`: parses flags and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import shlex
import sys

USAGE = """usage: jaxlayer <command> [options]

commands:
  generate   greedy completion of a prompt with a Hugging Face checkpoint
  train      layer-selective RL (GRPO / Dr. GRPO / DAPO) from a config; resumes its run_dir
  export     merge a run's trained blocks into its base model: a Hugging Face checkpoint
  eval       pass@1 (greedy) and mean@k of a model or a training run on the test split -> eval.json
  sweep      layer-contribution sweep: base, full RL and RL on each block alone -> C(k), report
  compare    rank correlation (Spearman, Kendall) of the layer rankings of two sweeps

`jaxlayer <command> --help` describes a command's options."""


def load_config(argv: list[str], prog: str):
  """Parses `--config FILE [--config.a.b=value ...]` (ml_collections config file + overrides)."""
  from absl import flags
  from ml_collections import config_flags

  argv = [prog, *argv]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=None, flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  try:
    flag_values(argv)
  except (flags.Error, AttributeError, KeyError, ValueError) as err:
    raise SystemExit(f"{prog}: bad configuration flag: {err}") from None
  if flag_values.config is None:
    raise SystemExit(f"{prog}: --config FILE is required (see configs/).")
  return flag_values.config


def _generate(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="jaxlayer generate", description=(
      "Greedy completion of --prompt with the checkpoint in --model."))
  parser.add_argument("--model", required=True, help="model directory or Hugging Face hub id")
  parser.add_argument("--prompt", required=True, help="text to complete")
  parser.add_argument("--max-new-tokens", type=int, default=32)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args(argv)

  from jaxlayer import models, sampling

  model, _ = models.from_pretrained(args.model, dtype=args.dtype)
  tokenizer = models.load_tokenizer(args.model)
  prompt_ids = tokenizer(args.prompt)["input_ids"]
  completion = sampling.greedy_generate(model, prompt_ids, max_new_tokens=args.max_new_tokens,
                                        eos_token_ids=_eos_ids(tokenizer))
  print(args.prompt + tokenizer.decode(completion))


def _eos_ids(tokenizer) -> list[int]:
  return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]


def _sweep(argv: list[str]) -> None:
  """jaxlayer sweep --config FILE [--config.sweep.layers=0,3,7 --config.sweep.seeds=3 ...]"""
  if argv[:1] in (["-h"], ["--help"]):
    print(_sweep.__doc__ + "\n\nRuns or resumes the sweep in config.sweep.dir (finished runs are "
          "skipped) and writes sweep.json, sweep.csv, contribution.png, curves.png and report.md "
          "there. See configs/sweep_tiny.py for every key.")
    return
  config = load_config(argv, "jaxlayer sweep")
  from jaxlayer import sweep

  try:
    sweep_dir = sweep.run_sweep(config, command=shlex.join(["jaxlayer", "sweep", *argv]))
  except (ValueError, FileNotFoundError) as err:
    raise SystemExit(f"jaxlayer sweep: {err}") from None
  print(f"contribution plot: {sweep_dir / 'contribution.png'}\n"
        f"report:            {sweep_dir / 'report.md'}")


def _compare(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="jaxlayer compare", description=(
      "Spearman and Kendall rank correlation of the C(k) of two finished sweeps over their "
      "common blocks; writes compare.json and compare.png."))
  parser.add_argument("sweep_a", help="a sweep directory (holding sweep.json)")
  parser.add_argument("sweep_b", help="another sweep directory of a model with as many blocks")
  parser.add_argument("--out", help="output directory (default: compare-A-vs-B in the current "
                      "directory)")
  args = parser.parse_args(argv)
  from pathlib import Path

  from jaxlayer.sweep import compare

  out = args.out or f"compare-{Path(args.sweep_a).name}-vs-{Path(args.sweep_b).name}"
  try:
    result = compare.compare_sweep_dirs(args.sweep_a, args.sweep_b, out)
  except (ValueError, FileNotFoundError) as err:
    raise SystemExit(f"jaxlayer compare: {err}") from None
  spearman, kendall = result["spearman"], result["kendall"]
  print(f"{result['num_common_layers']} common blocks: Spearman rho = {_number(spearman['rho'])} "
        f"(p = {_number(spearman['p_value'], '.3g')}), Kendall tau = {_number(kendall['tau'])} "
        f"(p = {_number(kendall['p_value'], '.3g')})\n"
        f"written: {Path(out) / 'compare.json'}, {Path(out) / 'compare.png'}")


def _number(value, spec: str = ".3f") -> str:
  return "undefined (a constant ranking)" if value is None else format(value, spec)


def _train(argv: list[str]) -> None:
  """jaxlayer train --config FILE [--config.a.b=value ...]"""
  if argv[:1] in (["-h"], ["--help"]):
    print(_train.__doc__ + "\n\nTrains the blocks in config.train.layers (e.g. layers.14, "
          "layers.10-14, mid5, all) and resumes from config.run_dir's latest checkpoint. "
          "Every key and its default: jaxlayer/rl/config.py; example: configs/grpo_arithmetic.py.")
    return
  config = load_config(argv, "jaxlayer train")
  if "@" in f"{config.train.layers}{config.train.lr_groups}":
    import jaxlayer.sweep.strategies  # noqa: F401  (defines topK@SWEEP_DIR, bottomK@SWEEP_DIR)
  from jaxlayer.rl import train

  try:
    result = train.train(config)
  except (ValueError, FileNotFoundError, train.TrainingDiverged) as err:
    raise SystemExit(f"jaxlayer train: {err}") from None
  last = result.reward_history[-1] if result.reward_history else None
  print(f"trained {result.step} steps; last mean reward {last}; run directory {result.run_dir}")


def _export(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="jaxlayer export", description=(
      "Writes a Hugging Face checkpoint: the run's base model with its trained leaves merged in."))
  parser.add_argument("--run", required=True, help="run directory of `jaxlayer train`")
  parser.add_argument("--out", required=True, help="output directory for the HF checkpoint")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the run's dtype")
  parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
  args = parser.parse_args(argv)
  from jaxlayer.rl import checkpoint

  try:
    out = checkpoint.export(args.run, args.out, step=args.step, dtype=args.dtype,
                            overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as err:
    raise SystemExit(f"jaxlayer export: {err}") from None
  print(f"wrote {out}")


def _eval(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="jaxlayer eval", description=(
      "pass@1 (greedy) and mean@k (eval.num_samples sampled completions) on the first "
      "eval.num_problems test problems of the config's task (or eval.tasks), with the config's "
      "prompt settings. Writes eval.json (and generations.jsonl). Settings: --config.eval.KEY=VALUE "
      "(keys and defaults: jaxlayer/evaluation.py, default_eval_config)."))
  parser.add_argument("--config", required=True, help="config file (e.g. configs/sweep_tiny.py); "
                      "override keys with --config.KEY=VALUE")
  parser.add_argument("--model", required=True, help="Hugging Face model directory or hub id, or "
                      "a run directory of `jaxlayer train` (its base model + trained blocks)")
  parser.add_argument("--step", type=int, help="checkpoint step of a run (default: the latest)")
  parser.add_argument("--out", help="output directory (default: RUN/eval for a run, else "
                      "eval-MODELNAME in the current directory)")
  parser.add_argument("--save-generations", action="store_true",
                      help="also write generations.jsonl (prompt, completion, answer, score)")
  parser.add_argument("--overwrite", action="store_true", help="replace an eval.json in --out")
  args, overrides = parser.parse_known_args(argv)
  config = load_config(["--config", args.config, *overrides], "jaxlayer eval")
  from jaxlayer import evaluation

  try:
    out, report = evaluation.evaluate_and_save(
        config, args.model, args.out, step=args.step, save_generations=args.save_generations,
        overwrite=args.overwrite, command=shlex.join(["jaxlayer", "eval", *argv]))
  except (ValueError, FileNotFoundError, FileExistsError) as err:
    raise SystemExit(f"jaxlayer eval: {err}") from None
  for name, result in report["tasks"].items():
    scores = ", ".join(f"{metric} {value:.4f}" for metric, value in result["scores"].items())
    print(f"{name} ({result['num_problems']} problems): {scores}")
  print(f"written: {out / evaluation.EVAL_FILE}"
        + (f", {out / evaluation.GENERATIONS_FILE}" if args.save_generations else ""))


COMMANDS = {"generate": _generate, "train": _train, "export": _export, "eval": _eval,
            "sweep": _sweep, "compare": _compare}


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return
  command = COMMANDS.get(argv[0])
  if command is None:
    raise SystemExit(f"jaxlayer: unknown command {argv[0]!r}; choose one of {sorted(COMMANDS)}.")
  command(argv[1:])


if __name__ == "__main__":
  main()
