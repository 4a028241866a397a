"""notebooks/quickstart.ipynb runs top to bottom on CPU (its small settings) and shows the plot."""

import base64
import copy
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import TEST_XLA_FLAGS
from tests.sweep_fakes import REPO

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _outputs(cell) -> list[dict]:
  return [dict(output) for output in cell.get("outputs", [])]


def _sweep_cell(notebook):
  return next(c for c in notebook.cells if c.cell_type == "code" and "run_sweep(" in c.source)


@pytest.fixture(scope="module")
def executed_and_rerun(tmp_path_factory):
  """The notebook after running every cell (JAXLAYER_NOTEBOOK_SMALL=1, one CPU device), and
  the sweep cell run once more at the end in the same kernel, as a notebook user re-runs it."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAXLAYER_NOTEBOOK_SMALL", "1")
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("XLA_FLAGS", TEST_XLA_FLAGS)  # a user's CPU runtime: one device, not 8 fakes
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(copy.deepcopy(_sweep_cell(notebook)))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  rerun = notebook.cells.pop()
  return notebook, rerun


@pytest.fixture(scope="module")
def executed(executed_and_rerun):
  return executed_and_rerun[0]


def test_the_committed_notebook_has_no_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not cell.get("outputs") and not cell.get("execution_count")
             for cell in notebook.cells if cell.cell_type == "code")


def test_no_cell_fails_and_the_install_is_skipped_where_jaxlayer_is_installed(executed):
  code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
  assert all(cell.execution_count for cell in code_cells)
  errors = [o for cell in code_cells for o in _outputs(cell) if o["output_type"] == "error"]
  assert errors == []
  assert "JAXLAYER_REPO" in code_cells[0].source and _outputs(code_cells[0]) == []


def _cell_output(notebook, source_part: str, mime: str) -> str:
  """The `mime` output of the code cell whose source contains source_part."""
  cell = next(c for c in notebook.cells if c.cell_type == "code" and source_part in c.source)
  return next(o["data"][mime] for o in _outputs(cell) if mime in o.get("data", {}))


def _table_rows(text: str) -> list[list[str]]:
  """A pandas DataFrame's text/plain -> its rows (index first) as far as the first block of
  columns shows them (a wide frame prints in blocks), the header and footer left out."""
  rows = {}
  for line in text.splitlines():
    words = line.split()
    if words and words[0].isdigit():
      rows.setdefault(int(words[0]), words)
  return list(rows.values())


def test_sampled_answers_are_shown_decoded(executed):
  rows = _table_rows(_cell_output(executed, "sampling.generate(", "text/plain"))
  assert len(rows) == 4 * 3  # NUM_PROMPTS x SAMPLES
  assert all(re.fullmatch(r"\d+[+-]\d+=", row[1]) for row in rows)  # the prompt column
  assert {row[-1] for row in rows} <= {"True", "False"}


def test_the_contribution_plot_and_the_sweep_table_are_shown(executed):
  image = _cell_output(executed, "contribution.png", "image/png")
  assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")
  table = _table_rows(_cell_output(executed, "sweep.csv", "text/plain"))
  assert [row[1] for row in table] == ["base", "full", "layer01"]
  printed = "".join(o.get("text", "") for cell in executed.cells for o in _outputs(cell))
  sweep_dir = Path(re.search(r"sweep directory: (\S+)", printed).group(1))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert [layer["layer"] for layer in sweep["layers"]] == [1]
  assert sweep_dir.parent.name.startswith("jaxlayer-")  # a temporary directory, not the repo
  assert (f"base {sweep['s_base']:.3f} ± {sweep['s_base_se']:.3f}, full RL {sweep['s_full']:.3f}"
          in printed)  # the result in short, above the plot


def _printed(cell) -> str:
  return "".join(o.get("text", "") for o in _outputs(cell) if o.get("name") == "stdout")


def test_running_the_sweep_cell_again_resumes_its_sweep(executed_and_rerun):
  """The cell used to make a new temporary directory each time, so it ran every run again."""
  notebook, rerun = executed_and_rerun
  first = _printed(_sweep_cell(notebook))
  # (The sweep's notes, "resuming ...", show on the cell's standard error.)
  again = "".join(o.get("text", "") for o in _outputs(rerun) if o.get("output_type") == "stream")
  directory = re.search(r"sweep directory: (\S+)", first).group(1)
  assert re.search(r"sweep directory: (\S+)", again).group(1) == directory
  assert "3 of 3 runs already done" in again and "pass@1" not in again  # nothing trained


def test_the_sweep_warnings_are_shown_under_the_result(executed):
  """A notebook has no report.md at hand: a sweep whose full RL run ended at or below the
  base model (C(k) meaningless) used to say only '1 warning(s): see report.md'."""
  printed = _printed(next(c for c in executed.cells
                          if c.cell_type == "code" and "summary_lines" in c.source))
  sweep_dir = Path(re.search(r"sweep directory: (\S+)", _printed(_sweep_cell(executed))).group(1))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  assert sweep["s_full"] <= sweep["s_base"] and sweep["warnings"]  # 3 RL steps gain nothing
  assert all(f"warning: {text}" in printed for text in sweep["warnings"])


def test_the_sweep_cell_finds_the_clones_configs_beside_another_packages(tmp_path,
                                                                           monkeypatch):
  """In Colab jaxlayer is pip-installed into site-packages, where a configs/ folder belongs to
  some other package: the cell takes the clone's configs/, the one that holds sweep_tiny.py."""
  source = _sweep_cell(nbformat.read(NOTEBOOK, as_version=4)).source
  lookup = source[source.index("CONFIGS = next"):source.index("spec = ")]
  site_packages = tmp_path / "site-packages"
  (site_packages / "jaxlayer").mkdir(parents=True)
  (site_packages / "configs").mkdir()  # another package's
  (tmp_path / "jaxlayer-src" / "configs").mkdir(parents=True)
  (tmp_path / "jaxlayer-src" / "configs" / "sweep_tiny.py").touch()
  monkeypatch.chdir(tmp_path)
  fake_jaxlayer = type("module", (), {"__file__": str(site_packages / "jaxlayer" / "__init__.py")})
  found = {"Path": Path, "jaxlayer": fake_jaxlayer}
  exec(lookup, found)  # noqa: S102 (the notebook's own lines)
  assert found["CONFIGS"] == Path("jaxlayer-src/configs")
  (tmp_path / "jaxlayer-src" / "configs" / "sweep_tiny.py").unlink()
  with pytest.raises(FileNotFoundError, match="configs/ not found: run the install cell"):
    exec(lookup, found)  # noqa: S102
