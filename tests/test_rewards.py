"""Rewards: math-verify grading in a worker pool, integer answers, format, DAPO overlong, sums."""

import time

import pytest

from jaxlayer.tasks import rewards

# A tower of powers that math-verify cannot settle: it sits in C big-integer code that no
# signal interrupts (checked by hand: > 60 s in-process), so only a killed worker ends it.
PATHOLOGICAL = "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}"


@pytest.fixture(scope="module")
def verifier():
  with rewards.MathVerifier(workers=2, timeout=3.0) as math_verifier:
    yield math_verifier


def test_equivalent_forms_pass(verifier):
  pairs = [
      ("1/2", "0.5"),
      ("1/2", "\\frac12"),
      ("1/2", "so the answer is $\\boxed{\\frac{1}{2}}$"),
      ("0.5", "$\\frac{1}{2}$"),
      ("\\frac{1}{2}", "1/2"),
      ("72", "$72$"),
      ("72", "The answer is \\boxed{72}."),
      ("1,234", "1234"),
      ("\\sqrt{2}/2", "\\boxed{\\frac{\\sqrt{2}}{2}}"),
  ]
  assert verifier.grade(*zip(*pairs)) == [1.0] * len(pairs)


def test_wrong_answers_fail(verifier):
  pairs = [("1/2", "0.51"), ("1/2", "\\frac13"), ("72", "$73$"), ("72", "\\boxed{-72}"),
           ("\\sqrt{2}/2", "\\boxed{\\sqrt{2}}")]
  assert verifier.grade(*zip(*pairs)) == [0.0] * len(pairs)


def test_references_in_dollars_are_graded(verifier):
  # MATH writes currency answers with an escaped dollar sign: "\\$18.90", "\\$32,\\!348".
  references = ["\\$18.90", "\\$18.90", "\\$32,\\!348", "\\$18.90"]
  completions = ["\\boxed{18.90}", "It costs \\boxed{\\$18.90}.", "\\boxed{32348}", "\\boxed{18}"]
  assert verifier.grade(references, completions) == [1.0, 1.0, 1.0, 0.0]


def test_answers_in_text_after_a_currency_sign_or_a_unicode_minus_are_graded(verifier):
  # Without a box, math-verify found no answer in "\\$18" or "\u22123" (a unicode minus).
  completions = ["She makes \\$18 every day.", "It costs \\$9 * 2 = \\$18.", "x = \u22123",
                 "The answer is \u22123.", "She makes \\$19 every day.", "The answer is 3."]
  assert verifier.grade(["18", "18", "-3", "-3", "18", "-3"], completions) == [
      1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_the_last_boxed_answer_is_graded(verifier):
  scores = verifier.grade(["72", "72"],
                          ["\\boxed{71}, no: \\boxed{72}", "\\boxed{72}, no: \\boxed{71}"])
  assert scores == [1.0, 0.0]


def test_malformed_output_scores_zero_without_crashing(verifier):
  malformed = ["", "\\boxed{", "$$$\\frac{", "\x00\xff\ud800", "}{" * 500, "\\boxed{\\frac{1}{}}",
               "\\left( \\right]]]", "72" * 3000]
  assert verifier.grade(["72"] * len(malformed), malformed) == [0.0] * len(malformed)


def test_pathological_expression_times_out_and_scores_zero():
  with rewards.MathVerifier(workers=1, timeout=1.0) as verifier:
    assert verifier.grade(["72", "72"], [PATHOLOGICAL, "\\boxed{72}"]) == [0.0, 1.0]
    # The killed worker was replaced: the pool still grades.
    assert verifier.grade(["1/2"], ["0.5"]) == [1.0]


def test_shared_verifier_is_one_per_setting():
  first = rewards.shared_math_verifier(workers=1, timeout=2.0)
  assert rewards.shared_math_verifier(workers=1, timeout=2.0) is first
  assert first.grade(["3"], ["\\boxed{3}"]) == [1.0]


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{72}", "72"),
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}} c", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\} \\cup {3}}", "\\{1, 2\\} \\cup {3}"),
    ("\\fbox{5}", "5"),
    ("\\boxed{7} then \\boxed{unclosed", "7"),
    ("no box", None),
    ("\\boxed", None),
    # The box's brace follows the command: not one further on, as in the \\frac after 5.
    ("The answer is \\boxed 5 since $\\frac{10}{2} = 5$.", "5"),
    ("\\boxed {72}", "72"),
    # Escaped braces are text: a piecewise function's \\left\\{ opens no group.
    ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}}",
     "\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}"),
    # An empty box (the prompt's instruction echoed) is no answer.
    ("\\boxed{7}, as asked: put it in \\boxed{}", "7"),
    ("I put my answer in \\boxed{ }", None),
    ("\\boxed{4} \\fboxsep{3pt}", "4"),
])
def test_last_boxed_content(text, expected):
  assert rewards.last_boxed_content(text) == expected


def test_last_boxed_content_is_linear_in_the_text_length():
  # A completion that repeats "\\boxed{" to the length limit (each box unclosed) is graded in
  # the training process: scanning from each box to the end took ~20 s for this one.
  start = time.perf_counter()
  assert rewards.last_boxed_content("\\boxed{x" * 10_000) is None
  assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("completion, expected", [
    ("<think>\nx</think>\n\n5", "\n\n5"),
    # Qwen3's model card parses a reply at the last </think> token (rindex): a closing tag
    # written inside the thinking is thinking too.
    ("<think>\nIs </think> the end? No.\n</think>\n5", "\n5"),
    ("<think>\nstill thinking", ""),  # cut at the length limit: no answer yet
    ("  <think>\nstill thinking", ""),
    ("5, as <think> is text here", "5, as <think> is text here"),
    ("5", "5"),
])
def test_final_answer_is_the_text_after_the_last_thinking_tag(completion, expected):
  assert rewards.final_answer(completion) == expected


def test_integer_correctness_reads_the_first_line():
  completions = ["82", "82\n37+45=82", " 82 ", "+82", "83", "82.0", "8 2", "", "eighty-two",
                 "82abc"]
  assert rewards.integer_correctness(["82"] * len(completions), completions) == [
      1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
  assert rewards.integer_correctness(["-8"], ["-8"]) == [1.0]


def test_overlong_penalty_matches_dapo():
  # DAPO: 0 while |y| <= L_max - L_cache; (L_max - L_cache - |y|) / L_cache up to L_max; -1 beyond.
  lengths = [0, 80, 85, 90, 99, 100, 101, 500]
  assert rewards.overlong_penalty(lengths, max_length=100, cache_length=20) == pytest.approx(
      [0.0, 0.0, -0.25, -0.5, -0.95, -1.0, -1.0, -1.0])
  with pytest.raises(ValueError, match="cache_length"):
    rewards.overlong_penalty([1], max_length=10, cache_length=20)


def test_weighted_sum():
  components = {"correct": [1.0, 0.0, 1.0], "format": [1.0, 1.0, 0.0],
                "logged_only": [5.0, 5.0, 5.0]}
  assert (rewards.weighted_sum(components, {"correct": 1.0, "format": 0.1})
          == pytest.approx([1.1, 0.1, 1.0]))
  with pytest.raises(ValueError, match="unknown components \\['length'\\]"):
    rewards.weighted_sum(components, {"length": 1.0})
