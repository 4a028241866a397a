"""What `pip install jaxlayer` brings (the packages the code imports, the package's data files),
and what its sdist holds.

An editable install (the test suite's) finds every file of the checkout and every package of the
development environment, so neither a missing dependency nor a data file left out of the wheel
fails another test.
"""

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "jaxlayer"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Imported inside the one function that needs them, which names what to install when they are
# missing: Ray (the `ray` extra) and ALFWorld with its YAML reader (ALFWORLD_INSTALL_HINT).
OPTIONAL_IMPORTS = {"ray", "alfworld", "yaml"}


def _distribution_name(requirement: str) -> str:
  """The normalized distribution name of a requirement ("ML_Collections>=1.1" -> ml-collections)."""
  name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
  return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> list[tuple[str, str, bool]]:
  """(top-level module, file:line, whether inside a function or class) of each import in
  jaxlayer/ of neither the standard library nor jaxlayer."""
  imports = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        modules = [node.module]
      else:
        continue
      place = f"{path.relative_to(REPO)}:{node.lineno}"
      imports += [(module.split(".")[0], place, node.col_offset > 0) for module in modules
                  if module.split(".")[0] not in sys.stdlib_module_names | {"jaxlayer"}]
  return imports


def test_every_package_the_code_imports_is_a_dependency():
  """A package that only another package brings is missing where that one is not: jinja2 came
  with torch, so `jaxlayer generate --chat` failed where jaxlayer was installed without it."""
  dependencies = PYPROJECT["project"]["dependencies"]
  declared = {_distribution_name(requirement) for requirement in dependencies}
  distributions = importlib.metadata.packages_distributions()
  undeclared, optional_at_import = [], []
  for module, place, nested in _third_party_imports():
    if module in OPTIONAL_IMPORTS:
      if not nested:
        optional_at_import.append(f"{module} ({place})")
    elif not {_distribution_name(name) for name in distributions.get(module, [module])} & declared:
      undeclared.append(f"{module} ({place})")
  assert not undeclared, f"imported, and not in pyproject.toml's dependencies: {undeclared}"
  assert not optional_at_import, f"optional, and imported with the module: {optional_at_import}"
  assert "ray" in PYPROJECT["project"]["optional-dependencies"]


def test_the_package_data_globs_take_every_data_file_into_the_wheel():
  """setuptools puts into a wheel the package's .py files and the files that package-data
  names: any other file that the code opens is there in a checkout, and not after
  `pip install jaxlayer`."""
  globs = PYPROJECT["tool"]["setuptools"]["package-data"]["jaxlayer"]
  in_wheel = {path for pattern in globs for path in PACKAGE.glob(pattern)}
  data_files = {path for path in PACKAGE.rglob("*")
                if path.is_file() and path.suffix not in (".py", ".pyc")}
  assert data_files, "the shipped tiny model is a data file"
  left_out = sorted(str(path.relative_to(PACKAGE)) for path in data_files - in_wheel)
  assert not left_out, f"in jaxlayer/, and no package-data glob takes it into the wheel: {left_out}"


def test_the_sdist_holds_the_package_and_none_of_the_tests(tmp_path):
  """setuptools adds tests/test*.py to an sdist, without the conftest.py, fixtures and repository
  files that they need: a test suite that cannot run."""
  for path in REPO.iterdir():
    if path.is_file():
      shutil.copy(path, tmp_path)
  for directory in ("jaxlayer", "tests"):
    shutil.copytree(REPO / directory, tmp_path / directory,
                    ignore=shutil.ignore_patterns("__pycache__"))
  build = "from setuptools import build_meta; build_meta.build_sdist('dist')"
  subprocess.run([sys.executable, "-c", build], cwd=tmp_path, check=True, capture_output=True)
  with tarfile.open(next((tmp_path / "dist").glob("jaxlayer-*.tar.gz"))) as sdist:
    files = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
  assert "jaxlayer/assets/tiny-arith/model.safetensors" in files
  assert "LICENSE" in files  # the Apache-2.0 text that pyproject's license names
  assert [file for file in files if file.startswith("tests")] == []
