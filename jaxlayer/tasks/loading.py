"""Tasks whose problems come from a data set: a hub name or local JSONL / JSON / Parquet /
CSV files, read with `datasets`, fields mapped by the task's options."""

from __future__ import annotations

import abc
import ast
import decimal
import functools
import itertools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from jaxlayer.tasks.base import Problem, Task
from jaxlayer.text import counted

logger = logging.getLogger(__name__)

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _builder(path: str | os.PathLike) -> str | None:
  """The `datasets` builder that reads a file of this name, by its suffix in any case
  (X.JSONL as x.jsonl); None for another suffix."""
  return _BUILDERS.get(Path(path).suffix.lower())


def _looks_like_path(name: str) -> bool:
  return name.startswith(("/", "./", "../", "~")) or _builder(name) is not None


# How `datasets` says a file held no records.
_NO_RECORDS = "corresponds to no data"
_SAVE_AS_UTF8 = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
# How the reader of a JSON file (not JSON lines) says it holds an integer beyond 64 bits.
_TOO_BIG = "Value is too big"


def _holds_no_records(path: Path, builder: str, error: BaseException) -> bool:
  """Whether the reader failed with `error` on a file of no records: blank lines only, "[]", a
  CSV header only, a Parquet table of no rows (which pyarrow calls a batch size of 0)."""
  if _NO_RECORDS in str(error):
    return True
  if builder != "parquet":
    return False
  import pyarrow.parquet

  try:
    return pyarrow.parquet.ParquetFile(path).metadata.num_rows == 0
  except Exception:  # no Parquet file at all: the reader's error says so
    return False


def _require_file(path: Path, split: str) -> None:
  """FileNotFoundError for a data file that is not there, or is a directory."""
  if path.is_dir():
    raise FileNotFoundError(f"data file for split {split!r} is a directory, not a file: {path}; "
                            "give the .jsonl / .json / .parquet / .csv file in it")
  if not path.is_file():
    raise FileNotFoundError(f"data file for split {split!r} not found: {path}")


def _first_bad_json_line(path: Path) -> str | None:
  """Where a JSON-lines file first holds a line that is no JSON object ("line 7 (counting
  from 1) is not valid JSON: ..."), or None: the reader's own error names a row counted from
  0 within one block of the file, not its line."""
  with path.open(encoding="utf-8", errors="replace") as lines:
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line.rstrip("\r\n"))  # (without the newline, whose column is past it)
      except json.JSONDecodeError as error:
        return (f"line {number} (counting from 1) is not valid JSON: {error.msg} at column "
                f"{error.colno}")
      if not isinstance(record, dict):
        return (f"line {number} (counting from 1) holds a JSON {type(record).__name__}, not an "
                "object of fields")
  return None


def load_split(
    *,
    dataset: str | None,
    dataset_config: str | None,
    data_files: Mapping[str, str] | None,
    split: str,
) -> Any:
  """One split as a `datasets.Dataset`.

  data_files maps split names to local files (the builder follows the suffix, in any case);
  otherwise `dataset` is a hub name or a local directory `datasets` can read: of data files,
  or a DatasetDict written by `save_to_disk` (dataset_config unused).
  """
  import datasets

  if data_files is not None:
    if split not in data_files:
      raise ValueError(
          f"no data file for split {split!r}: data_files has splits {sorted(data_files)}"
      )
    path = Path(data_files[split]).expanduser()
    builder = _builder(path)
    if builder is None:
      raise ValueError(f"data file {path} has an unknown suffix; use one of {sorted(_BUILDERS)}")
    _require_file(path, split)
    empty = (f"data file {path} (split {split!r}) is empty: it holds no records, or only "
             "records without fields ({})")
    if path.stat().st_size == 0:
      raise ValueError(empty)
    try:
      return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # malformed file: say which file and what the reader found
      cause = error.__cause__ or error
      if _holds_no_records(path, builder, cause):
        raise ValueError(empty) from error
      found = _first_bad_json_line(path) if path.suffix.lower() == ".jsonl" else None
      fix = (f"; {_SAVE_AS_UTF8}" if isinstance(cause, UnicodeDecodeError) else
             "; it holds an integer beyond 64 bits: write it as a string" if _TOO_BIG in str(cause)
             else "")
      raise ValueError(f"could not read data file {path} (split {split!r}) as {builder}: "
                       f"{found or f'{type(cause).__name__}: {cause}'}{fix}") from error
  if dataset is None:
    raise ValueError(
        "set `dataset` (a hub name or local directory) or `data_files` ({split: path})"
    )
  local = Path(dataset).expanduser()
  if _looks_like_path(dataset) and not local.exists():
    raise FileNotFoundError(f"dataset path not found: {dataset}")
  if local.is_file():
    raise ValueError(f"dataset {dataset!r} is a file; `dataset` is a hub name or a directory: "
                     f"give a file as the task option data_files={{{split!r}: {dataset!r}}}")
  if _saved_to_disk(local):
    return _saved_split(local, split)
  try:
    return datasets.load_dataset(os.path.expanduser(dataset), dataset_config, split=split)
  except Exception as error:  # hub, network, unknown split...: say which load failed
    config_fix = (f"; name one of its configs with the task option dataset_config (now "
                  f"{dataset_config!r}; None: its default)" if _NO_SUCH_CONFIG in str(error)
                  else "")
    raise ValueError(f"could not load split {split!r} of dataset {dataset!r}: {error}"
                     f"{config_fix}; to read local files, give the task data_files={{split: "
                     "path} (task.options for the config's task, eval.task_options for the "
                     "other eval.tasks)") from error


# How `datasets` says a data set has no config of the name asked for ("main" of gsm8k's hub
# data set, in a directory of files that has none).
_NO_SUCH_CONFIG = "BuilderConfig"


def _saved_to_disk(directory: Path) -> bool:
  """Whether `directory` holds what `save_to_disk` writes (a DatasetDict or one Dataset), which
  `datasets.load_dataset` refuses."""
  import datasets

  return any((directory / name).is_file() for name in (
      datasets.config.DATASETDICT_JSON_FILENAME, datasets.config.DATASET_STATE_JSON_FILENAME))


def _saved_split(directory: Path, split: str) -> Any:
  """One split of a DatasetDict that `save_to_disk` wrote to `directory`."""
  import datasets

  saved = datasets.load_from_disk(str(directory))
  if not isinstance(saved, datasets.DatasetDict):
    raise ValueError(
        f"dataset {str(directory)!r} holds one Dataset (Dataset.save_to_disk), not splits: save "
        f"a DatasetDict of its splits, e.g. DatasetDict({{{split!r}: dataset}}).save_to_disk(...)"
        ", or write it to a file for data_files (dataset.to_json('split.jsonl'))")
  if split not in saved:
    raise ValueError(f"dataset {str(directory)!r} (a DatasetDict saved to disk) has no split "
                     f"{split!r}; its splits: {sorted(saved)}: name one with the task option "
                     "train_split / test_split")
  return saved[split]


def _holds_columns(records: Any) -> bool:
  """Whether a data set is one record of lists: a JSON file of columns ({"question": [...],
  "answer": [...]}), which the reader takes for a single record."""
  return records.num_rows == 1 and all(isinstance(value, list) for value in records[0].values())


def _layout_problem(records: Any, source: str) -> str | None:
  """What is wrong with the whole data file `source` when it holds one field only, where the
  task's fields are missing (its records nested under that field, or a .csv file not separated
  by commas), and the fix; None when it is not one of those."""
  if len(records.column_names) != 1:
    return None
  field_name = records.column_names[0]
  if _builder(source) == "csv" and any(separator in field_name for separator in "\t;|"):
    return (f"reads as one field, {field_name!r}: a .csv file's fields are separated by "
            "commas; convert it to comma-separated CSV, or to JSON lines")
  first = records[0][field_name] if records.num_rows else None
  if isinstance(first, list) and first and all(isinstance(item, Mapping) for item in first):
    return (f"holds its records in a list under its field {field_name!r}; convert it to JSON "
            f"lines, one record per line: jq -c '.{field_name}[]' {source} > "
            f"{Path(source).with_suffix('.jsonl')}")
  return None


class InvalidRecord(ValueError):
  """A record that cannot be a problem; `DatasetTask` adds which file and record it is."""


def field_value(record: Mapping[str, Any], field_name: str) -> Any:
  """The value of a record's field: a top-level field, or a nested one named by its dotted path
  ("reward_model.ground_truth": record["reward_model"]["ground_truth"], where veRL's data keeps
  the answer); None where a field on the path holds no value. The task checks the path against
  the data's fields first (`DatasetTask`)."""
  if field_name in record:
    return record[field_name]
  value = record
  for key in field_name.split("."):
    if value is None:
      return None
    value = value[key]
  return value


def _field_feature(features: Mapping[str, Any], field_name: str) -> tuple[Any, str | None]:
  """(the `datasets` feature of a record's field, None): a top-level field, or a nested one by
  its dotted path (`field_value`); for a field the data lacks, (None, where the path leaves its
  fields: "" at the top level, "'reward_model' has the fields ['style', 'ground_truth']"
  below)."""
  if field_name in features:
    return features[field_name], None
  feature, path = features, []
  for key in field_name.split("."):
    if not isinstance(feature, Mapping):
      return None, f"{'.'.join(path)!r} holds no fields"
    if key not in feature:
      return None, f"{'.'.join(path)!r} has the fields {list(feature)}" if path else ""
    feature, path = feature[key], [*path, key]
  return feature, None


def _nested_fields(features: Mapping[str, Any]) -> str:
  """The nested fields of a data set's records by their dotted paths, one level down
  ("reward_model.{style, ground_truth}, extra_info.{split, index}"); "" where it has none."""
  return ", ".join(f"{name}.{{{', '.join(feature)}}}" for name, feature in features.items()
                   if isinstance(feature, Mapping) and feature)


def _inexact_integer(path: Path, field_names: list[str]) -> tuple[int, str, int] | None:
  """(record number counting from 1, field name, value) of the first integer beyond 64 bits in
  one of the fields `field_names` of a JSON data file, which the reader reads, with every value of
  its field, as a float of other digits; None where it holds none."""
  text = path.read_text(encoding="utf-8-sig")
  try:
    records = json.loads(text)
  except json.JSONDecodeError:  # JSON lines
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
  for number, record in enumerate(records if isinstance(records, list) else [records], start=1):
    for field_name in field_names:
      try:
        value = field_value(record, field_name)
      except (KeyError, TypeError):  # (a record without the field: the reader's null)
        continue
      if isinstance(value, int) and not -2**63 <= value < 2**63:
        return number, field_name, value
  return None


def record_text(record: Mapping[str, Any], field_name: str) -> str:
  """A record's field (`field_value`) as text: a string as is, a number written out (a float in
  positional notation: math-verify reads 1e-05 as Euler's number times -5), a missing (null)
  value as "". InvalidRecord for a list or a mapping, which is no question or answer."""
  return _value_text(field_value(record, field_name), field_name)


def record_texts(record: Mapping[str, Any], field_name: str) -> list[str]:
  """A record's field as a list of texts, for a field that may hold several values (such as
  OlympiadBench's final_answer, a list of answers): each item of a list as `record_text` writes
  a value, a single value as a list of one. InvalidRecord for a list within the list."""
  value = field_value(record, field_name)
  items = value if isinstance(value, list) else [value]
  return [_value_text(item, field_name) for item in items]


# The fix for a list field that a .csv file wrote as text.
LISTS_IN_CSV = ("A .csv file writes a list so: give the data as JSON lines or Parquet, which keep "
                "lists")


def written_list(text: str) -> bool:
  """Whether text is a list of strings written out, as a .csv file writes a list field
  ("['assert f(1) == 2', ...]", or numpy's "['$2$' '$3$']")."""
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return False
  return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _value_text(value: Any, field_name: str) -> str:
  if value is None:
    return ""
  if isinstance(value, (list, dict)):
    raise InvalidRecord(f"field {field_name!r} holds a {type(value).__name__}, not text or a "
                        f"number: {str(value)[:80]}")
  if isinstance(value, float):
    return format(decimal.Decimal(repr(value)), "f")  # 1e-05 -> "0.00001"
  return str(value)


def record_question(record: Mapping[str, Any],
                    field_name: str) -> tuple[str, tuple[dict[str, str], ...]]:
  """The question of a record and the chat turns before it (Problem.earlier_turns). A field of
  text is the question alone; one of chat messages ([{"role": "user", "content": ...}], veRL's
  `prompt`) is a conversation whose last message, a user turn, is the question. InvalidRecord
  when the question is missing or blank, or a message is no role and content text."""
  value = field_value(record, field_name)
  earlier_turns = ()
  if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
    *earlier_turns, last = [_chat_message(item, number, field_name)
                            for number, item in enumerate(value, start=1)]
    if last["role"] != "user":
      raise InvalidRecord(f"the question field {field_name!r} holds a conversation whose last "
                          f"message has the role {last['role']!r}; it must end with the user's "
                          "question")
    question = last["content"]
  else:
    question = _value_text(value, field_name)
  if not question.strip():
    raise InvalidRecord(f"the question field {field_name!r} is empty or missing")
  return question, tuple(earlier_turns)


def _chat_message(message: Mapping[str, Any], number: int, field_name: str) -> dict[str, str]:
  """One message of a conversation as the chat template takes it: its role and content."""
  missing = [key for key in ("role", "content") if not isinstance(message.get(key), str)]
  if missing:
    raise InvalidRecord(f"message {number} (counting from 1) of the question field "
                        f"{field_name!r} has no {' or '.join(map(repr, missing))} text; a chat "
                        f"message is {{'role': 'user', 'content': TEXT}}: {str(message)[:80]}")
  return {"role": message["role"], "content": message["content"]}


@dataclass(kw_only=True)
class DatasetTask(Task):
  """A task read from a data set.

  dataset / dataset_config: hub name (e.g. "openai/gsm8k", "main") or local directory (of data
    files: its dataset_config None; or a DatasetDict that save_to_disk wrote);
  data_files: {split name: local .jsonl/.json/.parquet/.csv path}; when set, used
    instead of dataset;
  train_split / test_split: split names (None: the task has no such split). A file in
    data_files under "train" / "test" is that split, whatever the data set calls it
    (OlympiadBench's test problems are its hub split "train").
  question_field / answer_field: which record fields hold the question and answer; a nested
    field by its dotted path ("reward_model.ground_truth"). A question field of chat messages
    ([{"role": "user", "content": ...}], veRL's `prompt`) is a conversation (`record_question`).
  """

  dataset: str | None = None
  dataset_config: str | None = None
  data_files: dict[str, str] | None = None
  train_split: str | None = "train"
  test_split: str | None = "test"
  question_field: str = "question"
  answer_field: str = "answer"

  # The options of `field_options` that may be None (then the task reads no such field).
  optional_field_options: ClassVar[tuple[str, ...]] = ()

  def __post_init__(self) -> None:
    if self.dataset is None and self.data_files is None:
      raise ValueError(
          f"task {self.name!r}: set `dataset` (hub name or local directory) or "
          "`data_files` ({split: local file})"
      )
    files = self.data_files
    if files is not None and not (hasattr(files, "items") and all(
        isinstance(path, (str, os.PathLike)) for path in files.values())):
      raise ValueError(f"task {self.name!r}: data_files maps each split to one local file (join "
                       "several into one), as {'train': PATH, 'test': PATH}; got "
                       f"{dict(files) if hasattr(files, 'items') else files!r}")
    for split, path in (files or {}).items():
      try:
        _require_file(Path(path).expanduser(), split)
      except FileNotFoundError as error:
        raise FileNotFoundError(f"task {self.name!r}: {error}") from None
    for role in ("train", "test"):  # (a train file gives math one; MATH-500 has none on the hub)
      if role in (files or {}):
        setattr(self, f"{role}_split", role)
    unread = sorted(set(files or {}) - {self.train_split, self.test_split})
    if unread:
      raise ValueError(f"task {self.name!r}: data_files names split(s) {unread}, which it does "
                       "not read: the file under 'train' is its train split, the one under "
                       "'test' its test split")

  @abc.abstractmethod
  def make_problem(self, record: Mapping[str, Any]) -> Problem | None:
    """The Problem for one record, or None to skip a record with no usable answer;
    InvalidRecord for a record that is no problem (no question, a value of the wrong type)."""

  def field_options(self) -> dict[str, str]:
    """The record fields the task reads, by the option that names each ("question_field":
    "question"); those of `optional_field_options` may be None for data without that field."""
    return {"question_field": self.question_field, "answer_field": self.answer_field}

  def usable_answer(self) -> str:
    """What a record needs for `make_problem` to make it a problem, for the warning that
    counts the records skipped without it."""
    return f"an answer in its field {self.answer_field!r}"

  def _load(self, split: str | None, role: str) -> list[Problem]:
    if split is None:
      raise ValueError(f"task {self.name!r} has no {role} split: set {role}_split, or give a "
                       f"{role} file in data_files ({{{role!r}: PATH}})")
    records = load_split(
        dataset=self.dataset,
        dataset_config=self.dataset_config,
        data_files=self.data_files,
        split=split,
    )
    source = self._source(split)
    from_file = self.data_files is not None  # (a data set's layout is its authors')
    self._check_fields(records, split, source, from_file)
    problems = []
    rows = iter(records)
    for number in itertools.count(1):
      try:
        record = next(rows)
      except StopIteration:
        break
      except UnicodeDecodeError as error:  # (the reader decodes a record's text when it is read)
        raise ValueError(f"task {self.name!r}: record {number} (counting from 1) of {source} "
                         f"(split {split!r}) is not UTF-8 text ({error}); {_SAVE_AS_UTF8}"
                         ) from None
      try:
        problems.append(self.make_problem(record))
      except InvalidRecord as error:
        if from_file and _holds_columns(records):
          raise ValueError(
              f"task {self.name!r}: {source} (split {split!r}) holds one JSON object whose "
              "fields are lists (the problems by column), not an object per problem; convert it "
              f"to JSON lines: pandas.read_json({str(source)!r}, dtype=False).to_json("
              f"{str(Path(source).with_suffix('.jsonl'))!r}, orient='records', lines=True)"
              ) from None
        raise ValueError(f"task {self.name!r}: record {number} (counting from 1) of {source} "
                         f"(split {split!r}): {error}; fix or remove that record") from None
    skipped = [number for number, problem in enumerate(problems, start=1) if problem is None]
    if skipped:
      logger.warning(
          "task %r: skipped %d of %s of %s (split %r) with no usable answer (%s, counting from "
          "1): a problem needs %s", self.name, len(skipped), counted(len(problems), "record"),
          source, split, ("record " if len(skipped) == 1 else "records ")
          + ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else ""),
          self.usable_answer(),
      )
    return [problem for problem in problems if problem is not None]

  def _check_fields(self, records: Any, split: str, source: str, from_file: bool) -> None:
    """Raises ValueError, naming the fix, where the records of `split` (read from `source`; a
    data file where from_file) lack a field the task reads, hold nested fields in one, or hold an
    integer in one that the reader read as a float of other digits."""
    field_names = self.field_options()
    found = {option: _field_feature(records.features, name) for option, name in field_names.items()}
    missing = {option: field_names[option] for option, (_, lack) in found.items()
               if lack is not None}
    layout = _layout_problem(records, source) if missing and from_file else None
    if layout:
      raise ValueError(f"task {self.name!r}: {source} (split {split!r}) {layout}")
    if missing:
      options = ", ".join(
          f"{option} (now {name!r}"
          + ("; None if the data has no such field)" if option in self.optional_field_options
             else ")")
          for option, name in missing.items())
      nested = _nested_fields(records.features)
      where = [f"available fields: {records.column_names}"
               + (f" (nested ones by their dotted paths: {nested})" if nested else ""),
               *(found[option][1] for option in missing)]
      raise ValueError(
          f"task {self.name!r}: field(s) {list(missing.values())} not in {source} (split "
          f"{split!r}); {'; '.join(dict.fromkeys(text for text in where if text))}; name the "
          f"fields that hold them with the task options {options}"
      )
    holders = {option: list(feature) for option, (feature, _) in found.items()
               if isinstance(feature, Mapping)}
    if holders:
      raise ValueError(
          f"task {self.name!r}: field(s) {[field_names[option] for option in holders]} of "
          f"{source} (split {split!r}) hold nested fields, not text; name the one meant by its "
          "dotted path (FIELD.KEY) with the task options " + ", ".join(
              f"{option} (now {field_names[option]!r}, whose fields are {keys})"
              for option, keys in holders.items()))
    floats = [field_names[option] for option, (feature, _) in found.items()
              if getattr(feature, "dtype", None) == "float64"]
    inexact = (_inexact_integer(Path(source).expanduser(), floats)
               if floats and from_file and _builder(source) == "json" else None)
    if inexact:
      number, field_name, value = inexact
      raise ValueError(f"task {self.name!r}: record {number} (counting from 1) of {source} (split "
                       f"{split!r}) holds the integer {value} in its field {field_name!r}, beyond "
                       f"the reader's 64 bits: it would read as the float {float(value):.17g}; "
                       f"write it as a string (\"{value}\")")

  @functools.cached_property
  def _train(self) -> list[Problem]:
    problems = self._load(self.train_split, "train")
    self._warn_of_test_questions_in(problems)
    return problems

  def _warn_of_test_questions_in(self, train: list[Problem]) -> None:
    """Warns when test problems are in the train split (the same question): their scores
    would measure recall. Checked where both splits are local files or one split of a data
    set; a hub data set's own splits are its authors'."""
    local = self.data_files is not None and self.test_split in self.data_files
    if not (local or self.data_files is None and self.train_split == self.test_split):
      return
    train_questions = {problem.prompt.strip() for problem in train}
    test = self.test_problems()
    leaked = sum(problem.prompt.strip() in train_questions for problem in test)
    if leaked:
      logger.warning(
          "task %r: %d of %s of %s (split %r) %s also in the train split (%s, split %r): a "
          "model trained on them is scored on questions it was trained on; keep each question "
          "in one split", self.name, leaked, counted(len(test), "test problem"),
          self._source(self.test_split), self.test_split, "is" if leaked == 1 else "are",
          self._source(self.train_split), self.train_split)

  def _source(self, split: str) -> str:
    """Where a split's records come from: its data file, or the data set."""
    return self.data_files[split] if self.data_files else self.dataset

  @functools.cached_property
  def _test(self) -> list[Problem]:
    return self._load(self.test_split, "test")

  def train_problems(self) -> list[Problem]:
    return self._train

  def test_problems(self) -> list[Problem]:
    return self._test
