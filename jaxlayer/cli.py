"""`jaxlayer <command>`: parses flags, calls the library and prints what it returns."""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import traceback
import warnings

from jaxlayer import paths
from jaxlayer.text import closest, counted, decimals, warnings_in_one_line

# Installed without PyTorch (a TPU VM), transformers advises at import that "Models won't be
# available": its own are not, jaxlayer's JAX ones are. Its advice is for its users.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

USAGE = """usage: jaxlayer <command> [options]

commands:
  generate   complete prompts (greedy or sampled) with a Hugging Face checkpoint or a run
  train      layer-selective RL (GRPO / Dr. GRPO / DAPO; GiGPO in an environment) from a
             config; resumes its run_dir
  memory     the memory one device needs to train with a config, part by part, without
             loading the model
  export     merge a run's trained blocks into its base model: a Hugging Face checkpoint
  eval       pass@1 (greedy) and mean@k of a model or a training run on the test split -> eval.json
  sweep      layer-contribution sweep: base, full RL and RL on each block alone -> C(k), report
  compare    rank correlation (Spearman, Kendall) of the layer rankings of two sweeps
  table      evaluated runs side by side (strategies, seeds averaged) with standard errors

`jaxlayer <command> --help` describes a command's options; `jaxlayer --version` prints the
versions of jaxlayer and the libraries it runs on (for bug reports)."""

# The libraries whose versions change what jaxlayer computes or reads, as pip names them.
REPORTED_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers",
                      "tokenizers", "datasets", "math-verify", "numpy")


class UsageError(SystemExit):
  """A command line that jaxlayer cannot read (an unknown command, option or config key, a value
  of the wrong type, a config file that does not load): exit status 2, as argparse's for the
  options it parses. `main` prints the message (str(error), one line naming the fix)."""

  def __init__(self, message: str):
    super().__init__(2)
    self.message = message

  def __str__(self) -> str:
    return self.message


class _ArgumentParser(argparse.ArgumentParser):
  """argparse's parser, naming a mistyped option (and the closest known one) when parsing fails:
  argparse names the required option it then misses, so `--promt` (or `-promt`) read "one of the
  arguments --prompt --prompts-file is required", which hides the typo. (`--config.KEY=VALUE`
  settings are `load_config`'s.)"""

  def parse_known_args(self, args=None, namespace=None):
    self._given = list(sys.argv[1:] if args is None else args)
    return super().parse_known_args(args, namespace)

  @property
  def options(self) -> tuple[str, ...]:
    """The parser's long options (--prompt, --help, ...)."""
    return tuple(option for option in self._option_string_actions if option.startswith("--"))

  def error(self, message: str):
    for arg in self._given:
      if arg == "--":
        break
      option = arg.split("=", 1)[0]
      # A long option, or one dash and a letter (`-promt`; "-5+3=" is a value).
      looks_like_option = option.startswith("--") or re.fullmatch(r"-[A-Za-z][\w-]*", option)
      if (looks_like_option and not option.startswith("--config.")
          and not any(known.startswith(option) for known in self._option_string_actions)):
        message = (f"{_unknown_option(option, self.options)} `{self.prog} --help` lists the "
                   "options.")
        break
    else:
      message += self._value_read_as_an_option(message)
    super().error(message)

  def _value_read_as_an_option(self, message: str) -> str:
    """The fix, where argparse missed an option's value because it starts with "-" (`--prompt
    -3+5=`): argparse reads it as an option."""
    missing = re.fullmatch(r"argument (--[\w-]+): expected one argument", message)
    if missing and missing[1] in self._given[:-1]:
      value = self._given[self._given.index(missing[1]) + 1]
      if value.startswith("-"):
        return f" (a value that starts with '-' goes after '=': {missing[1]}={value})"
    return ""


def _unknown_option(option: str, known: tuple[str, ...]) -> str:
  """"unknown option OPTION", then "; did you mean CLOSEST?" for the one of the `known` long
  options closest to it (of a dotted --confg.train.steps, to its part before the first dot:
  --config.train.steps), else ":". Names compare without their dashes, which every option has."""
  head, dot, rest = option.partition(".")
  guess = closest(head.lstrip("-"), [known_option.lstrip("-") for known_option in known])
  return f"unknown option {option}" + (f"; did you mean --{guess}{dot}{rest}?" if guess else ":")


# The long options every command that takes a config file has (memory and sweep add theirs).
_CONFIG_OPTIONS = ("--config", "--help")
# The config file that messages show; configs/ is not in the wheel that `pip install` installs.
_EXAMPLE_CONFIG = "configs/grpo_arithmetic.py of the jaxlayer repository"


def load_config(argv: list[str], prog: str, sections: dict | None = None,
                options: tuple[str, ...] = _CONFIG_OPTIONS):
  """Parses `--config FILE [--config.a.b=value ...]` (ml_collections config file + overrides).

  sections: {name: () -> ConfigDict} added with their defaults when the file has no such
  section (e.g. `eval` for `jaxlayer eval` on a training config), before the overrides apply.
  options: the command's long options, of which an unknown option's message names the closest.
  """
  import ml_collections
  from absl import flags
  from ml_collections import config_flags

  overrides = [a for a in argv if a.startswith("--config.")]
  file_args = [prog] + [a for a in argv if a not in overrides]
  if file_args[-1] == "--config" or "--config=" in file_args:  # (absl: "Missing value for flag")
    raise UsageError(f"{prog}: --config has no value: write --config FILE, such as "
                     f"{_EXAMPLE_CONFIG}.")
  errors = (flags.Error, AttributeError, KeyError, ValueError, OSError)
  # ml_collections imports the file as module "config_config" with load_module(), which runs it
  # inside the module an earlier load left in sys.modules: a file without get_config() would
  # get the earlier file's (a notebook loading two configs).
  sys.modules.pop("config_config", None)
  try:
    file_flags = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=file_flags,
                                    sys_argv=file_args)
    strays = file_flags(file_args)[1:]  # (absl ignores arguments that are not flags)
    config = file_flags.config
    if config is None:
      raise UsageError(f"{prog}: --config FILE is required: a Python config file, such as "
                       f"{_EXAMPLE_CONFIG}.")
    if strays:
      raise UsageError(f"{prog}: {_stray_argument(argv, strays[0])}")
    _check_config_file(_config_path(file_args), prog)
    if not isinstance(config, ml_collections.ConfigDict):  # (it failed on .unlocked())
      raise UsageError(f"{prog}: the get_config() of the config file {_config_path(file_args)} "
                       f"returns an object of type {type(config).__name__}, not an "
                       f"ml_collections ConfigDict: build it as {_EXAMPLE_CONFIG} does, from "
                       "jaxlayer.rl.config.default_config().")
    with config.unlocked():  # (a file that failed to load raises here)
      for name, make_default in (sections or {}).items():
        if name not in config:
          config[name] = make_default()
  except errors as err:
    if isinstance(err, flags.UnrecognizedFlagError):
      raise UsageError(f"{prog}: {_unknown_option(f'--{err.flagname}', options)} `{prog} "
                       "--help` lists the options; a setting is --config.KEY=VALUE.") from None
    if isinstance(err, AttributeError) and "get_config" in str(err):
      raise UsageError(f"{prog}: the config file {_config_path(file_args)} defines no "
                       "get_config(): a config file "
                       "is a Python file whose get_config() returns an ml_collections "
                       f"ConfigDict, such as {_EXAMPLE_CONFIG}.") from None
    if "get_config() takes 0 positional arguments" in str(err):  # FILE:ARGS, FILE takes none
      path, _, given = _config_argument(file_args).partition(":")
      raise UsageError(f"{prog}: the config file {path} takes no arguments (its get_config() "
                       f"has none), but --config gives it {given!r} after ':': write "
                       f"--config {path}.") from None
    if "Traceback (most recent call last)" in str(err):  # get_config() raised: its error alone
      path = _config_path(file_args)
      raise UsageError(f"{prog}: cannot load the config file {path}: "
                       f"{str(err).strip().splitlines()[-1]}"
                       f"{_line_in_traceback(str(err), path)}") from None
    raise UsageError(f"{prog}: cannot load the config file: {err}") from None
  except Exception as err:  # the file's own code failed as it ran (a syntax error, an import)
    raise UsageError(f"{prog}: cannot load the config file {_config_path(file_args)}: "
                     f"{_config_code_error(err, _config_path(file_args))}") from None
  problem = (_missing_value(config, overrides) or _sweep_setting(config, overrides, sections, prog)
             or _replaced_section(overrides, sections))
  if problem:
    raise UsageError(f"{prog}: {problem}")
  unset = _unsetting_overrides(config, overrides, sections)
  setting = [override for override in overrides if override not in unset]
  _retype_keys_set_to_none(config, setting, sections)
  problem = _untyped_override(config, setting)
  if problem:
    raise UsageError(f"{prog}: {problem}")
  override_args = [prog, *setting]
  try:
    override_flags = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=override_flags,
                                    lock_config=True, sys_argv=override_args)
    override_flags(override_args)
  except errors as err:
    problem = (_unknown_key(config, overrides, sections)
               or _bad_section_value(config, overrides)
               or _bad_value_type(config, overrides, err, sections)
               or f"bad configuration flag: {err}")
    raise UsageError(f"{prog}: {problem}") from None
  for override in unset:
    key = override[len("--config."):].removesuffix("=None")
    section, name = _section_and_name(override_flags.config, key)
    section[name] = None
  return override_flags.config


def _unsetting_overrides(config, overrides: list[str], sections: dict | None) -> list[str]:
  """The --config.KEY=None of `overrides` whose KEY is unset by default (None: the algorithm's
  value, no system prompt, ...), takes None too (rl.config.NONE_TAKING_KEYS: no step time
  limit) or is None already, which set it to None. absl read None as the text 'None' for a
  text key (a system prompt 'None') and refused it for a number."""
  from jaxlayer.rl.config import NONE_TAKING_KEYS

  defaults = _default_settings(sections)
  unset = []
  for override in overrides:
    key, _, value = override[len("--config."):].partition("=")
    default_section, name = _section_and_name(defaults, key) or (None, None)
    section, _ = _section_and_name(config, key) or (None, None)
    takes_none = key in NONE_TAKING_KEYS or (
        hasattr(default_section, "keys") and name in default_section
        and default_section[name] is None)
    if (value == "None" and hasattr(section, "keys") and name in section
        and (takes_none or section[name] is None)):
      unset.append(override)
  return unset


def _retype_keys_set_to_none(config, overrides: list[str], sections: dict | None) -> None:
  """Gives each key of `overrides` that the config file set to None, and that has a value by
  default, its default's type back (`config.env.step_timeout_s = None`: no limit), which a None
  had dropped: absl refused a value for it ("Type <class 'NoneType'> of field ... is not
  supported for overriding")."""
  from ml_collections import config_dict

  defaults = _default_settings(sections)
  for override in overrides:
    key = override[len("--config."):].split("=", 1)[0]
    section, name = _section_and_name(config, key) or (None, None)
    default_section, _ = _section_and_name(defaults, key) or (None, None)
    if (hasattr(section, "keys") and name in section and section[name] is None
        and hasattr(default_section, "keys") and name in default_section
        and default_section[name] is not None):
      section[name] = config_dict.placeholder(default_section.get_type(name))


def _untyped_override(config, overrides: list[str]) -> str | None:
  """What is wrong with the first --config.KEY=VALUE whose KEY the config file set to None and
  has no default (an option of a task: `config.task.options.dataset_config = None`), if any:
  nothing tells the type to read VALUE as (absl: "Type <class 'NoneType'> of field ... is not
  supported for overriding")."""
  for override in overrides:
    key, has_value, value = override[len("--config."):].partition("=")
    section, name = _section_and_name(config, key) or (None, None)
    if (has_value and hasattr(section, "get_type") and name in section
        and section.get_type(name) is type(None)):
      return (f"{override}: the config file sets {key} to None, which tells no type to read "
              f"{value!r} as: set it in the config file.")
  return None


def _line_in_traceback(text: str, path: str) -> str:
  """" (line N)" for the last line of the file at `path` that the traceback `text` names, where
  it failed (ml_collections' error for `config.train.steps = 1e3` named 'steps' alone); "" where
  it names none."""
  from pathlib import Path

  lines = [line for file, line in re.findall(r'File "(.+)", line (\d+), in ', text)
           if Path(file).resolve() == Path(path).resolve()]
  return f" (line {lines[-1]})" if lines else ""


def _config_code_error(err: Exception, path: str) -> str:
  """`err`, raised by the config file at `path` as it ran, in one line: its type, message and
  line in the file (a SyntaxError's message names it), and for a module it imports that is not
  found, the fix."""
  from pathlib import Path

  lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
           if Path(frame.filename).resolve() == Path(path).resolve()]
  where = f" (line {lines[-1]})" if lines else ""
  fix = (": install it, or add its directory to PYTHONPATH"
         if isinstance(err, ModuleNotFoundError) else "")
  return f"{type(err).__name__}: {err}{where}{fix}."


def _stray_argument(argv: list[str], stray: str) -> str:
  """What is wrong with `stray`, an argument of argv that is no flag nor a flag's value: the
  value of an override written after a space would be dropped (`--config.train.remat false`
  set remat to True)."""
  index = argv.index(stray)
  before = argv[index - 1] if index else ""
  if before.startswith("--config.") and "=" not in before:
    return f"{before} {stray}: write {before}={stray} (an override takes its value after '=')."
  return (f"unexpected argument {stray!r}: give the config file as --config FILE and each "
          "setting as --config.KEY=VALUE.")


def _missing_value(config, overrides: list[str]) -> str | None:
  """What is wrong with the first --config.KEY without '=VALUE' whose KEY takes a value (all but
  true/false keys, unset ones such as train.dynamic_sampling included, which alone mean true),
  if any: at the end of the line it was absl's "Missing value for flag", and before another
  override it took that override as its value."""
  for override in overrides:
    found = None if "=" in override else _section_and_name(config, override[len("--config."):])
    if found:
      section, key = found
      if hasattr(section, "get_type") and key in section and section.get_type(key) is not bool:
        return f"{override} has no value: write {override}=VALUE."
  return None


def _sweep_setting(config, overrides: list[str], sections: dict | None,
                   prog: str) -> str | None:
  """What is wrong with the first --config.sweep.KEY=VALUE given to a command that runs no sweep
  (one without a `sweep` section), if any. `jaxlayer train` ignored it, even where the config
  file has a sweep section (configs/sweep_tiny.py). `jaxlayer eval` and `memory` on a sweep's
  config take the sweep's command line as it is: they score a sweep's run, size its runs."""
  if "sweep" in (sections or {}) or (prog != "jaxlayer train" and "sweep" in config):
    return None
  for override in overrides:
    flag = override.split("=", 1)[0]
    if flag.split(".")[1] == "sweep":
      return (f"{flag}: sweep.* settings are `jaxlayer sweep`'s, which this command does not "
              "run: leave it out, or run `jaxlayer sweep` with it.")
  return None


def _section_and_name(config, key: str):
  """(the section that holds KEY's last part, that part) for a dotted KEY, or None where a
  section on the way is unknown (_unknown_key names it)."""
  *parents, name = key.split(".")
  section = config
  for part in parents:
    if not hasattr(section, "keys") or part not in section:
      return None
    section = section[part]
  return section, name


def _replaced_section(overrides: list[str], sections: dict | None) -> str | None:
  """What is wrong with the first --config.KEY=VALUE whose KEY is a section of jaxlayer's settings
  (`train`, `sweep.ray`), if any: a dict there replaced the whole section, and the run failed
  later on a key it dropped (a traceback ending in AttributeError: "'layers'"). The sections
  without keys of their own (task.options, task.chat_template_kwargs, ...) take a dict."""
  defaults = _default_settings(sections)
  for override in overrides:
    key, has_value, _ = override[len("--config."):].partition("=")
    section, name = _section_and_name(defaults, key) or (None, None)
    node = section[name] if hasattr(section, "keys") and name in section else None
    if has_value and hasattr(node, "keys") and node.keys():
      return (f"{override}: {key} is a section of settings, not one value: set its keys one by "
              f"one, --config.{key}.KEY=VALUE (its keys: {', '.join(sorted(node.keys()))}).")
  return None


def _default_settings(sections: dict | None):
  """jaxlayer's settings with their defaults (`default_config()`, plus `sections`, as
  load_config's): what docs/configuration.md lists."""
  from jaxlayer.rl.config import default_config

  defaults = default_config()
  with defaults.unlocked():
    for name, make_default in (sections or {}).items():
      defaults[name] = make_default()
  return defaults


def _print_help(usage: str, description: str) -> None:
  """A config command's --help: its usage line, then its description wrapped as argparse wraps
  the other commands' (to the terminal's width)."""
  import shutil
  import textwrap

  width = shutil.get_terminal_size().columns - 2
  print(f"{usage}\n\n{textwrap.fill(description, width=width)}")


def _asks_for_help(argv: list[str]) -> bool:
  """Whether a config command's arguments hold -h or --help (anywhere, as argparse reads them)."""
  return "-h" in argv or "--help" in argv


def _config_path(args: list[str]) -> str:
  """The FILE of `--config FILE[:ARGS]` (or --config=FILE[:ARGS]) in args."""
  return _config_argument(args).split(":", 1)[0]


def _config_argument(args: list[str]) -> str:
  """The FILE[:ARGS] of `--config FILE[:ARGS]` (or --config=FILE[:ARGS]) in args."""
  for index, arg in enumerate(args):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and index + 1 < len(args):
      return args[index + 1]
  raise ValueError("no --config FILE")  # (the flag parser has refused such arguments)


def _check_config_file(path: str, prog: str) -> None:
  """Exits with what is wrong when --config names no file (ml_collections' own message for it
  is a list of load attempts)."""
  from pathlib import Path

  file = Path(path)
  if file.is_file():
    return
  where = "" if file.is_absolute() else f" (in {Path.cwd()})"
  found = "is a directory" if file.is_dir() else f"does not exist{where}"
  # A path relative to the jaxlayer repository (configs/sweep_tiny.py), run from elsewhere.
  in_repository = Path(__file__).resolve().parents[1] / path
  if where and not file.is_dir() and in_repository.is_file():
    raise UsageError(f"{prog}: the config file {path} {found}; the jaxlayer repository's is "
                     f"{in_repository}: write --config {in_repository}.")
  raise UsageError(f"{prog}: the config file {path} {found}: give a Python config file, such as "
                   f"{_EXAMPLE_CONFIG}.")


def _unknown_key(config, overrides: list[str], sections: dict | None = None) -> str | None:
  """What is wrong with the first --config.KEY=VALUE whose KEY the config lacks, if any
  (sections: as load_config's)."""
  for override in overrides:
    key = override[len("--config."):].split("=", 1)[0]
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node:
        section = ".".join(parts[:depth]) or "the config"
        is_section = hasattr(node, "keys")
        keys = sorted(node.keys()) if is_section else []
        known = (", ".join(keys) or "none") if is_section else "none: not a section"
        guess = closest(part, keys)
        problem = (f"{override.split('=', 1)[0]}: {section} has no key {part!r} (its keys: {known})"
                   + (f"; did you mean {guess!r}?" if guess else "."))
        if section in ("task.options", "env.options", "env.eval_options"):  # their arguments
          return (f"{problem} The command line changes only the {section} the config file sets: "
                  f"add config.{section}.{part} = VALUE to the file.")
        parent, name = _section_and_name(_default_settings(sections), section) or (None, None)
        default = parent[name] if hasattr(parent, "keys") and name in parent else None
        if hasattr(default, "keys") and not default.keys():  # a dict of any keys
          kept = f", with the keys the file sets ({', '.join(keys)})" if keys else ""
          return (f"{problem} The command line changes only the keys of {section} that the "
                  f"config file sets: set it whole, as a Python dict: "
                  f"--config.{section}='{{\"{part}\": VALUE}}'{kept}.")
        return f"{problem} Every key and its default: docs/configuration.md."
      node = node[part]
  return None


def _bad_section_value(config, overrides: list[str]) -> str | None:
  """What is wrong with the first --config.KEY=VALUE whose KEY is a section (a dict, such as
  task.chat_template_kwargs) and VALUE no Python dict literal, if any (absl's error for JSON's
  false was "malformed node or string")."""
  for override in overrides:
    key, has_value, value = override[len("--config."):].partition("=")
    section, name = _section_and_name(config, key)  # (_unknown_key has found every key)
    node = section[name]
    if not has_value or not hasattr(node, "keys"):
      continue
    try:
      is_dict = isinstance(ast.literal_eval(value), dict)
    except (ValueError, SyntaxError):
      is_dict = False
    if not is_dict:  # (the example: the config's own dict, if it sets one)
      example = (repr(node.to_dict()) if node.keys() else "{\"enable_thinking\": False}"
                 if key.endswith("chat_template_kwargs") else "{\"NAME\": VALUE}")
      return (f"{override}: {key} takes a Python dict, such as {example} (Python's True, "
              "False and None, not JSON's true, false and null).")
  return None


# What a key of each type takes, as absl parses the text after '=', and an example value.
_VALUE_KINDS = {bool: ("true or false", "true"), int: ("a whole number", "8"),
                float: ("a number", "3e-05")}


def _bad_value_type(config, overrides: list[str], err: Exception,
                    sections: dict | None) -> str | None:
  """What is wrong with the --config.KEY=VALUE that absl refused for VALUE's type (its error
  names the override: "flag --config.train.steps=two: invalid literal for int() ..."), if any
  (sections: as load_config's)."""
  for override in overrides:
    key, has_value, value = override[len("--config."):].partition("=")
    if not has_value or f"flag {override}:" not in str(err):
      continue
    section, name = _section_and_name(config, key)  # (_unknown_key has found every key)
    if section.get_type(name) not in _VALUE_KINDS:
      continue
    kind, example = _VALUE_KINDS[section.get_type(name)]
    shown = section[name]
    if shown is None:  # the default's, where the config file set the key to None
      default_section, _ = _section_and_name(_default_settings(sections), key) or (None, None)
      shown = default_section.get(name) if hasattr(default_section, "get") else None
    if shown is not None:  # (a key unset by default, a placeholder, has no value to show)
      example = str(shown).lower() if kind == "true or false" else shown
    return f"{override}: {key} takes {kind}, not {value!r}, such as --config.{key}={example}."
  return None


def _initialize_hosts(trains: bool) -> bool:
  """Joins the other hosts of a multi-host run (jaxlayer.distributed.initialize); True if any.

  trains: JAX's preemption service takes SIGTERM and names a training step at which every host
  stops. A command without training steps would never reach one, and went on: there SIGTERM
  stops this host at once, and the others with it (see `main`).
  """
  from jaxlayer import distributed

  try:
    several_hosts = distributed.initialize(preemption_service=trains)
  except ValueError as err:
    raise SystemExit(f"jaxlayer: {err}") from None
  if several_hosts and not trains:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
  return several_hosts


def _stop_on_sigterm(signum, frame) -> None:
  print("jaxlayer: stopped by SIGTERM", file=sys.stderr, flush=True)
  raise SystemExit(128 + signum)


@contextlib.contextmanager
def _stop_signals():
  """Within, on one host: Ctrl-C and SIGTERM stop the command, raising a KeyboardInterrupt (for
  SIGTERM rl.train.TrainingInterrupted, which carries it: exit status 143), where SIGTERM killed
  it without a word. A run's training takes them over meanwhile (rl.train.stop_requests: it
  stops after the step under way, with a checkpoint). On several hosts JAX's preemption service
  holds SIGTERM for the next training step, which all hosts stop after.

  One that lands in JAX's code, as while XLA compiles (jaxlib checks for signals meanwhile), is
  held until the call returns: raised there, it left the compiler's threads running as Python
  exited (the stop's line, then a segfault, status 139). The same signal again then stops the
  process at once (as SIGKILL would: what it was writing is left in temporary files)."""
  from jaxlayer import distributed
  from jaxlayer.rl import train

  if distributed.is_multiprocess() or threading.current_thread() is not threading.main_thread():
    yield  # (a handler can be set in the main thread only)
    return

  held, sent_again = set(), set()  # signals held back; those the timer below sent again
  timer = []  # the timer that last sent one again

  def send_again_soon(signum: int) -> None:
    def send() -> None:
      sent_again.add(signum)
      os.kill(os.getpid(), signum)

    held.add(signum)
    timer[:] = [threading.Timer(0.05, send)]
    timer[0].start()

  def stop(signum: int):
    held.discard(signum)
    if signum == signal.SIGINT:
      raise KeyboardInterrupt
    raise train.TrainingInterrupted(f"stopped by {train.STOP_SIGNALS[signum]}.", signum)

  def handle(signum, frame):
    again_by_user = signum in held and signum not in sent_again
    sent_again.discard(signum)
    if frame is None or frame.f_globals.get("__name__", "").partition(".")[0] != "jax":
      stop(signum)
    if again_by_user:
      print(f"\njaxlayer: {train.STOP_SIGNALS[signum]} again: stopped at once.", file=sys.stderr,
            flush=True)
      os._exit(128 + signum)
    if signum not in held:
      print(f"\njaxlayer: {train.STOP_SIGNALS[signum]}: stopping once JAX's call under way (a "
            "compile) returns; again: stop at once.", file=sys.stderr, flush=True)
    send_again_soon(signum)

  def send_again_if_dropped(unraisable):
    # Python drops an exception raised in a garbage-collection callback (JAX sets many), where
    # the signal may land: it comes again shortly, to the command's own code.
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      send_again_soon(getattr(unraisable.exc_value, "signum", signal.SIGINT))
    else:
      previous_hook(unraisable)

  previous = {signum: signal.signal(signum, handle) for signum in train.STOP_SIGNALS}
  previous_hook, sys.unraisablehook = sys.unraisablehook, send_again_if_dropped
  try:
    yield
  finally:
    for pending in timer:
      pending.cancel()
    for signum, handler in previous.items():  # (None: one set outside Python, not put back)
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    sys.unraisablehook = previous_hook
  if held:  # the command ended before it came again: it stops here
    stop(held.pop())


def _json_object(text: str) -> dict:
  """A command-line JSON object (argparse type): a clear error for anything else."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError as err:
    raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({err}): write an object such as "
                                     "'{\"enable_thinking\": false}'") from None
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object: write one such as "
                                     "'{\"enable_thinking\": false}'")
  return value


def _generate(argv: list[str]) -> None:
  parser = _ArgumentParser(prog="jaxlayer generate", description=(
      "Complete prompts with the checkpoint in --model (jaxlayer.sampling.generate). One "
      "completion prints as plain text; several print under a '### prompt i, sample j' header "
      "(numbered from 0, as --jsonl numbers them)."))
  parser.add_argument("--model", required=True, help="Hugging Face model directory or hub id, "
                      "or a run directory of `jaxlayer train` (its base model + trained blocks)")
  parser.add_argument("--step", type=int, help="checkpoint step of a run (default: the latest)")
  _add_base_model_flag(parser)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--prompt", action="append", help="text to complete (repeat for several)")
  source.add_argument("--prompts-file", metavar="FILE", help=(
      "prompts to complete: a text file with one prompt per line (blank lines skipped; - reads "
      "them from standard input), or a .jsonl file (the suffix in any case) with one JSON object "
      "per line holding a \"prompt\" string"))
  parser.add_argument("--chat", action="store_true", help=(
      "make each prompt the user turn of the model's chat template, with its generation prompt "
      "(as task.use_chat_template does), and print the prompt the model saw"))
  parser.add_argument("--chat-template-kwargs", metavar="JSON", type=_json_object, default={},
                      help="with --chat: variables the chat template reads, as a JSON object "
                      "(Qwen3: '{\"enable_thinking\": false}')")
  parser.add_argument("--num-samples", type=int, default=1,
                      help="completions per prompt (default: %(default)s)")
  parser.add_argument("--temperature", type=float, default=None, help=(
      "0 = greedy; default: 0 for one sample, 1.0 with --num-samples > 1"))
  parser.add_argument("--top-k", type=int, default=0,
                      help="sample among the k best (0: off; default: %(default)s)")
  parser.add_argument("--top-p", type=float, default=1.0,
                      help="nucleus sampling mass (1: off; default: %(default)s)")
  parser.add_argument("--max-new-tokens", type=int, default=32,
                      help="tokens a completion may have at most (default: %(default)s)")
  parser.add_argument("--seed", type=int, default=0, help=(
      "sampling seed: the same one prints the same samples, whatever --batch-size and "
      "--devices (sample j of prompt i draws from the seed's stream i * --num-samples + j; "
      "default: %(default)s)"))
  parser.add_argument("--batch-size", type=int, default=32,
                      help="prompts per generate call (default: %(default)s)")
  parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help=(
      "parameters' dtype; auto (the default): a checkpoint's own (config.json's dtype), a run's "
      "model.dtype. On a CPU bfloat16 runs slower than float32"))
  parser.add_argument("--jsonl", action="store_true", help=(
      "print one JSON object per completion (prompt_index, sample, prompt, completion, "
      "finish_reason, num_tokens) instead of text"))
  parser.add_argument("--devices", type=int, default=1, help=(
      "split each batch over this many devices of this host, each holding the whole model; "
      "on a CPU this makes that many CPU devices (one per core: ~1.5x faster for small models; "
      "default: %(default)s)"))
  args = parser.parse_args(argv)
  for flag, value, lowest in [("--batch-size", args.batch_size, 1), ("--devices", args.devices, 1),
                              ("--num-samples", args.num_samples, 1), ("--top-k", args.top_k, 0),
                              ("--max-new-tokens", args.max_new_tokens, 1)]:
    if value < lowest:
      parser.error(f"{flag} must be >= {lowest}, got {value}.")
  if not 0 < args.top_p <= 1:
    parser.error(f"--top-p must be in (0, 1] (1: off), got {args.top_p}.")
  if args.temperature is not None and not 0 <= args.temperature < math.inf:
    parser.error(f"--temperature must be a number >= 0 (0: greedy), got {args.temperature}.")
  if args.chat_template_kwargs and not args.chat:
    parser.error("--chat-template-kwargs is for the chat template: add --chat.")
  if args.prompts_file is None:
    empty = [number for number, prompt in enumerate(args.prompt, start=1) if not prompt]
    if empty and not args.chat:
      parser.error(f"--prompt {empty[0]} of {len(args.prompt)} is empty: a prompt needs text to "
                   "complete; give it text.")
    prompts = args.prompt
  else:
    prompts = _read_prompts(args.prompts_file, parser, allow_empty=args.chat)
  temperature = args.temperature
  if temperature is None:
    temperature = 0.0 if args.num_samples == 1 else 1.0

  from jaxlayer import distributed, models, sampling, tasks
  from jaxlayer.progress import progress_bar

  several_hosts = _initialize_hosts(trains=False)
  # On several hosts the model spreads over all of them and process 0 prints.
  if several_hosts:
    if args.devices > 1:
      parser.error("--devices is for one host: on several hosts the model spreads over all "
                   "of their devices.")
    mesh = models.make_mesh()
  elif args.devices > 1:
    try:
      mesh = models.make_mesh(data=args.devices, fsdp=1,
                              devices=distributed.data_parallel_devices(args.devices))
    except ValueError as err:
      parser.error(str(err))
  else:
    mesh = None
  from jaxlayer import evaluation

  with _stop_signals():
    try:
      model, tokenizer, _ = evaluation.load_model(args.model, dtype=args.dtype, step=args.step,
                                                  mesh=mesh, base_model=args.base_model)
    except (ValueError, FileNotFoundError) as err:
      raise SystemExit(f"jaxlayer generate: {err}") from None
    except KeyboardInterrupt as err:  # (a large model loads for minutes)
      _interrupted("jaxlayer generate", err, "The model was loading: nothing was generated.")
    eos_token_ids = models.stop_token_ids(model.config.source_dir, tokenizer)
    if args.chat and not getattr(tokenizer, "chat_template", None):
      raise SystemExit(f"jaxlayer generate: --chat needs a chat template, but the tokenizer of "
                       f"{args.model} has none (no chat_template in its tokenizer_config.json "
                       "or chat_template.jinja): leave out --chat to complete the prompts as "
                       "they are.")
    if args.chat:
      try:
        prompts = [tasks.format_prompt(tasks.Problem(prompt=prompt, answer=""), tokenizer,
                                       use_chat_template=True, template="{question}",
                                       chat_template_kwargs=args.chat_template_kwargs)
                   for prompt in prompts]
      except ValueError as err:
        raise SystemExit(f"jaxlayer generate: {err}") from None
    prompt_ids = tasks.encode_prompts(tokenizer, prompts, use_chat_template=args.chat)
    _check_prompts_fit(prompt_ids, args.max_new_tokens, model.config)
    single = len(prompts) == 1 and args.num_samples == 1
    starts = range(0, len(prompts), args.batch_size)
    printed = 0  # prompts whose completions are all printed
    try:
      for start in progress_bar(starts, desc="generate", unit="batch",
                                disable=len(starts) == 1 or not distributed.is_primary()):
        batch = prompts[start:start + args.batch_size]
        batch_ids = prompt_ids[start:start + args.batch_size]
        # The last batch is filled up to the others' size so that it reuses their compiled code.
        filled = batch_ids + batch_ids[:1] * (min(args.batch_size, len(prompts)) - len(batch))
        try:
          out = sampling.generate(
              model, filled, max_new_tokens=args.max_new_tokens,
              num_samples=args.num_samples, temperature=temperature, top_k=args.top_k,
              top_p=args.top_p, eos_token_ids=eos_token_ids, seed=args.seed,
              row_ids=range(start * args.num_samples, (start + len(filled)) * args.num_samples))
        except (ValueError, TypeError) as err:
          raise SystemExit(f"jaxlayer generate: {err}") from None
        rows = len(batch) * args.num_samples
        if not distributed.is_primary():
          continue
        for row, (index, length) in enumerate(zip(out.prompt_index[:rows],
                                                  out.lengths[:rows].tolist())):
          completion = tokenizer.decode(out.tokens[row, :length], skip_special_tokens=True)
          text = batch[index] + completion
          if args.jsonl:
            print(json.dumps({"prompt_index": start + int(index),
                              "sample": row % args.num_samples, "prompt": batch[index],
                              "completion": completion, "finish_reason": out.finish_reasons[row],
                              "num_tokens": length}), flush=True)
          elif single:
            print(text, flush=True)
          else:
            print(f"### prompt {start + index}, sample {row % args.num_samples} "
                  f"({out.finish_reasons[row]}, {counted(length, 'token')})\n{text}\n",
                  flush=True)
        printed = start + len(batch)
    except KeyboardInterrupt as err:
      _interrupted("jaxlayer generate", err,
                   f"{printed} of {counted(len(prompts), 'prompt')} completed and printed.")


def _check_prompts_fit(prompt_ids: list[list[int]], max_new_tokens: int, model_config) -> None:
  """Exits, before anything is generated, where a prompt and --max-new-tokens exceed the model's
  positions, naming the longest such prompt and the --max-new-tokens that would fit it."""
  max_positions = model_config.max_positions
  too_long = [index for index, ids in enumerate(prompt_ids)
              if len(ids) + max_new_tokens > max_positions]
  if not too_long:
    return
  index = max(too_long, key=lambda index: len(prompt_ids[index]))
  tokens = len(prompt_ids[index])
  which = ("the prompt" if len(prompt_ids) == 1 else
           f"prompt {index} (numbered from 0)" if len(too_long) == 1 else
           f"prompt {index} (numbered from 0), the longest of {len(too_long)} too long,")
  shorten = "shorten it" if len(too_long) == 1 else "shorten them"
  fix = (shorten if tokens >= max_positions else
         f"{shorten} or set --max-new-tokens to at most {max_positions - tokens}")
  raise SystemExit(
      f"jaxlayer generate: {which} has {counted(tokens, 'token')}; with --max-new-tokens "
      f"{max_new_tokens} that is {tokens + max_new_tokens:,} positions, beyond the model's "
      f"{model_config.max_positions_text}: {fix}.")


def _read_prompts(path: str, parser: argparse.ArgumentParser, *,
                  allow_empty: bool = False) -> list[str]:
  """Prompts from a text file (one per non-blank line; "-": standard input) or a .jsonl file
  ({"prompt": ...}), in UTF-8. Lines end at a line feed, a carriage return or both only: a
  prompt may hold the other characters that str.splitlines breaks at (U+2028, which JSON writes
  unescaped; a form feed). A byte-order mark before the first line is dropped.

  allow_empty: whether a .jsonl prompt may be "" (with --chat: an empty user turn)."""
  if path.lower().endswith(".json"):  # read as text, its lines ('[', '"2+2=",') were prompts
    parser.error(f"--prompts-file {path} is a .json file, which it does not read: write the "
                 'prompts to a .jsonl file, one {"prompt": ...} object per line, or to a text '
                 "file, one prompt per line.")
  try:
    if path == "-":
      text = sys.stdin.read()
    else:
      with open(path, encoding="utf-8") as file:
        text = file.read()
  except OSError as err:
    parser.error(f"cannot read --prompts-file: {err}")
  except UnicodeDecodeError as err:
    parser.error(f"--prompts-file {path} is not UTF-8 text ({err}): save it as UTF-8.")
  lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
  if not path.lower().endswith(".jsonl"):  # X.JSONL too
    prompts = [line for line in lines if line.strip()]
  else:
    prompts = []
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as err:
        parser.error(f"{path} line {number} is not JSON ({err}).")
      if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        parser.error(f'{path} line {number} needs a "prompt" string, e.g. {{"prompt": "2+2="}}.')
      if not record["prompt"] and not allow_empty:
        parser.error(f"{path} line {number} has an empty prompt: a prompt needs text to complete; "
                     "remove the line or give it text.")
      prompts.append(record["prompt"])
  if not prompts:
    parser.error(f"{path} holds no prompts.")
  return prompts


def _sweep(argv: list[str]) -> None:
  """jaxlayer sweep --config FILE [--config.sweep.layers=0,3,7 --config.sweep.seeds=3
                                 --config.sweep.groups=3+4,mid5
                                 --config.sweep.halving_steps=15,30 ...] [--dry-run]"""
  if _asks_for_help(argv):
    _print_help(_sweep.__doc__, "Runs or resumes the sweep in config.sweep.dir (finished runs are "
                "skipped): the base model, full RL, each block of sweep.layers alone and each "
                "group of sweep.groups together (with sweep.halving_steps, only the best at each "
                "of those steps train on), each scored as `jaxlayer eval` scores it (with "
                "eval.tasks, the mean of the tasks' scores: the paper's math score is "
                "eval.tasks=math,gsm8k,olympiadbench,amc:mean@32). Writes sweep.json, sweep.csv, "
                "contribution.png, curves.png and report.md there. Every key: "
                "docs/configuration.md. --dry-run checks every setting and prints what would run "
                "and how much of it is done, running and writing nothing.")
    return
  dry_run = "--dry-run" in argv
  argv = [arg for arg in argv if arg != "--dry-run"]
  from jaxlayer.evaluation import default_eval_config
  from jaxlayer.sweep.runner import default_sweep_config

  config = load_config(argv, "jaxlayer sweep",
                       sections={"eval": default_eval_config, "sweep": default_sweep_config},
                       options=(*_CONFIG_OPTIONS, "--dry-run"))
  if config.sweep.launcher == "local":  # a Ray driver leaves the accelerators to its tasks
    _initialize_hosts(trains=True)
  from jaxlayer import sweep
  from jaxlayer.sweep import launchers

  try:
    with _stop_signals():
      sweep_dir = sweep.run_sweep(config, command=shlex.join(["jaxlayer", "sweep", *argv]),
                                  dry_run=dry_run)
  except (ValueError, FileNotFoundError, launchers.RunsFailed) as err:
    raise SystemExit(f"jaxlayer sweep: {err}") from None
  except KeyboardInterrupt as err:
    _interrupted("jaxlayer sweep", err, "The finished runs are recorded: run the same command "
                 "to go on.")
  from jaxlayer import distributed
  from jaxlayer.sweep import report

  if distributed.is_primary() and not dry_run:
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    print("\n".join(report.summary_lines(summary)))
    print(f"contribution plot: {sweep_dir / 'contribution.png'}\n"
          f"report:            {sweep_dir / 'report.md'}")


def _compare(argv: list[str]) -> None:
  parser = _ArgumentParser(prog="jaxlayer compare", description=(
      "Spearman and Kendall rank correlation of the C(k) of two finished sweeps over their "
      "common blocks; writes compare.json and compare.png."))
  parser.add_argument("sweep_a", help="a sweep directory (holding sweep.json)")
  parser.add_argument("sweep_b", help="another sweep directory of a model with as many blocks")
  parser.add_argument("--out", help="output directory (default: compare-A-vs-B in the current "
                      "directory)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a compare.json and compare.png in --out")
  args = parser.parse_args(argv)
  from pathlib import Path

  from jaxlayer.sweep import compare

  out = args.out or f"compare-{Path(args.sweep_a).name}-vs-{Path(args.sweep_b).name}"
  try:
    result = compare.compare_sweep_dirs(args.sweep_a, args.sweep_b, out, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as err:
    raise SystemExit(f"jaxlayer compare: {err}") from None
  spearman, kendall = result["spearman"], result["kendall"]
  print(f"{result['num_common_layers']} common blocks: Spearman rho = {_number(spearman['rho'])} "
        f"(p = {_number(spearman['p_value'], '.3g')}), Kendall tau = {_number(kendall['tau'])} "
        f"(p = {_number(kendall['p_value'], '.3g')}; p-values {result['p_values']})\n"
        f"written: {Path(out) / 'compare.json'}, {Path(out) / 'compare.png'}")
  for warning in result["warnings"]:  # (to standard error, as `jaxlayer: warning: ...`)
    warnings.warn(warning, stacklevel=1)


def _table(argv: list[str]) -> None:
  parser = _ArgumentParser(prog="jaxlayer table", description=(
      "Prints a Markdown table of evaluated runs: per group (a strategy's seeds, say) the mean "
      "score of its runs on each evaluated task with its standard error, and its difference from "
      "the first group. Each run must be evaluated first (`jaxlayer eval`), all on the same "
      "problems with the same decoding."), epilog=(
      "example: jaxlayer table --runs 'full RL' runs/full-s* --runs Boost-B10 runs/boost-s*"))
  parser.add_argument("--runs", nargs="+", action="append", required=True,
                      metavar=("NAME", "EVAL"), help=(
                          "a group: its name, then its evaluations (a `jaxlayer train` run "
                          "directory, evaluated at its latest checkpoint; an `eval --out` "
                          "directory; or an eval.json). Repeat for each group; the first is the "
                          "reference of the differences."))
  args = parser.parse_args(argv)
  groups = {}
  for name, *evaluations in args.runs:
    if name in groups:
      raise UsageError(f"jaxlayer table: the group name {name!r} is given twice; give each "
                       "group one --runs with all its evaluations.")
    groups[name] = evaluations
  from jaxlayer import table

  try:
    print(table.format_table(table.runs_table(groups)))
  except (ValueError, FileNotFoundError) as err:
    raise SystemExit(f"jaxlayer table: {err}") from None


def _number(value, spec: str = "z.3f") -> str:
  return "undefined (a constant ranking)" if value is None else format(value, spec)


def _train(argv: list[str]) -> None:
  """jaxlayer train --config FILE [--config.a.b=value ...]"""
  if _asks_for_help(argv):
    _print_help(_train.__doc__, "Trains the blocks in config.train.layers (e.g. layers.14, "
                "layers.10-14, mid5, all) and resumes from config.run_dir's latest checkpoint. "
                "Every key and its default: docs/configuration.md; examples: "
                "configs/grpo_arithmetic.py, configs/gigpo_gridworld.py (an agent in a grid "
                "world).")
    return
  config = _training_config(argv, "jaxlayer train")
  _initialize_hosts(trains=True)
  from pathlib import Path

  from jaxlayer import distributed
  from jaxlayer.rl import metrics, train

  steps = config.train.steps
  try:
    # A Ctrl-C from here on stops the run before its first step; a second stops it at once, once
    # JAX's call under way returns (_stop_signals).
    with _stop_signals(), train.stop_requests():
      with distributed.failing_together("Checking the run's settings"):
        plan = train.plan(config)
      start = train.check_resume(plan)  # a refused resume stops here, before any output
      run_dir = Path(config.run_dir)
      if start >= steps:
        distributed.warn_once(
            f"jaxlayer train: {run_dir} is already finished at step {start}"
            f"{f' (train.steps={steps})' if steps < start else ''}: nothing to train. To train "
            f"it further, {train.how_to_train_on(config, start)}.")
        if distributed.is_primary() and metrics.plot_is_behind(run_dir):  # killed undrawn
          print(f"training curves: {metrics.plot_training(run_dir)}")
        return
      logs = [str(run_dir / metrics.METRICS_FILE)] + (
          [f"tensorboard --logdir {run_dir / metrics.TENSORBOARD_DIR}"]
          if config.logging.tensorboard else [])
      metrics_line = f"  metrics: {'; '.join(logs)}"
      # Named once it exists: a resumed run's now, a new run's after its first step (a run that
      # fails before then writes none).
      named_now = (run_dir / metrics.METRICS_FILE).is_file()
      # Its plan and notes go to standard error; standard output holds its results alone.
      distributed.warn_once(f"jaxlayer train: {plan.summary()}")
      if named_now:
        distributed.warn_once(metrics_line)

      def say_where_it_starts(step: int) -> None:  # once the data and checkpoint are checked
        if step:
          distributed.warn_once(f"resuming from step {step} of {steps}")

      def name_the_metrics_once_written(step: int, step_metrics: dict) -> None:
        del step_metrics
        if step == start + 1 and not named_now:
          distributed.warn_once(metrics_line)

      def draw_the_curves() -> None:  # the curves so far, also of a run that stopped or diverged
        plot = metrics.plot_training(run_dir) if distributed.is_primary() else None
        if plot is not None:
          print(f"training curves: {plot}")

      try:
        result = train.train(config, on_step=name_the_metrics_once_written,
                             on_start=say_where_it_starts)
      except BaseException:
        # A full disk that stopped the run stops the drawing too: the run's error names the write.
        with contextlib.suppress(paths.DiskFullError):
          draw_the_curves()
        raise
      draw_the_curves()
  except (ValueError, FileNotFoundError, train.TrainingDiverged) as err:
    raise SystemExit(f"jaxlayer train: {err}") from None
  except KeyboardInterrupt as err:
    _interrupted("jaxlayer train", err, "Run the same command to go on (from the last "
                 "checkpoint, if there is one).")
  if distributed.is_primary():
    print(_train_result_lines(result, start, metrics.read_metrics(run_dir)))


def _train_result_lines(result, start: int, rows: list[dict]) -> str:
  """What `jaxlayer train` ends with: the steps it trained (from step `start` on), the mean
  reward at the run's first and last step, each test score (logging.eval_every) at its first
  and last evaluation, and how to export the model."""
  rewards = result.reward_history
  trained = result.step - start
  lines = [f"trained {counted(trained, 'step')}" + (
      f"; mean reward {rewards[0]:z.3f} at step 1"
      + (f", {rewards[-1]:z.3f} at step {result.step}" if result.step > 1 else "")
      if rewards else "")]
  for key in sorted({key for row in rows for key in row if key.startswith("eval/")}):
    taken = [(r["step"], r[key]) for r in rows if key in r]  # [(step, score)]
    (first_step, first), (last_step, last) = taken[0], taken[-1]
    lines.append(f"test {key.removeprefix('eval/')}: {first:.3f} at step {first_step}"
                 + (f", {last:.3f} at step {last_step}" if last_step != first_step else ""))
  lines.append(f"export the trained model: jaxlayer export --run {result.run_dir} --out HF_DIR")
  return "\n".join(lines)


def _add_base_model_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--base-model", metavar="DIR_OR_HUB_ID", help=(
      "for a run directory whose base model is no longer where it was trained (say, a run "
      "copied from another machine): the base model's directory or hub id (a run on a hub id "
      "finds it in this machine's Hugging Face cache by itself)"))


def _interrupted(prog: str, err: KeyboardInterrupt, go_on: str) -> None:
  """Exits as the signal that stopped the run would have (128 + its number: 130 for Ctrl-C,
  143 for SIGTERM), saying what was kept and how to go on, without a traceback."""
  print(f"\n{prog}: {str(err) or 'interrupted.'} {go_on}", file=sys.stderr)
  raise SystemExit(128 + getattr(err, "signum", signal.SIGINT))


def _training_config(argv: list[str], prog: str,
                     options: tuple[str, ...] = _CONFIG_OPTIONS):
  """A training config from `--config FILE [--config.a.b=value ...]`, with an eval section
  (its defaults where the file has none) for logging.eval_every; options as load_config's."""
  from jaxlayer.evaluation import default_eval_config

  config = load_config(argv, prog, sections={"eval": default_eval_config}, options=options)
  if "@" in f"{config.train.layers}{config.train.lr_groups}":
    import jaxlayer.sweep.strategies  # noqa: F401  (defines topK@SWEEP_DIR, bottomK@SWEEP_DIR)
  return config


def _memory(argv: list[str]) -> None:
  """jaxlayer memory --config FILE [--config.a.b=value ...] [--compile]"""
  if _asks_for_help(argv):
    _print_help(_memory.__doc__, "Prints the memory one device needs for `jaxlayer train` with "
                "this config, part by part (weights, KL reference, gradients, optimizer state, KV "
                "cache, activations), sized from the model's config.json without loading its "
                "weights (jaxlayer.rl.memory). On a CPU, --config.mesh.num_devices=N sizes a mesh "
                "of N devices, e.g. a TPU v5e-8's. --compile also compiles the update step (from "
                "shapes: still no weights) and prints XLA's own count for one device, compiler "
                "temporaries included; run it on the machine that will train.")
    return
  compile_update = "--compile" in argv
  argv = [arg for arg in argv if arg != "--compile"]
  config = _training_config(argv, "jaxlayer memory", options=(*_CONFIG_OPTIONS, "--compile"))
  if config.run_dir is None:  # sizing writes nothing
    config.run_dir = "."
  from jaxlayer.evaluation import is_run_dir
  from jaxlayer.models.hub import resolve_model_dir
  from jaxlayer.rl import memory, train

  if config.model.path is not None and is_run_dir(config.model.path):
    raise SystemExit(f"jaxlayer memory: {_run_as_model_path(config.model.path)}")
  with _stop_signals():
    try:
      if config.model.path is not None:  # (else train.plan names the missing key)
        # Sizing reads only the architecture: a hub model's weights are not downloaded.
        config.model.path = str(resolve_model_dir(config.model.path, hub_files=["config.json"]))
      plan = train.plan(config)
      result = memory.estimate(plan)
    except (ValueError, FileNotFoundError) as err:
      raise SystemExit(f"jaxlayer memory: {err}") from None
    devices = counted(plan.mesh.size, "device")
    print(f"memory per device, estimated ({devices}, mesh "
          f"{dict(plan.mesh.shape)}; compiler temporaries not counted):\n{result.table()}")
    if compile_update:
      compiled = memory.compile_update(plan)
      print(f"\nthe update step as XLA compiles it for this {compiled.backend}, one device "
            f"({counted(plan.mini_batch_size, 'row')} per update):\n"
            f"{compiled.table()}")
      if compiled.backend == "cpu" and config.train.remat:
        print("(XLA:CPU does not keep remat's recomputation: its temporaries are those of "
            "train.remat=False; a TPU or GPU keeps it.)")


def _run_as_model_path(run_dir: str) -> str:
  """What to size instead of a jaxlayer run directory given as model.path: its base model,
  whose shapes, and so memory, the run's export (the model to train on from it) has."""
  from jaxlayer.rl import checkpoint

  try:
    base = f"--config.model.path={shlex.quote(checkpoint.run_base_model(run_dir))}"
  except FileNotFoundError:  # gone from where the run was trained
    recorded = checkpoint.read_run_files(run_dir)[1]["base_model"]
    base = f"its directory or hub id as model.path (it was in {recorded})"
  return (f"{run_dir} is a jaxlayer run directory, not a Hugging Face checkpoint: pass its base "
          f"model, {base}, which has the run's shapes and so takes the same memory (training on "
          f"from the run takes its export: `jaxlayer export --run {run_dir} --out DIR`).")


def _export(argv: list[str]) -> None:
  parser = _ArgumentParser(prog="jaxlayer export", description=(
      "Writes a Hugging Face checkpoint: the run's base model with its trained leaves merged in."))
  parser.add_argument("--run", required=True, help="run directory of `jaxlayer train`")
  parser.add_argument("--out", required=True, help=(
      "output directory for the HF checkpoint: new or empty (--overwrite: a previous export)"))
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help=(
      "default: the run's model.dtype; float16 refuses weights beyond its largest value, 65504"))
  parser.add_argument("--overwrite", action="store_true", help=(
      "replace the checkpoint in --out (a directory holding anything else is refused)"))
  _add_base_model_flag(parser)
  args = parser.parse_args(argv)
  _initialize_hosts(trains=False)
  from jaxlayer.rl import checkpoint

  out = None  # the export's directory, once it is written
  try:
    with _stop_signals():
      step = checkpoint.checkpoint_step(args.run, args.step)
      out = checkpoint.export(args.run, args.out, step=step, dtype=args.dtype,
                              overwrite=args.overwrite, base_model=args.base_model)
      written = args.dtype or checkpoint.read_run_files(args.run)[0].model.dtype
      # Rounding undoes updates smaller than the dtype's spacing; every host counts them.
      counts = (checkpoint.trained_weights_at_base(args.run, step, written, args.base_model)
                if written != "float32" else None)
  except (ValueError, FileNotFoundError, FileExistsError) as err:
    raise SystemExit(f"jaxlayer export: {err}") from None
  except KeyboardInterrupt as err:
    if out is None:
      raise  # nothing is exported: run the same command (_run_command says so)
    _interrupted("jaxlayer export", err, f"{out} holds step {step} of {args.run}, whole; only "
                 f"the count of the weights that {written} rounds back to the base model's was "
                 "left out.")
  from jaxlayer import distributed

  if not distributed.is_primary():  # process 0 wrote the export and says so
    return
  print(f"wrote {out}: step {step} of {args.run}")
  if counts is None:
    return
  rounded_back, changed, total = counts
  if not changed:
    print(f"the run changed none of its {counted(total, 'trained weight')}: they are its base "
          "model's values in any --dtype")
    return
  print(f"in {written}, {rounded_back / changed:.1%} of the {counted(changed, 'weight')} the run "
        f"changed (of {total:,} trained) are their base model's values again; --dtype float32 "
        "writes them as trained")


def _eval(argv: list[str]) -> None:
  parser = _ArgumentParser(prog="jaxlayer eval", description=(
      "pass@1 (greedy) and mean@k (eval.num_samples sampled completions) on the first "
      "eval.num_problems test problems of the config's task (or eval.tasks, e.g. "
      "math,gsm8k,amc:mean@32, and the mean of their scores), with the config's prompt "
      "settings. Writes eval.json (and generations.jsonl). Settings: "
      "--config.eval.KEY=VALUE "
      "(keys and defaults: docs/configuration.md). A config with env.name "
      "is scored by episodes: pass@1 is the success rate of greedy episodes on the fixed seeds "
      "0..env.num_eval_episodes-1."))
  parser.add_argument("--config", required=True, help="config file (e.g. configs/sweep_tiny.py); "
                      "override keys with --config.KEY=VALUE")
  parser.add_argument("--model", required=True, help="Hugging Face model directory or hub id, or "
                      "a run directory of `jaxlayer train` (its base model + trained blocks)")
  parser.add_argument("--step", type=int, help="checkpoint step of a run (default: the latest)")
  parser.add_argument("--out", help="output directory (default: RUN/eval/step-N for checkpoint "
                      "N of a run, else eval-MODELNAME in the current directory)")
  parser.add_argument("--save-generations", action="store_true",
                      help="also write generations.jsonl (prompt, completion, answer, score)")
  parser.add_argument("--overwrite", action="store_true", help="replace an eval.json in --out")
  _add_base_model_flag(parser)
  args, overrides = parser.parse_known_args(argv)
  from jaxlayer.evaluation import default_eval_config

  config = load_config(["--config", args.config, *overrides], "jaxlayer eval",
                       sections={"eval": default_eval_config}, options=parser.options)
  _initialize_hosts(trains=False)
  from jaxlayer import evaluation

  try:
    with _stop_signals():
      out, report = evaluation.evaluate_and_save(
          config, args.model, args.out, step=args.step, save_generations=args.save_generations,
          overwrite=args.overwrite, command=shlex.join(["jaxlayer", "eval", *argv]),
          base_model=args.base_model)
  except (ValueError, FileNotFoundError, FileExistsError) as err:
    raise SystemExit(f"jaxlayer eval: {err}") from None
  from jaxlayer import distributed

  if not distributed.is_primary():  # process 0 wrote eval.json and says so
    return
  for name, result in report["tasks"].items():
    scores = ", ".join(f"{metric} {value:.4f} ± {decimals(result['standard_errors'][metric], 4)}"
                       for metric, value in result["scores"].items())
    unit = "episode" if "episodes" in result else "problem"  # an environment: one per seed
    print(f"{name} ({counted(result['num_problems'], unit)}): {scores}")
  score = report["score"]
  if len(score["metrics"]) > 1:
    print(f"score: {score['value']:.4f} ± {decimals(score['standard_error'], 4)}, the mean of "
          + ", ".join(f"{task} {metric}" for task, metric in score["metrics"].items()))
  print(f"written: {out / evaluation.EVAL_FILE}"
        + (f", {out / evaluation.GENERATIONS_FILE}" if args.save_generations else ""))


def version_report() -> str:
  """jaxlayer's version, then Python's and each REPORTED_LIBRARIES one's (read from the installed
  packages' metadata: nothing is imported, so no accelerator is claimed)."""
  import platform
  from importlib import metadata

  import jaxlayer

  def installed(name: str) -> str:
    try:
      return metadata.version(name)
    except metadata.PackageNotFoundError:
      return "not installed"

  libraries = ", ".join(f"{name} {installed(name)}" for name in REPORTED_LIBRARIES)
  return f"jaxlayer {jaxlayer.__version__}\npython {platform.python_version()}; {libraries}"


COMMANDS = {"generate": _generate, "train": _train, "memory": _memory, "export": _export,
            "eval": _eval, "sweep": _sweep, "compare": _compare,
            "table": _table}


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv:  # (no command: a usage error, as argparse's)
    print(USAGE, file=sys.stderr)
    raise SystemExit(2)
  # Until a command takes SIGTERM over (_stop_signals, JAX's preemption service), one that
  # comes while it imports and reads its settings stops it with a line, where it ended it unsaid.
  says_sigterm = (threading.current_thread() is threading.main_thread()
                  and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
  if says_sigterm:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
  try:
    with warnings_in_one_line():
      _run_command(argv[0], argv[1:])
  except BaseException as err:
    if isinstance(err, UsageError):
      print(err, file=sys.stderr, flush=True)
    failure = (SystemExit(f"jaxlayer {argv[0]}: {err}") if isinstance(err, paths.DiskFullError)
               else err)
    distributed = sys.modules.get("jaxlayer.distributed")  # (imported when hosts were joined)
    code = _exit_status(failure)
    if code == 0 or distributed is None or not distributed.is_multiprocess():
      if failure is err:
        raise
      raise failure from None
    # One process of several: the others may still be working, and would wait for this one.
    if isinstance(failure, SystemExit):
      message = str(failure.code) if isinstance(failure.code, str) else f"exit status {code}"
      if isinstance(failure.code, str):
        print(failure.code, file=sys.stderr, flush=True)
    else:
      message = "".join(traceback.format_exception_only(err)).strip().splitlines()[-1]
      traceback.print_exc()
    distributed.exit_together(code, message)
    raise SystemExit(code) from None  # every process failed: each exits as usual
  finally:
    if says_sigterm:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_command(name: str, argv: list[str]) -> None:
  """Runs `jaxlayer NAME ARGV` (a command, --help or --version). A Ctrl-C (or a SIGTERM, which
  `_stop_signals` makes one) that the command does not answer itself (as train, sweep,
  generate and export do, saying what they kept) ends it as they do,
  without a traceback; so does a reader of its output that stops (`jaxlayer table ... | head -3`),
  as SIGPIPE would end it."""
  try:
    if name in ("-h", "--help"):
      print(USAGE)
    elif name == "--version":
      print(version_report())
    elif name in COMMANDS:
      COMMANDS[name](argv)
    else:
      guess = closest(name, COMMANDS)
      raise UsageError(f"jaxlayer: unknown command {name!r}; "
                       + (f"did you mean {guess!r}? Choose" if guess else "choose")
                       + f" one of {sorted(COMMANDS)}.")
  except KeyboardInterrupt as err:
    _interrupted(f"jaxlayer {name}", err, "Run the same command to do it again.")
  except BrokenPipeError:
    if not _reader_gone(sys.stdout):  # another pipe's (a worker process's)
      raise
    # Exits as SIGPIPE would have (Python ignores it); the flush at exit goes nowhere.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(128 + signal.SIGPIPE) from None


def _reader_gone(stream) -> bool:
  """Whether `stream` is a pipe whose reading end is closed (poll reports an error on it)."""
  import select

  try:
    descriptor = stream.fileno()
  except (AttributeError, OSError, ValueError):  # (no file: a test's io.StringIO)
    return False
  poll = select.poll()
  poll.register(descriptor, select.POLLOUT)
  return any(events & select.POLLERR for _, events in poll.poll(0))


def _exit_status(err: BaseException) -> int:
  """The exit status Python gives a program that `err` ends."""
  if isinstance(err, SystemExit):
    return err.code if isinstance(err.code, int) else int(err.code is not None)
  return 128 + signal.SIGINT if isinstance(err, KeyboardInterrupt) else 1


if __name__ == "__main__":
  main()
