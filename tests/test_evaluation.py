"""`jaxlayer eval` and jaxlayer.evaluation: eval.json / generations.jsonl, pass@1 against
transformers' greedy decoding, mean@k against the written samples, run directories, errors."""

import errno
import json
import os
import random
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from jaxlayer import assets, cli, evaluation, models, paths, tasks
from jaxlayer.rl import checkpoint, train
from jaxlayer.rl.config import default_config
from jaxlayer.sweep import runner
from jaxlayer.tasks.base import GeneratedTask, Problem
from tests.sweep_fakes import sweep_tiny_config

NUM_PROBLEMS = 12
BATCH_SIZE = 8  # two chunks, the second filled up
NUM_SAMPLES = 3
MAX_NEW_TOKENS = 5
WORDS = "the quick brown fox jumps over lazy dog".split()
TRAINED_LEAF = "layers.1.mlp.down_proj.kernel"


@dataclass(kw_only=True)
class ParityTask(GeneratedTask):
  """A toy task a random model solves about half the time: a completion is correct when the sum
  of its UTF-8 bytes has the parity given as the answer. Prompts have different lengths."""

  name = "parity"

  def draw(self, rng: random.Random) -> Problem:
    words = rng.choices(WORDS, k=rng.randint(1, 5))
    return Problem(prompt=" ".join(words) + f" {rng.randint(0, 99)}", answer=str(rng.randint(0, 1)))

  def split_key(self, problem: Problem) -> str:
    return problem.prompt

  def reward_components(self, problems, completions):
    correct = [float(sum(c.encode()) % 2 == int(p.answer)) for p, c in zip(problems, completions)]
    return {"correct": correct, "format": [float(bool(c)) for c in completions]}


CONFIG_FILE = f"""
from jaxlayer.evaluation import default_eval_config
from jaxlayer.rl.config import default_config


def get_config():
  config = default_config()
  config.model.path = "unused"
  config.task.name = "parity"
  config.task.options.num_test = {NUM_PROBLEMS}
  config.task.options.reward_weights = {{"correct": 1.0, "format": 0.5}}
  config.task.template = "Q: {{question}} A:"
  config.eval = default_eval_config()
  config.eval.num_problems = {NUM_PROBLEMS}
  config.eval.batch_size = {BATCH_SIZE}
  config.eval.max_new_tokens = {MAX_NEW_TOKENS}
  config.eval.num_samples = {NUM_SAMPLES}
  config.eval.temperature = 1.0
  config.logging.progress = False
  return config
"""


@pytest.fixture(scope="module")
def parity_task_registered():
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(tasks.TASKS, "parity", ParityTask)
    yield


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, parity_task_registered):
  path = tmp_path_factory.mktemp("config") / "eval_parity.py"
  path.write_text(CONFIG_FILE)
  return path


@pytest.fixture(scope="module")
def cli_eval(tiny_qwen2_dir, config_file, tmp_path_factory):
  """`jaxlayer eval ... --save-generations` on the tiny checkpoint: (eval.json, generations)."""
  out = tmp_path_factory.mktemp("eval") / "out"
  cli.main(["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out", str(out),
            "--save-generations"])
  report = json.loads((out / "eval.json").read_text())
  generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
  return report, generations


def hf_greedy_completions(model_dir, prompts, eos_ids, state_dict_update=None):
  """transformers' greedy completions (decoded like jaxlayer: EOS dropped), one prompt at a time."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
  model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
  if state_dict_update:
    model.load_state_dict(state_dict_update, strict=False)
  completions = []
  for prompt in prompts:
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
      out = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                           eos_token_id=eos_ids, pad_token_id=eos_ids[0])
    completions.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
  return completions


def test_eval_cli_writes_well_formed_eval_json_and_generations(cli_eval, tiny_qwen2_dir):
  report, generations = cli_eval
  assert report["model"] == str(tiny_qwen2_dir) and report["kind"] == "huggingface"
  assert "snapshot" not in report  # (a hub id's revision; a directory is its own)
  assert isinstance(report["created_at"], str) and report["command"].startswith("jaxlayer eval")
  assert report["eval_settings"]["num_samples"] == NUM_SAMPLES
  assert list(report["tasks"]) == ["parity"]
  result = report["tasks"]["parity"]
  assert result["num_problems"] == NUM_PROBLEMS
  assert set(result["scores"]) == {"pass@1", f"mean@{NUM_SAMPLES}"}
  for metric, score in result["scores"].items():
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert len(result["per_problem"][metric]) == NUM_PROBLEMS
    assert score == pytest.approx(np.mean(result["per_problem"][metric]))
  decoding = result["decoding"]
  assert decoding["max_new_tokens"] == MAX_NEW_TOKENS and decoding["batch_size"] == BATCH_SIZE
  assert decoding["pass@1"] == {"temperature": 0.0, "num_samples": 1}
  assert decoding[f"mean@{NUM_SAMPLES}"] == {"temperature": 1.0, "top_p": 1.0, "top_k": 0,
                                             "num_samples": NUM_SAMPLES, "seed": 0}
  assert result["prompt"] == {"template": "Q: {question} A:", "use_chat_template": False,
                              "system_prompt": None}
  test_split = ParityTask(num_test=NUM_PROBLEMS).test_problems()
  assert result["problems"] == evaluation.problems_fingerprint(test_split)

  assert len(generations) == NUM_PROBLEMS * (1 + NUM_SAMPLES)
  for g in generations:
    problem = test_split[g["problem_index"]]
    assert g["task"] == "parity" and g["prompt"] == f"Q: {problem.prompt} A:"
    assert g["answer"] == problem.answer and 1 <= g["num_tokens"] <= MAX_NEW_TOKENS
    assert g["finish_reason"] in ("eos", "length")
    # score: the "correct" component; reward: the weighted training reward.
    task = ParityTask()
    assert g["score"] == task.reward_components([problem], [g["completion"]])["correct"][0]
    assert g["reward"] == pytest.approx(g["score"] + 0.5 * float(bool(g["completion"])))


def test_pass_at_1_equals_transformers_greedy_completions_graded_by_the_task(cli_eval,
                                                                             tiny_qwen2_dir):
  report, generations = cli_eval
  greedy = sorted((g for g in generations if g["decoding"] == "greedy"),
                  key=lambda g: g["problem_index"])
  assert [g["problem_index"] for g in greedy] == list(range(NUM_PROBLEMS))
  prompts = [g["prompt"] for g in greedy]
  eos = report["tasks"]["parity"]["decoding"]["eos_token_ids"]
  reference = hf_greedy_completions(tiny_qwen2_dir, prompts, eos)
  assert [g["completion"] for g in greedy] == reference

  problems = ParityTask(num_test=NUM_PROBLEMS).test_problems()
  scores = ParityTask().rewards(problems, reference).components["correct"]
  assert report["tasks"]["parity"]["per_problem"]["pass@1"] == scores
  assert report["tasks"]["parity"]["scores"]["pass@1"] == pytest.approx(np.mean(scores))
  assert 0 < np.mean(scores) < 1  # the toy task is neither all right nor all wrong
  p = np.mean(scores)  # 0/1 scores: the binomial standard error
  assert report["tasks"]["parity"]["standard_errors"]["pass@1"] == pytest.approx(
      np.sqrt(p * (1 - p) / NUM_PROBLEMS))


def test_mean_at_k_is_the_mean_of_the_sampled_scores(cli_eval):
  report, generations = cli_eval
  sampled = [g for g in generations if g["decoding"] == "sampled"]
  per_problem = []
  for index in range(NUM_PROBLEMS):
    rows = [g for g in sampled if g["problem_index"] == index]
    assert sorted(g["sample"] for g in rows) == list(range(NUM_SAMPLES))
    per_problem.append(np.mean([g["score"] for g in rows]))
  result = report["tasks"]["parity"]
  assert result["per_problem"][f"mean@{NUM_SAMPLES}"] == pytest.approx(per_problem)
  assert result["scores"][f"mean@{NUM_SAMPLES}"] == pytest.approx(np.mean(per_problem))
  if not set(per_problem) <= {0.0, 1.0}:  # partial credit: the sample standard error
    assert result["standard_errors"][f"mean@{NUM_SAMPLES}"] == pytest.approx(
        np.std(per_problem, ddof=1) / np.sqrt(NUM_PROBLEMS))
  greedy = {g["problem_index"]: g["completion"] for g in generations if g["decoding"] == "greedy"}
  assert any(g["completion"] != greedy[g["problem_index"]] for g in sampled)  # really sampled


@pytest.mark.parametrize("cut", [dict(top_p=1e-6), dict(top_k=1)])
def test_a_sampled_pass_cut_to_the_best_token_decodes_greedily(cut, tiny_qwen2_dir):
  """top_k=1, or top_p small enough for the best token alone, leaves nothing to sample: mean@k
  draws the greedy completion k times (the top_p of eval.num_samples reached the sampler)."""
  model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir)
  result = evaluation.evaluate(model, tokenizer, ParityTask(num_test=4), num_problems=4,
                               max_new_tokens=MAX_NEW_TOKENS, batch_size=8, num_samples=2,
                               temperature=1.0, progress=False, **cut)
  greedy = {g["problem_index"]: g["completion"] for g in result.generations
            if g["decoding"] == "greedy"}
  sampled = [g for g in result.generations if g["decoding"] == "sampled"]
  assert len(sampled) == 8
  assert [g["completion"] for g in sampled] == [greedy[g["problem_index"]] for g in sampled]
  assert result.per_problem["mean@2"] == result.per_problem["pass@1"]


@dataclass(kw_only=True)
class SamePromptTask(ParityTask):
  """Every problem asks the same prompt (each its own answer)."""

  name = "same-prompt"

  def draw(self, rng: random.Random) -> Problem:
    return Problem(prompt="the quick brown fox", answer=str(rng.randint(0, 10**9)))

  def split_key(self, problem: Problem) -> str:
    return problem.answer


def test_each_call_of_a_sampled_pass_draws_its_own_samples(tiny_qwen2_dir):
  """One problem per generate call (batch_size = num_samples = 2): problems with the same
  prompt, in calls of their own, get independent samples, not the first call's again."""
  model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir)
  result = evaluation.evaluate(model, tokenizer, SamePromptTask(num_test=4), num_problems=4,
                               max_new_tokens=MAX_NEW_TOKENS, batch_size=2, num_samples=2,
                               temperature=1.0, progress=False)
  first_samples = [g["completion"] for g in result.generations
                   if g["decoding"] == "sampled" and g["sample"] == 0]
  assert len(first_samples) == 4 and len(set(first_samples)) > 1


@pytest.mark.parametrize("batch_size, on_mesh, call", [
    (4, False, (1, 4)),  # a problem a call: 4 calls
    pytest.param(8, True, (8, 1), marks=pytest.mark.eight_devices),  # a row a shard: 2 calls
])
def test_a_sampled_pass_draws_the_same_samples_whatever_the_calls_shape(
    tiny_qwen2_dir, monkeypatch, batch_size, on_mesh, call):
  """mean@4 of 4 problems with the same seed, against one call of 4 prompt rows x 4 samples on
  one device: every completion is the same, so is every score."""
  def sampled_pass(model, batch_size):
    calls, generate = [], evaluation.sampling.generate
    monkeypatch.setattr(evaluation.sampling, "generate", lambda model, prompts, **kw: (
        calls.append((len(prompts), kw["num_samples"])), generate(model, prompts, **kw))[1])
    result = evaluation.evaluate(model, tokenizer, ParityTask(num_test=4), num_problems=4,
                                 max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size,
                                 num_samples=4, seed=3, progress=False)
    monkeypatch.setattr(evaluation.sampling, "generate", generate)
    sampled = [g for g in result.generations if g["decoding"] == "sampled"]
    return calls[-1], sampled, result.per_problem["mean@4"]

  model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir)
  expected_call, expected, expected_scores = sampled_pass(model, 16)
  if on_mesh:
    model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir, mesh=models.make_mesh(fsdp=8))
  got_call, got, got_scores = sampled_pass(model, batch_size)
  assert (expected_call, got_call) == ((4, 4), call)
  assert got == expected and got_scores == expected_scores
  assert all(len({g["completion"] for g in expected[i:i + 4]}) > 1 for i in range(0, 16, 4))


def test_a_prompt_may_fill_the_models_positions_and_no_more(tiny_qwen2_dir):
  config = models.ModelConfig.from_json_file(tiny_qwen2_dir / "config.json")
  prompt = [1] * (config.max_positions - 5)
  evaluation._check_prompts_fit("parity", [prompt], 5, config)  # every position, none beyond
  with pytest.raises(ValueError, match="set eval.max_new_tokens to at most 5"):
    evaluation._check_prompts_fit("parity", [prompt], 6, config)


@pytest.mark.parametrize("problem, given", [
    ({"prompt": "1+1=", "answer": "2"}, r"a dict, \{'answer': '2', 'prompt': '1\+1='\}"),
    (Problem(prompt=["1+1="], answer="2"), r"a Problem whose prompt is list \['1\+1='\]"),
])
def test_a_user_task_whose_problems_are_no_problems_is_named(problem, given):
  # They failed deep in prompt formatting ("'dict' object has no attribute 'metadata'").
  class UserTask(ParityTask):
    def test_problems(self):
      return [Problem(prompt="1+1=", answer="2"), problem]

  with pytest.raises(TypeError, match=rf"^task 'parity': test_problems\(\) gave {given} "
                     r"\(problem 1\); give tasks.Problem\(prompt=\.\.\., answer=\.\.\.\) "
                     r"objects, the prompt a str\.$"):
    evaluation.eval_problems(UserTask(), 0)


def test_problem_order_and_scores_do_not_depend_on_the_batch_size(cli_eval, tiny_qwen2_dir,
                                                                   config_file):
  config = cli.load_config(["--config", str(config_file), "--config.eval.num_samples=0",
                            f"--config.eval.batch_size={NUM_PROBLEMS}"], "test")
  model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir, mesh=train.config_mesh(config.mesh))
  result = evaluation.evaluate_from_config(config, model, tokenizer)
  report, generations = cli_eval
  assert result.scores == {"pass@1": report["tasks"]["parity"]["scores"]["pass@1"]}
  greedy = [g["completion"] for g in sorted(generations, key=lambda g: g["problem_index"])
            if g["decoding"] == "greedy"]
  assert [g["completion"] for g in result.generations] == greedy


def test_eval_json_records_eval_task_options_data_files_absolute(tiny_qwen2_dir, config_file,
                                                                 tmp_path, monkeypatch):
  """eval.json recorded eval.task_options' data files as given: a relative path did not say
  which file was read. Now as train.plan records them (resolve_data_paths)."""
  (tmp_path / "test.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
  config = cli.load_config(["--config", str(config_file), "--config.eval.tasks=gsm8k",
                            "--config.eval.num_problems=1", "--config.eval.num_samples=0"],
                           "jaxlayer eval")
  config.eval.task_options = {"gsm8k": {"data_files": {"test": "test.jsonl"}}}
  monkeypatch.chdir(tmp_path)
  _, report = evaluation.evaluate_and_save(config, tiny_qwen2_dir, tmp_path / "out")
  assert report["eval_settings"]["task_options"] == {
      "gsm8k": {"data_files": {"test": str(tmp_path / "test.jsonl")}}}


def test_problems_that_differ_in_the_turns_before_their_question_differ_in_fingerprint():
  """Two data sets of the same questions and answers, one with a system message of its own
  (veRL's chat prompt), are other problems: their scores do not mix. Problems without such turns
  keep the fingerprints recorded before."""
  import hashlib

  plain = Problem(prompt="1+1?", answer="2")
  brief = Problem(prompt="1+1?", answer="2",
                  earlier_turns=({"role": "system", "content": "Be brief."},))
  assert evaluation.problems_fingerprint([plain]) != evaluation.problems_fingerprint([brief])
  recorded = hashlib.sha256(json.dumps([["1+1?", "2"]]).encode()).hexdigest()[:16]
  assert evaluation.problems_fingerprint([plain]) == recorded


def _make_run_dir(run_dir: Path, base_dir: Path, step: int) -> np.ndarray:
  """A run directory as `jaxlayer train` writes it, whose checkpoint `step` holds a changed
  TRAINED_LEAF; returns that leaf's value [F, D]."""
  config = default_config()
  config.model.path, config.run_dir = str(base_dir), str(run_dir)
  hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
  base = hf.model.layers[1].mlp.down_proj.weight.detach().numpy().T  # [F, D]
  trained = (base * -3.0 + 0.05).astype(np.float32)
  checkpoint.write_run_files(run_dir, config, str(base_dir), {TRAINED_LEAF: trained.shape})
  saver = checkpoint.Checkpointer(run_dir)
  saver.save(step, {TRAINED_LEAF: jax.numpy.asarray(trained)}, {"rng": jax.random.key_data(
      jax.random.key(0))}, {"step": step, "data_position": 0})
  saver.close()
  return trained


@pytest.mark.eight_devices
@pytest.mark.parametrize("batch_size, samples_per_row", [(8, 1), (16, 2)])
def test_a_sampled_pass_keeps_its_completions_per_call_within_the_batch_size(
    tiny_qwen2_dir, config_file, monkeypatch, batch_size, samples_per_row):
  # On the default mesh (fsdp over 8), mean@8 at eval.batch_size=8 took 1 prompt a call, which
  # the sampler pads to one a batch shard: 8 prompts x 8 samples, 8 times the greedy call (the
  # paper's mean@32 at 64: 8 x 32, 4 times). Each prompt row now holds 8 / (8 // rows) samples.
  num_samples = 8
  config = cli.load_config(["--config", str(config_file), f"--config.eval.batch_size={batch_size}",
                            f"--config.eval.num_samples={num_samples}"], "test")
  model, tokenizer, _ = evaluation.load_model(tiny_qwen2_dir, mesh=train.config_mesh(config.mesh))
  calls, generate = [], evaluation.sampling.generate
  monkeypatch.setattr(evaluation.sampling, "generate", lambda model, prompts, **kw: (
      calls.append((len(prompts), kw["num_samples"])), generate(model, prompts, **kw))[1])
  result = evaluation.evaluate_from_config(config, model, tokenizer)
  # Greedy: min(batch_size, 12) prompts a call; mean@8: 8 prompt rows (one a batch shard) of
  # batch_size // 8 samples, 12 problems x 8 samples in 96 / batch_size calls.
  greedy_calls = -(-NUM_PROBLEMS // batch_size)
  assert calls == ([(min(batch_size, NUM_PROBLEMS), 1)] * greedy_calls
                   + [(8, samples_per_row)] * (NUM_PROBLEMS * num_samples // batch_size))
  sampled = [g for g in result.generations if g["decoding"] == "sampled"]
  assert [(g["problem_index"], g["sample"]) for g in sampled] == [
      (i, j) for i in range(NUM_PROBLEMS) for j in range(num_samples)]
  metric = f"mean@{num_samples}"
  per_problem = [np.mean([g["score"] for g in sampled[i * num_samples:(i + 1) * num_samples]])
                 for i in range(NUM_PROBLEMS)]
  assert result.per_problem[metric] == pytest.approx(per_problem)
  assert result.scores[metric] == pytest.approx(np.mean(per_problem))
  # Each row draws its own samples: a problem's 8 are not copies of one row's.
  assert all(len({g["completion"] for g in sampled[i * num_samples:(i + 1) * num_samples]})
             > samples_per_row for i in range(NUM_PROBLEMS))
  monkeypatch.setattr(evaluation.sampling, "generate", generate)
  again = evaluation.evaluate_from_config(config, model, tokenizer)
  assert again.generations == result.generations  # the same seed, the same samples


def test_run_directory_is_evaluated_with_its_trained_leaves(tiny_qwen2_dir, config_file, cli_eval,
                                                           tmp_path):
  run_dir = tmp_path / "run"
  trained = _make_run_dir(run_dir, tiny_qwen2_dir, step=2)
  cli.main(["eval", "--config", str(config_file), "--model", str(run_dir), "--save-generations",
            "--config.eval.num_samples=0"])
  out = run_dir / "eval" / "step-2"  # the default output directory of a run's checkpoint 2
  report = json.loads((out / "eval.json").read_text())
  assert (report["kind"], report["step"], report["trained"]) == ("run", 2, [TRAINED_LEAF])
  generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
  assert [g["decoding"] for g in generations] == ["greedy"] * NUM_PROBLEMS

  update = {"model.layers.1.mlp.down_proj.weight": torch.from_numpy(trained.T.copy())}
  reference = hf_greedy_completions(tiny_qwen2_dir, [g["prompt"] for g in generations],
                                    report["tasks"]["parity"]["decoding"]["eos_token_ids"], update)
  assert [g["completion"] for g in generations] == reference
  base_greedy = [g["completion"] for g in sorted(cli_eval[1], key=lambda g: g["problem_index"])
                 if g["decoding"] == "greedy"]
  assert reference != base_greedy  # the trained leaf changed what the model writes


def _make_run_with_checkpoints_2_and_4(run_dir, model_dir):
  """A run directory whose trained leaf differs at its checkpoints of steps 2 and 4."""
  trained = _make_run_dir(run_dir, model_dir, step=2)
  saver = checkpoint.Checkpointer(run_dir)
  saver.save(4, {TRAINED_LEAF: jax.numpy.asarray(trained * 2)}, {"rng": jax.random.key_data(
      jax.random.key(0))}, {"step": 4, "data_position": 0})
  saver.close()
  return run_dir


def test_each_checkpoint_of_a_run_is_evaluated_into_its_own_default_directory(tiny_qwen2_dir,
                                                                               config_file,
                                                                               tmp_path):
  """`--step 2` and the latest step (4) used to share RUN/eval: the second needed --overwrite,
  which replaced the first one's results."""
  run_dir = _make_run_with_checkpoints_2_and_4(tmp_path / "run", tiny_qwen2_dir)
  argv = ["eval", "--config", str(config_file), "--model", str(run_dir),
          "--config.eval.num_samples=0", "--config.eval.num_problems=2"]
  cli.main(argv + ["--step", "2"])
  earlier = (run_dir / "eval" / "step-2" / "eval.json").read_text()
  cli.main(argv)
  assert (run_dir / "eval" / "step-2" / "eval.json").read_text() == earlier
  assert json.loads(earlier)["step"] == 2
  assert json.loads((run_dir / "eval" / "step-4" / "eval.json").read_text())["step"] == 4
  assert sorted(path.name for path in (run_dir / "eval").iterdir()) == ["step-2", "step-4"]


def test_a_runs_latest_checkpoint_is_chosen_once_for_its_directory_and_its_weights(
    tiny_qwen2_dir, config_file, tmp_path, monkeypatch):
  """A run still training may save a checkpoint while `jaxlayer eval` starts: RUN/eval/step-N
  was named from one listing and the weights loaded from another, step N + 1's."""
  run_dir = _make_run_with_checkpoints_2_and_4(tmp_path / "run", tiny_qwen2_dir)
  listed, listings = checkpoint.listed_steps, []

  def saved_meanwhile(directory) -> list[int]:  # step 4 is there from the second listing on
    listings.append(directory)
    return [step for step in listed(directory) if step < 4 or len(listings) > 1]

  monkeypatch.setattr(checkpoint, "listed_steps", saved_meanwhile)
  cli.main(["eval", "--config", str(config_file), "--model", str(run_dir),
            "--config.eval.num_samples=0", "--config.eval.num_problems=2"])
  assert len(listings) > 1  # listed again after step 4 came
  assert json.loads((run_dir / "eval" / "step-2" / "eval.json").read_text())["step"] == 2


def test_generate_completes_with_a_run_directorys_trained_leaves(tiny_qwen2_dir, tmp_path,
                                                               capsys):
  run_dir = tmp_path / "run"
  trained = _make_run_dir(run_dir, tiny_qwen2_dir, step=3)
  prompts = ["the quick fox", "over 12 lazy dogs"]
  argv = ["generate", "--model", str(run_dir), "--max-new-tokens", str(MAX_NEW_TOKENS)]
  cli.main(argv + [arg for prompt in prompts for arg in ("--prompt", prompt)])
  printed = re.split(r"^### prompt \d+, sample 0 \((?:eos|length), \d+ tokens\)\n",
                     capsys.readouterr().out, flags=re.M)[1:]
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_qwen2_dir)
  update = {"model.layers.1.mlp.down_proj.weight": torch.from_numpy(trained.T.copy())}
  reference = hf_greedy_completions(tiny_qwen2_dir, prompts, [tokenizer.eos_token_id], update)
  assert [text.rstrip("\n") for text in printed] == [p + c for p, c in zip(prompts, reference)]
  assert reference != hf_greedy_completions(tiny_qwen2_dir, prompts, [tokenizer.eos_token_id])
  with pytest.raises(SystemExit, match=r"jaxlayer generate: Run .* has no checkpoint for step 5; "
                     r"available: \[3\]"):
    cli.main(argv + ["--step", "5", "--prompt", prompts[0]])


def test_models_load_in_their_own_dtype_unless_one_is_given(tiny_qwen2_dir, config_file, tmp_path,
                                                           monkeypatch, capsys):
  """A bfloat16 export loads in bfloat16, as transformers 5 loads it (dtype="auto"), and a run
  in its model.dtype; `jaxlayer generate --dtype` and eval's model.dtype choose another."""
  shutil.copytree(tiny_qwen2_dir, tmp_path / "bf16")
  hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
  hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == (
      torch.bfloat16)
  run_dir = tmp_path / "run"
  _make_run_dir(run_dir, tiny_qwen2_dir, step=1)  # a float32 run
  for path, dtype, expected in [(tmp_path / "bf16", "auto", "bfloat16"),
                                (tmp_path / "bf16", "float32", "float32"),
                                (run_dir, "auto", "float32"), (run_dir, "bfloat16", "bfloat16")]:
    model, _, info = evaluation.load_model(path, dtype=dtype)
    assert np.dtype(model.dtype).name == info["dtype"] == expected, (path, dtype)

  loaded, from_pretrained = [], models.from_pretrained

  def recording(*args, **kwargs):
    model, model_config = from_pretrained(*args, **kwargs)
    loaded.append(np.dtype(model.dtype).name)
    return model, model_config

  monkeypatch.setattr(models, "from_pretrained", recording)
  generate = ["generate", "--model", str(tmp_path / "bf16"), "--prompt", "12", "--max-new-tokens",
              "2"]
  cli.main(generate)
  cli.main(generate + ["--dtype", "float32"])
  assert loaded == ["bfloat16", "float32"]
  evaluate = ["eval", "--config", str(config_file), "--model", str(tmp_path / "bf16"),
              "--config.eval.num_samples=0", "--config.eval.num_problems=1", "--overwrite",
              "--out", str(tmp_path / "eval")]
  for model_dtype, expected in [("float32", "float32"), ("auto", "bfloat16")]:
    cli.main(evaluate + [f"--config.model.dtype={model_dtype}"])
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["dtype"] == expected
  capsys.readouterr()


def test_sweep_eval_fn_scores_the_base_checkpoint_in_test_split_order(tiny_qwen2_dir, config_file,
                                                                       cli_eval):
  config = cli.load_config(["--config", str(config_file),
                            f"--config.model.path={tiny_qwen2_dir}"], "test")
  scored = runner.default_eval_fn(config, model=None, seed=0, progress_position=1)
  assert scored["metric"] == "pass@1"
  assert scored["per_problem"] == cli_eval[0]["tasks"]["parity"]["per_problem"]["pass@1"]
  assert scored["problems"] == cli_eval[0]["tasks"]["parity"]["problems"]
  # What a resumed sweep checks its runs' problems against (it raises on others).
  runner._check_done_runs_problems(config, Path("sweep"), [
      {"run": "base-seed0", **runner.run_scores(scored, runner.RunSpec("base", 0))}])


def test_sweep_eval_fn_scores_eval_tasks_as_jaxlayer_eval_does(tiny_qwen2_dir, config_file):
  """Each task by its own metric, the score the mean of theirs: the paper's math score can be
  swept (the sweep scored task.name alone)."""
  config = cli.load_config(["--config", str(config_file), f"--config.model.path={tiny_qwen2_dir}",
                            "--config.eval.tasks=arithmetic,countdown:mean@2",
                            "--config.eval.num_samples=0", "--config.eval.num_problems=4"],
                           "test")
  config.eval.task_options = {"countdown": {"num_test": 8}}
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  tokenizer = models.load_tokenizer(tiny_qwen2_dir)
  scored = runner.default_eval_fn(config, model=model, seed=0, progress_position=1)
  expected = {name: evaluation.evaluate_from_config(config, model, tokenizer, task_name=name,
                                                    seed=0)
              for name in ("arithmetic", "countdown")}
  assert scored == {"tasks": {
      "arithmetic": {"per_problem": expected["arithmetic"].per_problem["pass@1"],
                     "metric": "pass@1", "problems": expected["arithmetic"].problems},
      "countdown": {"per_problem": expected["countdown"].per_problem["mean@2"],
                    "metric": "mean@2", "problems": expected["countdown"].problems}}}
  result = runner.run_scores(scored, runner.RunSpec("base", 0))
  assert result["score"] == pytest.approx((expected["arithmetic"].scores["pass@1"]
                                           + expected["countdown"].scores["mean@2"]) / 2)
  assert result["metric"] == runner.expected_metric(config) == (
      "mean of arithmetic pass@1, countdown mean@2")


@pytest.mark.eight_devices
def test_replicated_params_decode_per_device_and_score_the_same(cli_eval, tiny_qwen2_dir,
                                                                config_file, tmp_path,
                                                                decode_loops):
  """eval.replicate_params on the default mesh (fsdp over all 8 devices): each device decodes
  its share of a batch in its own loop (one loop over the batch without it), with the same
  completions and scores."""
  out = tmp_path / "out"
  cli.main(["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out",
            str(out), "--save-generations", "--config.eval.replicate_params=True"])
  report = json.loads((out / "eval.json").read_text())
  generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
  assert report["eval_settings"]["replicate_params"] is True
  assert cli_eval[0]["eval_settings"]["replicate_params"] is False  # rollout's default
  assert report["tasks"] == cli_eval[0]["tasks"]
  assert generations == cli_eval[1]
  # Greedy and mean@3 alike: 8 prompt rows a call, one a device, of one sample each (3 samples
  # a row would fill the 8 devices with 24 rows; a loop is traced again for each prompt-length
  # bucket).
  assert set(decode_loops) == {BATCH_SIZE // len(jax.devices())}


@pytest.mark.parametrize("flags, message", [
    (["--model", "{missing}"], "does not exist.*run_dir of `jaxlayer train`"),
    (["--model", "{empty}"], "neither a jaxlayer run directory .*nor a Hugging Face model"),
    (["--model", "{run}"], "has no checkpoint yet"),
    (["--model", "{model}", "--step", "3"],
     r"step=3 \(--step\) applies to a jaxlayer run directory.*: leave it out, or give a run"),
    (["--model", "{model}", "--base-model", "{model}"],
     r"base_model=.* \(--base-model\) applies to a jaxlayer run directory"),
    (["--model", "{model}", "--config.task.name=nosuchtask"],
     "unknown task.*'nosuchtask'.*arithmetic"),
    (["--model", "{model}", "--config.eval.tasks=parity,nope"],
     r"eval.tasks / task.name: unknown task 'nope'"),
    (["--model", "{model}", "--config.eval.num_problems=13"],
     "num_problems=13 but task 'parity' has only 12 test problems"),
    (["--model", "{model}", "--config.eval.temperature=0"], "mean@k samples .*temperature > 0"),
    (["--model", "{model}", "--config.eval.metric=best"], "eval.metric='best'.*pass@1"),
    (["--model", "{model}", "--config.eval.num_samples=0", "--config.eval.metric=mean@k"],
     "needs eval.num_samples >= 1"),
    (["--model", "{model}", "--config.eval.batch_size=0"], "batch_size must be an integer >= 1"),
    (["--model", "{model}", "--config.eval.tasks=parity:mean@0"],
     r"entry 'parity:mean@0': the metric after ':' is pass@1 or mean@K \(K >= 1"),
    (["--model", "{model}", "--config.eval.tasks=parity:pass@2"], "parity:pass@2'.* or mean@K"),
    (["--model", "{model}", "--config.eval.tasks=parity:mean@2", "--config.eval.num_samples=0",
      "--config.eval.temperature=0"],
     r"eval.tasks scores \['parity:mean@2'\] by sampled completions, which needs eval.temp"),
    (["--model", "{model}", "--config.eval.max_new_tokens=5000"],
     r"longest test prompt of task 'parity' has \d+ tokens; with eval.max_new_tokens=5000"),
])
def test_bad_input_is_a_clear_error(flags, message, tiny_qwen2_dir, config_file, tmp_path):
  (tmp_path / "empty").mkdir()
  checkpoint.write_run_files(tmp_path / "run", default_config(), str(tiny_qwen2_dir),
                             {TRAINED_LEAF: (64, 32)})  # (no checkpoint: the shape is not read)
  paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "run": tmp_path / "run",
           "model": tiny_qwen2_dir}
  flags = [f.format(**{k: str(v) for k, v in paths.items()}) for f in flags]
  with pytest.raises(SystemExit, match=f"^jaxlayer eval: .*{message}"):
    cli.main(["eval", "--config", str(config_file), "--out", str(tmp_path / "out"), *flags])
  assert not (tmp_path / "out" / "eval.json").exists()


def test_an_evaluation_into_a_directory_another_process_writes_is_refused(
    tiny_qwen2_dir, config_file, tmp_path, held_by_another_process):
  out = tmp_path / "eval"
  argv = ["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out", str(out),
          "--config.eval.num_samples=0", "--config.eval.num_problems=1", "--save-generations"]
  cli.main(argv)
  holder = held_by_another_process(out)  # as an evaluation writing there holds it
  before = {path.name: path.read_bytes() for path in out.iterdir()}
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer eval: {out} is in use: jaxlayer process {holder.pid} on "
      f"{socket.gethostname()} is writing there (it holds {out / '.jaxlayer.lock'}). Wait for "
      "it to finish or stop it, or choose another --out.")):
    cli.main(argv + ["--overwrite"])
  assert {path.name: path.read_bytes() for path in out.iterdir()} == before
  holder.kill()
  holder.wait()
  cli.main(argv + ["--overwrite"])
  assert sorted(path.name for path in out.iterdir()) == ["eval.json", "generations.jsonl"]


def test_the_temporary_files_a_killed_evaluation_left_go_with_the_next_one(
    tiny_qwen2_dir, config_file, tmp_path, dead_pid):
  """An evaluation killed while writing (SIGKILL: no cleanup runs) left .eval.json.*.tmp and
  .generations.jsonl.*.tmp in --out, which no later one removed. The next evaluation there,
  holding the directory's lock, removes those its mark shows a dead process of this host wrote;
  other files stay."""
  out, host = tmp_path / "eval", socket.gethostname()
  out.mkdir()
  left = [out / f".eval.json.{dead_pid}@{host}.x1y2z3w4.tmp",
          out / f".generations.jsonl.{dead_pid}@{host}.a9b8c7d6.tmp"]
  kept = [out / ".eval.json.mine.tmp", out / f".eval.json.{dead_pid}@other-host.x1y2z3w4.tmp",
          out / "notes.txt"]
  for path in (*left, *kept):
    path.write_text("x")
  cli.main(["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out",
            str(out), "--config.eval.num_samples=0", "--config.eval.num_problems=1",
            "--save-generations"])
  assert sorted(out.iterdir()) == sorted([*kept, out / "eval.json", out / "generations.jsonl"])


def test_unknown_eval_key_is_a_clear_error():
  config = default_config()
  config.eval = ml_collections.ConfigDict({"num_sample": 4})
  with pytest.raises(ValueError, match=r"config key eval.num_sample is no jaxlayer setting "
                     r"\(nothing would read it\); did you mean eval.num_samples\?"):
    evaluation.eval_settings(config)


def test_existing_eval_json_is_kept_without_overwrite(cli_eval, tiny_qwen2_dir, config_file,
                                                      tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "eval.json").write_text("earlier results")
  with pytest.raises(SystemExit,
                     match=re.escape("eval.json exists: pass overwrite=True (--overwrite)")):
    cli.main(["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out",
              str(out)])
  assert (out / "eval.json").read_text() == "earlier results"


def test_sweep_with_bad_eval_settings_fails_before_writing_anything(tmp_path):
  config = sweep_tiny_config()
  config.sweep.dir = str(tmp_path / "sweep")
  config.eval.num_samples, config.eval.metric, config.eval.temperature = 4, "mean@k", 0.0
  with pytest.raises(ValueError, match="mean@k samples .*temperature > 0"):
    runner.run_sweep(config, train_fn=lambda *a, **k: pytest.fail("trained"), num_layers=2)
  assert not (tmp_path / "sweep").exists()


def test_eval_tasks_lists_tasks_and_only_the_config_task_gets_its_options(parity_task_registered):
  config = default_config()
  config.task.name, config.task.options.num_test = "parity", 7
  assert evaluation.task_names(config) == ["parity"]  # no eval section: the defaults
  config.eval = evaluation.default_eval_config()
  config.eval.tasks = " parity, arithmetic "
  assert evaluation.task_names(config) == ["parity", "arithmetic"]
  assert len(evaluation.config_task(config, "parity").test_problems()) == 7
  default_num_test = tasks.get_task("arithmetic").num_test
  assert evaluation.config_task(config, "arithmetic").num_test == default_num_test


def test_eval_task_options_configure_the_other_tasks(tmp_path):
  # The eval.tasks other than task.name had only their defaults: a second task on your own
  # data (a local file) could not be evaluated.
  test_file = tmp_path / "test.jsonl"
  test_file.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
  config = default_config()
  config.eval = evaluation.default_eval_config()
  config.eval.tasks = "arithmetic,gsm8k"
  config.eval.task_options = {"gsm8k": {"data_files": {"test": str(test_file)}}}
  [problem] = evaluation.config_task(config, "gsm8k").test_problems()
  assert (problem.prompt, problem.answer) == ("1+1?", "2")
  config.eval.task_options = {"gsm8k": {}, "countdown": {"seed": 1}}
  with pytest.raises(ValueError, match=r"eval.task_options names \['countdown'\], which are not "
                                       r"among the other tasks evaluated \['gsm8k'\]"):
    evaluation.task_names(config)


def test_each_eval_task_is_scored_by_its_metric_and_the_score_is_their_mean(
    tiny_qwen2_dir, config_file, tmp_path, capsys):
  # The paper's math score is the mean of four benchmarks, AMC's the mean over 32 samples:
  # with one eval.metric for all tasks, that score could not be computed.
  out = tmp_path / "out"
  cli.main(["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out",
            str(out), "--save-generations", "--config.eval.tasks=parity:pass@1, arithmetic:mean@2"])
  report = json.loads((out / "eval.json").read_text())
  parity, arithmetic = report["tasks"]["parity"], report["tasks"]["arithmetic"]
  assert (parity["metric"], arithmetic["metric"]) == ("pass@1", "mean@2")
  assert set(parity["scores"]) == {"pass@1", f"mean@{NUM_SAMPLES}"}  # eval.num_samples' samples
  assert set(arithmetic["scores"]) == {"pass@1", "mean@2"}  # its own entry's
  generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
  sampled = [g for g in generations if g["task"] == "arithmetic" and g["decoding"] == "sampled"]
  assert len(sampled) == 2 * NUM_PROBLEMS

  def by_hand(per_problem):  # (mean, standard error) of one task's per-problem scores
    scores = np.array(per_problem)
    if set(scores) <= {0.0, 1.0}:
      return scores.mean(), np.sqrt(scores.mean() * (1 - scores.mean()) / scores.size)
    return scores.mean(), scores.std(ddof=1) / np.sqrt(scores.size)

  (p, p_se), (a, a_se) = by_hand(parity["per_problem"]["pass@1"]), by_hand(
      arithmetic["per_problem"]["mean@2"])
  assert report["score"]["value"] == pytest.approx((p + a) / 2)
  assert report["score"]["standard_error"] == pytest.approx(np.hypot(p_se, a_se) / 2)
  assert report["score"]["metrics"] == {"parity": "pass@1", "arithmetic": "mean@2"}
  assert (f"score: {(p + a) / 2:.4f} ± {np.hypot(p_se, a_se) / 2:.4f}, the mean of parity "
          "pass@1, arithmetic mean@2") in capsys.readouterr().out.splitlines()


def test_the_overall_score_and_its_error_take_each_tasks_own_metric():
  """Scores whose pass@1 and mean@2 differ, and so do their standard errors (the tiny model's
  all-zero scores above cannot tell them apart)."""
  config = default_config()
  config.eval = evaluation.default_eval_config()
  config.eval.tasks = "arithmetic:pass@1, countdown:mean@2"

  def result(task, per_problem):
    return evaluation.EvalResult(task=task, num_problems=4, per_problem=per_problem,
                                 scores={m: float(np.mean(v)) for m, v in per_problem.items()},
                                 decoding={}, prompt={}, generations=[])

  arithmetic = result("arithmetic", {"pass@1": [1.0, 0.0, 1.0, 1.0],
                                     "mean@2": [0.5, 0.5, 1.0, 0.5]})
  countdown = result("countdown", {"pass@1": [0.0, 0.0, 1.0, 0.0],
                                   "mean@2": [0.5, 0.0, 1.0, 0.5]})
  # arithmetic pass@1: 0.75 ± sqrt(0.75 * 0.25 / 4); countdown mean@2: 0.5 ± std / sqrt(4).
  arithmetic_se, countdown_se = np.sqrt(0.75 * 0.25 / 4), np.sqrt(1 / 6) / 2
  assert evaluation.overall_score(config, [arithmetic, countdown]) == {
      "value": pytest.approx((0.75 + 0.5) / 2),
      "standard_error": pytest.approx(np.hypot(arithmetic_se, countdown_se) / 2),
      "metrics": {"arithmetic": "pass@1", "countdown": "mean@2"}}


def test_an_environments_rollout_plays_at_most_its_seeds_within_the_batch_size():
  # Seeds per rollout of k episodes each: batch_size // k, at least 1, at most the seeds (more
  # would only pad the rollout's batch).
  assert [evaluation.prompts_per_call(8, 2, seeds) for seeds in (3, 10)] == [3, 4]
  assert evaluation.prompts_per_call(2, 4, 5) == 1


def test_a_task_without_its_own_metric_takes_eval_metric(parity_task_registered):
  config = default_config()
  config.task.name = "parity"
  config.eval = evaluation.default_eval_config()
  config.eval.tasks, config.eval.num_samples = "parity, arithmetic:mean@32, countdown:pass@1", 3
  assert [evaluation.task_metric(config, name) for name in evaluation.task_names(config)] == [
      "pass@1", "mean@32", "pass@1"]
  assert [evaluation.task_num_samples(config, name) for name in evaluation.task_names(config)] == [
      3, 32, 3]
  config.eval.metric = "mean@k"
  assert evaluation.task_metric(config, "parity") == "mean@3"


def test_a_task_named_twice_in_eval_tasks_is_refused():
  # It was evaluated twice, and eval.json kept one of the two results.
  config = default_config()
  config.eval = evaluation.default_eval_config()
  config.eval.tasks = "arithmetic,countdown, arithmetic"
  with pytest.raises(ValueError, match=r"eval.tasks names 'arithmetic' more than once"):
    evaluation.task_names(config)


@pytest.mark.parametrize("key, value", [("tasks", "arithmetic"),
                                        ("task_options", {"countdown": {"num_test": 8}})])
def test_an_environment_config_refuses_eval_tasks_it_would_ignore(key, value):
  # eval.task_options was ignored without a word (eval.tasks was refused): an environment is
  # scored by its episodes.
  config_file = Path(__file__).parents[1] / "configs" / "gigpo_gridworld.py"
  config = cli.load_config(["--config", str(config_file)], "test",
                           {"eval": evaluation.default_eval_config})
  config.eval[key] = value
  with pytest.raises(ValueError, match=rf"^eval.{key} names .*environment 'gridworld', which is "
                     rf"evaluated by its episodes: leave eval.{key} empty\.$"):
    evaluation.task_names(config)
  config.eval[key] = type(value)()
  assert evaluation.task_names(config) == ["gridworld"]


def test_every_task_is_checked_to_fit_before_any_is_evaluated(monkeypatch, tmp_path):
  """The shipped model has 64 positions: arithmetic fits, countdown's prompts alone do not."""
  monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
  config_file = Path(__file__).parents[1] / "configs" / "sweep_tiny.py"
  with pytest.raises(SystemExit, match=r"^jaxlayer eval: the longest test prompt of task "
                     r"'countdown' has 1\d\d tokens; .*max_position_embeddings=64: leave "
                     r"'countdown' out of eval.tasks or use a model with more positions\.$"):
    cli.main(["eval", "--config", str(config_file), "--model", assets.TINY_ARITH,
              "--config.eval.tasks=arithmetic,countdown", "--out", str(tmp_path / "out")])
  assert not (tmp_path / "out").exists()


def test_a_run_directory_given_as_a_model_points_to_load_model(tiny_qwen2_dir, tmp_path):
  """Its config.json is the run's config: from_pretrained said 'Unsupported model_type None',
  load_tokenizer asked for tokenizer files to be copied into it."""
  run_dir = tmp_path / "run"
  _make_run_dir(run_dir, tiny_qwen2_dir, step=1)
  for load in (models.from_pretrained, models.load_tokenizer):
    with pytest.raises(ValueError, match=rf"is a jaxlayer run directory, not a Hugging Face "
                       rf"checkpoint: write one from it with `jaxlayer export --run {run_dir} "
                       r"--out DIR` and pass DIR, or load it in Python with `model, tokenizer, "
                       r"info = .*load_model"):
      load(run_dir)


@pytest.mark.parametrize("argument, value, message", [
    ("tokenizer", None, r"tokenizer must be the model's tokenizer, got NoneType: .*load_tokenizer"),
    ("tokenizer", "DIR", r"tokenizer must be the model's tokenizer, got str"),
    ("task", "parity", r"task must be a jaxlayer Task, got str: .*tasks.get_task\('parity'\)"),
])
def test_evaluate_names_an_argument_of_the_wrong_kind(argument, value, message, tiny_qwen2_dir,
                                                      parity_task_registered):
  """They failed with "'NoneType' object is not callable" or "'str' object has no attribute"."""
  model, _ = models.from_pretrained(tiny_qwen2_dir)
  arguments = dict(model=model, tokenizer=models.load_tokenizer(tiny_qwen2_dir),
                   task=tasks.get_task("parity")) | {argument: value}
  with pytest.raises(TypeError, match=message):
    evaluation.evaluate(**arguments, num_problems=2, max_new_tokens=4)


@pytest.mark.parametrize("num_problems", ["4", 2.5, -1, True])
def test_evaluate_names_a_number_of_problems_that_is_no_count(num_problems):
  """num_problems="4" failed with "'<' not supported between instances of 'str' and 'int'"."""
  model, _ = models.from_pretrained(assets.TINY_ARITH)
  with pytest.raises(ValueError, match=re.escape(
      "eval.num_problems must be an integer >= 0 (0: the whole test split), got "
      f"{num_problems!r}.")):
    evaluation.evaluate(model, models.load_tokenizer(assets.TINY_ARITH),
                        tasks.get_task("arithmetic"), num_problems=num_problems,
                        max_new_tokens=4)


def test_evaluate_takes_a_numpy_integer_number_of_problems():
  model, _ = models.from_pretrained(assets.TINY_ARITH)
  result = evaluation.evaluate(model, models.load_tokenizer(assets.TINY_ARITH),
                               tasks.get_task("arithmetic"), num_problems=np.int64(2),
                               max_new_tokens=4, progress=False)
  assert result.num_problems == 2


def test_evaluate_names_a_stop_token_given_as_an_int():
  """eos_token_ids=tokenizer.eos_token_id failed with "'int' object is not iterable"."""
  model, _ = models.from_pretrained(assets.TINY_ARITH)
  tokenizer = models.load_tokenizer(assets.TINY_ARITH)
  eos = tokenizer.eos_token_id
  with pytest.raises(TypeError, match=re.escape(
      f"eos_token_ids must be a list of token ids, got the int {eos}; pass [{eos}] (or None: "
      "the stop tokens training uses).")):
    evaluation.evaluate(model, tokenizer, tasks.get_task("arithmetic"), num_problems=2,
                        max_new_tokens=4, eos_token_ids=eos)


@pytest.mark.parametrize("evaluating", ["evaluate_and_save", "evaluate_from_config"])
def test_evaluating_by_a_config_names_a_config_that_is_no_configdict(evaluating, tmp_path):
  """A dict failed with "'dict' object has no attribute 'rollout'"."""
  config = default_config()
  config.model.path = str(assets.TINY_ARITH)
  model = models.from_pretrained(assets.TINY_ARITH)[0]
  arguments = {"evaluate_and_save": (assets.TINY_ARITH, tmp_path / "eval"),
               "evaluate_from_config": (model, models.load_tokenizer(assets.TINY_ARITH))}
  with pytest.raises(TypeError, match=re.escape(
      "config must be an ml_collections ConfigDict, such as jaxlayer.rl.config.default_config() "
      "or a configs/*.py get_config(), got dict.")):
    getattr(evaluation, evaluating)(config.to_dict(), *arguments[evaluating])
  assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("load", [models.from_pretrained, models.load_tokenizer,
                                  evaluation.load_model])
def test_a_loaded_model_given_where_its_directory_goes_is_a_clear_error(load):
  """from_pretrained(model) failed with "expected str, bytes or os.PathLike object, not Qwen",
  and load_model(model) with "File name too long", the model's description taken as its path."""
  model, _ = models.from_pretrained(assets.TINY_ARITH)
  with pytest.raises(TypeError, match=re.escape(
      "model must be a path (a str or pathlib.Path), got Qwen.")):
    load(model)


class _Killed(BaseException):
  """A SIGKILL: nothing after it runs, no handler sees it."""


def _disk_full(*args):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_overwrite_killed_before_eval_json_leaves_no_old_report_beside_new_generations(
    cli_eval, tiny_qwen2_dir, config_file, tmp_path, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  (out / "eval.json").write_text("earlier results")
  (out / "generations.jsonl").write_text("earlier generations\n")
  replace = os.replace

  def killed_before_eval_json(source, target):
    if Path(target).name == "eval.json":
      raise _Killed
    replace(source, target)

  monkeypatch.setattr(paths.os, "replace", killed_before_eval_json)
  eval_command = ["eval", "--config", str(config_file), "--model", str(tiny_qwen2_dir), "--out",
                  str(out), "--save-generations", "--overwrite"]
  with pytest.raises(_Killed):
    cli.main(eval_command)
  generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
  assert generations == cli_eval[1]
  assert not (out / "eval.json").exists()  # the earlier report would pose as theirs

  monkeypatch.setattr(paths.os, "replace", replace)
  monkeypatch.setattr(paths.os, "fsync", _disk_full)
  with pytest.raises(SystemExit, match=re.escape(
      f"jaxlayer eval: no space left on the device to write {out / 'eval.json'}: free space")):
    cli.main(eval_command)
  assert sorted(os.listdir(out)) == ["generations.jsonl"]  # as it was: no temporary file left
  assert [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()] == (
      cli_eval[1])


@dataclass(kw_only=True)
class GradedTextTask(ParityTask):
  """ParityTask that keeps the texts it was given to grade."""

  graded: list = None

  def reward_components(self, problems, completions):
    self.graded.extend(completions)
    return super().reward_components(problems, completions)


def test_a_completion_is_graded_inside_the_thinking_its_prompt_opened(tmp_path):
  # R1-Distill's generation prompt ends with "<think>\n": a completion that never writes
  # </think> is thinking cut at the length limit and is graded as no answer (""), not as the
  # answer it had reached inside the thinking.
  from tests import hf_fixtures

  model_dir = hf_fixtures.save_chat_model(tmp_path, "r1-distill-qwen")
  model, _ = models.from_pretrained(model_dir)
  task = GradedTextTask(num_train=4, num_test=4, graded=[])
  result = evaluation.evaluate(model, models.load_tokenizer(model_dir), task, num_problems=4,
                               max_new_tokens=3, batch_size=4, use_chat_template=True,
                               progress=False)
  completions = [generation["completion"] for generation in result.generations]
  assert all(completions) and not any("</think>" in c for c in completions)
  assert task.graded[1:] == [""] * 4  # (the first: check_reward_weights' empty completion)
