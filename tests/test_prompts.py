"""Prompt formatting: plain templates, and a tokenizer's chat template (built here, no hub)."""

import re

import pytest

from jaxlayer.tasks import Problem, encode_prompts, format_prompt

# Qwen's ChatML layout, written as the Jinja template a tokenizer_config.json would carry.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_tokenizer():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(["37+45=82", "You are a calculator.", "user assistant system"],
                                trainer)
  return PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=CHATML_TEMPLATE,
                                 bos_token=None, eos_token="<|im_end|>")


PROBLEM = Problem(prompt="37+45=", answer="82", metadata={"level": "easy"})


def test_plain_template_defaults_to_the_raw_question():
  assert format_prompt(PROBLEM) == "37+45="


def test_plain_template_fills_question_and_metadata():
  assert format_prompt(PROBLEM, template="[{level}] Q: {question}\nA:") == "[easy] Q: 37+45=\nA:"
  assert format_prompt(PROBLEM, system_prompt="Add.") == "Add.\n37+45="


def test_braces_in_the_question_are_kept():
  latex = Problem(prompt="Simplify $\\frac{1}{2}+{x}$.", answer="")
  assert (format_prompt(latex, template="Problem: {question}")
          == "Problem: Simplify $\\frac{1}{2}+{x}$.")


def test_unknown_template_field_is_a_clear_error():
  with pytest.raises(ValueError,
                     match="unknown field 'topic'; available fields: \\['question', 'level'\\]"):
    format_prompt(PROBLEM, template="{topic}: {question}")


@pytest.mark.parametrize("template, complaint", [
    ("Solve {question", "is not a format string: expected '}' before end of string"),
    ("Solve {question} }", "is not a format string: Single '}' encountered"),
    ("{0} {question}", "cannot be filled .*: Format string contains positional fields"),
    # The usual slip: the math prompt's \boxed{} written as is.
    ("{question} Put your final answer within \\boxed{}.",
     "cannot be filled .*positional fields " + re.escape("(write literal braces as {{ and }}: "
                                                         "\\boxed{{}})")),
])
def test_a_malformed_template_is_named(template, complaint):
  # str.format's own message ("expected '}' before end of string") named no template.
  with pytest.raises(ValueError, match=f"prompt template {re.escape(repr(template))} {complaint}"):
    format_prompt(PROBLEM, template=template)


@pytest.mark.parametrize("template", ["Solve this.", "", "Answer in {{braces}}."])
def test_a_template_without_a_field_is_refused(template):
  with pytest.raises(ValueError, match="uses no field, so every prompt would be the same text"):
    format_prompt(PROBLEM, template=template)
  assert format_prompt(PROBLEM, template="{level}") == "easy"  # a metadata field alone is fine


def test_chat_template_wraps_the_filled_template(chat_tokenizer):
  prompt = format_prompt(PROBLEM, chat_tokenizer, use_chat_template=True,
                         template="Compute {question}", system_prompt="You are a calculator.")
  assert prompt == ("<|im_start|>system\nYou are a calculator.<|im_end|>\n"
                    "<|im_start|>user\nCompute 37+45=<|im_end|>\n"
                    "<|im_start|>assistant\n")
  # Special tokens survive as single tokens, so the model sees the layout it was trained on.
  ids = chat_tokenizer(prompt, add_special_tokens=False)["input_ids"]
  assert ids.count(chat_tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3
  assert chat_tokenizer.decode(ids) == prompt


def test_chat_template_without_system_prompt(chat_tokenizer):
  prompt = format_prompt(PROBLEM, chat_tokenizer, use_chat_template=True)
  assert prompt == "<|im_start|>user\n37+45=<|im_end|>\n<|im_start|>assistant\n"


# A question that ends a conversation of the data's (veRL's `prompt`): the turns before it.
FEW_SHOT = ({"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"})


def test_a_conversations_earlier_turns_go_before_the_filled_template(chat_tokenizer):
  problem = Problem(prompt="37+45=", answer="82", earlier_turns=FEW_SHOT)
  prompt = format_prompt(problem, chat_tokenizer, use_chat_template=True,
                         template="Compute {question}", system_prompt="You are a calculator.")
  assert prompt == ("<|im_start|>system\nYou are a calculator.<|im_end|>\n"
                    "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
                    "<|im_start|>user\nCompute 37+45=<|im_end|>\n"
                    "<|im_start|>assistant\n")
  own_system = Problem(prompt="37+45=", answer="82",
                       earlier_turns=({"role": "system", "content": "Add."},))
  assert format_prompt(own_system, chat_tokenizer, use_chat_template=True) == (
      "<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n37+45=<|im_end|>\n"
      "<|im_start|>assistant\n")
  with pytest.raises(ValueError, match=re.escape(
      "task.system_prompt='You are a calculator.' would be a second system message: the "
      "problem's conversation (the data's question field) has its own; leave task.system_prompt "
      "unset (None), or drop the system message from the data")):
    format_prompt(own_system, chat_tokenizer, use_chat_template=True,
                  system_prompt="You are a calculator.")


def test_a_conversation_needs_the_chat_template():
  problem = Problem(prompt="37+45=", answer="82", earlier_turns=FEW_SHOT)
  with pytest.raises(ValueError, match=re.escape(
      "the problem is a conversation (user, assistant turns before the question) of the data's "
      "question field, which only a chat template writes: set task.use_chat_template=True")):
    format_prompt(problem)


def test_chat_template_needs_a_tokenizer_that_has_one(chat_tokenizer):
  # The error names the config keys (it named the bare argument, unlike its neighbour's).
  with pytest.raises(ValueError, match=r"^task\.use_chat_template=True needs a tokenizer with a "
                     r"chat template, but no tokenizer was given; set task\.use_chat_template="
                     "False"):
    format_prompt(PROBLEM, None, use_chat_template=True)
  chat_tokenizer_without = type(chat_tokenizer)(tokenizer_object=chat_tokenizer.backend_tokenizer)
  with pytest.raises(ValueError, match="this tokenizer has none; set task.use_chat_template"):
    format_prompt(PROBLEM, chat_tokenizer_without, use_chat_template=True)


@pytest.fixture(scope="module", params=["qwen2.5-instruct", "qwen3", "r1-distill-qwen"])
def chat_model_tokenizer(request, tmp_path_factory):
  """The tokenizer of a tiny checkpoint with a chat family's real template and special tokens."""
  from jaxlayer import models
  from tests import hf_fixtures

  directory = tmp_path_factory.mktemp(request.param)
  hf_fixtures.save_chat_model(directory, request.param)
  return models.load_tokenizer(directory)


def test_chat_prompts_are_the_templates_generation_prompt_once(chat_model_tokenizer):
  # The prompt is apply_chat_template's with the generation prompt (R1-Distill's opens the
  # thinking block), and its ids are transformers' own tokenization of the conversation: one
  # BOS where the template writes it, none where it does not.
  tokenizer = chat_model_tokenizer
  messages = [{"role": "system", "content": "Add."}, {"role": "user", "content": "37+45="}]
  prompt = format_prompt(PROBLEM, tokenizer, use_chat_template=True, system_prompt="Add.")
  assert prompt == tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
  expected_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
  assert encode_prompts(tokenizer, [prompt], use_chat_template=True) == [list(expected_ids)]
  if tokenizer.bos_token is not None:
    assert prompt.startswith(tokenizer.bos_token) and prompt.endswith("<｜Assistant｜><think>\n")
    ids = encode_prompts(tokenizer, [prompt], use_chat_template=True)[0]
    assert ids.count(tokenizer.bos_token_id) == 1
    # A plain prompt gets the tokenizer's BOS, as in pre-training.
    assert encode_prompts(tokenizer, ["37+45="], use_chat_template=False)[0][0] == (
        tokenizer.bos_token_id)


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_chat_template_kwargs_reach_qwen3s_template(tmp_path, enable_thinking):
  # Qwen3's template reads enable_thinking: off, its generation prompt closes an empty thinking
  # block; task.chat_template_kwargs carries it from the config to the template.
  from jaxlayer import models
  from jaxlayer.rl.config import default_config
  from jaxlayer.tasks import prompt_settings
  from tests import hf_fixtures

  tokenizer = models.load_tokenizer(hf_fixtures.save_chat_model(tmp_path, "qwen3"))
  config = default_config()
  config.task.use_chat_template = True
  config.task.chat_template_kwargs = {"enable_thinking": enable_thinking}
  prompt = format_prompt(PROBLEM, tokenizer, **prompt_settings(config.task))
  assert prompt == tokenizer.apply_chat_template(
      [{"role": "user", "content": "37+45="}], tokenize=False, add_generation_prompt=True,
      enable_thinking=enable_thinking)
  assert prompt.endswith("<|im_start|>assistant\n" +
                         ("" if enable_thinking else "<think>\n\n</think>\n\n"))


@pytest.mark.parametrize("use_chat_template, kwargs, complaint", [
    (False, {"enable_thinking": False}, "task.use_chat_template is False: set "
     "task.use_chat_template=True"),
    (True, {"add_generation_prompt": False}, "may not set \\['add_generation_prompt'\\]"),
])
def test_bad_chat_template_kwargs_are_named(chat_tokenizer, use_chat_template, kwargs,
                                            complaint):
  with pytest.raises(ValueError, match=complaint):
    format_prompt(PROBLEM, chat_tokenizer, use_chat_template=use_chat_template,
                  chat_template_kwargs=kwargs)


@pytest.mark.parametrize("family, chat_template_kwargs, unread, reads", [
    ("qwen3", {"enable_thinkng": False}, "['enable_thinkng']", "'enable_thinking'"),
    ("r1-distill-qwen", {"enable_thinking": False}, "['enable_thinking']", "'bos_token'"),
    ("qwen2.5-instruct", {"enable_thinking": False}, "['enable_thinking']", "none. Fix the name"),
])
def test_chat_template_kwargs_the_template_does_not_read_are_named(tmp_path, family,
                                                                   chat_template_kwargs, unread,
                                                                   reads):
  # A misspelt variable (Qwen3 then thinks) or Qwen3's enable_thinking given to a model whose
  # template has none (R1-Distill then thinks) changed nothing, silently.
  from jaxlayer import models
  from tests import hf_fixtures

  tokenizer = models.load_tokenizer(hf_fixtures.save_chat_model(tmp_path, family))
  complaint = (f"chat_template_kwargs {unread}: the tokenizer's chat template reads no such "
               "variable, so the prompt would be the same without them; the variables it reads: ")
  with pytest.raises(ValueError, match=re.escape(complaint) + f".*{re.escape(reads)}"):
    format_prompt(PROBLEM, tokenizer, use_chat_template=True,
                  chat_template_kwargs=chat_template_kwargs)


@pytest.mark.parametrize("family, chat_template_kwargs, opened", [
    ("r1-distill-qwen", {}, "<think>\n"),  # its generation prompt opens the thinking block
    ("qwen3", {}, ""),  # the model opens it itself
    ("qwen3", {"enable_thinking": False}, ""),  # the prompt closes an empty one
    ("qwen2.5-instruct", {}, ""),
])
def test_opened_thinking_of_the_real_templates(tmp_path, family, chat_template_kwargs, opened):
  from jaxlayer import models
  from jaxlayer.tasks import opened_thinking
  from tests import hf_fixtures

  tokenizer = models.load_tokenizer(hf_fixtures.save_chat_model(tmp_path, family))
  prompt = format_prompt(PROBLEM, tokenizer, use_chat_template=True,
                         chat_template_kwargs=chat_template_kwargs)
  assert opened_thinking(prompt) == opened
  assert opened_thinking("37+45=") == ""


def test_a_think_tag_in_the_question_opens_no_thinking_block():
  # The prompt from the question's tag on was put before every completion as thinking that never
  # closed, so no completion to the question could score.
  from jaxlayer.tasks import opened_thinking

  prompt = "<|im_start|>user\nStrip the <think> tags from s.<|im_end|>\n<|im_start|>assistant\n"
  assert opened_thinking(prompt) == ""
  assert opened_thinking("User: strip <think> tags.\nAssistant: <think> ") == "<think> "
