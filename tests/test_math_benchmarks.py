"""The paper's math benchmarks beside MATH-500 and GSM8K: olympiadbench (OlympiadBench's
text-only English math competition problems) and amc (AMC 2023), read from local files in the
hub's record layout and graded by math-verify."""

import dataclasses
import json
import re

import pytest

from jaxlayer.tasks import get_task

# One record of Hothan/OlympiadBench (config OE_TO_maths_en_COMP) has these fields; final_answer
# and solution are lists of strings. Layout seen in lighteval's olympiade_bench task (which
# reads question, final_answer, unit, is_multiple_answer, answer_type, subject, language) and
# in open-instruct's notes on the data set (the full column list, record id 1606 below).
OLYMPIADBENCH_FIELDS = [
    "id", "question", "solution", "final_answer", "context", "image_1", "image_2", "image_3",
    "image_4", "image_5", "modality", "difficulty", "is_multiple_answer", "unit", "answer_type",
    "error", "question_type", "subfield", "subject", "language",
]

XENIA = (  # record 1606, the first of the config, answer ["2"]
    "Xenia and Sergey play the following game. Xenia thinks of a positive integer $N$ not "
    "exceeding 5000. Then she fixes 20 distinct positive integers $a_{1}, a_{2}, \\ldots, "
    "a_{20}$ such that, for each $k=1,2, \\ldots, 20$, the numbers $N$ and $a_{k}$ are congruent "
    "modulo $k$. By a move, Sergey tells Xenia a set $S$ of positive integers not exceeding 20 , "
    "and she tells him back the set $\\left\\{a_{k}: k \\in S\\right\\}$ without spelling out "
    "which number corresponds to which index. How many moves does Sergey need to determine for "
    "sure the number Xenia thought of?")


def _olympiadbench_record(record_id, question, final_answer, *, is_multiple_answer=False,
                          unit=None, subfield="Algebra"):
  return {
      "id": record_id, "question": question, "solution": ["(a worked solution)"],
      "final_answer": final_answer, "context": None, "image_1": None, "image_2": None,
      "image_3": None, "image_4": None, "image_5": None, "modality": "Text-only",
      "difficulty": "Competition", "is_multiple_answer": is_multiple_answer, "unit": unit,
      "answer_type": "Numerical", "error": None, "question_type": "Open-ended",
      "subfield": subfield, "subject": "Math", "language": "English",
  }


# Answers computed by hand: P(same colour) = 2 * (3/6 * 2/5) = 2/5; 2x^2 - 5x + 2 = (2x - 1)(x - 2);
# the pairs m < n with m n = 6 are (1, 6) and (2, 3).
OLYMPIADBENCH_RECORDS = [
    _olympiadbench_record(1606, XENIA, ["2"], subfield="Combinatorics"),
    _olympiadbench_record(
        2501, "A bag holds 3 red and 3 blue marbles. Two marbles are drawn without replacement. "
        "Compute the probability that they have the same colour.", ["$\\frac{2}{5}$"],
        subfield="Combinatorics"),
    _olympiadbench_record(2502, "Compute all real numbers $x$ such that $2 x^{2}-5 x+2=0$.",
                          ["$\\frac{1}{2}$", "$2$"], is_multiple_answer=True),
    _olympiadbench_record(
        2503, "Find all pairs $(m, n)$ of positive integers with $m n=6$ and $m<n$.",
        ["$(1,6),(2,3)$"], is_multiple_answer=True, subfield="Number Theory"),
]


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return str(path)


def _write_parquet(path, records):
  import datasets

  datasets.Dataset.from_list(records).to_parquet(str(path))
  return str(path)


def test_olympiadbench_hub_defaults_are_the_verified_layout():
  # Verified against lighteval's task (hf_repo "Hothan/OlympiadBench", hf_subset
  # "OE_TO_maths_en_COMP", hf_avail_splits and evaluation_splits ["train"]) and the hub's
  # viewer (the config has the one split "train", 674 rows; evalscope counts 674 too).
  defaults = {field.name: field.default for field in dataclasses.fields(get_task("olympiadbench"))}
  assert {name: defaults[name] for name in ("dataset", "dataset_config", "train_split",
                                            "test_split", "question_field", "answer_field")} == {
      "dataset": "Hothan/OlympiadBench", "dataset_config": "OE_TO_maths_en_COMP",
      "train_split": None, "test_split": "train", "question_field": "question",
      "answer_field": "final_answer"}


@pytest.mark.parametrize("write", [_write_jsonl, _write_parquet])
def test_olympiadbench_reads_list_answers_from_a_test_file(tmp_path, write):
  suffix = ".jsonl" if write is _write_jsonl else ".parquet"
  path = write(tmp_path / f"olympiadbench{suffix}", OLYMPIADBENCH_RECORDS)
  task = get_task("olympiadbench", data_files={"test": path}, verify_workers=1)
  problems = task.test_problems()
  assert [problem.prompt for problem in problems] == [
      record["question"] for record in OLYMPIADBENCH_RECORDS]
  assert [problem.answer for problem in problems] == [
      "2", "\\frac{2}{5}", "\\frac{1}{2}, 2", "(1,6),(2,3)"]
  assert problems[2].metadata["is_multiple_answer"] is True
  assert problems[0].metadata["subfield"] == "Combinatorics"
  with pytest.raises(ValueError, match="task 'olympiadbench' has no train split"):
    task.train_problems()


def test_olympiadbench_grades_every_answer_of_a_problem_as_a_set(tmp_path):
  path = _write_jsonl(tmp_path / "olympiadbench.jsonl", OLYMPIADBENCH_RECORDS)
  task = get_task("olympiadbench", data_files={"test": path}, verify_workers=1)
  xenia, fraction, roots, pairs = task.test_problems()
  graded = [
      (xenia, "Two moves suffice, so \\boxed{2}.", 1.0),
      (xenia, "\\boxed{1}", 0.0),
      (fraction, "The probability is \\boxed{0.4}.", 1.0),
      (fraction, "\\boxed{\\frac{1}{2}}", 0.0),
      (roots, "The roots are \\boxed{2, \\frac{1}{2}}.", 1.0),  # any order
      (roots, "\\boxed{\\frac{1}{2}}", 0.0),  # one of the two answers
      (roots, "\\boxed{\\frac{1}{2}, 2, 3}", 0.0),  # one too many
      (roots, "x = \\boxed{\\frac{1}{2}} or x = \\boxed{2}", 1.0),  # one box each
      (roots, "x = \\boxed{\\frac{1}{2}} or x = \\boxed{3}", 0.0),
      (pairs, "\\boxed{(2,3), (1,6)}", 1.0),
      (pairs, "\\boxed{(1,6)} and \\boxed{(2,3)}", 1.0),
      (pairs, "\\boxed{(1,6)}", 0.0),
      (xenia, "\\boxed{1}? No: \\boxed{2}", 1.0),  # the last box
      (xenia, "\\boxed{2} or \\boxed{3}", 0.0),  # boxes that hedge are no answer
  ]
  batch = task.rewards([problem for problem, _, _ in graded],
                       [completion for _, completion, _ in graded])
  assert batch.components["correct"] == [score for _, _, score in graded]


def test_olympiadbench_train_and_test_files_are_their_splits(tmp_path):
  # The hub's test problems are its split "train": a local file under "train" is still the
  # train split, and the file under "test" the test split.
  train = _write_jsonl(tmp_path / "train.jsonl", OLYMPIADBENCH_RECORDS[:1])
  test = _write_jsonl(tmp_path / "test.jsonl", OLYMPIADBENCH_RECORDS[1:])
  task = get_task("olympiadbench", data_files={"train": train, "test": test})
  assert [problem.answer for problem in task.train_problems()] == ["2"]
  assert [problem.answer for problem in task.test_problems()] == [
      "\\frac{2}{5}", "\\frac{1}{2}, 2", "(1,6),(2,3)"]


def test_olympiadbench_answers_a_csv_file_wrote_as_text_are_named(tmp_path):
  # A .csv file writes final_answer as the text "['$\\frac{1}{2}$' '$2$']": taken for one
  # answer, no completion could give the problem's two as a set.
  import datasets

  path = tmp_path / "olympiadbench.csv"
  datasets.Dataset.from_list(OLYMPIADBENCH_RECORDS[2:3]).to_csv(str(path))
  with pytest.raises(ValueError, match=re.escape(
      f"record 1 (counting from 1) of {path} (split 'test'): field 'final_answer' holds a list "
      "written as text, not answers: ['$\\\\frac{1}{2}$' '$2$']; a problem's several answers "
      "would be graded as that text, not as a set. A .csv file writes a list so: give the data as "
      "JSON lines or Parquet")):
    get_task("olympiadbench", data_files={"test": str(path)}).test_problems()


def test_olympiadbench_list_question_is_no_problem(tmp_path):
  # Only the answer field may hold a list: a question that is one is an error naming it.
  record = dict(OLYMPIADBENCH_RECORDS[0], question=["What is 1+1?"])
  path = _write_jsonl(tmp_path / "test.jsonl", [record])
  with pytest.raises(ValueError, match="record 1 .* field 'question' holds a list"):
    get_task("olympiadbench", data_files={"test": path}).test_problems()


# math-ai/amc23's records: id, question, answer (a float) and url. The split "test" (the hub
# holds test-00000-of-00001.parquet) and the fields are what evaluation code that loads it reads
# (load_dataset("math-ai/amc23", split="test"), row["question"], row["answer"], row["url"],
# row["id"]); a copy of the same 40 problems types answer float64, and AMC23 examples write the
# first answer 27.0. Answers computed by hand: they meet after 45 / (18 + 12) = 1.5 hours, 27
# miles from A; P / 3 + 7 / 8 = 3 P / 4 + 1 / 8 gives P = 9 / 5, so m - n = 4.
AMC_RECORDS = [
    {"id": 0, "question": "Cities $A$ and $B$ are $45$ miles apart. Alicia lives in $A$ and Beth "
     "lives in $B$. Alicia bikes towards $B$ at 18 miles per hour. Leaving at the same time, "
     "Beth bikes toward $A$ at 12 miles per hour. How many miles from City $A$ will they be when "
     "they meet?", "answer": 27.0,
     "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A_Problems/Problem_1"},
    {"id": 1, "question": "The weight of $\\frac{1}{3}$ of a large pizza together with "
     "$3 \\frac{1}{2}$ cups of orange slices is the same as the weight of $\\frac{3}{4}$ of a "
     "large pizza together with $\\frac{1}{2}$ cup of orange slices. A cup of orange slices "
     "weighs $\\frac{1}{4}$ of a pound. What is the weight, in pounds, of a large pizza? The "
     "answer can be written in the form $\\frac{m}{n}$, where $m$ and $n$ are relatively prime "
     "positive integers. What is $m-n$?", "answer": 4.0,
     "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12A_Problems/Problem_2"},
]


def test_amc_hub_defaults_are_the_verified_layout():
  # Verified as the comment on AMC_RECORDS says.
  defaults = {field.name: field.default for field in dataclasses.fields(get_task("amc"))}
  assert {name: defaults[name] for name in ("dataset", "dataset_config", "train_split",
                                            "test_split", "question_field", "answer_field")} == {
      "dataset": "math-ai/amc23", "dataset_config": None, "train_split": None,
      "test_split": "test", "question_field": "question", "answer_field": "answer"}


@pytest.mark.parametrize("write", [_write_jsonl, _write_parquet])
def test_amc_float_answers_are_graded_as_integers(tmp_path, write):
  suffix = ".jsonl" if write is _write_jsonl else ".parquet"
  path = write(tmp_path / f"amc{suffix}", AMC_RECORDS)
  task = get_task("amc", data_files={"test": path}, verify_workers=1)
  cities, pizza = task.test_problems()
  assert (cities.prompt, pizza.prompt) == (AMC_RECORDS[0]["question"], AMC_RECORDS[1]["question"])
  assert cities.metadata["url"] == AMC_RECORDS[0]["url"]
  completions = ["They meet \\boxed{27} miles from $A$.", "\\boxed{26}", "So $m-n=\\boxed{4}$.",
                 "\\boxed{\\frac{9}{5}}"]
  batch = task.rewards([cities, cities, pizza, pizza], completions)
  assert batch.components["correct"] == [1.0, 0.0, 1.0, 0.0]
