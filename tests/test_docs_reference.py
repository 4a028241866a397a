"""README.md and docs/*.md (performance.md aside) name only what exists: config keys, command
options, repository paths, link targets, `jaxlayer.*` names, the files jaxlayer writes and logged
metrics. Each test reports every problem at once, as file:line and the fix."""

import argparse
import ast
import contextlib
import functools
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from jaxlayer import cli, evaluation
from jaxlayer.rl import config as rl_config
from jaxlayer.rl import metrics
from jaxlayer.sweep import runner
from tests.sweep_fakes import REPO
from tests.test_config_reference import config_reference

# performance.md is a log of benchmark runs, kept apart from these checks.
DOCS = [REPO / "README.md"] + [path for path in sorted((REPO / "docs").glob("*.md"))
                               if path.name != "performance.md"]
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`([^`]+)`")
CONFIG_OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)")
CONFIG_FILE_ARG = re.compile(r"--config[ =](configs/[\w./]+\.py(?::\w+)?)")
# A command in a code block: at a line's start, after a shell separator or `$ ` (a prompt).
BLOCK_COMMAND = re.compile(r"(?:^|[;&|]\s*|\bdo\s+|^\$\s+|python -m\s+)jaxlayer\s+(\S+)(.*)")
INLINE_COMMAND = re.compile(r"^(?:python -m )?jaxlayer\s+(\S+)(.*)$")
OPTION = re.compile(r"(?:^|\s)(--?[A-Za-z][\w-]*)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|docs|benchmarks|tpu_scripts|notebooks|jaxlayer"
                       r"|scripts|tests|\.ci)/[\w./-]*[\w/])")
LINK = re.compile(r"\]\(([^)\s]+)\)")
EXTERNAL_LINK = re.compile(r"\[[^\]]*\]\(\w+://[^)]*\)")
JAXLAYER_NAME = re.compile(r"^jaxlayer(?:\.\w+)+$")
BARE_KEY = re.compile(r"^([a-z_]+)(?:\.\w+)+(?:=\S*)?$")
# A file named like a config section and key: eval.json, sweep.csv, model.safetensors.
FILE_NAME = re.compile(r"\.(?:json|jsonl|csv|png|md|py|safetensors)$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # KEY, TASK, N: a name the reader fills in


@functools.cache
def _text(path: Path) -> str:
  return path.read_text()


def _where(path: Path, position: int) -> str:
  """FILE:LINE of an offset in a doc."""
  line = _text(path).count("\n", 0, position) + 1
  return f"{path.relative_to(REPO)}:{line}"


def _code_blocks(path: Path) -> list[tuple[str, int, str]]:
  """(language, offset of the body in the file, body) of every fenced code block."""
  return [(match.group(1), match.start(2), match.group(2))
          for match in CODE_BLOCK.finditer(_text(path))]


def _prose(path: Path) -> str:
  """The file with its code blocks blanked (newlines kept, so offsets stay those of the file)."""
  return CODE_BLOCK.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), _text(path))


def _inline_spans(path: Path) -> list[tuple[int, int, str]]:
  """(start, end, text with its whitespace collapsed) of every `inline code` span of the prose."""
  return [(match.start(1), match.end(1), " ".join(match.group(1).split()))
          for match in INLINE_CODE.finditer(_prose(path))]


def _shell_lines(language: str, offset: int, body: str) -> list[tuple[int, str]]:
  """(offset, line) of a shell code block's commands, continuations joined, comments dropped and
  the block's `NAME="..."` variables expanded ($NAME). Python blocks have none."""
  if language == "python":
    return []
  variables, lines, position = {}, [], offset
  for line in re.split(r"(?<!\\)\n", body):
    start, position = position, position + len(line) + 1
    line = re.sub(r"\s#.*$", "", line.replace("\\\n", " "))
    assignment = re.fullmatch(r'\s*(\w+)="([^"]*)"\s*', line)
    if assignment:
      variables[assignment.group(1)] = assignment.group(2)
      continue
    for name, value in variables.items():
      line = line.replace(f"${name}", value)
    lines.append((start, line))
  return lines


def _block_commands(path: Path) -> list[tuple[int, str, str]]:
  """(offset, subcommand, its arguments) of every `jaxlayer CMD ...` in code blocks."""
  found = []
  for language, offset, body in _code_blocks(path):
    for start, line in _shell_lines(language, offset, body):
      for part in re.split(r"\s*(?:;|&&|\|\|?|&)\s*", line):
        match = BLOCK_COMMAND.search(part)
        if match:
          found.append((start, match.group(1), match.group(2)))
  return found


def _commands(path: Path) -> list[tuple[int, str, str]]:
  """(offset, subcommand, its arguments) of every `jaxlayer CMD ...` in code blocks and inline
  code."""
  found = _block_commands(path)
  for start, _, span in _inline_spans(path):
    match = INLINE_COMMAND.match(span)
    if match:
      found.append((start, match.group(1), match.group(2)))
  return found


# --- config keys -------------------------------------------------------------------------------


@functools.cache
def _config(spec: str | None):
  """The default config (`spec` None) or a shipped one loaded as the CLI loads it, each with the
  eval and sweep sections that `jaxlayer eval` and `jaxlayer sweep` add."""
  sections = {"eval": evaluation.default_eval_config, "sweep": runner.default_sweep_config}
  if spec is None:
    config = rl_config.default_config()
    for name, make_default in sections.items():
      config[name] = make_default()
    return config
  return cli.load_config(["--config", str(REPO / spec)], "docs", sections=sections)


def _key_problem(key: str, spec: str | None) -> str | None:
  """What the CLI says of --config.KEY on the config `spec`, if it refuses it. A placeholder
  part (`--config.eval.task_options.TASK.data_files.test`) ends the key checked."""
  parts = key.split(".")
  known = next((index for index, part in enumerate(parts) if PLACEHOLDER.match(part)), len(parts))
  if not known:
    return None
  return cli._unknown_key(_config(spec), [f"--config.{'.'.join(parts[:known])}=VALUE"])


def _nearest_config(path: Path, position: int) -> str | None:
  """The shipped config the text names last before `position` (the one a passage is about)."""
  named = re.findall(r"configs/\w+\.py(?::\w+)?", _text(path)[:position])
  return named[-1] if named else None


def _prose_key_problem(path: Path, position: int, key: str) -> str | None:
  """What is wrong with a KEY in prose: one that neither the defaults nor the shipped config
  the passage names last have."""
  problem = _key_problem(key, None)
  nearest = _nearest_config(path, position)
  if problem and (nearest is None or _key_problem(key, nearest)):
    return (f"{_where(path, position)}: {problem} (nor has "
            f"{nearest or 'any config named before it'})")
  return None


def test_every_config_override_names_a_key_of_its_config():
  """A command's --config.KEY is checked against the config file it loads, as the CLI checks it;
  one in prose against the defaults or the shipped config the passage names last."""
  problems = []
  for path in DOCS:
    for start, _, arguments in _commands(path):
      config_file = CONFIG_FILE_ARG.search(arguments)
      spec = config_file.group(1) if config_file else None
      for key in CONFIG_OVERRIDE.findall(arguments):
        problem = _key_problem(key, spec)
        if problem:
          problems.append(f"{_where(path, start)}: {problem}")
    inline_commands = [(start, end) for start, end, span in _inline_spans(path)
                       if INLINE_COMMAND.match(span)]
    for match in CONFIG_OVERRIDE.finditer(_prose(path)):
      key = match.group(1).rstrip(".")
      if any(start <= match.start() < end for start, end in inline_commands):
        continue  # checked with its command above
      problems.append(_prose_key_problem(path, match.start(), key))
  problems = [problem for problem in problems if problem]
  assert not problems, "\n".join(problems)


def test_every_config_key_in_code_spans_exists():
  """`train.kl_beta`, `mesh.num_devices=N`: a span that starts with a section of the config."""
  sections = [name for name, value in _config(None).items() if hasattr(value, "keys")]
  problems = []
  for path in DOCS:
    for start, _, span in _inline_spans(path):
      match, key = BARE_KEY.match(span), span.split("=")[0]
      if match and match.group(1) in sections and not FILE_NAME.search(key):
        problems.append(_prose_key_problem(path, start, key))
  problems = [problem for problem in problems if problem]
  assert not problems, "\n".join(problems)


def _value(text: str):
  """A value as a config file writes it (5e-6, True, "std") or as a bare string (numina)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def test_every_setting_a_table_states_is_its_configs():
  """`train.learning_rate=5e-6` in a table row (docs/reproduce_paper.md's "the config" columns)
  is the value of the shipped config the passage names last."""
  problems = []
  for path in DOCS:
    for start, _, span in _inline_spans(path):
      match = re.fullmatch(r"([a-z_]+(?:\.\w+)+)=(.+)", span)
      line_start = _text(path).rfind("\n", 0, start) + 1
      if not match or not _text(path).startswith("|", line_start):
        continue
      key, stated = match.groups()
      config_file = _nearest_config(path, start)
      try:
        value = functools.reduce(lambda section, part: section[part], key.split("."),
                                 _config(config_file))
      except KeyError:
        continue  # test_every_config_key_in_code_spans_exists names it
      if _value(stated) != value:
        problems.append(f"{_where(path, start)}: {config_file} sets {key}={value!r}, not "
                        f"{stated}: state the config's value (or change the config).")
  assert not problems, "\n".join(problems)


def test_every_documented_key_can_be_set_with_every_shipped_config():
  """docs/configuration.md: "Any key can be overridden on the command line". A config file that
  builds a section of its own with some keys (configs/gigpo_gridworld.py's eval section did)
  made the CLI refuse the others, e.g. --config.eval.replicate_params."""
  documented = config_reference.flatten(config_reference.default_tree())
  problems = []
  for file in sorted((REPO / "configs").glob("*.py")):
    config = _config(str(file.relative_to(REPO)))
    for key in documented:
      problem = cli._unknown_key(config, [f"--config.{key}=VALUE"])
      if problem:
        problems.append(f"{file.relative_to(REPO)}: {problem} Build the section from its "
                        "defaults (default_eval_config(), ...) and change those keys.")
  assert not problems, "\n".join(problems)


def test_every_training_command_with_the_shipped_model_plans_as_printed():
  """A `jaxlayer train` / `memory` command of a code block, run as printed, passes the settings
  check that runs before anything loads (train.plan), unless it names something the reader
  fills in (DIR, $seed) or a model the reader downloads first. docs/configuration.md's example
  set neither model.path nor run_dir."""
  from jaxlayer.rl import train

  problems, planned = [], 0
  for path in DOCS:
    for start, command, arguments in _block_commands(path):
      arguments = shlex.split(arguments)
      if command not in ("train", "memory") or any(
          "$" in argument or re.search(r"\b[A-Z]{2,}\b", argument) for argument in arguments):
        continue
      printed = shlex.join(["jaxlayer", command, *arguments])
      try:
        config = cli._training_config(arguments, f"jaxlayer {command}")
        if config.model.path is not None and not (REPO / config.model.path).exists():
          continue
        planned += 1
        with contextlib.chdir(REPO):
          train.plan(config)
      except (ValueError, SystemExit) as err:
        problems.append(f"{_where(path, start)}: `{printed}` stops: {err}")
  assert planned and not problems, "\n".join(problems)


def _strings(value) -> list[str]:
  """Every string in a nested dict / list / tuple."""
  if isinstance(value, str):
    return [value]
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, (list, tuple)):
    return [text for item in value for text in _strings(item)]
  return []


def test_every_data_file_a_shipped_config_reads_is_one_the_guide_writes():
  """configs/paper_*.py read data/X files that docs/reproduce_paper.md's snippets write."""
  guide = REPO / "docs" / "reproduce_paper.md"
  written = set(re.findall(r'"(data/[^"]+)"', "".join(body for _, _, body in _code_blocks(guide))))
  problems = [f"{file.name} reads {data_file}, which no snippet of {guide.name} writes: write it "
              "there or name the file the guide writes."
              for file in sorted((REPO / "configs").glob("*.py"))
              for data_file in _strings(_config(str(file.relative_to(REPO))).to_dict())
              if data_file.startswith("data/") and data_file not in written]
  assert written and not problems, "\n".join(problems)


# --- command-line options ----------------------------------------------------------------------


class _ParserBuilt(Exception):
  def __init__(self, parser: argparse.ArgumentParser):
    super().__init__()
    self.parser = parser


def _refuse_parsing(parser, *args, **kwargs):
  raise _ParserBuilt(parser)


@functools.cache
def _options(command: str) -> frozenset[str]:
  """The options `jaxlayer COMMAND` accepts: its argparse parser's (built by the command and
  caught before it parses), or, for a config command that reads its flags itself, those of the
  usage line its --help prints. --config.KEY overrides are checked apart."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(argparse.ArgumentParser, "parse_args", _refuse_parsing)
    patch.setattr(argparse.ArgumentParser, "parse_known_args", _refuse_parsing)
    shown = io.StringIO()
    try:
      with contextlib.redirect_stdout(shown):
        cli.COMMANDS[command](["--help"])
    except _ParserBuilt as built:
      return frozenset(option for action in built.parser._actions
                       for option in action.option_strings)
  usage = shown.getvalue().split("\n\n")[0]
  return frozenset(re.findall(r"--[a-z][\w-]*", usage)) | {"-h", "--help"}


def _top_level_option_works(option: str) -> bool:
  """Whether `jaxlayer OPTION` (no command) runs, as --version and --help do."""
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      cli.main([option])
  except SystemExit:
    return False
  return True


def test_every_option_in_code_spans_is_one_of_a_command():
  """`--overwrite`, `--step N`: an option some command accepts (XLA's own, `--xla_...`, are set
  in XLA_FLAGS)."""
  every_option = set().union(*(_options(command) for command in cli.COMMANDS))
  problems = [f"{_where(path, start)}: `{span}`: no jaxlayer command has the option "
              f"{span.split()[0].split('=')[0]}; `jaxlayer COMMAND --help` lists them."
              for path in DOCS for start, _, span in _inline_spans(path)
              if span.startswith("--") and not span.startswith(("--config.", "--xla_"))
              and span.split()[0].split("=")[0] not in every_option]
  assert not problems, "\n".join(problems)


def test_every_command_and_option_exists():
  problems = []
  for path in DOCS:
    for start, command, arguments in _commands(path):
      where = _where(path, start)
      if command == "...":  # `python -m jaxlayer ...`: any command
        continue
      if command.startswith("-"):
        if not _top_level_option_works(command):
          problems.append(f"{where}: `jaxlayer {command}` is no option of jaxlayer: "
                          "`jaxlayer --help` lists them.")
        continue
      if command not in cli.COMMANDS:
        problems.append(f"{where}: `jaxlayer {command}` is no command; use one of "
                        f"{', '.join(cli.COMMANDS)}.")
        continue
      for option in OPTION.findall(arguments):
        if not option.startswith("--config.") and option not in _options(command):
          problems.append(f"{where}: `jaxlayer {command}` has no option {option}; its options: "
                          f"{', '.join(sorted(_options(command)))}.")
  assert not problems, "\n".join(problems)


# --- paths, links and names --------------------------------------------------------------------


def _headings(path: Path) -> set[str]:
  """GitHub's anchors of a Markdown file's headings."""
  return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
          for heading in re.findall(r"^#+ (.*)$", _prose(path), re.MULTILINE)}


def test_every_repository_path_and_link_exists():
  """configs/X.py, docs/X.md, jaxlayer/...: in prose, code spans and code blocks alike."""
  problems = []
  for path in DOCS:
    # The text of a link to another site names that site's files (ALFWorld's configs/...).
    own_text = EXTERNAL_LINK.sub(lambda match: " " * len(match.group(0)), _text(path))
    mentions = [(match.start(1), match.group(1)) for match in REPO_PATH.finditer(own_text)]
    for start, mention in mentions:
      if not (REPO / mention.rstrip("/")).exists():
        problems.append(f"{_where(path, start)}: {mention} does not exist in the repository: "
                        "name the file as it is now.")
    for match in LINK.finditer(_prose(path)):
      target = match.group(1)
      if re.match(r"\w+://", target):
        continue
      file, _, anchor = target.partition("#")
      linked = (path.parent / file).resolve() if file else path
      if not linked.exists():
        problems.append(f"{_where(path, match.start())}: the link ({target}) leads nowhere: "
                        f"{file} does not exist.")
      elif anchor and linked.suffix == ".md" and anchor not in _headings(linked):
        problems.append(f"{_where(path, match.start())}: the link ({target}) names no heading "
                        f"of {linked.relative_to(REPO)}; its anchors: "
                        f"{', '.join(sorted(_headings(linked)))}.")
  assert not problems, "\n".join(problems)


def _resolves(name: str) -> bool:
  """Whether a dotted name `jaxlayer.a.b.C` is a module or an attribute of one."""
  parts = name.split(".")
  for split in range(len(parts), 0, -1):
    try:
      found = importlib.import_module(".".join(parts[:split]))
    except ImportError:
      continue
    try:
      return functools.reduce(getattr, parts[split:], found) is not None
    except AttributeError:
      return False
  return False


def test_every_jaxlayer_name_in_code_spans_exists():
  problems = [f"{_where(path, start)}: `{span}` names nothing in jaxlayer: name it as the code "
              "does now." for path in DOCS for start, _, span in _inline_spans(path)
              if JAXLAYER_NAME.match(span) and not _resolves(span)]
  assert not problems, "\n".join(problems)


# A file jaxlayer writes, alone or at the end of a path: `sweep.csv`, `runs/<run>/result.json`
# (a name with a placeholder, result-stepN.json, is left out).
WRITTEN_FILE = re.compile(r"(?:[\w<>.-]+/)*(\.?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*"
                          r"\.(?:json|jsonl|csv|png|md|safetensors|lock))")


def test_every_file_name_in_code_spans_is_one_jaxlayer_writes():
  """`curves.png`, `.jaxlayer.lock`: a name that jaxlayer's code holds as a string (a file of the
  repository aside), so that a renamed output file cannot leave the docs naming the old one."""
  code = "\n".join(path.read_text() for path in sorted((REPO / "jaxlayer").rglob("*.py")))
  problems = []
  for path in DOCS:
    for start, _, span in _inline_spans(path):
      match = WRITTEN_FILE.fullmatch(span)
      if match and not (REPO / span).exists() and not re.search(
          rf"[\"'/]{re.escape(match.group(1))}[\"']", code):
        problems.append(f"{_where(path, start)}: `{span}`: jaxlayer writes no file "
                        f"{match.group(1)}: name the file as the code writes it.")
  assert not problems, "\n".join(problems)


# --- metrics -----------------------------------------------------------------------------------

# The code that builds metrics.jsonl's rows, {file: {function: the dicts of metrics it builds}}
# ("return": the dict it returns): RUN_DIR/metrics.jsonl logs what _Trainer.run_step (or, in an
# environment, _run_env_step) returns, with the update's metrics (rl.step's update,
# rl.losses.policy_loss) and the test scores of logging.eval_every (_evaluate).
METRIC_SOURCES = {
    "jaxlayer/rl/train.py": {"run_step": ("result",), "_run_env_step": ("result",),
                             "_evaluate": ("scores",)},
    "jaxlayer/rl/multiturn.py": {"rollout_metrics": ("validity", "return"),
                                 "gigpo_batch": ("stats",)},
    "jaxlayer/rl/step.py": {"make_update_step": ("metrics",)},
    "jaxlayer/rl/losses.py": {"policy_loss": ("metrics",)}}
# The update's bookkeeping, which _Trainer._updates takes out of the rows it logs.
UNLOGGED = {"params_finite", "loss_tokens"}


def _key_pattern(node: ast.expr) -> str | None:
  """A dict key as a regular expression: a string as itself, an f-string's fields as `.+`."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return re.escape(node.value)
  if isinstance(node, ast.JoinedStr):
    return "".join(re.escape(part.value) if isinstance(part, ast.Constant) else ".+"
                   for part in node.values)
  return None


def _dict_keys(node: ast.expr) -> list[str]:
  """The key patterns of a dict display, a dict comprehension or dict(..., key=...), or of
  either branch of a conditional; a display's ** parts included."""
  if isinstance(node, ast.IfExp):
    return _dict_keys(node.body) + _dict_keys(node.orelse)
  if isinstance(node, ast.DictComp):
    return [key for key in [_key_pattern(node.key)] if key]
  if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
    return [re.escape(keyword.arg) for keyword in node.keywords if keyword.arg]
  if not isinstance(node, ast.Dict):
    return []
  keys = []
  for key, value in zip(node.keys, node.values):
    keys += _dict_keys(value) if key is None else [k for k in [_key_pattern(key)] if k]
  return keys


def _metric_patterns() -> set[str]:
  """Every metric name the metric-building code can write (patterns: `reward/.+`): the keys of
  the dicts of METRIC_SOURCES, as assigned, returned or set by `name["key"] = ...`."""
  patterns = set()
  for file, functions in METRIC_SOURCES.items():
    tree = ast.parse((REPO / file).read_text())
    defined = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    for function, names in functions.items():
      assert function in defined, f"{file} defines no {function}: update METRIC_SOURCES."
      for node in ast.walk(defined[function]):
        if isinstance(node, ast.Return) and "return" in names and node.value is not None:
          patterns.update(_dict_keys(node.value))
        if not isinstance(node, ast.Assign):
          continue
        for target in node.targets:
          if getattr(target, "id", None) in names:
            patterns.update(_dict_keys(node.value))
          elif isinstance(target, ast.Subscript) and getattr(target.value, "id", None) in names:
            patterns.update(k for k in [_key_pattern(target.slice)] if k)
  return patterns - UNLOGGED


def _emitted(name: str, patterns: set[str]) -> bool:
  return any(re.fullmatch(pattern, name) for pattern in patterns)


# A metric named in prose: `NAME` after "logs", "logged (per step) as", "metric" or "counted in",
# or `NAME` (a note) before "logs".
METRIC_MENTION = re.compile(r"(?:\blogs|\blogged(?: per step)? as|\bmetric|\bcounted in)\s+`"
                            r"([\w/@]+)`|`([\w/@]+)`(?:\s*\([^)]*\))?\s+logs\b")


def _readme_metrics_list() -> tuple[int, list[str]]:
  """(offset, names) of the README's list of metrics.jsonl's metrics (its **Metrics** item);
  a backticked name with a dot there is a file or a config key."""
  readme = _text(REPO / "README.md")
  match = re.search(r"^- \*\*Metrics\*\* \(`metrics\.jsonl`.*?(?=^- |^$|^#)", readme,
                    re.DOTALL | re.MULTILINE)
  assert match, "README.md has no **Metrics** item listing the metrics of metrics.jsonl."
  return match.start(), [name for name in re.findall(r"`([^`]+)`", match.group(0))
                         if "." not in name]


def test_every_metric_the_docs_name_is_one_the_code_logs():
  patterns = _metric_patterns()
  assert _emitted("reward", patterns) and _emitted("eval/math/pass@1", patterns)
  problems = []
  for path in DOCS:
    for match in METRIC_MENTION.finditer(_prose(path)):
      name = match.group(1) or match.group(2)
      if not _emitted(re.sub(r"\b[A-Z]+\b", "X", name), patterns):
        problems.append(f"{_where(path, match.start())}: `{name}` is no metric jaxlayer logs "
                        "(jaxlayer/rl/train.py builds them): name one it logs.")
  start, listed = _readme_metrics_list()
  readme = REPO / "README.md"
  for name in listed:
    if not _emitted(re.sub(r"\b[A-Z]+\b", "X", name), patterns):
      problems.append(f"{_where(readme, start)}: the metrics.jsonl list names `{name}`, which "
                      "jaxlayer does not log: take it out or name it as the code does.")
  listed_patterns = {re.sub(r"\b[A-Z]+\b", ".+", re.escape(name)) for name in listed}
  for pattern in sorted(patterns):
    example = pattern.replace(".+", "X").replace("\\", "")
    if not any(re.fullmatch(listed_pattern, example) for listed_pattern in listed_patterns):
      problems.append(f"{_where(readme, start)}: the metrics.jsonl list lacks `{example}`, "
                      "which jaxlayer logs: add it.")
  assert not problems, "\n".join(problems)


def test_training_png_draws_metrics_the_code_logs():
  """Every metric a panel of training.png draws is one a run logs."""
  patterns = _metric_patterns()
  drawn = [key for _, keys in metrics.PANELS for key in keys]
  assert [key for key in drawn if not _emitted(key, patterns)] == []
