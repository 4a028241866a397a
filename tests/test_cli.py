"""The `jaxlayer` command line."""

import pytest
import torch
import transformers

from jaxlayer import cli


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
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
  assert printed == prompt + tokenizer.decode(out[0, ids.shape[1]:])


def test_unknown_command_names_the_choices():
  with pytest.raises(SystemExit, match="unknown command 'trian'.*generate"):
    cli.main(["trian"])
