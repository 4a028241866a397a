"""The `jaxlayer` command line."""

import argparse
import io
import json
import os
import re
import signal
import sys
import textwrap
import warnings

import pytest
import torch
import transformers

from jaxlayer import assets, cli, evaluation
from jaxlayer.rl import metrics
from jaxlayer.sweep import contribution, runner
from tests.conftest import TEST_XLA_FLAGS
from tests.sweep_fakes import REPO


def test_generate_prints_transformers_greedy_completion(tiny_qwen2_dir, capsys):
  prompt = "the quick fox"
  cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", prompt,
            "--max-new-tokens", "12"])
  printed = capsys.readouterr().out.rstrip("\n")

  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_qwen2_dir)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
  ids = torch.tensor([tokenizer(prompt)["input_ids"]])
  with torch.no_grad():
    out = hf_model.generate(ids, do_sample=False, max_new_tokens=12,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.eos_token_id)
  assert printed == prompt + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("family, kwargs", [("r1-distill-qwen", {}),
                                             ("qwen3", {"enable_thinking": False})])
def test_generate_chat_completes_the_chat_templates_prompt_as_transformers(tmp_path, capsys,
                                                                           monkeypatch, family,
                                                                           kwargs):
  # --chat: the prompt is the model's chat template around the text, its ids those of
  # apply_chat_template (R1-Distill's one BOS), the completion transformers' greedy one.
  from jaxlayer import sampling
  from tests import hf_fixtures

  sampled_prompts, generate = [], sampling.generate
  monkeypatch.setattr(sampling, "generate", lambda model, prompt_ids, **options: (
      sampled_prompts.extend(prompt_ids), generate(model, prompt_ids, **options))[1])
  model_dir = hf_fixtures.save_chat_model(tmp_path, family)
  argv = ["generate", "--model", str(model_dir), "--prompt", "What is 2+3?", "--chat", "--jsonl",
          "--max-new-tokens", "6"]
  cli.main(argv + (["--chat-template-kwargs", json.dumps(kwargs)] if kwargs else []))
  record = json.loads(capsys.readouterr().out)
  tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
  messages = [{"role": "user", "content": "What is 2+3?"}]
  assert record["prompt"] == tokenizer.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=True, **kwargs)
  ids = torch.tensor([tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_dict=True, **kwargs)["input_ids"]])
  assert sampled_prompts == [ids[0].tolist()]
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
  with torch.no_grad():
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=6, pad_token_id=tokenizer.pad_token_id)
  assert record["completion"] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("flags, message", [
    (["--chat-template-kwargs", '{"enable_thinking": false}'], "is for the chat template: add "
     "--chat"),
    (["--chat", "--chat-template-kwargs", "[1]"], "is not a JSON object: write one such as"),
    (["--chat", "--chat-template-kwargs", "{enable_thinking}"], "is not JSON"),
])
def test_generate_bad_chat_flags_are_a_clear_error(tiny_qwen2_dir, capsys, flags, message):
  with pytest.raises(SystemExit):
    cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", "hi", *flags])
  assert message in capsys.readouterr().err


@pytest.mark.parametrize("command, args, typo, hint", [
    ("generate", ["--model", "M", "--promt", "1+1="], "--promt", "; did you mean --prompt?"),
    ("generate", ["--model", "M", "-promt", "1+1="], "-promt", "; did you mean --prompt?"),
    ("export", ["--rn", "runs/l1", "--out", "hf_out"], "--rn", "; did you mean --run?"),
    ("eval", ["--config", "configs/sweep_tiny.py", "--modl", "runs/l1"], "--modl",
     "; did you mean --model?"),
    ("table", ["--rns", "A", "runs/a"], "--rns", "; did you mean --runs?"),
    ("compare", ["a", "b", "--ovewrite"], "--ovewrite", "; did you mean --overwrite?"),
    ("generate", ["--model", "M", "--frobnicate", "1+1="], "--frobnicate", ":"),  # none close
])
def test_a_mistyped_option_is_named_not_the_required_one_it_hides(command, args, typo, hint,
                                                                   capsys):
  # argparse checks the required options first: `--promt` read "one of the arguments --prompt
  # --prompts-file is required", `--rn` "the following arguments are required: --run".
  with pytest.raises(SystemExit) as exited:
    cli.main([command, *args])
  assert exited.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"jaxlayer {command}: error: unknown option {typo}{hint} `jaxlayer {command} --help` lists "
      "the options.")


def test_an_abbreviated_option_is_not_named_as_a_mistyped_one(capsys):
  """argparse takes an unambiguous prefix of an option (--max-new for --max-new-tokens): the
  error is then the one argparse names, here the prompt missing."""
  with pytest.raises(SystemExit):
    cli.main(["generate", "--model", "M", "--max-new", "4"])
  assert capsys.readouterr().err.splitlines()[-1] == (
      "jaxlayer generate: error: one of the arguments --prompt --prompts-file is required")


def test_a_value_that_starts_with_a_dash_is_shown_joined_to_its_option(capsys):
  # argparse reads "-3+5=" as an option and says only that --prompt has no value.
  with pytest.raises(SystemExit):
    cli.main(["generate", "--model", "M", "--prompt", "-3+5="])
  assert capsys.readouterr().err.splitlines()[-1] == (
      "jaxlayer generate: error: argument --prompt: expected one argument (a value that starts "
      "with '-' goes after '=': --prompt=-3+5=)")


@pytest.mark.eight_devices
def test_generate_samples_every_prompt_of_a_file(tiny_qwen2_dir, tmp_path, capsys):
  prompts = ["the lazy dog", "brown fox 12", "over the"]
  jsonl = [json.dumps({"prompt": p}) for p in prompts]
  for suffix, lines in [(".txt", prompts), (".jsonl", jsonl)]:
    # A blank line is skipped.
    (tmp_path / f"prompts{suffix}").write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
  argv = ["generate", "--model", str(tiny_qwen2_dir), "--prompts-file",
          str(tmp_path / "prompts.txt"), "--num-samples", "2", "--top-p", "0.9",
          "--max-new-tokens", "6", "--seed", "4",
          "--batch-size", "2"]  # two calls, the second filled up to the first one's shape
  cli.main(argv)
  printed = capsys.readouterr().out
  blocks = re.split(r"^### prompt (\d+), sample (\d+) \((?:eos|length), \d+ tokens?\)\n", printed,
                    flags=re.M)[1:]  # [prompt, sample, text, prompt, sample, text, ...]
  headers, texts = list(zip(blocks[0::3], blocks[1::3])), blocks[2::3]
  assert headers == [(str(p), str(s)) for p in (0, 1, 2) for s in (0, 1)]
  for i, text in enumerate(texts):
    assert text.startswith(prompts[i // 2])
  assert len(set(texts)) > 3  # sampled at temperature 1 by default
  cli.main(argv)
  assert capsys.readouterr().out == printed  # the same seed prints the same samples
  cli.main(argv + ["--devices", "2"])  # each of 2 devices decodes the rows it holds
  assert capsys.readouterr().out == printed
  cli.main(argv + ["--batch-size", "3"])  # one call: its rows draw the same streams
  assert capsys.readouterr().out == printed
  cli.main(argv + ["--prompts-file", str(tmp_path / "prompts.jsonl")])  # the same prompts
  assert capsys.readouterr().out == printed


def test_generate_reads_prompts_from_stdin_and_prints_jsonl(tiny_qwen2_dir, monkeypatch, capsys):
  prompts = ["the lazy dog", "brown fox 12", "over the"]
  argv = ["generate", "--model", str(tiny_qwen2_dir), "--num-samples", "2",
          "--max-new-tokens", "5", "--seed", "3", "--batch-size", "2"]
  monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(prompts) + "\n"))
  cli.main(argv + ["--prompts-file", "-", "--jsonl"])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  cli.main(argv + [arg for prompt in prompts for arg in ("--prompt", prompt)])
  blocks = re.split(r"^### prompt (\d+), sample (\d+) \((eos|length), (\d+ tokens?)\)\n",
                    capsys.readouterr().out, flags=re.M)[1:]  # [prompt, sample, reason, ...]
  assert [(r["prompt_index"], r["sample"]) for r in records] == [(p, s) for p in range(3)
                                                                 for s in range(2)]
  assert [(int(p), int(s)) for p, s in zip(blocks[0::5], blocks[1::5])] == [
      (r["prompt_index"], r["sample"]) for r in records]  # the text numbers them as the jsonl
  for record, reason, tokens, text in zip(records, blocks[2::5], blocks[3::5], blocks[4::5]):
    assert record["prompt"] == prompts[record["prompt_index"]]
    assert record["prompt"] + record["completion"] == text.rstrip("\n")
    count = record["num_tokens"]
    assert (record["finish_reason"], tokens) == (reason, f"{count} token{'s' * (count != 1)}")


def test_generate_num_tokens_counts_the_stop_token(capsys):
  cli.main(["generate", "--model", str(assets.TINY_ARITH), "--prompt", "2+3=", "--prompt",
            "12+30=", "--max-new-tokens", "2", "--jsonl"])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  # The shipped model answers and stops; its byte-level tokenizer spells one token per character.
  assert [(r["completion"], r["finish_reason"], r["num_tokens"]) for r in records] == [
      ("5", "eos", 2), ("42", "length", 2)]  # "5" and its stop token; "42" cut before its own


@pytest.mark.eight_devices
def test_generate_bad_input_is_a_clear_error(tiny_qwen2_dir, tmp_path, capsys):
  model = ["generate", "--model", str(tiny_qwen2_dir)]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n')
  json_file = tmp_path / "prompts.json"  # its lines, '[' and '"2+2=",', were the prompts
  json_file.write_text(json.dumps(["2+2=", "3+5="], indent=2))
  for file, message in [(bad, 'line 2 needs a "prompt" string'),
                        (tmp_path / "missing.txt", "cannot read --prompts-file"),
                        (json_file, f"--prompts-file {json_file} is a .json file, which it does "
                         'not read: write the prompts to a .jsonl file, one {"prompt": ...} '
                         "object per line, or to a text file, one prompt per line.")]:
    with pytest.raises(SystemExit):
      cli.main(model + ["--prompts-file", str(file)])
    assert message in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(model + ["--prompt", "the", "--devices", "64"])
  assert "64 devices asked for, but this host has 8" in capsys.readouterr().err
  # Flags are checked before the model loads (this one does not exist), named as typed.
  no_model = ["generate", "--model", str(tmp_path / "no-model"), "--prompt", "the"]
  for flags, message in [(["--top-p", "1.5"], "--top-p must be in (0, 1] (1: off), got 1.5"),
                         (["--top-p", "0"], "--top-p must be in (0, 1]"),
                         (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
                         (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
                         (["--top-k", "-1"], "--top-k must be >= 0, got -1"),
                         (["--temperature", "-0.5"], "--temperature must be a number >= 0"),
                         (["--temperature", "nan"], "--temperature must be a number >= 0"),
                         (["--devices", "0"], "--devices must be >= 1, got 0"),
                         (["--batch-size", "0"], "--batch-size must be >= 1, got 0")]:
    with pytest.raises(SystemExit):
      cli.main(no_model + flags)
    assert message in capsys.readouterr().err, flags


def test_generate_empty_prompt_is_refused_before_loading_the_model(tiny_qwen2_dir, tmp_path,
                                                                    capsys, monkeypatch):
  """An empty prompt has no token to complete: it used to be refused only after the model
  loaded, as 'prompts[1] is empty', naming neither the flag nor the file's line. With --chat
  it is an empty user turn of the template, which has tokens, and generates."""
  from jaxlayer import evaluation

  def no_loading(*args, **kwargs):
    raise AssertionError("the model loaded")

  jsonl = tmp_path / "prompts.jsonl"
  jsonl.write_text('{"prompt": "the lazy dog"}\n\n{"prompt": ""}\n')
  with monkeypatch.context() as patch:
    patch.setattr(evaluation, "load_model", no_loading)
    for source, message in (
        (["--prompts-file", str(jsonl)], f"{jsonl} line 3 has an empty prompt: a prompt needs "
         "text to complete; remove the line or give it text."),
        (["--prompt", "the", "--prompt", ""], "--prompt 2 of 2 is empty: a prompt needs text to "
         "complete; give it text.")):
      with pytest.raises(SystemExit):
        cli.main(["generate", "--model", str(tiny_qwen2_dir), *source])
      assert capsys.readouterr().err.endswith(f"jaxlayer generate: error: {message}\n")
  from tests import hf_fixtures

  chat_model = hf_fixtures.save_chat_model(tmp_path / "chat", "qwen3")
  cli.main(["generate", "--model", str(chat_model), "--prompts-file", str(jsonl), "--chat",
            "--jsonl", "--max-new-tokens", "2"])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [record["prompt"] for record in records] == [
      f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
      for text in ("the lazy dog", "")]


def test_generate_stopped_by_ctrl_c_exits_130_saying_how_many_prompts_were_printed(
    tiny_qwen2_dir, monkeypatch, capsys):
  """Ctrl-C used to end generate with a traceback, not saying what had been printed."""
  from jaxlayer import sampling

  calls, generate = [], sampling.generate

  def interrupted_on_the_second_call(*args, **kwargs):
    calls.append(args)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return generate(*args, **kwargs)

  monkeypatch.setattr(sampling, "generate", interrupted_on_the_second_call)
  with pytest.raises(SystemExit) as exited:
    cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", "the", "--prompt", "fox",
              "--prompt", "dog", "--batch-size", "2", "--max-new-tokens", "2", "--jsonl"])
  assert exited.value.code == 130
  out, err = capsys.readouterr()
  assert [json.loads(line)["prompt"] for line in out.splitlines()] == ["the", "fox"]
  assert err.endswith("jaxlayer generate: interrupted. 2 of 3 prompts completed and printed.\n")

  def interrupted_while_loading(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(evaluation, "load_model", interrupted_while_loading)
  with pytest.raises(SystemExit) as exited:
    cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", "the"])
  assert exited.value.code == 130
  assert capsys.readouterr().err.endswith(
      "jaxlayer generate: interrupted. The model was loading: nothing was generated.\n")


@pytest.mark.parametrize("command", ["export", "eval", "memory"])
def test_a_command_stopped_by_ctrl_c_exits_130_without_a_traceback(command, monkeypatch, capsys):
  """Commands that have no word of their own on a Ctrl-C (export, eval, memory) ended in a
  traceback from wherever it came (a model loading for minutes); they exit as train does."""

  def interrupted(argv):
    raise KeyboardInterrupt

  monkeypatch.setitem(cli.COMMANDS, command, interrupted)
  with pytest.raises(SystemExit) as exited:
    cli.main([command, "--run", "RUN"])
  assert exited.value.code == 130
  assert capsys.readouterr().err == (
      f"\njaxlayer {command}: interrupted. Run the same command to do it again.\n")


@pytest.mark.parametrize("args", [
    ["--help"], ["memory", "--config", str(REPO / "configs/grpo_arithmetic.py"),
                 f"--config.model.path={assets.TINY_ARITH}"]])
def test_any_command_stops_quietly_when_what_reads_its_output_stops(args, monkeypatch):
  """`jaxlayer memory ... | head -3` (or --help) ended in a BrokenPipeError traceback."""
  read_end, write_end = os.pipe()
  os.close(read_end)  # as head does once it has its lines
  with open(write_end, "w", buffering=1) as closed_pipe:  # (each line written at once)
    monkeypatch.setattr("sys.stdout", closed_pipe)
    with pytest.raises(SystemExit) as exited:
      cli.main(args)
  assert exited.value.code == 128 + signal.SIGPIPE


def test_a_broken_pipe_other_than_stdout_is_no_reader_that_stopped(monkeypatch):
  def worker_gone(argv):
    raise BrokenPipeError("a worker process's pipe")

  monkeypatch.setitem(cli.COMMANDS, "table", worker_gone)
  with pytest.raises(BrokenPipeError, match="a worker process's pipe"):
    cli.main(["table"])


def test_generate_stops_quietly_when_what_reads_its_output_stops(tiny_qwen2_dir, monkeypatch):
  """`jaxlayer generate ... --jsonl | head -1` ended in a BrokenPipeError traceback."""
  read_end, write_end = os.pipe()
  os.close(read_end)  # as head does once it has its line
  with open(write_end, "w") as closed_pipe:  # (closing it flushes: it raised again at exit)
    monkeypatch.setattr("sys.stdout", closed_pipe)
    with pytest.raises(SystemExit) as exited:
      cli.main(["generate", "--model", str(tiny_qwen2_dir), "--prompt", "the", "--prompt", "fox",
                "--batch-size", "1", "--max-new-tokens", "2", "--jsonl"])
  assert exited.value.code == 128 + signal.SIGPIPE


def test_generate_refuses_a_prompt_too_long_for_the_model_before_generating_any(tmp_path,
                                                                              capsys):
  """Such a prompt was refused only when its batch came, after the batches before it had
  printed, as 'the longest prompt', naming neither which one nor the flag."""
  fits, too_long = "1+1=", "1+1=" * 12  # 4 and 48 tokens; tiny-arith has 64 positions
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("\n".join([fits, too_long, fits, too_long + "2"]) + "\n")
  model = ["generate", "--model", str(assets.TINY_ARITH)]
  for source, flags, message in [
      (["--prompts-file", str(prompts)], ["--batch-size", "1"],
       "prompt 3 (numbered from 0), the longest of 2 too long, has 49 tokens; with "
       "--max-new-tokens 32 that is 81 positions, beyond the model's max_position_embeddings=64: "
       "shorten them or set --max-new-tokens to at most 15."),
      (["--prompt", "1+1=" * 16], ["--max-new-tokens", "4"],
       "the prompt has 64 tokens; with --max-new-tokens 4 that is 68 positions, beyond the "
       "model's max_position_embeddings=64: shorten it.")]:
    with pytest.raises(SystemExit) as exited:
      cli.main(model + source + flags)
    assert str(exited.value) == f"jaxlayer generate: {message}"
    assert capsys.readouterr().out == ""
  # The fix it names fits: 49 tokens and 15 new ones take the model's 64 positions.
  cli.main(model + ["--prompt", too_long + "2", "--max-new-tokens", "15"])
  assert capsys.readouterr().out.startswith(too_long + "2")


def test_generate_chat_without_a_chat_template_names_the_flag(tiny_qwen2_dir):
  """The error used to tell a command-line user to 'set use_chat_template=False', which is no
  flag of jaxlayer generate."""
  with pytest.raises(SystemExit) as error:
    cli.main(["generate", "--model", str(tiny_qwen2_dir), "--chat", "--prompt", "hi"])
  assert str(error.value) == (
      f"jaxlayer generate: --chat needs a chat template, but the tokenizer of {tiny_qwen2_dir} "
      "has none (no chat_template in its tokenizer_config.json or chat_template.jinja): leave "
      "out --chat to complete the prompts as they are.")

def test_prompts_file_keeps_unicode_line_separators_and_drops_a_byte_order_mark(tmp_path,
                                                                               capsys):
  # Prompts as written: U+2028 and a form feed inside a prompt (JSON writes U+2028 unescaped
  # with ensure_ascii=False) are no line ends, a Windows editor's BOM is no text, CRLF ends a line.
  import argparse

  prompts = ["caf\u00e9 2+2=", "one\u2028two", "page\x0cbreak"]
  parser = argparse.ArgumentParser(prog="jaxlayer generate")
  text_file, jsonl_file = tmp_path / "prompts.txt", tmp_path / "prompts.jsonl"
  text_file.write_bytes(("\ufeff" + "\r\n".join(prompts) + "\r\n").encode("utf-8"))
  jsonl_file.write_text("\ufeff" + "".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n"
                                           for p in prompts), encoding="utf-8")
  assert cli._read_prompts(str(text_file), parser) == prompts
  assert cli._read_prompts(str(jsonl_file), parser) == prompts
  upper_case = jsonl_file.rename(tmp_path / "PROMPTS.JSONL")  # read as JSON lines, not as text
  assert cli._read_prompts(str(upper_case), parser) == prompts
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("caf\u00e9\n".encode("latin-1"))
  with pytest.raises(SystemExit):
    cli._read_prompts(str(latin1), parser)
  assert "is not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("typo, hint", [("trian", "did you mean 'train'? Choose"),
                                         ("sweeep", "did you mean 'sweep'? Choose"),
                                         ("xyzzy", "choose")])  # (none close)
def test_unknown_command_names_the_closest_and_the_choices(typo, hint):
  with pytest.raises(SystemExit) as exited:
    cli.main([typo])
  assert str(exited.value) == (f"jaxlayer: unknown command {typo!r}; {hint} one of "
                               "['compare', 'eval', 'export', 'generate', 'memory', 'sweep', "
                               "'table', 'train'].")


@pytest.mark.parametrize("args", [
    ["trian"], ["train"], ["train", "--confg", "configs/grpo_arithmetic.py"],
    ["eval", "--config", "configs/sweep_tiny.py", "--model", "M", "--dry_run"],
    ["sweep", "--config", "configs/nope.py"],
    ["memory", "--config", "configs/grpo_arithmetic.py", "--config.train.steps=two"],
    ["table", "--runs", "A", "runs/a", "--runs", "A", "runs/b"],
])
def test_a_command_line_that_cannot_be_read_exits_2_with_one_line(args, capsys, monkeypatch):
  # As argparse's commands (generate, export, compare) exit; train, sweep, memory and eval, whose
  # --config argparse does not read, exited 1 and the unknown command 1.
  monkeypatch.chdir(REPO)
  with pytest.raises(SystemExit) as exited:
    cli.main(args)
  assert exited.value.code == 2
  printed = capsys.readouterr()
  assert (printed.out, printed.err) == ("", f"{exited.value}\n")
  assert str(exited.value).startswith(f"jaxlayer {args[0]}: " if args[0] in cli.COMMANDS
                                      else "jaxlayer: unknown command")


def test_jaxlayer_without_a_command_prints_the_usage_as_a_usage_error(capsys):
  with pytest.raises(SystemExit) as exited:
    cli.main([])
  assert exited.value.code == 2
  assert capsys.readouterr().err.strip() == cli.USAGE.strip()


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("signum,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_stopped_run_exits_as_its_signal_would_and_says_how_to_go_on(command, signum, name,
                                                                       monkeypatch, capsys,
                                                                       tmp_path):
  from jaxlayer import sweep
  from jaxlayer.rl import train

  def interrupted(*args, **kwargs):
    raise train.TrainingInterrupted(f"stopped by {name} after step 3 of 9, with a checkpoint "
                                    "there in RUN.", signum)

  monkeypatch.setattr(train, "train", interrupted)
  monkeypatch.setattr(sweep, "run_sweep", interrupted)
  config = "configs/sweep_tiny.py" if command == "sweep" else "configs/grpo_arithmetic.py"
  with pytest.raises(SystemExit) as exited:
    cli.main([command, "--config", str(REPO / config), f"--config.run_dir={tmp_path}",
              f"--config.model.path={assets.TINY_ARITH}"])
  assert exited.value.code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
  go_on = {"train": "Run the same command to go on (from the last checkpoint, if there is one).",
           "sweep": "The finished runs are recorded: run the same command to go on."}[command]
  assert capsys.readouterr().err.endswith(
      f"jaxlayer {command}: stopped by {name} after step 3 of 9, with a checkpoint there in "
      f"RUN. {go_on}\n")


class _SigtermUnanswered(Exception):
  """SIGTERM's default action in a test, which would otherwise end pytest itself."""


@pytest.fixture
def sigterm_unanswered():
  """SIGTERM raises _SigtermUnanswered meanwhile; the test checks that the command put this
  handler back."""

  def unanswered(signum, frame):
    raise _SigtermUnanswered

  previous = signal.signal(signal.SIGTERM, unanswered)
  try:
    yield unanswered
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_stops_a_sweep_outside_training_as_ctrl_c_and_training_takes_it_over(
    monkeypatch, capsys, tmp_path, sigterm_unanswered):
  """SIGTERM while a sweep scored a model (or loaded one) killed it without a word; now it stops
  as Ctrl-C does, status 143 and a line saying how to go on. While a run trains, the trainer
  takes it (stop_requests: it stops after the step, with a checkpoint)."""
  from jaxlayer import sweep
  from jaxlayer.rl import train

  stop_signals = []  # what each training's stop_requests saw

  def train_then_score(config, **kwargs):
    with train.stop_requests() as stop_signal:  # a run trains
      signal.raise_signal(signal.SIGTERM)
      stop_signals.append(stop_signal())
    signal.raise_signal(signal.SIGTERM)  # the next run is scored
    raise AssertionError("the sweep went on after SIGTERM")

  monkeypatch.setattr(sweep, "run_sweep", train_then_score)
  with pytest.raises(SystemExit) as exited:
    cli.main(["sweep", "--config", str(REPO / "configs/sweep_tiny.py"),
              f"--config.sweep.dir={tmp_path}", f"--config.model.path={assets.TINY_ARITH}"])
  assert signal.getsignal(signal.SIGTERM) is sigterm_unanswered  # restored
  assert exited.value.code == 143 and stop_signals == [signal.SIGTERM]
  assert capsys.readouterr().err.endswith(
      "jaxlayer sweep: stopped by SIGTERM. The finished runs are recorded: run the same command "
      "to go on.\n")


def _sigterm(*args, **kwargs):
  signal.raise_signal(signal.SIGTERM)
  raise AssertionError("the command went on after SIGTERM")


@pytest.mark.parametrize("command,stopped,go_on", [
    (["eval", "--config", str(REPO / "configs/sweep_tiny.py"), "--model", assets.TINY_ARITH],
     "jaxlayer.evaluation.evaluate_and_save", "Run the same command to do it again."),
    (["generate", "--model", assets.TINY_ARITH, "--prompt", "1+1="],
     "jaxlayer.evaluation.load_model", "The model was loading: nothing was generated."),
    (["export", "--run", "RUN", "--out", "OUT"],
     "jaxlayer.rl.checkpoint.checkpoint_step", "Run the same command to do it again."),
    (["memory", "--config", str(REPO / "configs/grpo_arithmetic.py"),
      f"--config.model.path={assets.TINY_ARITH}"],
     "jaxlayer.rl.memory.estimate", "Run the same command to do it again."),
], ids=["eval", "generate", "export", "memory"])
def test_sigterm_stops_a_command_as_ctrl_c_does(command, stopped, go_on, monkeypatch, capsys,
                                                sigterm_unanswered):
  """SIGTERM killed eval, generate, export and memory without a word; now each stops as Ctrl-C
  does: status 143 and a line saying how to go on."""
  monkeypatch.setattr(stopped, _sigterm)
  with pytest.raises(SystemExit) as exited:
    cli.main(command)
  assert signal.getsignal(signal.SIGTERM) is sigterm_unanswered  # restored
  assert exited.value.code == 143
  assert capsys.readouterr().err.endswith(f"jaxlayer {command[0]}: stopped by SIGTERM. {go_on}\n")


def _jax_compile(source: str):
  """A function of a module named as JAX's (a compile) that runs `source` (signals raised there)
  and returns 'compiled'."""
  jax_code = {"__name__": "jax._src.compiler", "signal": signal}
  exec(f"def compile():\n{textwrap.indent(source, '  ')}\n  return 'compiled'\n", jax_code)
  return jax_code["compile"]


def _run_eval_in_jax_code(monkeypatch, jax_source: str, command_goes_on: bool,
                          compiled: list) -> None:
  """Runs `jaxlayer eval` on the tiny model, its evaluation replaced by _jax_compile(jax_source),
  whose value goes in compiled."""
  import time

  compile_in_jax = _jax_compile(jax_source)

  def evaluate_and_save(*args, **kwargs):
    compiled.append(compile_in_jax())
    if command_goes_on:
      time.sleep(10)  # where the signal comes again
      raise AssertionError("the command went on after the signal")
    return "OUT", {}

  monkeypatch.setattr("jaxlayer.evaluation.evaluate_and_save", evaluate_and_save)
  cli.main(["eval", "--config", str(REPO / "configs/sweep_tiny.py"), "--model",
            assets.TINY_ARITH])


@pytest.mark.parametrize("signum,status,said", [(signal.SIGTERM, 143, "stopped by SIGTERM."),
                                                (signal.SIGINT, 130, "interrupted.")])
@pytest.mark.parametrize("command_goes_on", [True, False])
def test_a_stop_signal_within_jax_is_held_until_the_call_returns(
    signum, status, said, command_goes_on, monkeypatch, capsys, sigterm_unanswered):
  """jaxlib checks for signals while XLA compiles: a KeyboardInterrupt raised there left the
  compiler's threads running as Python exited (the stop's line, then a segfault, status 139).
  A signal that lands in JAX's code comes again once the command's own code runs, or stops it
  as it ends."""
  compiled = []
  with pytest.raises(SystemExit) as exited:
    _run_eval_in_jax_code(monkeypatch, f"signal.raise_signal({int(signum)})", command_goes_on,
                          compiled)
  assert signal.getsignal(signal.SIGTERM) is sigterm_unanswered  # restored
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  assert exited.value.code == status and compiled == ["compiled"]
  err = capsys.readouterr().err
  assert "stopping once JAX's call under way (a compile) returns; again: stop at once." in err
  assert err.endswith(f"jaxlayer eval: {said} Run the same command to do it again.\n")


def test_the_same_signal_again_within_jax_stops_at_once(monkeypatch, capsys, sigterm_unanswered):
  def exit_at_once(status):
    raise _ExitedAtOnce(status)

  monkeypatch.setattr(cli.os, "_exit", exit_at_once)
  with pytest.raises(_ExitedAtOnce) as exited:
    _run_eval_in_jax_code(monkeypatch, "signal.raise_signal(2)\nsignal.raise_signal(2)", True,
                          [])
  assert exited.value.args == (130,)
  assert capsys.readouterr().err.endswith("jaxlayer: Ctrl-C again: stopped at once.\n")


def test_a_second_ctrl_c_to_train_within_jax_is_held_until_the_call_returns(
    monkeypatch, capsys, tmp_path, sigterm_unanswered):
  """train's first Ctrl-C asks for a stop after the step under way; a second stops it at once,
  but one that lands in JAX's code (an XLA compile) waits for the call to return, as for the
  other commands (raised there, it ended in a segfault)."""
  import time

  from jaxlayer.rl import train

  compile_in_jax, compiled = _jax_compile("signal.raise_signal(2)"), []

  def training(config, **kwargs):
    signal.raise_signal(signal.SIGINT)  # the first: stop after the step
    compiled.append(compile_in_jax())  # the second comes while XLA compiles
    time.sleep(10)  # where it comes again
    raise AssertionError("the run went on after a second Ctrl-C")

  monkeypatch.setattr(train, "plan", lambda config: argparse.Namespace(summary=lambda: "plan"))
  monkeypatch.setattr(train, "check_resume", lambda plan: 0)
  monkeypatch.setattr(train, "train", training)
  with pytest.raises(SystemExit) as exited:
    cli.main(["train", "--config", str(REPO / "configs/sweep_tiny.py"),
              f"--config.run_dir={tmp_path / 'run'}"])
  assert exited.value.code == 130 and compiled == ["compiled"]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
  err = capsys.readouterr().err
  assert "Ctrl-C: stopping before the next step" in err
  assert "Ctrl-C: stopping once JAX's call under way (a compile) returns" in err
  assert err.endswith("jaxlayer train: interrupted. Run the same command to go on (from the last "
                      "checkpoint, if there is one).\n")


class _ExitedAtOnce(BaseException):
  """os._exit, which the test must not call."""


def test_sigterm_in_a_garbage_collection_callback_still_stops_the_command(monkeypatch, capsys,
                                                                          sigterm_unanswered):
  """Python drops an exception raised in a weakref callback (JAX sets many), printing it as
  'Exception ignored'; the command went on, and ended with status 0."""
  import time
  import weakref

  class Collected:
    pass

  def collected_during_sigterm(*args, **kwargs):
    collected = Collected()
    watch = weakref.ref(collected, lambda ref: signal.raise_signal(signal.SIGTERM))
    del collected  # (the callback runs here)
    time.sleep(5)
    raise AssertionError(f"the command went on after SIGTERM ({watch})")

  monkeypatch.setattr(evaluation, "evaluate_and_save", collected_during_sigterm)
  with pytest.raises(SystemExit) as exited:
    cli.main(["eval", "--config", str(REPO / "configs/sweep_tiny.py"), "--model",
              assets.TINY_ARITH])
  assert exited.value.code == 143
  assert capsys.readouterr().err == ("\njaxlayer eval: stopped by SIGTERM. Run the same command "
                                     "to do it again.\n")


def test_sigterm_after_an_export_is_written_says_it_is_whole(monkeypatch, tmp_path, capsys,
                                                             sigterm_unanswered):
  """Not 'run the same command', which would find the export there and refuse it."""
  from jaxlayer.rl import checkpoint

  monkeypatch.setattr(checkpoint, "checkpoint_step", lambda run, step: 3)
  monkeypatch.setattr(checkpoint, "export", lambda run, out, **kwargs: tmp_path)
  monkeypatch.setattr(checkpoint, "trained_weights_at_base", _sigterm)
  with pytest.raises(SystemExit) as exited:
    cli.main(["export", "--run", "RUN", "--out", str(tmp_path), "--dtype", "bfloat16"])
  assert exited.value.code == 143
  assert capsys.readouterr().err.endswith(
      f"jaxlayer export: stopped by SIGTERM. {tmp_path} holds step 3 of RUN, whole; only the "
      "count of the weights that bfloat16 rounds back to the base model's was left out.\n")




def test_version_names_jaxlayer_and_the_installed_libraries(capsys):
  from importlib import metadata

  import jaxlayer

  cli.main(["--version"])
  first, second = capsys.readouterr().out.splitlines()
  assert first == f"jaxlayer {jaxlayer.__version__}" == f"jaxlayer {metadata.version('jaxlayer')}"
  for name in ("jax", "flax", "optax", "orbax-checkpoint", "transformers"):
    assert f"{name} {metadata.version(name)}" in second


def test_train_summary_names_each_step_once():
  from types import SimpleNamespace

  one = SimpleNamespace(step=1, reward_history=[0.25], run_dir="RUN")
  assert cli._train_result_lines(one, 0, [{"step": 1, "eval/a/pass@1": 0.5}]) == (
      "trained 1 step; mean reward 0.250 at step 1\ntest a/pass@1: 0.500 at step 1\n"
      "export the trained model: jaxlayer export --run RUN --out HF_DIR")
  three = SimpleNamespace(step=3, reward_history=[0.25, 0.0, -0.0], run_dir="RUN")
  assert cli._train_result_lines(three, 1, [{"step": 1, "eval/a/pass@1": 0.5},
                                            {"step": 3, "eval/a/pass@1": 0.75}]) == (
      "trained 2 steps; mean reward 0.250 at step 1, 0.000 at step 3\n"
      "test a/pass@1: 0.500 at step 1, 0.750 at step 3\n"
      "export the trained model: jaxlayer export --run RUN --out HF_DIR")


@pytest.mark.parametrize("command", ["train", "memory", "sweep"])
def test_a_config_commands_help_is_wrapped_to_the_terminal_as_argparse_wraps(command, capsys,
                                                                             monkeypatch):
  # Its description printed as one line of 300 to 600 characters.
  monkeypatch.setenv("COLUMNS", "80")
  cli.main([command, "--help"])
  usage, description = capsys.readouterr().out.split("\n\n")
  assert usage.startswith(f"jaxlayer {command} --config FILE")
  assert len(description.splitlines()) > 2
  assert max(len(line) for line in description.splitlines()) <= 78


@pytest.mark.parametrize("command", ["generate", "export", "eval", "compare", "table"])
def test_every_option_with_a_default_names_it_in_its_help(command, monkeypatch):
  # generate's --help left out the defaults of --max-new-tokens (32), --batch-size (32), --seed
  # (0), --num-samples and --devices (1), which the README gives.
  built = []

  def stop_at_parsing(parser, *args, **kwargs):
    built.append(parser)
    raise SystemExit(0)

  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop_at_parsing)
  monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop_at_parsing)
  with pytest.raises(SystemExit):
    cli.COMMANDS[command]([])
  parser = built[0]
  helps = {action.option_strings[0]: parser._get_formatter()._expand_help(action)
           for action in parser._actions if action.option_strings and action.help}
  silent = [option for action in parser._actions for option in action.option_strings[:1]
            if action.help and action.default not in (None, argparse.SUPPRESS, {})
            and action.default is not False and f"default: {action.default}" not in helps[option]
            and f"{action.default} (the default)" not in helps[option]]
  assert silent == []


def test_python_dash_m_jaxlayer_runs_the_command():
  import subprocess
  import sys

  out = subprocess.run([sys.executable, "-m", "jaxlayer", "--help"], capture_output=True,
                       text=True, check=True, cwd=REPO).stdout
  assert out.strip() == cli.USAGE.strip()


def test_sigterm_before_a_command_takes_it_over_stops_it_with_a_line():
  """A SIGTERM while a command imported and read its settings (before _stop_signals) ended it
  without a word (status -15)."""
  import subprocess

  sigterm_while_reading = (
      "import signal\n"
      "from jaxlayer import cli\n"
      "cli._training_config = lambda *args: signal.raise_signal(signal.SIGTERM)\n"
      "cli.main(['train', '--config', 'configs/grpo_arithmetic.py'])\n")
  result = subprocess.run([sys.executable, "-c", sigterm_while_reading], capture_output=True,
                          text=True, cwd=REPO)
  assert (result.returncode, result.stderr) == (143, "jaxlayer: stopped by SIGTERM\n")


def test_memory_makes_the_cpu_devices_of_its_mesh():
  """`jaxlayer memory` builds the model's shapes before it makes mesh.num_devices CPU devices:
  a model whose construction asked JAX for its backend started it with one device ('8 but 1
  device exists')."""
  import subprocess
  import sys

  command = [sys.executable, "-m", "jaxlayer", "memory", "--config", "configs/sweep_tiny.py",
             "--config.mesh.num_devices=8", "--config.mesh.fsdp=8"]
  result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS})  # one CPU device
  assert result.returncode == 0, result.stderr
  assert "(8 devices, mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in result.stdout


def test_without_pytorch_commands_say_nothing_of_its_absence():
  """jaxlayer needs no PyTorch (TPU VMs have none); transformers then advises on import that
  its models are unavailable, which misleads a jaxlayer user."""
  import subprocess
  import sys

  hide_torch = ("import importlib.util as util\n"
                "find_spec = util.find_spec\n"
                "util.find_spec = lambda name, *args: (None if name == 'torch'\n"
                "                                      else find_spec(name, *args))\n"
                "from jaxlayer import cli\n"
                f"cli.main(['generate', '--model', {str(assets.TINY_ARITH)!r}, '--prompt', '1+2=',"
                " '--max-new-tokens', '2'])\n"
                "from transformers.utils import is_torch_available\n"
                "assert not is_torch_available()\n")
  env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
  result = subprocess.run([sys.executable, "-c", hide_torch], capture_output=True, text=True,
                          cwd=REPO, env=env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("1+2=") and "PyTorch" not in result.stderr, result.stderr


TINY = f"--config.model.path={assets.TINY_ARITH}"


@pytest.mark.parametrize("command", ["train", "memory", "sweep", "eval"])
def test_a_config_file_that_is_not_there_is_named(command, tmp_path, monkeypatch):
  """ml_collections used to answer with a list of load attempts ('Configuration is not available
  because of an earlier failure to load: ... Attempted [Relative path]: ...')."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").mkdir()
  model = ["--model", str(assets.TINY_ARITH)] if command == "eval" else []
  for config, found in [("configs/nope.py", f"does not exist (in {tmp_path})"),
                        (f"{tmp_path}/nope.py:arg", "does not exist"),
                        ("configs", "is a directory")]:
    with pytest.raises(SystemExit) as exited:
      cli.main([command, "--config", config, *model])
    assert str(exited.value) == (
        f"jaxlayer {command}: the config file {config.split(':')[0]} {found}: give a Python "
        "config file, such as configs/grpo_arithmetic.py of the jaxlayer repository.")
  (tmp_path / "configs" / "plain.py").write_text("learning_rate = 1e-6\n")
  cli.load_config(["--config", str(REPO / "configs" / "grpo_arithmetic.py")], "earlier")
  with pytest.raises(SystemExit) as exited:
    cli.main([command, "--config=configs/plain.py", *model])
  assert str(exited.value) == (
      f"jaxlayer {command}: the config file configs/plain.py defines no get_config(): a config "
      "file is a Python file whose get_config() returns an ml_collections ConfigDict, such as "
      "configs/grpo_arithmetic.py of the jaxlayer repository.")


def test_a_repository_config_named_from_another_directory_is_found_for_the_fix(tmp_path,
                                                                              monkeypatch):
  # `cd runs && jaxlayer sweep --config configs/sweep_tiny.py` named no file to give instead.
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as exited:
    cli.main(["sweep", "--config", "configs/sweep_tiny.py", "--dry-run"])
  shipped = REPO / "configs" / "sweep_tiny.py"
  assert str(exited.value) == (
      f"jaxlayer sweep: the config file configs/sweep_tiny.py does not exist (in {tmp_path}); the "
      f"jaxlayer repository's is {shipped}: write --config {shipped}.")


@pytest.mark.parametrize("args", [["--config"], ["--config="], ["--config", "--config.seed=1"]])
def test_a_config_option_without_its_file_names_the_fix(args):
  # It said "cannot load the config file: Missing value for flag --config".
  with pytest.raises(SystemExit) as exited:
    cli.load_config(args, "jaxlayer sweep")
  assert str(exited.value) == ("jaxlayer sweep: --config has no value: write --config FILE, such "
                               "as configs/grpo_arithmetic.py of the jaxlayer repository.")


@pytest.mark.parametrize("command", ["train", "memory", "sweep"])
def test_a_command_without_its_config_file_says_where_one_is(command):
  # It said "(see configs/)": a pip install has no configs/, the jaxlayer repository has.
  with pytest.raises(SystemExit) as exited:
    cli.main([command])
  assert str(exited.value) == (f"jaxlayer {command}: --config FILE is required: a Python config "
                               "file, such as configs/grpo_arithmetic.py of the jaxlayer "
                               "repository.")


def test_a_config_file_whose_code_fails_or_returns_no_config_dict_is_named_in_one_line(tmp_path):
  # A syntax error, an import of a module not on the path (an environment of the user's) or a
  # name error ended in a traceback; a dict from get_config() in "'dict' object has no attribute
  # 'unlocked'".
  for code, problem in [
      ("def get_config(:\n", "cannot load the config file {}: SyntaxError: invalid syntax "
       "(bad.py, line 1)."),
      ("import my_envs\n", "cannot load the config file {}: ModuleNotFoundError: No module "
       "named 'my_envs' (line 1): install it, or add its directory to PYTHONPATH."),
      ("x = 1\ny = undefined_name\n", "cannot load the config file {}: NameError: name "
       "'undefined_name' is not defined (line 2)."),
      ("def get_config():\n  return {'train': {'steps': 3}}\n", "the get_config() of the config "
       "file {} returns an object of type dict, not an ml_collections ConfigDict: build it as "
       "configs/grpo_arithmetic.py of the jaxlayer repository does, from "
       "jaxlayer.rl.config.default_config().")]:
    config = tmp_path / "bad.py"
    config.write_text(code)
    with pytest.raises(SystemExit) as exited:
      cli.load_config(["--config", str(config)], "jaxlayer train")
    assert (exited.value.code, str(exited.value)) == (
        2, f"jaxlayer train: {problem.format(config)}")


def test_a_config_whose_get_config_raises_is_named_with_its_error_in_one_line():
  # ml_collections puts the whole traceback in its message; only the error is news, and its line.
  path = REPO / "configs" / "paper_qwen3_grpo.py"
  line = next(number for number, text in enumerate(path.read_text().splitlines(), 1)
              if "raise ValueError" in text)
  with pytest.raises(SystemExit) as exited:
    cli.main(["train", "--config", f"{path}:5b"])
  assert str(exited.value) == (
      f"jaxlayer train: cannot load the config file {path}: ValueError: "
      "configs/paper_qwen3_grpo.py:5b: no such model; choose one of 1.7b, 4b, 8b, e.g. "
      f"configs/paper_qwen3_grpo.py:4b. (line {line})")


def test_a_value_of_another_type_in_a_config_file_is_named_with_its_line(tmp_path):
  # ml_collections' error named the field alone ('every': checkpoint.every? sweep's?).
  config = tmp_path / "typed.py"
  config.write_text("from jaxlayer.rl.config import default_config\n\n\ndef get_config():\n"
                    "  config = default_config()\n"
                    "  config.checkpoint.every = 2.5\n"
                    "  return config\n")
  with pytest.raises(SystemExit) as exited:
    cli.load_config(["--config", str(config)], "jaxlayer train")
  assert str(exited.value) == (
      f"jaxlayer train: cannot load the config file {config}: TypeError: Could not override "
      "field 'every' (reference). 2.5 is of original type <class 'float'> and cannot be casted "
      "to type <class 'int'> (line 6)")


def test_arguments_to_a_config_file_that_takes_none_are_named():
  # configs/sweep_tiny.py:4b (the form of configs/paper_qwen3_grpo.py:4b) said "cannot load the
  # config file ...: TypeError: get_config() takes 0 positional arguments but 1 was given".
  config = str(REPO / "configs" / "sweep_tiny.py")
  with pytest.raises(SystemExit) as exited:
    cli.main(["memory", f"--config={config}:4b"])
  assert str(exited.value) == (
      f"jaxlayer memory: the config file {config} takes no arguments (its get_config() has none), "
      f"but --config gives it '4b' after ':': write --config {config}.")


@pytest.mark.parametrize("command", ["train", "memory", "sweep", "eval"])
def test_an_unknown_option_is_named_and_help_is_help_anywhere(command, capsys):
  # It said 'cannot load the config file: Unknown command line flag ...' of a file that loads,
  # and --help after --config was such an unknown flag.
  config = str(REPO / ("configs/sweep_tiny.py" if command in ("sweep", "eval")
                       else "configs/grpo_arithmetic.py"))
  model = ["--model", str(assets.TINY_ARITH)] if command == "eval" else []
  with pytest.raises(SystemExit) as exited:
    cli.main([command, "--config", config, *model, "--dry_run"])
  hint = "; did you mean --dry-run?" if command == "sweep" else ":"  # (none close elsewhere)
  assert str(exited.value) == (f"jaxlayer {command}: unknown option --dry_run{hint} `jaxlayer "
                               f"{command} --help` lists the options; a setting is "
                               "--config.KEY=VALUE.")
  if command != "eval":  # (argparse's own --help)
    cli.main([command, "--config", config, "--help"])
    assert capsys.readouterr().out.startswith(f"jaxlayer {command} --config FILE")


@pytest.mark.parametrize("command, args, typo, guess", [
    ("train", ["--confg", "CONFIG"], "--confg", "--config"),
    ("train", ["--config", "CONFIG", "--confg.train.steps=2"], "--confg.train.steps",
     "--config.train.steps"),
    ("memory", ["--config", "CONFIG", "--compil"], "--compil", "--compile"),
    ("eval", ["--config", "CONFIG", "--model", "M", "--ovewrite"], "--ovewrite", "--overwrite"),
])
def test_a_mistyped_option_of_a_config_command_names_the_closest(command, args, typo, guess):
  config = str(REPO / "configs/grpo_arithmetic.py")
  with pytest.raises(SystemExit) as exited:
    cli.main([command, *[config if arg == "CONFIG" else arg for arg in args]])
  assert str(exited.value) == (f"jaxlayer {command}: unknown option {typo}; did you mean {guess}? "
                               f"`jaxlayer {command} --help` lists the options; a setting is "
                               "--config.KEY=VALUE.")


@pytest.mark.parametrize("override, where, typo, hint", [
    ("--config.train.step=2", "train", "step", "; did you mean 'steps'?"),
    ("--config.trian.steps=2", "the config", "trian", "; did you mean 'train'?"),
    ("--config.train.zzzz=2", "train", "zzzz", "."),  # (none close)
])
def test_a_mistyped_config_key_names_the_closest(override, where, typo, hint):
  config = str(REPO / "configs/grpo_arithmetic.py")
  loaded = cli._training_config(["--config", config], "jaxlayer train")  # (with its eval section)
  keys = ", ".join(sorted((loaded.train if where == "train" else loaded).keys()))
  with pytest.raises(SystemExit) as exited:
    cli.main(["train", "--config", config, override])
  assert str(exited.value) == (f"jaxlayer train: {override.split('=')[0]}: {where} has no key "
                               f"{typo!r} (its keys: {keys}){hint} Every key and its default: "
                               "docs/configuration.md.")


def test_jaxlayers_warnings_print_as_one_line_and_other_libraries_as_python_does(tmp_path,
                                                                                 monkeypatch,
                                                                                 capsys):
  # `jaxlayer sweep` printed ".../jaxlayer/sweep/report.py:287: UndefinedContributionWarning:
  # S_full == S_base ..." and then that line of jaxlayer's code.
  (tmp_path / metrics.METRICS_FILE).write_text('{"step": 1, "rew')

  def table(argv):
    contribution.layer_contribution(0.5, 0.5, 0.5)  # jaxlayer's category
    metrics.plot_training(tmp_path)  # a UserWarning, raised in jaxlayer's module
    warnings.warn("a warning of another library", DeprecationWarning)

  monkeypatch.setitem(cli.COMMANDS, "table", table)
  # pytest records warnings: shown instead, as Python shows them outside pytest.
  def show_as_python(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

  monkeypatch.setattr(warnings, "showwarning", show_as_python)
  python_format = warnings.formatwarning
  with warnings.catch_warnings():
    warnings.simplefilter("always")
    cli.main(["table"])
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == ("jaxlayer: warning: S_full == S_base (= 0.5): full RL did not move the "
                      "score, so the layer contribution C(k) is undefined.")
  assert lines[1] == (f"jaxlayer: warning: {tmp_path / metrics.METRICS_FILE}: left out 1 line cut "
                      "short when a run died while writing them.")
  assert re.fullmatch(rf"{re.escape(__file__)}:\d+: DeprecationWarning: a warning of another "
                      "library", lines[2])
  assert warnings.formatwarning is python_format  # (restored: the next test's, pytest's)


@pytest.mark.parametrize("command, config", [
    ("train", "grpo_arithmetic.py"), ("memory", "grpo_arithmetic.py"),
    ("eval", "grpo_arithmetic.py"), ("train", "sweep_tiny.py")])
def test_a_sweep_setting_given_to_another_command_says_whose_it_is(command, config):
  # `jaxlayer train ... --config.sweep.layers=3` asked "did you mean 'seed'?"; with a config file
  # that has a sweep section (sweep_tiny.py), train ignored it. (`jaxlayer memory` and `eval`
  # take a sweep's own command line: below.)
  model = ["--model", str(assets.TINY_ARITH)] if command == "eval" else []
  with pytest.raises(SystemExit) as exited:
    cli.main([command, "--config", str(REPO / "configs" / config), *model,
              "--config.sweep.layers=3"])
  assert str(exited.value) == (f"jaxlayer {command}: --config.sweep.layers: sweep.* settings are "
                               "`jaxlayer sweep`'s, which this command does not run: leave it "
                               "out, or run `jaxlayer sweep` with it.")


def test_memory_takes_a_sweeps_command_line_as_it_is(capsys):
  """Sizing a sweep is `jaxlayer memory` with the sweep's own command line, sweep.* included
  (as scoring one of its runs is `jaxlayer eval` with it: tests/test_multiturn.py)."""
  cli.main(["memory", "--config", str(REPO / "configs" / "sweep_tiny.py"),
            "--config.sweep.layers=3", "--config.sweep.seeds=2"])
  assert "evaluation (jaxlayer eval, the sweep's scoring)" in capsys.readouterr().out


def test_a_new_key_of_a_dict_setting_names_how_to_set_the_dict_whole(tmp_path):
  # `--config.task.chat_template_kwargs.enable_thinking=false` pointed to docs/configuration.md,
  # which cannot list what a chat template reads; the dict form is what takes it.
  config = tmp_path / "chat.py"
  config.write_text("from jaxlayer.rl.config import default_config\n\n\ndef get_config():\n"
                    "  config = default_config()\n"
                    "  config.task.chat_template_kwargs = {'enable_thinking': False}\n"
                    "  return config\n")
  for override, section, keys, kept in [
      ("--config.task.chat_template_kwargs.tools=1", "task.chat_template_kwargs",
       "enable_thinking", ", with the keys the file sets (enable_thinking)"),
      ("--config.eval.task_options.gsm8k=1", "eval.task_options", "none", "")]:
    with pytest.raises(SystemExit) as exited:
      cli._training_config(["--config", str(config), override], "jaxlayer train")
    key = override.split("=")[0].rsplit(".", 1)[1]
    assert str(exited.value) == (
        f"jaxlayer train: {override.split('=')[0]}: {section} has no key {key!r} (its keys: "
        f"{keys}). The command line changes only the keys of {section} that the config file "
        f"sets: set it whole, as a Python dict: --config.{section}='{{\"{key}\": VALUE}}'{kept}.")
  loaded = cli.load_config(["--config", str(config), "--config.task.chat_template_kwargs="
                            '{"tools": 1, "enable_thinking": False}'], "jaxlayer train")
  assert loaded.task.chat_template_kwargs.to_dict() == {"tools": 1, "enable_thinking": False}


def test_an_override_to_none_unsets_a_key_unset_by_default(tmp_path):
  # --config.task.system_prompt=None set the system prompt 'None'; --config.train.kl_beta=None
  # (back to the algorithm's) was refused as no number.
  config = tmp_path / "set.py"
  config.write_text("from jaxlayer.rl.config import default_config\n\n\ndef get_config():\n"
                    "  config = default_config()\n"
                    "  config.task.system_prompt, config.train.kl_beta = 'Be brief.', 0.0\n"
                    "  return config\n")
  loaded = cli.load_config(["--config", str(config), "--config.task.system_prompt=None",
                            "--config.train.kl_beta=None", "--config.train.steps=3"], "x")
  assert (loaded.task.system_prompt, loaded.train.kl_beta, loaded.train.steps) == (None, None, 3)
  with pytest.raises(SystemExit) as exited:  # a key that is set by default stays a number
    cli.load_config(["--config", str(config), "--config.train.steps=None"], "jaxlayer train")
  assert str(exited.value) == ("jaxlayer train: --config.train.steps=None: train.steps takes a "
                               "whole number, not 'None', such as --config.train.steps=100.")


def test_an_override_to_none_sets_a_key_that_takes_none_beside_its_default():
  # env.step_timeout_s is 60 by default and None is no limit (its comment, and the error of a
  # timeout <= 0 says so), but --config.env.step_timeout_s=None was refused as no number.
  config = str(REPO / "configs/grpo_arithmetic.py")
  loaded = cli.load_config(["--config", config, "--config.env.step_timeout_s=None"], "x")
  assert loaded.env.step_timeout_s is None


def test_an_override_sets_a_key_that_the_config_file_set_to_none():
  # configs/gigpo_gridworld.py sets env.step_timeout_s = None, which dropped the key's type:
  # --config.env.step_timeout_s=30 failed with absl's "Type <class 'NoneType'> of field
  # config.env.step_timeout_s is not supported for overriding".
  config = str(REPO / "configs/gigpo_gridworld.py")
  loaded = cli.load_config(["--config", config, "--config.env.step_timeout_s=30"], "x")
  assert loaded.env.step_timeout_s == 30.0
  with pytest.raises(SystemExit) as exited:  # still a number, such as the default
    cli.load_config(["--config", config, "--config.env.step_timeout_s=soon"], "jaxlayer train")
  assert str(exited.value) == ("jaxlayer train: --config.env.step_timeout_s=soon: "
                               "env.step_timeout_s takes a number, not 'soon', such as "
                               "--config.env.step_timeout_s=60.0.")


def test_an_override_of_an_option_the_config_file_set_to_none_names_the_fix(tmp_path):
  # Nothing tells the type of a task's option set to None: absl refused a value for it with
  # "Type <class 'NoneType'> of field ... is not supported for overriding" (=None is kept).
  config = tmp_path / "none.py"
  config.write_text("from jaxlayer.rl.config import default_config\n\n\ndef get_config():\n"
                    "  config = default_config()\n"
                    "  config.task.options.dataset_config = None\n"
                    "  return config\n")
  loaded = cli.load_config(["--config", str(config), "--config.task.options.dataset_config=None"],
                           "x")
  assert loaded.task.options.dataset_config is None
  with pytest.raises(SystemExit) as exited:
    cli.load_config(["--config", str(config), "--config.task.options.dataset_config=main"],
                    "jaxlayer train")
  assert str(exited.value) == (
      "jaxlayer train: --config.task.options.dataset_config=main: the config file sets "
      "task.options.dataset_config to None, which tells no type to read 'main' as: set it in the "
      "config file.")


def test_an_override_value_after_a_space_is_refused_not_dropped():
  # absl read `--config.train.remat false` as the boolean flag alone (remat=True) and ignored
  # "false" as a stray argument; config files set remat=False, so the override inverted it.
  config = str(REPO / "configs/grpo_arithmetic.py")
  assert cli.load_config(["--config", config, "--config.train.remat=false"], "x").train.remat \
      is False
  with pytest.raises(SystemExit) as exited:
    cli.load_config(["--config", config, "--config.train.remat", "false"], "jaxlayer train")
  assert str(exited.value) == ("jaxlayer train: --config.train.remat false: write "
                               "--config.train.remat=false (an override takes its value after "
                               "'=').")
  with pytest.raises(SystemExit, match="unexpected argument 'extra.py': give the config file as "
                     "--config FILE"):
    cli.load_config(["--config", config, "extra.py"], "jaxlayer train")


def test_an_override_without_its_value_is_refused_naming_the_fix():
  """At the end of the line absl said "bad configuration flag: Missing value for flag ..."; before
  another override it took that override as the value (train.layers='--config.train.steps=2')."""
  config = str(REPO / "configs/grpo_arithmetic.py")
  for args in (["--config.train.layers"], ["--config.train.layers", "--config.train.steps=2"]):
    with pytest.raises(SystemExit) as exited:
      cli.load_config(["--config", config, *args], "jaxlayer train")
    assert str(exited.value) == ("jaxlayer train: --config.train.layers has no value: write "
                                 "--config.train.layers=VALUE.")
  # A true/false key alone is true, as absl reads it: one unset (a placeholder) too.
  assert cli.load_config(["--config", config, "--config.train.remat"], "x").train.remat is True
  unset = cli.load_config(["--config", config, "--config.train.dynamic_sampling",
                           "--config.train.steps=2"], "x")
  assert (unset.train.dynamic_sampling, unset.train.steps) == (True, 2)


def test_a_section_set_to_no_python_dict_names_the_fix():
  """task.chat_template_kwargs takes a Python dict; JSON's false (what `jaxlayer generate
  --chat-template-kwargs` takes) was "bad configuration flag: ... malformed node or string"."""
  config = str(REPO / "configs/grpo_arithmetic.py")
  python = cli.load_config(["--config", config,
                            '--config.task.chat_template_kwargs={"enable_thinking": False}'], "x")
  assert python.task.chat_template_kwargs.to_dict() == {"enable_thinking": False}
  for value in ('{"enable_thinking": false}', "enable_thinking=False", "[False]"):
    with pytest.raises(SystemExit) as exited:
      cli.load_config(["--config", config, f"--config.task.chat_template_kwargs={value}"],
                      "jaxlayer train")
    assert str(exited.value) == (
        f"jaxlayer train: --config.task.chat_template_kwargs={value}: task.chat_template_kwargs "
        "takes a Python dict, such as {\"enable_thinking\": False} (Python's True, False and "
        "None, not JSON's true, false and null).")




def test_a_dict_set_to_no_python_dict_shows_its_own_value_as_the_example():
  # Every dict was shown {"enable_thinking": False}, a chat template's variable, as its example:
  # task.options=3 then read as if the task took enable_thinking.
  config = str(REPO / "configs/sweep_tiny.py")
  for override, example in [
      ("--config.task.options.reward_weights=correct:1", "{'correct': 1.0, 'format': 0.1}"),
      ("--config.env.options=x", '{"NAME": VALUE}')]:
    with pytest.raises(SystemExit) as exited:
      cli.load_config(["--config", config, override], "jaxlayer train")
    key = override[len("--config."):].split("=")[0]
    assert str(exited.value) == (f"jaxlayer train: {override}: {key} takes a Python dict, such as "
                                 f"{example} (Python's True, False and None, not JSON's true, "
                                 "false and null).")


def test_a_task_option_of_the_wrong_type_is_named_before_the_run_writes_anything(tmp_path):
  # A config's task.options={"max_value": "99"} failed in the task, comparing an int with a str.
  with pytest.raises(SystemExit) as exited:
    cli.main(["train", "--config", str(REPO / "configs/grpo_arithmetic.py"), TINY,
              f"--config.run_dir={tmp_path / 'run'}", '--config.task.options={"max_value": "99"}'])
  assert exited.value.code == ("jaxlayer train: task 'arithmetic': option 'max_value' takes int, "
                               "got '99' (str).")
  assert not (tmp_path / "run").exists()

@pytest.mark.parametrize("override", ["--config.train=3", '--config.train={"steps": 3}',
                                      '--config.sweep.ray={"num_gpus": 1}'])
def test_a_settings_section_set_to_one_value_is_refused_naming_its_keys(override):
  # A dict replaced the whole section: train={"steps": 3} dropped train.layers, and the run
  # failed later with a traceback (AttributeError: "'layers'"); train=3 was told to take a dict.
  with pytest.raises(SystemExit) as exited:
    cli.load_config(["--config", str(REPO / "configs/sweep_tiny.py"), override],
                    "jaxlayer sweep", sections={"sweep": runner.default_sweep_config})
  key = override[len("--config."):].split("=")[0]
  keys = {"train": "adam_b1, adam_b2, adam_eps, advantage_eps, aggregation, algorithm, "
                   "batch_size, clip_eps_high, clip_eps_low, dynamic_sampling, "
                   "dynamic_sampling_max_rounds, gigpo_gamma, gigpo_normalize, gigpo_omega, "
                   "group_size, kl_beta, layers, learning_rate, lr_groups, lr_schedule, "
                   "max_grad_norm, micro_batch_size, mini_batch_size, overlong_buffer_fraction, "
                   "overlong_filtering, ppo_epochs, remat, steps, warmup_steps, weight_decay",
          "sweep.ray": "address, max_retries, num_cpus, num_gpus, num_tpus"}[key]
  assert str(exited.value) == (f"jaxlayer sweep: {override}: {key} is a section of settings, "
                               f"not one value: set its keys one by one, --config.{key}.KEY=VALUE "
                               f"(its keys: {keys}).")
  # A section without keys of its own takes a dict whole.
  options = cli.load_config(["--config", str(REPO / "configs/sweep_tiny.py"),
                             '--config.task.options={"max_value": 9}'], "jaxlayer sweep")
  assert options.task.options.to_dict() == {"max_value": 9}

@pytest.mark.parametrize("override,expected", [
    ("--config.train.steps=two", "train.steps takes a whole number, not 'two', such as "
     "--config.train.steps=200."),
    ("--config.eval.num_problems=1e3", "eval.num_problems takes a whole number, not '1e3', such "
     "as --config.eval.num_problems=500."),
    ("--config.train.learning_rate=fast", "train.learning_rate takes a number, not 'fast', such "
     "as --config.train.learning_rate=1e-05."),
    ("--config.train.remat=maybe", "train.remat takes true or false, not 'maybe', such as "
     "--config.train.remat=false."),
    ("--config.train.dynamic_sampling=maybe", "train.dynamic_sampling takes true or false, not "
     "'maybe', such as --config.train.dynamic_sampling=true."),  # (unset: a placeholder)
])
def test_an_override_of_the_wrong_type_names_the_key_and_an_example(override, expected):
  # absl's own error was "bad configuration flag: flag --config.train.steps=two: invalid literal
  # for int() with base 10: 'two'", which names neither what the key takes nor a value it takes.
  config = str(REPO / "configs/grpo_arithmetic.py")
  with pytest.raises(SystemExit) as exited:
    cli.load_config(["--config", config, override], "jaxlayer train",
                    sections={"eval": evaluation.default_eval_config})
  assert str(exited.value) == f"jaxlayer train: {override}: {expected}"

@pytest.mark.parametrize("command,args,key", [
    ("train", ["--config", "configs/grpo_arithmetic.py", TINY, "--config.run_dir=gs://b/run"],
     "run_dir='gs://b/run'"),
    ("train", ["--config", "configs/grpo_arithmetic.py", "--config.model.path=gs://b/model",
               "--config.run_dir=run"], "model='gs://b/model'"),
    ("sweep", ["--config", "configs/sweep_tiny.py", TINY, "--config.sweep.dir=gs://b/sweep"],
     "sweep.dir='gs://b/sweep'"),
    ("eval", ["--config", "configs/sweep_tiny.py", "--model", str(assets.TINY_ARITH), "--out",
              "s3://b/eval"], "--out='s3://b/eval'"),
    ("generate", ["--model", "gs://b/model", "--prompt", "1+1="], "model='gs://b/model'"),
])
def test_a_url_for_a_directory_is_refused_before_anything_is_written(command, args, key,
                                                                     monkeypatch):
  """A gs:// path used to become a local directory named 'gs:', which on several hosts left
  each host's checkpoint shards on its own disk."""
  monkeypatch.chdir(REPO)  # the configs' relative paths
  with pytest.raises(SystemExit, match=re.escape(f"jaxlayer {command}: {key} is a URL, but "
                                                 "jaxlayer reads and writes directories through "
                                                 "the local file system")):
    cli.main([command, *args])
  assert not (REPO / "gs:").exists() and not (REPO / "s3:").exists()


# Each command's directory settings: {file} is where the directory goes, {run} a trained run.
DIRECTORY_SETTINGS = [
    ("train", ["--config", "configs/grpo_arithmetic.py", TINY, "--config.run_dir={file}"],
     "run_dir"),
    ("train", ["--config", "configs/grpo_arithmetic.py", TINY, "--config.run_dir={file}/run"],
     "run_dir"),
    ("sweep", ["--config", "configs/sweep_tiny.py", TINY, "--config.sweep.dir={file}"],
     "sweep.dir"),
    ("sweep", ["--config", "configs/sweep_tiny.py", TINY, "--config.sweep.dir={file}",
               "--dry-run"], "sweep.dir"),
    ("eval", ["--config", "configs/sweep_tiny.py", "--model", str(assets.TINY_ARITH), "--out",
              "{file}"], "--out"),
    ("eval", ["--config", "configs/sweep_tiny.py", "--model", "{file}"], "model"),
    ("export", ["--run", "{run}", "--out", "{file}/hf"], "--out"),
    ("generate", ["--model", "{file}", "--prompt", "1+1="], "model"),
    ("compare", ["{run}", "{run}", "--out", "{file}"], "--out"),
]


def _refused_before_any_work(command, args, key, run, file, monkeypatch, problem):
  """Runs `jaxlayer COMMAND ARGS` with {file} and {run} filled in, which must stop before any
  work with "{key}={given!r} {where} {problem}" (where: "is", or "is inside FILE, which is")."""
  from jaxlayer import evaluation, sampling
  from jaxlayer.rl import checkpoint, train

  for module, name in [(train, "train"), (evaluation, "evaluate_from_config"),
                       (checkpoint, "load_trained_model"), (sampling, "generate")]:
    monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("started working"))
  monkeypatch.chdir(REPO)  # the configs' relative paths
  args = [arg.format(file=file, run=run) for arg in args]
  given = next(arg for arg in args if str(file) in arg).split("=")[-1]
  where = "is" if given == str(file) else f"is inside {file}, which is"
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer {command}: {key}={given!r} {where} {problem}")):
    cli.main([command, *args])


@pytest.mark.parametrize("command,args,key", DIRECTORY_SETTINGS)
def test_a_file_where_a_directory_goes_is_refused_before_any_work(command, args, key, tmp_path,
                                                                  tiny_qwen2_dir, monkeypatch):
  """Each command used to fail on it with a traceback or a raw errno (eval after evaluating
  everything), and generate said the file did not exist."""
  from tests.test_evaluation import _make_run_dir

  run = tmp_path / "run"
  _make_run_dir(run, tiny_qwen2_dir, step=2)
  file = tmp_path / "results"
  file.write_text("kept")
  _refused_before_any_work(command, args, key, run, file, monkeypatch,
                           "a file, not a directory: give a directory.")
  assert file.read_text() == "kept"
  assert sorted(path.name for path in tmp_path.iterdir()) == ["results", "run"]


@pytest.mark.parametrize("command,args,key", DIRECTORY_SETTINGS)
def test_a_broken_link_where_a_directory_goes_is_refused_before_any_work(
    command, args, key, tmp_path, tiny_qwen2_dir, monkeypatch):
  """A link to a missing directory (one not mounted yet, say) was called a file, not a
  directory. Now the error says it is a link, where to, and the fixes."""
  from tests.test_evaluation import _make_run_dir

  run = tmp_path / "run"
  _make_run_dir(run, tiny_qwen2_dir, step=2)
  link, target = tmp_path / "results", tmp_path / "unmounted" / "results"
  link.symlink_to(target)
  target = os.path.realpath(target)  # (tmp_path may be under a link itself)
  _refused_before_any_work(
      command, args, key, run, link, monkeypatch,
      f"a link to {target}, which does not exist: create {target}, point the link at a "
      "directory, or give another directory.")
  assert link.is_symlink() and not os.path.lexists(target)
  assert sorted(path.name for path in tmp_path.iterdir()) == ["results", "run"]


def test_a_directory_under_the_home_directory_is_written_there(tmp_path, monkeypatch, capsys):
  """Shells leave the ~ of --config.run_dir=~/x as it is: it made a directory named '~' in the
  working directory (which a later `rm -rf ~` to tidy it would get wrong)."""
  from jaxlayer import models
  from jaxlayer.rl import train
  from jaxlayer.sweep import runner

  home, work = tmp_path / "home", tmp_path / "work"
  home.mkdir(), work.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.chdir(REPO)  # the configs' relative paths
  config = cli.load_config(["--config", "configs/grpo_arithmetic.py", TINY,
                            "--config.run_dir=~/run"], "train")
  train.plan(config)
  assert config.run_dir == str(home / "run")
  config = cli.load_config(["--config", "configs/sweep_tiny.py", "--config.sweep.dir=~/sweep"],
                           "sweep", sections={"sweep": runner.default_sweep_config})
  assert runner.run_sweep(config, dry_run=True) == home / "sweep"
  monkeypatch.chdir(work)
  model, _ = models.from_pretrained(assets.TINY_ARITH)
  models.save_pretrained(model, "~/hf")
  assert (home / "hf" / "config.json").is_file()
  assert models.from_pretrained("~/hf")[1].num_layers == model.config.num_layers
  assert list(work.iterdir()) == [] and not (REPO / "~").exists()


def test_export_to_a_url_is_refused(tmp_path):
  from jaxlayer import models

  model, _ = models.from_pretrained(assets.TINY_ARITH)
  with pytest.raises(ValueError, match="out_dir='gs://bucket/hf' is a URL"):
    models.save_pretrained(model, "gs://bucket/hf")
