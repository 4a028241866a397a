"""Turn a Problem into the text the model sees: a plain template, or the tokenizer's
chat template."""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from typing import Any

from jaxlayer.tasks import rewards
from jaxlayer.tasks.base import Problem

DEFAULT_TEMPLATE = "{question}"
# apply_chat_template's arguments that format_prompt sets itself.
_OWN_CHAT_TEMPLATE_ARGUMENTS = ("conversation", "tokenize", "add_generation_prompt")


def _fill(template: str, problem: Problem) -> str:
  try:
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
  except ValueError as error:  # unbalanced braces
    raise ValueError(f"prompt template {template!r} is not a format string: {error} (write "
                     "literal braces as {{ and }})") from None
  if not fields:
    raise ValueError(f"prompt template {template!r} uses no field, so every prompt would be the "
                     "same text: put {question} (the problem) in it, e.g. 'Solve: {question}'")
  try:
    return template.format_map({**problem.metadata, "question": problem.prompt})
  except ValueError as error:  # a positional field ({0}, \boxed{}) or a bad format spec
    raise ValueError(f"prompt template {template!r} cannot be filled with the problem's named "
                     f"fields ({{question}}, ...): {error} (write literal braces as {{{{ and }}}}: "
                     "\\boxed{{}})") from None
  except (KeyError, IndexError) as error:
    fields = ["question", *problem.metadata]
    raise ValueError(
        f"prompt template {template!r} uses the unknown field {error}; available fields: "
        f"{fields} (write literal braces as {{{{ and }}}})"
    ) from None


def format_prompt(
    problem: Problem,
    tokenizer: Any = None,
    *,
    use_chat_template: bool = False,
    template: str = DEFAULT_TEMPLATE,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> str:
  """The model input for `problem`.

  template: str.format template; fields {question} (the problem's prompt) and the
    problem's metadata keys. "{question}" (the default) keeps the prompt as is.
  use_chat_template: wrap the filled template as the user turn of the tokenizer's
    chat template (with the generation prompt appended); the tokenizer must have one. The
    problem's earlier_turns (a conversation of the data's) go before that turn, and need it.
  system_prompt: the system turn with a chat template; in plain mode it is put
    before the filled template, followed by a newline. A conversation with a system message of
    its own takes none.
  chat_template_kwargs: variables the chat template reads, such as Qwen3's
    {"enable_thinking": False} (its generation prompt then closes an empty thinking block).
  """
  user_text = _fill(template, problem)
  if chat_template_kwargs and not use_chat_template:
    raise ValueError(f"task.chat_template_kwargs {dict(chat_template_kwargs)} are for a chat "
                     "template, but task.use_chat_template is False: set "
                     "task.use_chat_template=True, or leave chat_template_kwargs empty")
  roles = [turn["role"] for turn in problem.earlier_turns]
  if roles and not use_chat_template:
    raise ValueError(f"the problem is a conversation ({', '.join(roles)} turns before the "
                     "question) of the data's question field, which only a chat template writes: "
                     "set task.use_chat_template=True")
  if not use_chat_template:
    return user_text if system_prompt is None else f"{system_prompt}\n{user_text}"
  if tokenizer is None or not getattr(tokenizer, "chat_template", None):
    raise ValueError(
        "task.use_chat_template=True needs a tokenizer with a chat template, but "
        + ("no tokenizer was given" if tokenizer is None else "this tokenizer has none")
        + "; set task.use_chat_template=False to use the plain template instead"
    )
  if system_prompt is not None and "system" in roles:
    raise ValueError(f"task.system_prompt={system_prompt!r} would be a second system message: the "
                     "problem's conversation (the data's question field) has its own; leave "
                     "task.system_prompt unset (None), or drop the system message from the data")
  messages = [*problem.earlier_turns, {"role": "user", "content": user_text}]
  if system_prompt is not None:
    messages.insert(0, {"role": "system", "content": system_prompt})
  return chat_prompt(tokenizer, messages, chat_template_kwargs)


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]],
                chat_template_kwargs: Mapping[str, Any] | None = None) -> str:
  """The tokenizer's chat template over `messages`, ending with the generation prompt;
  chat_template_kwargs: the variables the template reads (not the arguments it sets itself)."""
  chat_template_kwargs = dict(chat_template_kwargs or {})
  own = sorted(set(chat_template_kwargs) & set(_OWN_CHAT_TEMPLATE_ARGUMENTS))
  if own:
    raise ValueError(f"chat_template_kwargs may not set {own}: jaxlayer sets them itself "
                     "(the prompt ends with the generation prompt); remove them")
  read = _template_variables(tokenizer.get_chat_template()) if chat_template_kwargs else set()
  unread = sorted(set(chat_template_kwargs) - read)
  if unread:
    others = sorted(read - {"messages", "add_generation_prompt"}) or "none"
    raise ValueError(f"chat_template_kwargs {unread}: the tokenizer's chat template reads no such "
                     "variable, so the prompt would be the same without them; the variables it "
                     f"reads: {others}. Fix the name, or remove them (enable_thinking is Qwen3's)")
  return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       **chat_template_kwargs)


@functools.lru_cache(maxsize=8)
def _template_variables(chat_template: str) -> frozenset[str]:
  """The variables a chat template reads (messages, add_generation_prompt, Qwen3's
  enable_thinking, ...), parsed by the Jinja environment transformers renders it in."""
  import jinja2.meta
  from transformers.utils.chat_template_utils import _compile_jinja_template

  environment = _compile_jinja_template(chat_template).environment
  return frozenset(jinja2.meta.find_undeclared_variables(environment.parse(chat_template)))


def opened_thinking(prompt: str) -> str:
  """The thinking block a prompt leaves open for the completion to go on with: the <think> it
  ends with, and the spaces after it (R1-Distill's generation prompt ends with "<think>\\n");
  "" when none is open (Qwen3's with enable_thinking=False closes an empty one; a question that
  writes the tag, "strip the <think> tags", opens none). Graded text is this + completion, so
  that a completion cut while thinking is told from one that answers."""
  start = prompt.rfind(rewards.THINK_START)
  if start < 0 or prompt[start + len(rewards.THINK_START):].strip():
    return ""
  return prompt[start:]


def encode_prompts(tokenizer: Any, texts: list[str], *, use_chat_template: bool) -> list[list[int]]:
  """The token ids of prompts that format_prompt wrote. A chat template writes the special
  tokens the model expects itself (R1-Distill's starts with its BOS), so its prompts are
  tokenized without the tokenizer's own (which would put a second BOS first); plain prompts
  get them, as the model saw text in pre-training."""
  encoded = tokenizer(texts, add_special_tokens=not use_chat_template)["input_ids"]
  return [list(ids) for ids in encoded]


def prompt_settings(task_config: Any) -> dict[str, Any]:
  """format_prompt's keyword arguments from a config's task section (its template,
  use_chat_template, system_prompt and chat_template_kwargs), the one way training and
  evaluation read them."""
  return {"template": task_config.template, "use_chat_template": task_config.use_chat_template,
          "system_prompt": task_config.system_prompt,
          "chat_template_kwargs": dict(task_config.get("chat_template_kwargs", {}))}
