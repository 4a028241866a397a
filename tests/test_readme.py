"""The README's Library snippet runs as printed, as a notebook user pastes it, and its command
line sweep example plans on the model its config names."""

import re

import numpy as np
import torch
import transformers

from jaxlayer import cli
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
