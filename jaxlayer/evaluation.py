"""Test-split evaluation: pass@1 (greedy) and mean@k (k sampled completions) per task.

    from jaxlayer import assets, evaluation, models, tasks
    model, _ = models.from_pretrained(assets.TINY_ARITH)
    tokenizer = models.load_tokenizer(assets.TINY_ARITH)
    result = evaluation.evaluate(model, tokenizer, tasks.get_task("arithmetic"),
                                 num_problems=500, max_new_tokens=8, num_samples=4)
    result.scores  # {"pass@1": 0.41, "mean@4": 0.37}

The score of a completion is its task's "correct" reward component (1 for a right answer, 0
for a wrong one, partial credit where a task gives it), not the weighted training reward:
format bonuses and length penalties shape training but are not the skill being measured.
pass@1 is the score of the greedy completion; mean@k the mean score of k completions sampled
at `temperature` / `top_p`. The problems are the first `num_problems` of the task's test
split, in order, so every model evaluated with the same settings is scored on the same
problems (a paired comparison).

From a config (`jaxlayer eval`, the sweep): `evaluate_from_config` takes the prompt settings
from the config's task section, the training ones, so train and eval prompts are identical,
and the decoding settings from its eval section (`default_eval_config`: every key and default).
Several tasks (eval.tasks) are each scored by their own metric ("amc:mean@32") or eval.metric,
and together by the mean of those scores (`overall_score`: the paper's math score).

A multi-turn environment (config.env.name, `evaluate_env`) is scored by episodes: a "problem"
is one of the fixed seeds 0..env.num_eval_episodes-1, pass@1 the success rate of greedy
episodes, mean@k the mean success of k sampled episodes per seed. They play env.options with
env.eval_options set over them (`env_config`), e.g. a held-out split of games.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxlayer import distributed, locks, models, paths, sampling, tasks
from jaxlayer.envs import summarize
from jaxlayer.progress import progress_bar
from jaxlayer.rl import checkpoint, multiturn, train
from jaxlayer.rl.config import check_known_keys, require_config
from jaxlayer.text import unknown_name

EVAL_FILE = "eval.json"
GENERATIONS_FILE = "generations.jsonl"
METRICS = ("pass@1", "mean@k")


def default_eval_config() -> ml_collections.ConfigDict:
  """The eval section of a config, every key with its default (configs/sweep_tiny.py sets some)."""
  config = ml_collections.ConfigDict()
  # The first N of each task's test split (0: all of them); an environment plays
  # env.num_eval_episodes episodes instead.
  config.num_problems = 500
  config.max_new_tokens = ml_collections.config_dict.placeholder(int)  # None: rollout's
  # Completions per generate call (fixed, so compiled code is reused): pass@1 takes this many
  # prompts a call; mean@k this many // s prompt rows of s samples, s the largest divisor of k
  # that leaves a row for each batch shard of the mesh (evaluation.call_shape). The samples are
  # the same whatever the value and the mesh.
  config.batch_size = 64
  config.num_samples = 0  # k of mean@k: sampled completions per problem (0: pass@1 only)
  config.temperature = 1.0  # sampling temperature of mean@k (pass@1 is always greedy)
  config.top_p = 1.0  # nucleus sampling of mean@k (1: off)
  config.metric = "pass@1"  # each task's score: "pass@1" or "mean@k" (the k: num_samples)
  # The tasks scored, each NAME or NAME:METRIC, e.g. "math,gsm8k,olympiadbench,amc:mean@32" (the
  # paper's math score); METRIC (pass@1 or mean@K, K samples of that task) overrides eval.metric.
  # The score of several tasks (jaxlayer eval's, and each sweep run's) is the mean of theirs.
  # "": task.name alone.
  config.tasks = ""
  # Options of the eval.tasks other than task.name (which takes task.options), by task:
  # {"gsm8k": {"data_files": {"test": "gsm8k_test.jsonl"}}}; a task not named has its defaults.
  config.task_options = ml_collections.ConfigDict()
  # Sample from a copy of the parameters gathered onto every device (sampling.replicated): each
  # device decodes its rows in its own loop. None: rollout.replicate_params.
  config.replicate_params = ml_collections.config_dict.placeholder(bool)
  return config


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """One task's evaluation.

  scores: metric -> mean over problems ("pass@1", and "mean@K" when K samples were drawn).
  per_problem: metric -> one score in [0, 1] per problem, in test-split order.
  generations: one record per completion (see `evaluate`).
  problems: `problems_fingerprint` of the problems scored (None for an environment's episodes,
    which its `prompt` and `decoding` name: options and seeds).
  """

  task: str
  num_problems: int
  scores: dict[str, float]
  per_problem: dict[str, list[float]]
  decoding: dict[str, Any]
  prompt: dict[str, Any]
  generations: list[dict[str, Any]]
  # environments: metric -> summarize() and the share of turns whose context was cut
  episodes: dict[str, dict[str, float]] | None = None
  problems: str | None = None

  def standard_errors(self) -> dict[str, float | None]:
    """Each score's standard error over the problems (the evaluation noise); None of one problem."""
    from jaxlayer.sweep.contribution import standard_error

    return {metric: standard_error(self.per_problem[metric]) for metric in self.scores}

  def summary(self) -> dict[str, Any]:
    """Everything but the generations (a task's entry in eval.json)."""
    summary = {"task": self.task, "num_problems": self.num_problems, "scores": self.scores,
               "standard_errors": self.standard_errors(), "decoding": self.decoding,
               "prompt": self.prompt, "per_problem": self.per_problem}
    if self.episodes is not None:
      summary["episodes"] = self.episodes
    if self.problems is not None:
      summary["problems"] = self.problems
    return summary


def problems_fingerprint(problems: Sequence[tasks.Problem]) -> str:
  """A digest of the problems' questions and answers (and the chat turns before a question), in
  order: evaluations of the same task name on other problems (another data file, task seed or
  max_value) differ in it."""
  # (The turns only where there are some: the digests recorded of problems without them hold.)
  described = [[problem.prompt, problem.answer]
               + ([problem.earlier_turns] if problem.earlier_turns else [])
               for problem in problems]
  text = json.dumps(described)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def eval_problems(task: tasks.Task, num_problems: int | None) -> list[tasks.Problem]:
  """The first `num_problems` test problems of `task` (None or 0: all), always in split order."""
  problems = tasks.checked_problems(task, "test")
  if not problems:
    raise ValueError(f"task {task.name!r} has no test problems to evaluate on.")
  if num_problems is None or num_problems == 0:
    return problems
  if (isinstance(num_problems, bool) or not isinstance(num_problems, numbers.Integral)
      or num_problems < 0):
    raise ValueError(f"eval.num_problems must be an integer >= 0 (0: the whole test split), got "
                     f"{num_problems!r}.")
  if num_problems > len(problems):
    raise ValueError(
        f"eval.num_problems={num_problems} but task {task.name!r} has only {len(problems)} test "
        "problems: lower eval.num_problems (0 takes them all) or enlarge the test split (e.g. "
        "task.options.num_test for a generated task).")
  return problems[:num_problems]


def prompts_per_call(batch_size: int, num_samples: int, num_problems: int) -> int:
  """Episode seeds per rollout of `evaluate_env`, each played num_samples times: as many as
  keep its episodes within batch_size (at least one), at most num_problems."""
  return max(1, min(batch_size // num_samples, num_problems))


def call_shape(batch_size: int, num_samples: int, num_problems: int,
               shards: int) -> tuple[int, int]:
  """(prompt rows, samples per row) of each `sampling.generate` call of a pass of num_samples
  completions for each of num_problems problems, on a mesh of `shards` batch shards, so that
  a call holds about batch_size completions (or all of the pass's, when fewer).

  A problem's k = num_samples samples are drawn in k / s prompt rows of s samples each (its
  prompt repeated, and prefilled again: cheap next to decoding), s the largest divisor of k
  whose rows still fill the shards (s * shards <= those completions), as the sampler pads a
  call's prompt rows up to a multiple of them. mean@32 at eval.batch_size=64: 2 rows x 32
  samples on one shard, 8 rows x 8 on 8 shards (whole problems, 8 rows x 32, would make a KV
  cache 4 times the greedy call's). pass@1: batch_size rows (at most num_problems) x 1.
  """
  completions = min(batch_size, num_problems * num_samples)
  samples_per_row = max(s for s in range(1, num_samples + 1)
                        if num_samples % s == 0 and (s == 1 or s * shards <= completions))
  return completions // samples_per_row, samples_per_row


def check_decoding(*, max_new_tokens, batch_size, num_samples, temperature) -> None:
  """Raises a clear error for decoding settings `evaluate` cannot use."""
  for name, value, lowest in [("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1),
                              ("num_samples", num_samples, 0)]:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
      raise ValueError(f"eval.{name} must be an integer >= {lowest}, got {value!r}.")
  if num_samples and not temperature > 0:
    raise ValueError(f"eval.temperature={temperature}: mean@k samples its completions, so it needs "
                     "a temperature > 0 (pass@1 is the greedy score); set eval.temperature=1.0 "
                     "or eval.num_samples=0.")


def _test_prompts(task: tasks.Task, tokenizer, num_problems: int | None,
                  prompt_settings: dict
                  ) -> tuple[list[tasks.Problem], list[str], list[list[int]]]:
  """(the first num_problems test problems, their prompts, the prompts' token ids);
  prompt_settings: the template arguments of tasks.format_prompt."""
  problems = eval_problems(task, num_problems)
  texts = [tasks.format_prompt(p, tokenizer, **prompt_settings) for p in problems]
  prompt_ids = tasks.encode_prompts(tokenizer, texts,
                                    use_chat_template=prompt_settings["use_chat_template"])
  empty = [i for i, ids in enumerate(prompt_ids) if not ids]
  if empty:
    raise ValueError(f"test problem {empty[0]} of task {task.name!r} has an empty prompt.")
  return problems, texts, prompt_ids


def _check_prompts_fit(task_name: str, prompt_ids: list[list[int]], max_new_tokens: int,
                       model_config: models.ModelConfig) -> None:
  """Raises ValueError, before anything is generated, when the longest test prompt and
  max_new_tokens exceed the model's positions."""
  max_positions = model_config.max_positions
  longest = max(len(ids) for ids in prompt_ids)
  if longest + max_new_tokens > max_positions:
    fix = (f"set eval.max_new_tokens to at most {max_positions - longest}"
           if longest < max_positions else
           f"leave {task_name!r} out of eval.tasks or use a model with more positions")
    raise ValueError(
        f"the longest test prompt of task {task_name!r} has {longest} tokens; with "
        f"eval.max_new_tokens={max_new_tokens} that is {longest + max_new_tokens} positions, "
        f"beyond the model's {model_config.max_positions_text}: {fix}.")


def _check_contexts_fit(max_context_tokens: int, max_new_tokens: int,
                        model_config: models.ModelConfig) -> None:
  """Raises ValueError, before any episode is played, when an environment's longest context
  (rollout.max_prompt_tokens) and max_new_tokens exceed the model's positions."""
  positions = max_context_tokens + max_new_tokens
  if positions > model_config.max_positions:
    raise ValueError(
        f"rollout.max_prompt_tokens={max_context_tokens} context tokens + "
        f"eval.max_new_tokens={max_new_tokens} = {positions} positions, beyond the model's "
        f"{model_config.max_positions_text}: lower eval.max_new_tokens or "
        "rollout.max_prompt_tokens (the oldest context tokens are cut).")


def check_eval_fits(config: ml_collections.ConfigDict, tokenizer,
                    model_config: models.ModelConfig,
                    own_task: tasks.Task | None = None) -> None:
  """The check `evaluate` makes before generating, for every eval task of `config`, without a
  model (an environment's: its first reset with env.eval_options, `EnvSettings.check_env`, and
  rollout.max_prompt_tokens + eval.max_new_tokens within the model's positions): training runs
  it before its first step when it evaluates (logging.eval_every). own_task: as in
  `config_task`."""
  env = env_config(config)
  settings = eval_settings(config)
  if env is not None:  # episodes: contexts are cut to rollout.max_prompt_tokens
    env.check_env()  # bad env.eval_options fail now, not after logging.eval_every steps
    _check_contexts_fit(env.context.max_tokens, settings["max_new_tokens"], model_config)
    return
  prompt_settings = tasks.prompt_settings(config.task)
  for name in task_names(config):
    task = config_task(config, name, own_task)
    problems, _, prompt_ids = _test_prompts(task, tokenizer, settings["num_problems"],
                                            prompt_settings)
    task.check_reward_weights(problems[0])
    _check_prompts_fit(name, prompt_ids, settings["max_new_tokens"], model_config)


def _check_model_tokenizer_task(model, tokenizer, task) -> None:
  """Raises a TypeError naming the fix for arguments of `evaluate` of the wrong kind."""
  models.require_model(model)
  if not callable(tokenizer):  # (a transformers tokenizer: called on text)
    raise TypeError(f"tokenizer must be the model's tokenizer, got {type(tokenizer).__name__}: "
                    "load it with models.load_tokenizer(MODEL_DIR).")
  tasks.require_task(task)


def evaluate(model: models.Qwen, tokenizer, task: tasks.Task, *, num_problems: int | None,
             max_new_tokens: int, batch_size: int = 64, num_samples: int = 0,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             template: str = "{question}", use_chat_template: bool = False,
             system_prompt: str | None = None,
             chat_template_kwargs: Mapping[str, Any] | None = None,
             eos_token_ids: Sequence[int] | None = None, seed: int = 0,
             progress_position: int = 0, progress: bool = True) -> EvalResult:
  """pass@1 (greedy) and, with num_samples=k >= 1, mean@k of `model` on `task`'s test split.

  num_problems: the first N test problems (None or 0: all). batch_size: completions per
    `sampling.generate` call (`call_shape`: batch_size prompts for pass@1; for mean@k, prompt
    rows of s of a problem's k samples each, as many as fill the mesh's batch shards); the
    last call is filled up, so every call of a pass has the same shape.
    template / use_chat_template / system_prompt / chat_template_kwargs: as in
    `tasks.format_prompt`.
  eos_token_ids: stop tokens (None: the tokenizer's EOS and the checkpoint's
    generation_config.json eos_token_id, like training).
  seed: sampling seed of mean@k (greedy decoding uses none). Completion c of the pass draws
    from (seed, c) whatever the calls' shape (`sampling.generate`'s row_ids), so the same
    seed gives the same samples at any batch_size and on any mesh (up to float rounding of the
    logits).
  Generations: {"problem_index", "decoding": "greedy" | "sampled", "sample", "prompt",
    "completion", "answer", "score" (the "correct" component), "reward" (the task's weighted
    reward, as in training), "reward_components", "num_tokens", "finish_reason"}.
  """
  _check_model_tokenizer_task(model, tokenizer, task)
  check_decoding(max_new_tokens=max_new_tokens, batch_size=batch_size, num_samples=num_samples,
                 temperature=temperature)
  prompt_settings = {"template": template, "use_chat_template": use_chat_template,
                     "system_prompt": system_prompt}
  if chat_template_kwargs:  # (recorded where set: evaluations made before it compare equal)
    prompt_settings["chat_template_kwargs"] = dict(chat_template_kwargs)
  problems, texts, prompt_ids = _test_prompts(task, tokenizer, num_problems, prompt_settings)
  task.check_reward_weights(problems[0])
  _check_prompts_fit(task.name, prompt_ids, max_new_tokens, model.config)
  eos_token_ids, pad_token_id = _stop_and_pad_ids(model, tokenizer, eos_token_ids)
  shards = sampling.prompt_shards(model)  # the sampler pads each call's prompts to them

  passes = [("greedy", "pass@1", 1, 0.0)]
  if num_samples:
    passes.append(("sampled", f"mean@{num_samples}", num_samples, temperature))
  scores, per_problem, generations = {}, {}, []
  with progress_bar(total=len(problems) * len(passes), desc=f"eval {task.name}",
                    unit="problem", position=progress_position, leave=progress_position == 0,
                    disable=not (progress and distributed.is_primary()),
                    dynamic_ncols=True) as bar:
    for decoding, metric, k, temp in passes:
      rows_per_call, samples_per_row = call_shape(batch_size, k, len(problems), shards)
      # Completion c of the pass is sample c % k of problem c // k; its prompt row c // s.
      row_problems = np.repeat(np.arange(len(problems)), k // samples_per_row)  # [rows]
      sample_scores = np.zeros(len(problems) * k)  # [problems * k]
      for start in range(0, len(row_problems), rows_per_call):
        ids = [prompt_ids[i] for i in row_problems[start:start + rows_per_call]]
        filled = ids + [ids[0]] * (rows_per_call - len(ids))  # same shape on every call
        first, count = start * samples_per_row, len(ids) * samples_per_row
        # Call row r is completion first + r of the pass: it draws from (seed, first + r).
        out = sampling.generate(model, filled, max_new_tokens=max_new_tokens,
                                num_samples=samples_per_row, temperature=temp, top_k=top_k,
                                top_p=top_p if temp else 1.0, eos_token_ids=eos_token_ids,
                                seed=seed, pad_token_id=pad_token_id,
                                row_ids=range(first, first + len(filled) * samples_per_row))
        lengths = out.lengths[:count].tolist()
        completions = tokenizer.batch_decode(
            [row[:n] for row, n in zip(out.tokens[:count], lengths)], skip_special_tokens=True)
        graded_problems = [problems[(first + r) // k] for r in range(count)]
        graded = task.rewards_on_all_hosts(  # on several hosts, each grades a share
            graded_problems, lambda rows: [tasks.opened_thinking(texts[(first + r) // k])
                                           + completions[r] for r in rows], lengths)
        if tasks.SCORE_COMPONENT not in graded.components:
          raise ValueError(f"task {task.name!r} has no {tasks.SCORE_COMPONENT!r} reward component "
                           f"(it has {sorted(graded.components)}): evaluation scores a "
                           f"completion by its {tasks.SCORE_COMPONENT!r} component.")
        correct, total = graded.components[tasks.SCORE_COMPONENT], graded.total
        sample_scores[first:first + count] = correct
        for r in range(count):
          generations.append({
              "problem_index": (first + r) // k, "decoding": decoding, "sample": (first + r) % k,
              "prompt": texts[(first + r) // k], "completion": completions[r],
              "answer": graded_problems[r].answer, "score": float(correct[r]),
              "reward": float(total[r]),
              "reward_components": {name: float(v[r]) for name, v in graded.components.items()},
              "num_tokens": lengths[r], "finish_reason": out.finish_reasons[r]})
        bar.update((first + count) // k - first // k)  # problems with every sample drawn
      per_problem[metric] = sample_scores.reshape(len(problems), k).mean(axis=1).tolist()
      scores[metric] = float(np.mean(per_problem[metric]))
      bar.set_postfix({name: f"{value:.3f}" for name, value in scores.items()})

  decoding = {"max_new_tokens": max_new_tokens, "batch_size": min(batch_size, len(problems)),
              "eos_token_ids": eos_token_ids, "pass@1": {"temperature": 0.0, "num_samples": 1}}
  if num_samples:
    decoding[f"mean@{num_samples}"] = {"temperature": temperature, "top_p": top_p, "top_k": top_k,
                                       "num_samples": num_samples, "seed": seed}
  return EvalResult(task=task.name, num_problems=len(problems), scores=scores,
                    per_problem=per_problem, decoding=decoding, prompt=prompt_settings,
                    generations=generations, problems=problems_fingerprint(problems))


def _stop_and_pad_ids(model, tokenizer, eos_token_ids) -> tuple[list[int], int]:
  """Stop tokens (None: as in training) and the padding id."""
  if eos_token_ids is None:
    eos_token_ids = models.stop_token_ids(model.config.source_dir, tokenizer)
  if isinstance(eos_token_ids, numbers.Integral):
    raise TypeError(f"eos_token_ids must be a list of token ids, got the int {eos_token_ids}; "
                    f"pass [{eos_token_ids}] (or None: the stop tokens training uses).")
  eos_token_ids = [int(t) for t in eos_token_ids]
  pad = tokenizer.pad_token_id
  return eos_token_ids, pad if pad is not None else (eos_token_ids[0] if eos_token_ids else 0)


def evaluate_env(model: models.Qwen, tokenizer, env: multiturn.EnvSettings, *,
                 max_new_tokens: int, batch_size: int = 64, num_samples: int = 0,
                 temperature: float = 1.0, top_p: float = 1.0,
                 eos_token_ids: Sequence[int] | None = None, seed: int = 0,
                 progress_position: int = 0, progress: bool = True,
                 cut_contexts_warning: multiturn.CutContextsWarning | None = None) -> EvalResult:
  """Greedy success rate (pass@1) and, with num_samples=k >= 1, mean@k of `model` playing
  env.num_eval_episodes episodes of `env`, one per fixed seed 0..N-1.

  batch_size: episodes played together (each turn of theirs is one `sampling.generate`
    call of that many rows). Episodes that end in an environment error count as failures
    and show in `episodes` (env_error_rate), in the generations' error field and in one
    warning that counts them by cause.
  seed: sampling seed of mean@k. Episode e of the pass (sample e % k of seed e // k) draws as
    episode e (`multiturn.play_episodes`' first_episode), so the same seed plays the same
    episodes at any batch_size (up to float rounding of the logits).
  cut_contexts_warning: warns of the contexts cut to rollout.max_prompt_tokens, unless it warned
    before (a training run's evaluations share one); None: a new one, warning once for all the
    episodes of this evaluation.
  Generations: one per episode: {"problem_index", "decoding", "sample", "seed", "success",
    "score", "return", "turns", "finish_reason", "error", "transcript", "final_observation"}.
  """
  check_decoding(max_new_tokens=max_new_tokens, batch_size=batch_size, num_samples=num_samples,
                 temperature=temperature)
  env.check_env()  # bad options fail here, not as an env error in every episode
  seeds = multiturn.eval_seeds(env.num_eval_episodes)
  eos_token_ids, pad_token_id = _stop_and_pad_ids(model, tokenizer, eos_token_ids)
  passes = [("greedy", "pass@1", 1, 0.0)]
  if num_samples:
    passes.append(("sampled", f"mean@{num_samples}", num_samples, temperature))
  scores, per_problem, episodes, generations = {}, {}, {}, []
  cut = []  # TurnSample.context_truncated of every turn played, warned of at the end
  every_episode = []  # of every pass, their environment errors warned of at the end
  with progress_bar(total=len(seeds) * len(passes), desc=f"eval {env.name}",
                    unit="episode", position=progress_position, leave=progress_position == 0,
                    disable=not (progress and distributed.is_primary()),
                    dynamic_ncols=True) as bar:
    for decoding, metric, k, temp in passes:
      chunk = prompts_per_call(batch_size, k, len(seeds))  # seeds per rollout
      played, cut_in_pass = [], []
      for start in range(0, len(seeds), chunk):
        rollouts = multiturn.play_episodes(
            model, tokenizer, env.make_env, seeds[start:start + chunk], group_size=k,
            max_turns=env.max_turns, max_new_tokens=max_new_tokens, temperature=temp,
            top_p=top_p, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id,
            seed=seed, context=env.context, step_timeout_s=env.step_timeout_s,
            batch_rows=chunk * k, first_episode=start * k)
        for r, rollout in enumerate(rollouts):
          record = multiturn.episode_record(rollout.episode)
          generations.append({"problem_index": start + r // k, "decoding": decoding,
                              "sample": r % k, "score": float(record["success"]), **record})
        played += [rollout.episode for rollout in rollouts]
        cut_in_pass += [s.context_truncated for rollout in rollouts for s in rollout.samples]
        bar.update(len(rollouts) // k)
      per_problem[metric] = [float(np.mean([e.success for e in played[i:i + k]]))
                             for i in range(0, len(played), k)]
      scores[metric] = float(np.mean(per_problem[metric]))
      # As the training metric: the share of turns whose context lost its oldest tokens.
      episodes[metric] = {**summarize(played),
                          "context_truncated": float(np.mean(cut_in_pass)) if cut_in_pass else 0.0}
      every_episode += played
      cut += cut_in_pass
      bar.set_postfix({name: f"{value:.3f}" for name, value in scores.items()})
  multiturn.warn_of_env_errors(every_episode, env.name, "in this evaluation")
  (cut_contexts_warning or multiturn.CutContextsWarning())(cut, env.context.max_tokens)

  decoding = {"max_new_tokens": max_new_tokens, "batch_size": batch_size,
              "eos_token_ids": eos_token_ids, "seeds": f"0..{len(seeds) - 1}",
              "pass@1": {"temperature": 0.0, "num_samples": 1}}
  if num_samples:
    decoding[f"mean@{num_samples}"] = {"temperature": temperature, "top_p": top_p,
                                       "num_samples": num_samples, "seed": seed}
  context = dataclasses.asdict(env.context)
  prompt = {"env": env.name, "options": env.options, "max_turns": env.max_turns, **context}
  return EvalResult(task=env.name, num_problems=len(seeds), scores=scores,
                    per_problem=per_problem, decoding=decoding, prompt=prompt,
                    generations=generations, episodes=episodes)


# --- from a config -----------------------------------------------------------------------------


def eval_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config's eval section over `default_eval_config()` (a config without one gets the
  defaults); unknown keys and impossible combinations are an error, and so is a config that is
  no ConfigDict of a training config's sections (every function here that takes a config
  reads it through this one first)."""
  require_config(config, ("model", "task", "rollout"),
                 "jaxlayer.rl.config.default_config() or a configs/*.py get_config()")
  settings = default_eval_config().to_dict()
  given = config.get("eval") or {}
  check_known_keys(given, settings, "eval")
  settings.update(given.to_dict() if hasattr(given, "to_dict") else given)
  if settings["max_new_tokens"] is None:
    settings["max_new_tokens"] = config.rollout.max_new_tokens
  if settings["replicate_params"] is None:
    settings["replicate_params"] = config.rollout.get("replicate_params", False)
  if settings["metric"] not in METRICS:
    raise ValueError(f"eval.metric={settings['metric']!r}: choose one of {list(METRICS)}.")
  if settings["metric"] == "mean@k" and not settings["num_samples"]:
    raise ValueError("eval.metric='mean@k' needs eval.num_samples >= 1 (the k).")
  check_decoding(**{k: settings[k] for k in ("max_new_tokens", "batch_size", "num_samples",
                                             "temperature")})
  sampled = sampled_task_entries(settings)
  if sampled and not settings["temperature"] > 0:
    raise ValueError(f"eval.tasks scores {sampled} by sampled completions, which needs "
                     f"eval.temperature > 0 (it is {settings['temperature']}).")
  return settings


def check_eval_config(config: ml_collections.ConfigDict) -> None:
  """The eval settings of `config` checked without a model: the settings, the tasks, and that
  each task has eval.num_problems test problems."""
  settings = eval_settings(config)
  names = task_names(config)
  if env_config(config) is None:
    for name in names:
      eval_problems(config_task(config, name), settings["num_problems"])


def env_config(config: ml_collections.ConfigDict) -> multiturn.EnvSettings | None:
  """The config's environment (env.name set) as evaluation plays it (env.options with
  env.eval_options merged over them), checked; None for a single-turn task."""
  env = config.get("env")
  if env is None or not env.get("name"):
    return None
  return multiturn.env_settings(config, evaluation=True)


def _task_entries(settings: dict[str, Any]) -> dict[str, str | None]:
  """eval.tasks as {task name: the METRIC of its NAME:METRIC entry, or None}, in order."""
  entries = {}
  for entry in (e.strip() for e in (settings.get("tasks") or "").split(",")):
    if not entry:
      continue
    name, _, metric = (part.strip() for part in entry.partition(":"))
    if name in entries:
      raise ValueError(f"eval.tasks names {name!r} more than once: name each task once (eval.json "
                       "holds one result per task).")
    if ":" in entry and not (metric == "pass@1" or re.fullmatch(r"mean@[1-9][0-9]*", metric)):
      raise ValueError(f"eval.tasks entry {entry!r}: the metric after ':' is pass@1 or mean@K "
                       f"(K >= 1 sampled completions per problem), e.g. {name or 'amc'}:mean@32.")
    entries[name] = metric or None
  return entries


def sampled_task_entries(eval_section: dict[str, Any]) -> list[str]:
  """The NAME:mean@K entries of an eval section's tasks: the tasks it scores by samples."""
  return [f"{name}:{metric}" for name, metric in _task_entries(eval_section).items()
          if metric and metric.startswith("mean@")]


def task_names(config: ml_collections.ConfigDict) -> list[str]:
  """The tasks of eval.tasks (empty: [task.name]), each checked against the registry; for an
  environment config, [env.name]."""
  settings = eval_settings(config)
  names = list(_task_entries(settings))
  env = env_config(config)
  if env is not None:
    for key, value in (("tasks", names), ("task_options", sorted(settings["task_options"]))):
      if value:
        raise ValueError(f"eval.{key} names {value}, but this config trains in the environment "
                         f"{env.name!r}, which is evaluated by its episodes: leave eval.{key} "
                         "empty.")
    return [env.name]
  names = names or [config.task.name]
  unknown = next((name for name in names if name not in tasks.TASKS), None)
  if unknown is not None:
    raise ValueError("eval.tasks / task.name: "
                     + unknown_name("task", unknown, tasks.TASKS, "tasks.TASKS"))
  stray = sorted(set(settings["task_options"]) - (set(names) - {config.task.name}))
  if stray:
    raise ValueError(f"eval.task_options names {stray}, which are not among the other tasks "
                     f"evaluated {sorted(set(names) - {config.task.name})}: set task.options for "
                     "the config's own task, and name each other task in eval.tasks.")
  return names


def task_metric(config: ml_collections.ConfigDict, name: str) -> str:
  """The metric that scores task `name` of the config, a key of its EvalResult.scores: its
  eval.tasks entry's ("amc:mean@32": "mean@32"), else eval.metric's ("pass@1", or mean@k as
  "mean@K" with K = eval.num_samples)."""
  settings = eval_settings(config)
  metric = _task_entries(settings).get(name)
  if metric is not None:
    return metric
  return "pass@1" if settings["metric"] == "pass@1" else f"mean@{settings['num_samples']}"


def task_num_samples(config: ml_collections.ConfigDict, name: str) -> int:
  """Sampled completions per problem of task `name`: the K of its "NAME:mean@K" entry in
  eval.tasks, else eval.num_samples."""
  settings = eval_settings(config)
  metric = _task_entries(settings).get(name)
  if metric is not None and metric.startswith("mean@"):
    return int(metric.removeprefix("mean@"))
  return settings["num_samples"]


def overall_score(config: ml_collections.ConfigDict,
                  results: Sequence[EvalResult]) -> dict[str, Any]:
  """The score of the config's tasks evaluated in `results`, the mean of theirs (each by its
  `task_metric`), with the standard error of that mean over the tasks' independent problems;
  eval.json's "score": {"value", "standard_error", "metrics": task -> its metric}."""
  from jaxlayer.sweep.contribution import standard_error_of_mean

  metrics = {r.task: task_metric(config, r.task) for r in results}
  scores = [r.scores[metrics[r.task]] for r in results]
  errors = [r.standard_errors()[metrics[r.task]] for r in results]
  return {"value": float(np.mean(scores)), "standard_error": standard_error_of_mean(errors),
          "metrics": {r.task: metrics[r.task] for r in results}}


def config_task(config: ml_collections.ConfigDict, name: str,
                own_task: tasks.Task | None = None) -> tasks.Task:
  """Task `name`: with config.task.options when it is the config's task (own_task instead, where
  given: the Task object of `train(task=...)`), else with its eval.task_options (none: its
  defaults)."""
  if name == config.task.name:
    if own_task is not None:
      return own_task
    options = dict(config.task.options)
  else:
    options = dict(eval_settings(config)["task_options"].get(name, {}))
  return tasks.get_task(name, **options)


def evaluate_from_config(config: ml_collections.ConfigDict, model: models.Qwen, tokenizer, *,
                         task_name: str | None = None, seed: int | None = None,
                         progress_position: int = 0,
                         cut_contexts_warning: multiturn.CutContextsWarning | None = None,
                         own_task: tasks.Task | None = None) -> EvalResult:
  """`evaluate` on task `task_name` (default: config.task.name) with the config's prompt
  (`tasks.prompt_settings`: task.template, task.use_chat_template, task.system_prompt,
  task.chat_template_kwargs) and eval settings; with
  eval.replicate_params, from a copy of the model on every device (`sampling.replicated`).

  seed: the mean@k sampling seed (default config.seed). own_task: as in `config_task`.
  With config.env.name set, `evaluate_env` on that environment (task_name is then unused), which
  warns of cut contexts with cut_contexts_warning.
  """
  settings = eval_settings(config)
  progress = config.get("logging", {}).get("progress", True)
  if settings["replicate_params"]:
    model = sampling.replicated(model)
  env = env_config(config)
  if env is not None:
    return evaluate_env(
        model, tokenizer, env, max_new_tokens=settings["max_new_tokens"],
        batch_size=settings["batch_size"], num_samples=settings["num_samples"],
        temperature=settings["temperature"], top_p=settings["top_p"],
        seed=config.get("seed", 0) if seed is None else seed,
        progress_position=progress_position, progress=progress,
        cut_contexts_warning=cut_contexts_warning)
  name = task_name or config.task.name
  return evaluate(
      model, tokenizer, config_task(config, name, own_task), num_problems=settings["num_problems"],
      max_new_tokens=settings["max_new_tokens"], batch_size=settings["batch_size"],
      num_samples=task_num_samples(config, name), temperature=settings["temperature"],
      top_p=settings["top_p"], **tasks.prompt_settings(config.task),
      seed=config.get("seed", 0) if seed is None else seed,
      progress_position=progress_position, progress=progress)


def is_run_dir(path: str | os.PathLike) -> bool:
  return (Path(path) / checkpoint.RUN_FILE).is_file()


def load_model(path: str | os.PathLike, *, dtype: str = models.AUTO_DTYPE,
               step: int | None = None, mesh: jax.sharding.Mesh | None = None,
               base_model: str | None = None):
  """(model, tokenizer, info) from a Hugging Face directory / hub id or a `jaxlayer train` run
  directory (its base model with the trained leaves of checkpoint `step`, default the latest;
  base_model: where its base model is now, if it moved). info describes what was loaded, for
  eval.json (of a hub id, also the snapshot in the Hugging Face cache it named: its revision).

  dtype: "float32", "bfloat16", or "auto": a checkpoint's own dtype (models.from_pretrained),
  a run's model.dtype.
  """
  paths.require_path(path, "model")
  path = str(path)
  run_dir = is_run_dir(path)
  distributed.check_same([np.asarray(run_dir)], f"The kinds of model found at {path} (a "
                         "jaxlayer run directory, or not)", hint="Give it as a directory that "
                         "every host has at the same path.")
  if run_dir:
    model, loaded = checkpoint.load_trained_model(
        path, step, mesh=mesh, base_model=base_model,
        dtype=None if dtype == models.AUTO_DTYPE else dtype)
    return model, models.load_tokenizer(loaded["base_model"]), {
        "model": path, "kind": "run", **loaded, "dtype": np.dtype(model.dtype).name}
  for value, name in ((step, "step"), (base_model, "base_model")):
    if value is not None:
      raise ValueError(f"{name}={value} (--{name.replace('_', '-')}) applies to a jaxlayer run "
                       f"directory, but {path} is not one (no {checkpoint.RUN_FILE}): leave it "
                       "out, or give a run directory.")
  if Path(path).expanduser().is_dir() and not (Path(path).expanduser() / "config.json").is_file():
    raise FileNotFoundError(checkpoint.sweep_run_hint(path) or (
        f"{path} is neither a jaxlayer run directory (no {checkpoint.RUN_FILE}) nor a Hugging "
        "Face model directory (no config.json): pass the run_dir of `jaxlayer train` or a model "
        "directory."))
  try:
    model, config = models.from_pretrained(path, dtype=dtype, mesh=mesh)
  except FileNotFoundError as err:
    if Path(path).expanduser().exists():
      raise
    raise FileNotFoundError(f"{err} (A jaxlayer run directory works too: pass the run_dir of "
                            "`jaxlayer train`.)") from None
  info = {"model": path, "kind": "huggingface", "dtype": np.dtype(model.dtype).name}
  if not Path(path).expanduser().is_dir():  # a hub id: which of its revisions was loaded
    info["snapshot"] = config.source_dir
  # The tokenizer of the same snapshot (a hub id looked up again could name a newer one).
  return model, models.load_tokenizer(config.source_dir), info


def default_out_dir(model_path: str | os.PathLike, step: int | None = None) -> Path:
  """RUN_DIR/eval/step-N for checkpoint N of a run directory (`step`, default: the latest), so
  that each step's results have their own; else eval-<model name> in the current directory."""
  if is_run_dir(model_path):
    return Path(model_path) / "eval" / f"step-{checkpoint.checkpoint_step(model_path, step)}"
  return Path(f"eval-{Path(str(model_path).rstrip('/')).name}")


def evaluate_and_save(config: ml_collections.ConfigDict, model_path: str | os.PathLike,
                      out_dir: str | os.PathLike | None = None, *, step: int | None = None,
                      save_generations: bool = False, overwrite: bool = False,
                      command: str | None = None,
                      base_model: str | None = None) -> tuple[Path, dict]:
  """Evaluates the model or run at model_path on every task of the config (`task_names`) and
  writes OUT/eval.json (and, with save_generations, OUT/generations.jsonl); returns (OUT, the
  eval.json dictionary). An existing eval.json is replaced only with overwrite=True; a second
  evaluation (or an export) into OUT while this one runs is refused (jaxlayer.locks:
  OUT/.jaxlayer.lock). The temporary files of an evaluation killed while writing go
  (distributed.remove_temporary_leftovers: on several hosts, each host's).
  base_model: a run's base model, where it moved (load_model). The config's data paths are
  made absolute (train.resolve_data_paths), as eval.json records them."""
  run_dir = is_run_dir(model_path)
  if run_dir and out_dir is None:  # OUT names the checkpoint loaded, though a run still training
    step = checkpoint.checkpoint_step(model_path, step)  # may save another meanwhile
  out = paths.local_path(default_out_dir(model_path, step) if out_dir is None else out_dir,
                         "--out")
  names = task_names(config)  # (checks the config: a dict is refused before it is changed)
  train.resolve_data_paths(config)
  settings = eval_settings(config)  # bad settings fail here, before any model is loaded
  with locks.exclusive(out, "--out", enabled=distributed.is_primary(), tidy=True):
    # The temporary files of an evaluation killed while writing.
    distributed.remove_temporary_leftovers(out)
    if (out / EVAL_FILE).exists() and not overwrite:
      raise FileExistsError(f"{out / EVAL_FILE} exists: pass overwrite=True (--overwrite) to "
                            "replace it, or choose another out_dir (--out).")
    # A run loads in its own model.dtype; a Hugging Face checkpoint in the config's.
    dtype = models.AUTO_DTYPE if run_dir else config.model.dtype
    model, tokenizer, info = load_model(model_path, dtype=dtype, step=step,
                                        mesh=train.config_mesh(config.mesh), base_model=base_model)
    check_eval_fits(config, tokenizer, model.config)  # every task first
    results = [evaluate_from_config(config, model, tokenizer, task_name=name) for name in names]
    score = overall_score(config, results)
    report = {
        **info,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "eval_settings": settings,
        "score": score,
        "tasks": {r.task: {**r.summary(), "metric": score["metrics"][r.task]} for r in results},
    }
    if distributed.is_primary():  # on several hosts, process 0 writes (into the locked `out`)
      generations_path, report_text = out / GENERATIONS_FILE, json.dumps(report, indent=2) + "\n"
      if save_generations:  # an earlier eval.json never stands beside these generations
        lines = [json.dumps({"task": r.task, **g}) for r in results for g in r.generations]
        paths.write_together({generations_path: "".join(line + "\n" for line in lines),
                              out / EVAL_FILE: report_text})
      else:
        generations_path.unlink(missing_ok=True)  # it belonged to the eval.json being replaced
        paths.write_text_atomic(out / EVAL_FILE, report_text)
  distributed.sync("jaxlayer: eval.json written")
  return out, report
