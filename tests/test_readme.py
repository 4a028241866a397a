"""The README's Library snippet runs as printed, as a notebook user pastes it."""

import re

import numpy as np
import torch
import transformers

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
