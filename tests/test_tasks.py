"""Tasks: the registry, the generated tasks (arithmetic, countdown), the data-set tasks
(gsm8k, math, numina, code) read from local files, and batch rewards."""

import json
import re
import time
from collections import Counter
from typing import Optional

import numpy as np
import pytest

from jaxlayer.tasks import TASKS, Problem, get_task
from jaxlayer.tasks import base, expressions
from jaxlayer.tasks.arithmetic import ArithmeticTask
from jaxlayer.tasks.coding import extract_code
from jaxlayer.tasks.countdown import extract_expression


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return str(path)


# Registry


def test_unknown_task_lists_the_registered_names_and_how_to_register_one():
  with pytest.raises(ValueError,
                     match=r"unknown task 'nope'; registered: \['amc', 'arithmetic', .*'olympiad"
                           r"bench'\]\. Register your own task in the config file \(for the "
                           r"command line\) or before it is named: tasks.TASKS\['nope'\] = "
                           r"YourClass\."):
    get_task("nope")
  with pytest.raises(ValueError, match=r"unknown task 'arithmetc' \(did you mean 'arithmetic'"):
    get_task("arithmetc")


def test_unknown_option_lists_the_task_options():
  with pytest.raises(ValueError, match=r"no option 'digits'; its options are: \[.*'max_value'"):
    get_task("arithmetic", digits=3)


def test_a_mistyped_option_names_the_option_meant():
  with pytest.raises(ValueError, match=re.escape(
      "task 'arithmetic' has no options 'digits', 'maxvalue' (did you mean 'max_value'?); its "
      "options are: [")):
    get_task("arithmetic", maxvalue=99, digits=3)


@pytest.mark.parametrize("name, options, complaint", [
    # '99' failed later with "'<=' not supported between instances of 'int' and 'str'".
    ("arithmetic", {"max_value": "99"}, "option 'max_value' takes int, got '99' (str)."),
    ("arithmetic", {"seed": True}, "option 'seed' takes int, got True (bool)."),
    ("countdown", {"use_all_numbers": "False"}, "option 'use_all_numbers' takes bool, got"),
    ("math", {"verify_workers": 2.0}, "option 'verify_workers' takes int or None, got 2.0"),
])
def test_an_option_of_the_wrong_type_is_named_with_the_type_it_takes(name, options, complaint):
  with pytest.raises(ValueError, match=re.escape(f"task {name!r}: {complaint}")):
    get_task(name, **options)


def test_options_that_take_more_than_their_annotation_keep_working(tmp_path):
  _write_jsonl(tmp_path / "test.jsonl", [{"problem": "1+1?", "answer": "2"}])
  # A Path in data_files, None for int | None, an int for a float, numpy numbers.
  task = get_task("math", data_files={"test": tmp_path / "test.jsonl"}, verify_workers=None,
                  verify_timeout=2, reward_weights={"correct": 1})
  assert task.verify_timeout == 2 and [problem.answer for problem in task.test_problems()] == ["2"]
  assert get_task("arithmetic", max_value=np.int64(9), test_fraction=np.float32(0.5)).max_value == 9


def test_options_of_a_factory_without_annotations_are_checked_by_their_defaults(monkeypatch):
  def small_arithmetic(max_value=9, operators=None):
    return get_task("arithmetic", max_value=max_value, operators=operators or "+")

  monkeypatch.setitem(TASKS, "small", small_arithmetic)
  assert get_task("small", operators="*").operators == "*"  # a None default says nothing
  with pytest.raises(ValueError, match=re.escape("option 'max_value' takes int, got 9.5 (float)")):
    get_task("small", max_value=9.5)


class _AnnotatedOnInit:
  """A factory that is a plain class: its options' annotations are on __init__."""

  def __init__(self, max_value: int | None = None):
    self.max_value = max_value


def _annotated_optional(max_value: Optional[int] = None):
  return get_task("arithmetic", max_value=max_value or 9)


@pytest.mark.parametrize("factory", [_AnnotatedOnInit, _annotated_optional])
def test_options_annotated_on_a_classs_init_or_as_optional_are_checked(monkeypatch, factory):
  monkeypatch.setitem(TASKS, "small", factory)
  with pytest.raises(ValueError, match=re.escape(
      "task 'small': option 'max_value' takes int or None, got '9' (str).")):
    get_task("small", max_value="9")


def test_a_task_given_where_its_name_goes_is_a_clear_error():
  """get_task(task) failed with "unhashable type: 'ArithmeticTask'"."""
  with pytest.raises(TypeError, match=re.escape(
      "get_task takes a task's name, one of ['amc', 'arithmetic', ")):
    get_task(get_task("arithmetic"))


def test_every_registered_task_builds_with_defaults():
  # Data-set tasks only record where their data is; nothing is read until problems are asked for.
  for name in TASKS:
    assert get_task(name).name == name


# Arithmetic


def test_arithmetic_default_is_short_and_large_enough():
  task = get_task("arithmetic")
  test = task.test_problems()
  assert len(test) == 1000 and len({problem.prompt for problem in test}) == 1000
  for problem in test:  # "37+45=": two operands in [0, 99], + or -
    operands = re.split(r"[+-]", problem.prompt.removesuffix("="))
    assert (problem.prompt.endswith("=") and len(operands) == 2
            and all(0 <= int(x) <= 99 for x in operands))


@pytest.mark.parametrize("options", [{}, {"num_operands": 4, "operators": "+-*", "max_value": 999}])
def test_arithmetic_answers_match_python(options):
  task = get_task("arithmetic", num_train=300, num_test=300, **options)
  for problem in task.train_problems() + task.test_problems():
    assert int(problem.answer) == eval(problem.prompt[:-1])  # trusted text we generated


def test_arithmetic_is_deterministic_per_seed():
  first = get_task("arithmetic", seed=3, num_train=500, num_test=200)
  again = get_task("arithmetic", seed=3, num_train=500, num_test=200)
  other = get_task("arithmetic", seed=4, num_train=500, num_test=200)
  assert first.train_problems() == again.train_problems()
  assert first.test_problems() == again.test_problems()
  assert first.train_problems() != other.train_problems()
  assert first.test_problems() != other.test_problems()


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1)])
def test_arithmetic_splits_are_disjoint(seeds):
  # Disjoint within one seed and across seeds: the split is a hash of the problem itself.
  train = get_task("arithmetic", seed=seeds[0], num_train=20_000, num_test=10).train_problems()
  test = get_task("arithmetic", seed=seeds[1], num_train=10, num_test=1000).test_problems()
  assert {problem.prompt for problem in train}.isdisjoint(problem.prompt for problem in test)
  assert all(base.in_test_split(problem.prompt, 0.1) for problem in test)


def test_arithmetic_too_few_problems_is_a_clear_error():
  task = get_task("arithmetic", min_value=0, max_value=3, num_test=100)
  with pytest.raises(ValueError, match="only .* distinct test problems, wanted 100"):
    task.test_problems()


def test_arithmetic_rewards():
  task = get_task("arithmetic", num_test=10)
  problem = Problem(prompt="37+45=", answer="82")
  completions = ["82", "82\n13+1=14", "83", "", "the answer is 82"]
  batch = task.rewards([problem] * 5, completions)
  assert batch.components["correct"] == [1.0, 1.0, 0.0, 0.0, 0.0]
  assert batch.components["format"] == [1.0, 1.0, 1.0, 0.0, 0.0]
  assert batch.total == [1.0, 1.0, 0.0, 0.0, 0.0]
  assert task.reward(problem, "82") == 1.0


def test_arithmetic_answers_of_over_100_digits_are_graded():
  # Products of 60 numbers in [90, 99] have ~118 digits: the grader read at most 100, so no
  # completion could score.
  task = get_task("arithmetic", num_operands=60, min_value=90, operators="*", num_train=1,
                  num_test=1)
  problem = task.test_problems()[0]
  assert len(problem.answer) > 100
  assert task.reward(problem, problem.answer) == 1.0


def test_reward_weights_and_overlong_penalty():
  task = get_task("arithmetic", reward_weights={"correct": 1.0, "format": 0.5},
                  overlong_max_length=10, overlong_cache_length=4)
  problem = Problem(prompt="1+1=", answer="2")
  batch = task.rewards([problem] * 3, ["2", "3", "x"], completion_lengths=[3, 8, 12])
  assert batch.components["overlong"] == pytest.approx([0.0, -0.5, -1.0])
  assert batch.total == pytest.approx([1.5, 0.5 - 0.5, -1.0])
  with pytest.raises(ValueError, match="completion_lengths"):
    task.rewards([problem], ["2"])
  with pytest.raises(ValueError, match="1 problems but 2 completions"):
    task.rewards([problem], ["2", "2"])
  # One process grades the whole batch, decoding each completion once, with the same result.
  asked = []
  completions = ["2", "3", "x"]
  shared = task.rewards_on_all_hosts(
      [problem] * 3, lambda rows: asked.extend(rows) or [completions[r] for r in rows], [3, 8, 12])
  assert sorted(asked) == [0, 1, 2]
  assert shared.components == batch.components and shared.weights == batch.weights
  assert shared.total == pytest.approx(batch.total)


def user_task(graded):
  """An arithmetic task whose reward_components returns `graded`, as a user's might."""
  class UserTask(ArithmeticTask):
    name = "user"

    def reward_components(self, problems, completions):
      return graded

  return UserTask()


@pytest.mark.parametrize("graded, error", [
    (None, "it returned NoneType"),
    ([1.0, 0.0], "it returned list"),
    ({"correct": 1.0}, "component 'correct' is float"),
    ({"correct": [1.0]}, "component 'correct' has 1 value\\."),
    ({"correct": [1.0, float("nan")]},
     "component 'correct' is nan for completion 1 \\(problem '1\\+1='\\)"),
    ({"correct": [1.0, "yes"]}, "component 'correct' is 'yes' for completion 1"),
])
def test_a_user_reward_of_the_wrong_form_is_named(graded, error):
  # A NaN stopped training as diverged; a list one short gave fewer rewards than completions.
  with pytest.raises(ValueError, match="task 'user': reward_components must return a dict of "
                     "component name -> one finite number per completion \\(2\\); " + error):
    user_task(graded).rewards([Problem(prompt="1+1=", answer="2")] * 2, ["2", "3"])


def test_a_user_reward_may_be_any_finite_numbers():
  graded = {"correct": np.array([True, False]), "format": [1, np.float32(0.5)]}
  task = user_task(graded)
  assert task.rewards([Problem(prompt="1+1=", answer="2")] * 2, ["2", "3"]).total == [1.0, 0.0]


# Countdown and the safe evaluator


def test_countdown_problems_are_solvable_deterministic_and_disjoint():
  task = get_task("countdown", seed=1, num_train=400, num_test=100)
  again = get_task("countdown", seed=1, num_train=400, num_test=100)
  assert (task.train_problems() == again.train_problems()
          and task.test_problems() == again.test_problems())
  for problem in task.train_problems() + task.test_problems():
    numbers, target = problem.metadata["numbers"], problem.metadata["target"]
    assert eval(problem.answer) == target and 1 <= target <= 100  # trusted: we generated it
    assert (Counter(expressions.literals(expressions.parse_expression(problem.answer)))
            == Counter(numbers))
  key = task.split_key
  assert {key(problem) for problem in task.train_problems()}.isdisjoint(
      map(key, task.test_problems()))


def test_countdown_grading():
  task = get_task("countdown", num_test=10)
  problem = Problem(prompt="", answer="(3+7)*5", metadata={"numbers": [3, 7, 5, 2], "target": 50})
  completions = [
      "(3+7)*5",                          # correct, using 3 of 4 numbers
      "(7+3)*5 = 50\nbecause...",          # trailing "= target" is fine
      "thinking...<answer>5*(3+7)</answer>",
      "(3+7)*5*1",                         # 1 is not given
      "(3+7+7)*5",                          # 7 used twice
      "3+7+5+2",                            # valid, wrong value
      "5*2/(7-7)",                          # uses 7 twice and divides by zero
      "7/(5-3-2)",                          # each number once, divides by zero: no value
      "__import__('os').system('true')",
      "2**100",
      "(" * 300,
  ]
  batch = task.rewards([problem] * len(completions), completions)
  assert batch.components["correct"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
  assert batch.components["format"] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_countdown_use_all_numbers():
  task = get_task("countdown", use_all_numbers=True, num_test=10)
  problem = Problem(prompt="", answer="", metadata={"numbers": [3, 7, 5, 2], "target": 50})
  assert task.reward(problem, "(3+7)*5") == 0.0
  assert task.reward(problem, "(3+7)*5*2/2") == 0.0  # 2 used twice
  assert task.reward(problem, "(3+7)*5+2-2") == 0.0
  problem = Problem(prompt="", answer="", metadata={"numbers": [3, 7, 5, 1], "target": 50})
  assert task.reward(problem, "(3+7)*5*1") == 1.0
  # The prompt states the rule the grader applies (it said "at most once").
  assert all(problem.prompt.endswith("and each number exactly once.")
             for problem in task.test_problems())
  assert all(problem.prompt.endswith("and each number at most once.")
             for problem in get_task("countdown", num_test=10).test_problems())


def test_countdown_operators_limit_the_prompt_and_the_answers():
  # The prompt offered "+ - * /" and the grader took all four whatever `operators` said.
  task = get_task("countdown", operators="+-", num_train=10, num_test=10)
  assert all("Use + - and each number" in problem.prompt for problem in task.test_problems())
  problem = Problem(prompt="", answer="", metadata={"numbers": [3, 7, 5, 2], "target": 10})
  batch = task.rewards([problem] * 3, ["3+7", "5*2", "(7-2)*(5-3)"])
  assert batch.components["correct"] == [1.0, 0.0, 0.0]
  assert batch.components["format"] == [1.0, 0.0, 0.0]
  assert "Use + - * / and each" in get_task("countdown", num_test=1).test_problems()[0].prompt


@pytest.mark.parametrize(
    "text", ["x+1", "f(1)", "1 if 1 else 2", "2**3", "-1", "1.5*2", "(1).real", "[1]", ""])
def test_safe_evaluator_rejects_anything_but_integer_arithmetic(text):
  with pytest.raises(expressions.InvalidExpression):
    expressions.parse_expression(text)


def test_safe_evaluator_is_exact():
  assert expressions.evaluate(expressions.parse_expression("7/2*2")) == 7
  assert expressions.compact(expressions.parse_expression("((3+7)*(25))")) == "(3+7)*25"


def test_extract_expression():
  assert extract_expression("1+2 = 3\nmore") == "1+2"
  assert extract_expression("<answer>1</answer> <answer> 4*5 </answer>") == "4*5"
  # A tag the text mentions before the answer's was read as the start of the answer.
  assert extract_expression("I answer in <answer> tags.\n<answer>4*5 = 20</answer>") == "4*5"
  assert extract_expression("4*5\nthen </answer>") == "4*5"


def test_extract_expression_is_linear_in_the_text_length():
  # Rewards are graded in the training process: 10,000 unclosed tags took ~8 s.
  start = time.perf_counter()
  assert extract_expression("<answer>" * 10_000) == "<answer>" * 10_000
  assert time.perf_counter() - start < 1.0


# Data-set tasks from local files


def test_gsm8k_local_jsonl_with_custom_fields(tmp_path):
  records = [{"q": "Tom has 3 apples and buys 4. How many?", "sol": "3 + 4 = 7\n#### 7", "id": 1},
             {"q": "What is 1,000 + 234?", "sol": "#### 1,234", "id": 2}]
  train = _write_jsonl(tmp_path / "train.jsonl", records)
  test = _write_jsonl(tmp_path / "test.jsonl", records[:1])
  task = get_task("gsm8k", data_files={"train": train, "test": test}, question_field="q",
                  answer_field="sol", verify_workers=1)
  problems = task.train_problems()
  assert [problem.prompt for problem in problems] == [records[0]["q"], records[1]["q"]]
  assert [problem.answer for problem in problems] == ["7", "1234"]
  assert problems[0].metadata == {"id": 1}
  assert len(task.test_problems()) == 1
  batch = task.rewards(problems + problems[:1], ["So \\boxed{7}.", "#### 1,235", "So \\boxed{7"])
  assert batch.components["correct"][:2] == [1.0, 0.0]
  assert batch.components["format"] == [1.0, 0.0, 0.0]  # a \boxed{ never closed is no box


def _verl_parquet(path, rows):
  """A Parquet file of veRL's layout (its examples/data_preprocess scripts): each row's question
  in `prompt`, chat messages; its answer in reward_model.ground_truth. rows: (question, answer,
  the system message or None)."""
  import datasets

  records = [{"data_source": "openai/gsm8k",
              "prompt": ([{"role": "system", "content": system}] if system else [])
              + [{"role": "user", "content": question}],
              "ability": "math", "reward_model": {"style": "rule", "ground_truth": answer},
              "extra_info": {"split": "test", "index": index}}
             for index, (question, answer, system) in enumerate(rows)]
  datasets.Dataset.from_list(records).to_parquet(str(path))
  return str(path)


def test_verl_data_reads_its_chat_prompt_and_nested_answer(tmp_path):
  """veRL's data was unreadable: its question is a list of chat messages, its answer nested."""
  path = _verl_parquet(tmp_path / "test.parquet", [("Tom has 3 apples and buys 4. How many?", "7",
                                                    None),
                                                   ("What is 1,000 + 234?", "1234", "Be brief.")])
  task = get_task("gsm8k", data_files={"test": path}, question_field="prompt",
                  answer_field="reward_model.ground_truth")
  problems = task.test_problems()
  assert [(p.prompt, p.answer, p.earlier_turns) for p in problems] == [
      ("Tom has 3 apples and buys 4. How many?", "7", ()),
      ("What is 1,000 + 234?", "1234", ({"role": "system", "content": "Be brief."},))]
  assert problems[1].metadata["extra_info"] == {"split": "test", "index": 1}


@pytest.mark.parametrize("answer_field, complaint", [
    ("answer", "field(s) ['answer'] not in {path} (split 'test'); available fields: "
     "['data_source', 'prompt', 'ability', 'reward_model', 'extra_info'] (nested ones by their "
     "dotted paths: reward_model.{style, ground_truth}, extra_info.{split, index}); name the "
     "fields that hold them with the task options answer_field (now 'answer')"),
    ("reward_model.answer", "field(s) ['reward_model.answer'] not in {path} (split 'test'); "
     "available fields: ['data_source', 'prompt', 'ability', 'reward_model', 'extra_info'] "
     "(nested ones by their dotted paths: reward_model.{style, ground_truth}, extra_info.{split, "
     "index}); 'reward_model' has the fields ['style', 'ground_truth']; name the fields"),
    ("ability.name", "field(s) ['ability.name'] not in {path} (split 'test'); available fields: "
     "['data_source', 'prompt', 'ability', 'reward_model', 'extra_info'] (nested ones by their "
     "dotted paths: reward_model.{style, ground_truth}, extra_info.{split, index}); 'ability' "
     "holds no fields; name the fields"),
    ("reward_model", "field(s) ['reward_model'] of {path} (split 'test') hold nested fields, not "
     "text; name the one meant by its dotted path (FIELD.KEY) with the task options answer_field "
     "(now 'reward_model', whose fields are ['style', 'ground_truth'])"),
])
def test_a_nested_field_not_in_the_data_names_the_fields_there(tmp_path, answer_field, complaint):
  path = _verl_parquet(tmp_path / "test.parquet", [("1+1?", "2", None)])
  task = get_task("gsm8k", data_files={"test": path}, question_field="prompt",
                  answer_field=answer_field)
  complaint = complaint.replace("{path}", path)
  with pytest.raises(ValueError, match=re.escape(f"task 'gsm8k': {complaint}")):
    task.test_problems()


@pytest.mark.parametrize("prompt, complaint", [
    ([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
     "the question field 'prompt' holds a conversation whose last message has the role "
     "'assistant'; it must end with the user's question"),
    ([{"role": "user"}], "message 1 (counting from 1) of the question field 'prompt' has no "
     "'content' text; a chat message is {'role': 'user', 'content': TEXT}"),
    ([{"role": "user", "content": "  "}], "the question field 'prompt' is empty or missing"),
])
def test_a_conversation_that_asks_no_question_is_named(tmp_path, prompt, complaint):
  path = _write_jsonl(tmp_path / "test.jsonl", [{"prompt": prompt, "answer": "2"}])
  with pytest.raises(ValueError, match=re.escape(f"record 1 (counting from 1) of {path} (split "
                                                 f"'test'): {complaint}")):
    get_task("math", data_files={"test": path}, question_field="prompt").test_problems()


def test_a_data_file_suffix_is_read_in_any_case(tmp_path):
  """X.JSONL (a Windows export) and .Jsonl were refused as an unknown suffix, .CSV likewise."""
  import datasets

  records = [{"question": "What is 1+1?", "answer": "#### 2"}]
  train = _write_jsonl(tmp_path / "TRAIN.JSONL", records)
  test = tmp_path / "test.Csv"
  datasets.Dataset.from_list(records).to_csv(str(test))
  task = get_task("gsm8k", data_files={"train": train, "test": str(test)})
  assert [(p.prompt, p.answer) for p in task.train_problems()] == [("What is 1+1?", "2")]
  assert [(p.prompt, p.answer) for p in task.test_problems()] == [("What is 1+1?", "2")]


def test_math_local_parquet_takes_the_last_boxed_answer(tmp_path):
  import datasets

  path = tmp_path / "math.parquet"
  datasets.Dataset.from_list([
      {"problem": "Half of one?",
       "solution": "First \\boxed{2}, no: it is $\\boxed{\\frac{1}{2}}$."},
      {"problem": "A proof.", "solution": "No boxed answer here."},
  ]).to_parquet(str(path))
  task = get_task("math", data_files={"test": str(path)}, answer_field="solution",
                  boxed_answer=True, verify_workers=1)
  problems = task.test_problems()
  assert len(problems) == 1  # the record without an answer is skipped
  assert problems[0].answer == "\\frac{1}{2}"
  assert (task.rewards(problems * 2, ["\\boxed{0.5}", "\\boxed{2}"]).components["correct"]
          == [1.0, 0.0])
  with pytest.raises(ValueError, match="has no train split"):
    task.train_problems()


def test_math_trains_on_a_train_data_file(tmp_path):
  # MATH-500 on the hub has no train split; a local train file gives the task one.
  train = [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "What is 2+3?", "answer": "5"}]
  test = [{"problem": "What is 4+4?", "answer": "8"}]
  task = get_task("math", data_files={"train": _write_jsonl(tmp_path / "train.jsonl", train),
                                      "test": _write_jsonl(tmp_path / "test.jsonl", test)})
  assert [(p.prompt, p.answer) for p in task.train_problems()] == [
      (record["problem"], record["answer"]) for record in train]
  assert [p.answer for p in task.test_problems()] == ["8"]


def test_numina_defaults_read_boxed_solutions(tmp_path):
  path = _write_jsonl(tmp_path / "numina.jsonl",
                      [{"problem": "2+2?", "solution": "It is \\boxed{4}."}])
  task = get_task("numina", data_files={"train": path})
  assert task.train_problems() == [Problem(prompt="2+2?", answer="4", metadata={})]


def test_test_questions_in_the_train_file_are_warned_of(tmp_path, caplog):
  records = [{"question": f"{n}+1?", "answer": f"#### {n + 1}"} for n in range(4)]
  train = _write_jsonl(tmp_path / "train.jsonl", records[:3])
  test = _write_jsonl(tmp_path / "test.jsonl", records[2:])  # "2+1?" is in both
  get_task("gsm8k", data_files={"train": train, "test": test}).train_problems()
  assert (f"1 of 2 test problems of {test} (split 'test') is also in the train split ({train}, "
          "split 'train')") in caplog.text
  caplog.clear()
  disjoint = _write_jsonl(tmp_path / "disjoint.jsonl", records[3:])
  get_task("gsm8k", data_files={"train": train, "test": disjoint}).train_problems()
  assert "also in the train split" not in caplog.text
  directory = tmp_path / "data_set"  # a local data set trained and tested on its one split
  directory.mkdir()
  _write_jsonl(directory / "train.jsonl", records)
  get_task("gsm8k", dataset=str(directory), dataset_config=None, test_split="train"
           ).train_problems()
  assert "4 of 4 test problems of" in caplog.text


def test_missing_field_names_it_and_the_available_fields(tmp_path):
  path = _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "solution": "#### 2"}])
  task = get_task("gsm8k", data_files={"train": path})
  with pytest.raises(ValueError,
                     match=r"field\(s\) \['answer'\] not in .*train.jsonl.*available fields: "
                           r"\['question', 'solution'\]; name the fields that hold them with "
                           r"the task options answer_field \(now 'answer'\)$"):
    task.train_problems()


def test_missing_code_fields_name_their_options_and_which_may_be_none(tmp_path):
  # MBPP's sanitized copy has no test_setup_code: setup_field=None reads it.
  record = {"prompt": "Write add(a, b).", "code": "def add(a, b): return a + b",
            "test_list": ["assert add(1, 2) == 3"]}
  path = _write_jsonl(tmp_path / "mbpp.jsonl", [record])
  with pytest.raises(ValueError, match=re.escape(
      "name the fields that hold them with the task options question_field (now 'text'), "
      "setup_field (now 'test_setup_code'; None if the data has no such field)")):
    get_task("code", data_files={"test": path}).test_problems()
  task = get_task("code", data_files={"test": path}, question_field="prompt", setup_field=None)
  assert task.test_problems()[0].prompt.startswith("Write add(a, b).")


def test_missing_file_names_it(tmp_path):
  missing = tmp_path / "nowhere" / "train.jsonl"
  with pytest.raises(FileNotFoundError, match=f"data file for split 'train' not found: {missing}"):
    get_task("gsm8k", data_files={"train": str(missing)})
  with pytest.raises(FileNotFoundError, match="dataset path not found: ./no/such/dir"):
    get_task("math", dataset="./no/such/dir").test_problems()


def test_a_data_set_that_cannot_be_loaded_is_a_one_line_error(tmp_path):
  # It was a RuntimeError, which `jaxlayer eval` printed as a traceback.
  from jaxlayer import assets, cli

  config = tmp_path / "config.py"
  config.write_text("from jaxlayer.rl.config import default_config\n"
                    "def get_config():\n"
                    "  config = default_config()\n"
                    "  config.task.name = 'gsm8k'\n"
                    "  config.task.options = {'dataset': 'jaxlayer-tests/no-such-dataset'}\n"
                    "  return config\n")
  with pytest.raises(SystemExit, match="jaxlayer eval: could not load split 'test' of dataset "
                                       "'jaxlayer-tests/no-such-dataset'"):
    cli.main(["eval", "--config", str(config), "--model", assets.TINY_ARITH,
              "--out", str(tmp_path / "eval")])
  # Offline, a hub task among eval.tasks says where its local files go.
  with pytest.raises(SystemExit, match=r"could not load split 'test' of dataset 'openai/gsm8k'.*"
                     r"data_files=\{split: path\} \(task.options for the config's task, "
                     r"eval.task_options for the other eval.tasks\)"):
    cli.main(["eval", "--config", str(config), "--model", assets.TINY_ARITH, "--out",
              str(tmp_path / "eval"), "--config.task.name=arithmetic",
              "--config.task.options={}", "--config.eval.tasks=arithmetic,gsm8k",
              "--config.eval.max_new_tokens=8"])


def test_a_datasetdict_saved_to_disk_is_read_by_split(tmp_path):
  # load_dataset refuses what save_to_disk wrote ("use load_from_disk"), which no task option
  # could reach. The gsm8k default's hub config "main" means nothing there.
  import datasets

  records = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
  splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(records),
                                 "test": datasets.Dataset.from_list(records[1:])})
  splits.save_to_disk(str(tmp_path / "saved"))
  task = get_task("gsm8k", dataset=str(tmp_path / "saved"))
  assert [(p.prompt, p.answer) for p in task.train_problems()] == [("1+1?", "2"), ("2+2?", "4")]
  assert [(p.prompt, p.answer) for p in task.test_problems()] == [("2+2?", "4")]
  with pytest.raises(ValueError, match=r"has no split 'validation'; its splits: \['test', "
                                       r"'train'\]: name one with the task option"):
    get_task("gsm8k", dataset=str(tmp_path / "saved"), test_split="validation").test_problems()
  splits["test"].save_to_disk(str(tmp_path / "one"))
  with pytest.raises(ValueError, match=r"holds one Dataset \(Dataset.save_to_disk\), not "
                                       r"splits: save a DatasetDict of its splits"):
    get_task("gsm8k", dataset=str(tmp_path / "one")).test_problems()


def test_a_local_dataset_that_is_no_directory_of_its_config_names_the_fix(tmp_path):
  # gsm8k's dataset_config "main" (its hub data set's) stayed set for a directory of files,
  # which has only a default config: the error did not name the option to change.
  _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
  with pytest.raises(ValueError, match=r"'main' not found.*task option dataset_config \(now "
                                       r"'main'; None: its default\)"):
    get_task("gsm8k", dataset=str(tmp_path)).train_problems()
  task = get_task("gsm8k", dataset=str(tmp_path), dataset_config=None)
  assert [(p.prompt, p.answer) for p in task.train_problems()] == [("1+1?", "2")]
  # A file was looked up on the hub ("Couldn't reach ... on the Hub").
  with pytest.raises(ValueError, match=r"is a file; `dataset` is a hub name or a directory: give "
                                       r"a file as the task option data_files=\{'train': '.*"):
    get_task("gsm8k", dataset=str(tmp_path / "train.jsonl")).train_problems()


def test_missing_split_in_data_files_is_named(tmp_path):
  path = _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
  with pytest.raises(ValueError,
                     match=r"no data file for split 'test': data_files has splits \['train'\]"):
    get_task("gsm8k", data_files={"train": path}).test_problems()


@pytest.mark.parametrize("data_files, complaint", [
    ("{train}", r"data_files maps each split to one local file \(join several into one\), as "
     r"\{'train': PATH, 'test': PATH\}; got '.*train.jsonl'$"),
    ({"train": ["{train}", "{train}"]}, r"data_files maps each split to one local file"),
    # A split the task does not read was ignored: its problems were silently not used.
    ({"train": "{train}", "validation": "{train}"},
     r"data_files names split\(s\) \['validation'\], which it does not read: the file under "
     r"'train' is its train split, the one under 'test' its test split$"),
])
def test_data_files_that_are_no_map_of_read_splits_to_files_are_named(tmp_path, data_files,
                                                                      complaint):
  train = _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
  filled = json.loads(json.dumps(data_files).replace("{train}", train))
  with pytest.raises(ValueError, match=complaint):
    get_task("gsm8k", data_files=filled)


def test_records_without_an_answer_are_skipped_by_number(tmp_path, caplog):
  # A null or missing answer was read as the text "None": only a completion "None" scored.
  path = _write_jsonl(tmp_path / "test.jsonl", [
      {"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": None},
      {"problem": "3+3?"}, {"problem": "4+4?", "answer": 8}])
  task = get_task("math", data_files={"test": path})
  problems = task.test_problems()
  assert [(problem.prompt, problem.answer) for problem in problems] == [("1+1?", "2"),
                                                                         ("4+4?", "8")]
  assert ("skipped 2 of 4 records of" in caplog.text
          and "(records 2, 3, counting from 1): a problem needs an answer in its field 'answer'"
          in caplog.text)


@pytest.mark.parametrize("name, record, needs", [
    ("numina", {"problem": "1+1?", "solution": "It is 2."},
     "a \\boxed{...} answer in its field 'solution' (boxed_answer=True: a full solution)"),
    ("code", {"text": "Write f.", "code": "", "test_list": [], "test_setup_code": ""},
     "tests in its field 'test_list'"),
])
def test_skipped_records_say_what_a_problem_needs(tmp_path, caplog, name, record, needs):
  path = _write_jsonl(tmp_path / "train.jsonl", [record])
  assert get_task(name, data_files={"train": path}).train_problems() == []
  assert f"(record 1, counting from 1): a problem needs {needs}" in caplog.text


def test_numeric_answers_are_graded_as_written(tmp_path):
  # A float answer became its repr, "1e-05", which math-verify reads as e * -5 (e: Euler's
  # number): every completion to it scored 0.
  path = tmp_path / "test.csv"
  path.write_text("problem,answer\nA tiny number?,0.00001\nA huge one?,1e16\nHalf?,0.5\n")
  task = get_task("math", data_files={"test": str(path)}, verify_workers=1)
  problems = task.test_problems()
  assert [problem.answer for problem in problems] == ["0.00001", "10000000000000000", "0.5"]
  completions = ["\\boxed{0.00001}", "\\boxed{10^{16}}", "\\boxed{\\frac{1}{2}}"]
  assert task.rewards(problems, completions).components["correct"] == [1.0, 1.0, 1.0]


def test_an_integer_beyond_64_bits_is_named_not_read_as_a_float(tmp_path):
  """The reader read an answer of more than 64 bits in JSON lines as a float of other digits
  (...78901234567890: ...80000000000000), which every right completion missed, and its field's
  other answers as floats too (5: "5.0"). A JSON file's reader refused it without the fix."""
  big = 123456789012345678901234567890
  records = [{"problem": "Five?", "answer": 5}, {"problem": "Big?", "answer": big}]
  path = _write_jsonl(tmp_path / "test.jsonl", records)
  with pytest.raises(ValueError, match=re.escape(
      f"task 'math': record 2 (counting from 1) of {path} (split 'test') holds the integer {big} "
      f"in its field 'answer', beyond the reader's 64 bits: it would read as the float "
      f"{float(big):.17g}; write it as a string (\"{big}\")")):
    get_task("math", data_files={"test": path}).test_problems()
  array = tmp_path / "test.json"
  array.write_text(json.dumps(records))
  with pytest.raises(ValueError, match="it holds an integer beyond 64 bits: write it as a string"):
    get_task("math", data_files={"test": str(array)}).test_problems()
  records[1]["answer"] = str(big)
  _write_jsonl(tmp_path / "test.jsonl", records)
  assert [p.answer for p in get_task("math", data_files={"test": path}).test_problems()] == [
      "5", str(big)]


@pytest.mark.parametrize("records, complaint", [
    ([{"problem": "1+1?", "answer": "2"}, {"problem": None, "answer": "4"}],
     "record 2 .* the question field 'problem' is empty or missing"),
    ([{"problem": "1+1?", "answer": "2"}, {"problem": "  ", "answer": "4"}],
     "record 2 .* the question field 'problem' is empty or missing"),
    ([{"problem": "1+1?", "answer": ["2", "3"]}], "record 1 .* field 'answer' holds a list"),
    # Records whose fields are all lists, but more than one: no file of the problems by column.
    ([{"problem": ["1+1?"], "answer": ["2"]}, {"problem": ["2+2?"], "answer": ["4"]}],
     "record 1 .* field 'problem' holds a list"),
])
def test_a_record_that_is_no_problem_is_named(tmp_path, records, complaint):
  path = _write_jsonl(tmp_path / "test.jsonl", records)
  with pytest.raises(ValueError, match=f"task 'math': {complaint}") as raised:
    get_task("math", data_files={"test": path}).test_problems()
  assert path in str(raised.value)


@pytest.mark.parametrize("name, text, complaint", [
    ("test.json", '{"problem": ["1+1?", "2+2?"], "answer": ["2", "4"]}',
     "holds one JSON object whose fields are lists (the problems by column), not an object per "
     "problem; convert it to JSON lines: pandas.read_json('{path}', dtype=False).to_json("
     "'{stem}.jsonl', orient='records', lines=True)"),
    ("test.json", '{"data": [{"problem": "1+1?", "answer": "2"}]}',
     "holds its records in a list under its field 'data'; convert it to JSON lines, one record "
     "per line: jq -c '.data[]' {path} > {stem}.jsonl"),
    ("test.csv", "problem\tanswer\n1+1?\t2\n",
     "reads as one field, 'problem\\tanswer': a .csv file's fields are separated by commas; "
     "convert it to comma-separated CSV, or to JSON lines"),
])
def test_a_data_file_laid_out_otherwise_is_named_with_its_conversion(tmp_path, name, text,
                                                                     complaint):
  """Files whose every record was at fault read as a problem of one record ("fix or remove
  that record") or of the field names ("name the fields that hold them with the task
  options"): now the file is named with how to convert it."""
  path = tmp_path / name
  path.write_text(text)
  complaint = complaint.format(path=path, stem=path.with_suffix(""))
  with pytest.raises(ValueError) as raised:
    get_task("math", data_files={"test": str(path)}).test_problems()
  assert str(raised.value) == f"task 'math': {path} (split 'test') {complaint}"


@pytest.mark.parametrize("name, text, complaint", [
    ("test.jsonl", "", r"\(split 'test'\) is empty: it holds no records"),
    ("test.jsonl", "\n\n", r"\(split 'test'\) is empty: it holds no records"),
    ("test.json", "[]", r"\(split 'test'\) is empty: it holds no records"),
    ("test.csv", "problem,answer\n", r"\(split 'test'\) is empty: it holds no records"),
    ("test.json", "[{}, {}]", r"\(split 'test'\) is empty: it holds no records, or only "
     r"records without fields \(\{\}\)$"),
    # The reader names "row 1", counted from 0 within a block of the file, not the line.
    ("test.jsonl", '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": \n',
     r"\(split 'test'\) as json: line 2 \(counting from 1\) is not valid JSON: Expecting value "
     r"at column 31$"),
    ("test.jsonl", '{"problem": "1+1?", "answer": "2"}\n[1, 2]\n',
     r"\(split 'test'\) as json: line 2 \(counting from 1\) holds a JSON list, not an object"),
    ("test.jsonl", '{"problem": "1+1?", "answer": "2"}\n42\n',
     r"\(split 'test'\) as json: line 2 \(counting from 1\) holds a JSON int, not an object"),
])
def test_an_unreadable_data_file_is_named(tmp_path, name, text, complaint):
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(ValueError, match=f"data file {re.escape(str(path))} {complaint}"):
    get_task("math", data_files={"test": str(path)}).test_problems()


def test_a_parquet_file_of_no_rows_is_empty(tmp_path):
  # pyarrow said "BatchSize must be greater than 0, got 0".
  import pyarrow as pa
  import pyarrow.parquet as pq

  path = tmp_path / "test.parquet"
  pq.write_table(pa.table({"problem": pa.array([], pa.string()),
                           "answer": pa.array([], pa.string())}), path)
  with pytest.raises(ValueError, match=re.escape(f"data file {path} (split 'test') is empty: it "
                                                 "holds no records")):
    get_task("math", data_files={"test": str(path)}).test_problems()


def test_a_data_file_not_in_utf8_names_the_record_and_the_fix(tmp_path):
  latin1 = tmp_path / "test.jsonl"
  records = '{"problem": "1+1?", "answer": "2"}\n{"problem": "caf\u00e9?", "answer": "3"}\n'
  latin1.write_bytes(records.encode("latin-1"))
  with pytest.raises(ValueError, match=re.escape(f"record 2 (counting from 1) of {latin1} (split "
                                                 "'test') is not UTF-8 text (") +
                     r".*\); save the file as UTF-8"):
    get_task("math", data_files={"test": str(latin1)}).test_problems()
  latin1_csv = tmp_path / "test.csv"
  latin1_csv.write_bytes("problem,answer\ncaf\u00e9?,3\n".encode("latin-1"))
  with pytest.raises(ValueError, match=re.escape(f"data file {latin1_csv} (split 'test') as csv: "
                                                 "UnicodeDecodeError") +
                     r".*; save the file as UTF-8"):
    get_task("math", data_files={"test": str(latin1_csv)}).test_problems()


def test_a_directory_given_as_a_data_file_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"data file for split 'test' is a directory, not a file: {tmp_path}; give the")):
    get_task("math", data_files={"test": str(tmp_path)})


# Code


def test_mbpp_style_code_task(tmp_path):
  records = [{"text": "Write a function add(a, b).", "code": "def add(a, b):\n    return a + b",
              "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
              "test_setup_code": ""}]
  path = _write_jsonl(tmp_path / "mbpp.jsonl", records)
  task = get_task("code", data_files={"test": path}, sandbox_limits={"wall_seconds": 3.0})
  [problem] = task.test_problems()
  assert "assert add(1, 2) == 3" in problem.prompt and problem.answer == records[0]["code"]
  completions = [
      "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n",
      "```python\ndef add(a, b):\n    return 3\n```",  # passes one test of two
      "def add(a, b): return a + b",  # no fence: the whole completion is the code
      "```python\nimport os\nos.system('echo hi')\n",  # unclosed fence, no add
  ]
  batch = task.rewards([problem] * 4, completions)
  assert batch.components["correct"] == [1.0, 0.5, 1.0, 0.0]
  assert batch.components["format"] == [1.0, 1.0, 0.0, 1.0]
  strict = get_task("code", data_files={"test": path}, reward_mode="all")
  assert strict.rewards([problem] * 2, completions[:2]).components["correct"] == [1.0, 0.0]


def test_a_list_of_tests_written_as_text_is_no_test_script(tmp_path):
  # A .csv file writes MBPP's test_list as "['assert add(1, 2) == 3', ...]": run as a test
  # script, that list asserted nothing, so every completion scored 1.
  import datasets

  records = [{"text": "Write a function add(a, b).", "code": "",
              "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]}]
  path = tmp_path / "mbpp.csv"
  datasets.Dataset.from_list(records).to_csv(str(path))
  with pytest.raises(ValueError, match=re.escape(
      f"record 1 (counting from 1) of {path} (split 'test'): field 'test_list' holds a list "
      "written as text, not a test script: ['assert add(1, 2) == 3'") + ".*" + re.escape(
      "; run as the tests, it would pass every completion. A .csv file writes a list so: give "
      "the data as JSON lines or Parquet")):
    get_task("code", data_files={"test": str(path)}, setup_field=None).test_problems()


def test_mbpp_setup_code_is_the_benchmarks(tmp_path):
  # MBPP/367's shape: the setup code builds the trees the tests pass. It ran before the program,
  # so a program that rebound root and root1 passed with bool as its answer.
  node = ("class Node:\n    def __init__(self, data, left=None, right=None):\n"
          "        self.data, self.left, self.right = data, left, right\n")
  record = {"text": "Write a function to check if a binary tree is balanced.", "code": "",
            "test_list": ["assert is_tree_balanced(root) == False",
                          "assert is_tree_balanced(root1) == True"],
            "test_setup_code": node + "root = Node(1, Node(2, Node(3)))\n"
                                      "root1 = Node(1, Node(2), Node(3))\n"}
  path = _write_jsonl(tmp_path / "mbpp.jsonl", [record])
  task = get_task("code", data_files={"test": path}, answer_field=None)
  [problem] = task.test_problems()
  honest = (node + "def height(tree):\n    return 0 if tree is None else "
            "1 + max(height(tree.left), height(tree.right))\n"
            "def is_tree_balanced(tree):\n    return tree is None or ("
            "abs(height(tree.left) - height(tree.right)) <= 1\n"
            "        and is_tree_balanced(tree.left) and is_tree_balanced(tree.right))\n")
  rebinds_the_trees = "def is_tree_balanced(tree):\n    return bool(tree)\nroot, root1 = 0, 1\n"
  rewards = task.rewards([problem] * 2, [honest, rebinds_the_trees]).components["correct"]
  assert rewards == [1.0, 0.5]  # bool passes the test a constant True passes


def test_humaneval_style_code_task(tmp_path):
  record = {"task_id": "HumanEval/0", "prompt": "def double(x):\n    \"\"\"Twice x.\"\"\"\n",
            "canonical_solution": "    return 2 * x\n",
            "test": "def check(candidate):\n    assert candidate(2) == 4\n"
                    "    assert candidate(0) == 0\n",
            "entry_point": "double"}
  path = _write_jsonl(tmp_path / "humaneval.jsonl", [record])
  task = get_task("code", data_files={"test": path}, question_field="prompt",
                  answer_field="canonical_solution", tests_field="test", setup_field=None,
                  entry_point_field="entry_point")
  [problem] = task.test_problems()
  assert problem.prompt == record["prompt"]
  completions = ["    return 2 * x\n", "```python\ndef double(x):\n    return x + x\n```",
                 "    return x\n"]
  assert task.rewards([problem] * 3, completions).components["correct"] == [1.0, 1.0, 0.0]


def test_humaneval_tests_call_the_prompts_helpers_not_the_completions(tmp_path):
  # HumanEval/32's shape: the tests check find_zero's answer with poly, from the prompt. A
  # completion that redefined poly to return 0 passed with any answer.
  record = {"prompt": "import math\n\n\ndef poly(xs: list, x: float):\n"
                      "    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])\n"
                      "\n\ndef find_zero(xs: list):\n    \"\"\"A zero of poly(xs).\"\"\"\n",
            "test": "def check(candidate):\n    for xs in ([-2, 1], [-6, 2]):\n"
                    "        assert math.fabs(poly(xs, candidate(xs))) < 1e-4\n",
            "entry_point": "find_zero"}
  path = _write_jsonl(tmp_path / "humaneval.jsonl", [record])
  task = get_task("code", data_files={"test": path}, question_field="prompt", answer_field=None,
                  tests_field="test", setup_field=None, entry_point_field="entry_point")
  [problem] = task.test_problems()
  completions = ["    return -xs[0] / xs[1]\n",
                 "```python\nimport math\n\n\ndef poly(xs, x):\n    return 0\n\n\n"
                 "def find_zero(xs):\n"
                 "    return 0\n```",
                 "    return 0\n"]
  assert task.rewards([problem] * 3, completions).components["correct"] == [1.0, 0.0, 0.0]


def test_code_records_without_tests_are_skipped_and_without_entry_point_named(tmp_path):
  # A record without tests crashed the loading (None) or scored every completion 0 ([]).
  records = [{"text": "Write one().", "test_list": None}, {"text": "Write two().", "test_list": []},
             {"text": "Write three().", "test_list": ["assert three() == 3"]}]
  path = _write_jsonl(tmp_path / "mbpp.jsonl", records)
  task = get_task("code", data_files={"test": path}, answer_field=None, setup_field=None)
  assert [problem.metadata["tests"] for problem in task.test_problems()] == [
      ["assert three() == 3"]]
  path = _write_jsonl(tmp_path / "humaneval.jsonl", [
      {"prompt": "def f():\n", "test": "def check(c):\n  assert c() == 1\n", "entry_point": None}])
  task = get_task("code", data_files={"test": path}, question_field="prompt", answer_field=None,
                  tests_field="test", setup_field=None, entry_point_field="entry_point")
  with pytest.raises(ValueError, match="record 1 .* the entry point field 'entry_point' is empty"):
    task.test_problems()


def test_extract_code():
  assert extract_code("a\n```python\nx = 1\n```\nb\n```\ny = 2\n```") == "x = 1\n"
  assert extract_code("```\ny = 2\n```") == "y = 2\n"
  assert extract_code("```py\nz = 3") == "z = 3"
  assert extract_code("w = 4") == "w = 4"


def test_code_task_rejects_a_bad_reward_mode(tmp_path):
  path = _write_jsonl(tmp_path / "mbpp.jsonl",
                      [{"text": "t", "code": "", "test_list": [], "test_setup_code": ""}])
  with pytest.raises(ValueError, match="reward_mode must be 'fraction' or 'all'"):
    get_task("code", data_files={"test": path}, reward_mode="most")
  # A misspelt limit was a TypeError from SandboxLimits' constructor.
  with pytest.raises(ValueError, match=re.escape(
      "code: sandbox_limits has no ['wall_second']; its keys are ['wall_seconds', 'cpu_seconds'")):
    get_task("code", data_files={"test": path}, sandbox_limits={"wall_second": 10})


# Reasoning models: the final answer is graded, never a value inside the thinking.
THINKING_GRADED = [
    # (completion, correct for the reference 5)
    ("<think>\nFirst \\boxed{3}... wait, 2+3 is 5.\n</think>\nThe answer is \\boxed{5}.", 1.0),
    ("<think>\nIt is \\boxed{3}? No: 2+3 = 5.\n</think>\n\nThe answer is 5.", 1.0),
    ("<think>\nSo \\boxed{5}... but recheck: 2+3 = 3?\n</think>\nThe answer is 3.", 0.0),
    ("<think>\nI get \\boxed{5} so far, but let me check", 0.0),  # cut while thinking: no answer
    ("The answer is \\boxed{5}.", 1.0),  # no thinking block: the whole text
    ("Drop the <think> tag: \\boxed{5}.", 1.0),  # a tag in the text opens no thinking block
]


def test_math_grades_the_answer_after_the_thinking(tmp_path):
  # Graded by the real math-verify: the text after </think>, and nothing for thinking cut at the
  # length limit (as DeepScaleR / rLLM grade R1-style completions); format likewise.
  task = get_task("math", data_files={"test": _write_jsonl(
      tmp_path / "test.jsonl", [{"problem": "2+3?", "answer": "5"}])}, verify_workers=1)
  problem = task.test_problems()[0]
  graded = task.rewards([problem] * len(THINKING_GRADED), [c for c, _ in THINKING_GRADED])
  assert graded.components["correct"] == [correct for _, correct in THINKING_GRADED]
  assert graded.components["format"] == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
