"""The README's Library snippet runs as printed, as a notebook user pastes it, its Quick start
describes the shipped sweep as configured, it names every setting a sweep may change, its command
line sweep example plans on the model its config names, and docs/reproduce_paper.md's activation
snippet runs on the directory the guide downloads; the tasks whose local directories it says need
`dataset_config=None` are those with a hub config."""

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from jaxlayer import cli, evaluation, models, tasks
from jaxlayer.rl import train
from jaxlayer.sweep import runner, store
from tests.sweep_fakes import REPO


def _library_snippet() -> str:
  readme = (REPO / "README.md").read_text()
  section = readme[readme.index("\n## Library\n"):]
  return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_library_snippet_runs_as_printed(tmp_path, monkeypatch):
  """It used to load a 1.7B hub model and use names it never defined (input_ids, tokenizer)."""
  monkeypatch.chdir(tmp_path)  # it writes out/ and runs/l1 where it runs
  names = {}
  exec(compile(_library_snippet(), "README.md (Library)", "exec"), names)  # noqa: S102
  batch, out, result = names["batch"], names["out"], names["result"]
  assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (2 * 4, 8)
  assert result.step == 4 and 0 <= names["scores"]["pass@1"] <= 1
  # "loads in transformers again": the saved model's logits are the snippet's
  reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  with torch.no_grad():
    expected = reference(torch.tensor(batch["input_ids"]),
                         attention_mask=torch.tensor(batch["attention_mask"])).logits.numpy()
  real = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(names["logits"])[real], expected[real], atol=1e-4)


def test_the_quick_start_describes_the_shipped_sweep_as_configured():
  """`make sweep`'s description: the shipped model's blocks and parameters (a block's too), and
  configs/sweep_tiny.py's test problems, algorithm, steps and sweep directory."""
  readme = (REPO / "README.md").read_text()
  quick_start = " ".join(readme[readme.index("\n## Quick start\n"):
                                readme.index("\n## Installing\n")].split())
  sweep_command = "jaxlayer sweep --config configs/sweep_tiny.py"
  config = cli.load_config(["--config", str(REPO / "configs" / "sweep_tiny.py")], "test",
                           sections={"eval": evaluation.default_eval_config,
                                     "sweep": runner.default_sweep_config})
  model_config = models.ModelConfig.from_json_file(Path(config.model.path) / "config.json")
  sizes = {path: math.prod(shape) for path, shape in train.param_shapes(model_config).items()}
  total = sum(sizes.values())
  block = sum(size for path, size in sizes.items() if path.startswith("layers.0."))
  stated = [f"`make sweep` runs `{sweep_command}`",
            f"{model_config.num_layers}-block Qwen2 with {total / 1e6:.1f}M parameters",
            f"on the {config.eval.num_problems:,} test problems",
            f"full-parameter {config.train.algorithm.upper()} ({config.train.steps} steps)",
            f"({block:,} of {total / 1e6:.2f}M)", f"(`{config.sweep.dir}/`)"]
  assert [phrase for phrase in stated if phrase not in quick_start] == []
  assert sweep_command in (REPO / "Makefile").read_text()


def test_the_settings_a_resumed_sweep_may_change_are_those_the_sweep_takes():
  """The README's list of settings that cannot change a score, which a sweep directory takes
  changed, names every one of store.NOT_IDENTITY (a whole section by its name, a key by its own);
  it lacked rollout.prompts_per_call and the replicate_params keys, which a sweep resumed on
  fewer devices may need to lower or turn off."""
  readme = " ".join((REPO / "README.md").read_text().split())
  listed = re.search(r"settings that cannot \((.*?)\) may change", readme).group(1)
  set_per_run = {"sweep", "seed", "run_dir", "compilation_cache_dir", "train.layers"}
  unnamed = [key for key in store.NOT_IDENTITY if key not in set_per_run and not (
      key in listed if "." not in key else
      f"`{key}`" in listed or f"`{key.split('.')[-1]}` keys" in listed)]
  assert unnamed == []


def test_the_command_line_sweep_example_plans_on_the_shipped_tiny_model(tmp_path, capsys):
  """Its groups named blocks 10-12, which the 8-block model of configs/sweep_tiny.py lacks:
  the command, run as printed, stopped with an error."""
  readme = (REPO / "README.md").read_text()
  section = readme[readme.index("\n## Command line\n"):]
  commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
  sweep_command = commands[commands.index("jaxlayer sweep "):commands.index("jaxlayer compare ")]
  assert "--config configs/sweep_tiny.py" in sweep_command
  overrides = re.findall(r"--config\.sweep\.\w+=[^\s\]]+", sweep_command)
  assert {override.split("=")[0] for override in overrides} == {
      "--config.sweep.layers", "--config.sweep.seeds", "--config.sweep.groups"}
  cli.main(["sweep", "--config", str(REPO / "configs" / "sweep_tiny.py"), *overrides,
            f"--config.sweep.dir={tmp_path / 'sweep'}", "--dry-run"])
  assert "dry run: a new sweep directory" in capsys.readouterr().out


def test_the_tasks_named_to_need_dataset_config_none_are_those_with_a_hub_config():
  """A task whose default dataset_config names a hub config cannot read a local directory of
  data files without `dataset_config=None`; the README named gsm8k and olympiadbench, not code."""
  readme = (REPO / "README.md").read_text()
  sentence = re.search(r"`dataset_config=None` for (.*?), or a `DatasetDict`", readme,
                       re.DOTALL).group(1)
  with_hub_config = {name for name, task in tasks.TASKS.items() if dataclasses.is_dataclass(task)
                     and any(field.name == "dataset_config" and field.default is not None
                             for field in dataclasses.fields(task))}
  assert with_hub_config and set(re.findall(r"`(\w+)`", sentence)) == with_hub_config


# Qwen/Qwen3-1.7B-Base's config.json on the hub (the fields the model reads).
QWEN3_1P7B_BASE_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
    "max_position_embeddings": 32768, "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000, "sliding_window": None, "use_sliding_window": False,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 151936,
    "bos_token_id": 151643, "eos_token_id": 151643}


def test_the_reproduce_guide_activation_snippet_runs_on_the_directory_it_downloads(
    tmp_path, monkeypatch, capsys):
  """It read Qwen3-1.7B/config.json, a directory the guide never makes (section 2 downloads
  into models/Qwen3-1.7B-Base), and prints the figures the guide quotes beside it."""
  guide = (REPO / "docs" / "reproduce_paper.md").read_text()
  download_dir = re.search(r"hf download Qwen/Qwen3-1.7B-Base --local-dir (\S+)", guide).group(1)
  snippet = next(block for block in re.findall(r"```python\n(.*?)```", guide, re.DOTALL)
                 if "backward_activation_bytes" in block)
  monkeypatch.chdir(tmp_path)
  (tmp_path / download_dir).mkdir(parents=True)
  (tmp_path / download_dir / "config.json").write_text(json.dumps(QWEN3_1P7B_BASE_CONFIG))
  exec(compile(snippet, "docs/reproduce_paper.md", "exec"), {})  # noqa: S102
  assert capsys.readouterr().out.splitlines() == [
      "remat=False: 34.7 GB of activations", "remat=True: 1.0 GB of activations"]
  assert "would keep **34.7 GB**" in guide and "then keeps **1.0 GB**" in guide


@pytest.mark.eight_devices  # the session sizes a mesh of 8 (CPU) devices
def test_the_reproduce_guide_memory_session_prints_what_jaxlayer_memory_prints(
    tmp_path, monkeypatch, capsys):
  """docs/reproduce_paper.md's `jaxlayer memory` session, run on the directory the guide
  downloads (Qwen3-1.7B-Base's config.json: sizing reads nothing else), prints what it shows."""
  guide = (REPO / "docs" / "reproduce_paper.md").read_text()
  session = re.search(r"```text\n\$ (jaxlayer memory .*?)```", guide, re.DOTALL).group(1)
  command, printed = re.match(r"((?:[^\n]*\\\n)*[^\n]*)\n(.*)", session, re.DOTALL).groups()
  download_dir = tmp_path / "models" / "Qwen3-1.7B-Base"
  download_dir.mkdir(parents=True)
  (download_dir / "config.json").write_text(json.dumps(QWEN3_1P7B_BASE_CONFIG))
  (tmp_path / "configs").symlink_to(REPO / "configs")
  monkeypatch.chdir(tmp_path)  # the guide runs its commands in the repository's directory
  argv = command.replace("\\\n", " ").split()
  assert argv[:2] == ["jaxlayer", "memory"]
  cli.main(argv[1:])
  assert capsys.readouterr().out == printed
