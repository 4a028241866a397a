"""`jaxlayer <command>`: parses flags and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: jaxlayer <command> [options]

commands:
  generate   greedy completion of a prompt with a Hugging Face checkpoint

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


COMMANDS = {"generate": _generate}


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
