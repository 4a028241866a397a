"""The per-device memory estimate against what a run really allocates, and `jaxlayer memory`."""

import json
import math
from pathlib import Path

import jax
import pytest

from jaxlayer import cli, evaluation, models
from jaxlayer.rl import checkpoint, memory, train
from jaxlayer.rl.config import default_config
from jaxlayer.sweep.runner import default_sweep_config

CONFIGS = Path(__file__).parents[1] / "configs"
KEPT = "update: activations kept"
MASTERS = "float32 master copy of the trained leaves"


def run_config(model_dir, **train_overrides):
  """8 prompts x G=4 per step on 8 CPU devices (data 2 x fsdp 4), KL on, 2 micro-batches."""
  cfg = default_config()
  cfg.model.path, cfg.run_dir = str(model_dir), "unused"
  cfg.task.name = "arithmetic"
  cfg.train.update(layers="layers.1", group_size=4, batch_size=32, micro_batch_size=16,
                   kl_beta=0.01, remat=True)
  cfg.train.update(train_overrides)
  cfg.rollout.update(max_new_tokens=6, max_prompt_tokens=12, prompts_per_call=4)
  cfg.mesh.update(data=2, fsdp=4, num_devices=8)
  return cfg


def device_bytes(tree) -> int:
  """The most bytes any one device holds of the arrays in `tree`."""
  held = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
  return max(held.values())


def cache_bytes(model_cfg, prompts: int, prompt_len: int, rows: int, new: int) -> int:
  """One device's KV cache, counted by hand: per block the keys and values (float32) of each
  prompt and of each row's new tokens, and the prompt mask (bool), split over the 8 batch
  shards; the slot index (int32) on each."""
  kv = model_cfg.num_kv_heads * model_cfg.head_dim
  per_block = 2 * 4 * kv * (prompts * prompt_len + rows * new)
  return (model_cfg.num_layers * per_block + prompts * prompt_len) // 8 + 4


def part(estimate, prefix: str) -> int:
  (value,) = [size for name, size in estimate.parts.items() if name.startswith(prefix)]
  return value


@pytest.mark.eight_devices
def test_state_parts_equal_the_bytes_a_run_allocates_on_a_device(tiny_qwen2_dir):
  plan = train.plan(run_config(tiny_qwen2_dir))
  estimate = memory.estimate(plan)
  run = train._Trainer(plan, None)  # loads the model and builds the optimizer state, on the mesh
  model = run.split.merge(run.params)
  assert estimate.parts["weights"] == device_bytes(models.named_params(model))
  assert estimate.parts["KL reference (trained leaves)"] == device_bytes(run.ref_params)
  assert estimate.parts["optimizer state"] == device_bytes(run.opt_state)
  # Two micro-batches: the running sum of the gradient and one micro-batch's.
  assert estimate.parts["gradients"] == 2 * device_bytes(run.params)
  assert "rollout: whole weights on each device" not in estimate.parts
  cfg = run_config(tiny_qwen2_dir)
  cfg.rollout.replicate_params = True
  replicated = memory.estimate(train.plan(cfg))
  assert replicated.parts["rollout: whole weights on each device"] == sum(
      x.nbytes for x in models.named_params(model).values())


@pytest.mark.eight_devices
def test_a_bfloat16_run_counts_the_float32_copy_of_its_trained_leaves(tiny_qwen2_dir):
  cfg = run_config(tiny_qwen2_dir)
  cfg.model.dtype = "bfloat16"
  plan = train.plan(cfg)
  estimate = memory.estimate(plan)
  run = train._Trainer(plan, None)
  model = run.split.merge(run.params)  # bfloat16, the trained leaves cast from their copies
  assert estimate.parts["weights"] == device_bytes(models.named_params(model))
  assert estimate.parts[MASTERS] == device_bytes(run.params) > 0
  assert estimate.parts["optimizer state"] == device_bytes(run.opt_state)
  assert MASTERS not in memory.estimate(train.plan(run_config(tiny_qwen2_dir))).parts


@pytest.mark.eight_devices
def test_kv_cache_is_the_hand_computed_share_of_one_call(tiny_qwen2_dir):
  plan = train.plan(run_config(tiny_qwen2_dir))
  # One call: 4 prompts (bucketed to the 8 batch shards: 8) of 12 tokens, 4 samples each.
  expected = cache_bytes(plan.model_config, prompts=8, prompt_len=12, rows=8 * 4, new=6)
  assert memory.estimate(plan).parts["rollout: KV cache of one generate call"] == expected


@pytest.mark.eight_devices
def test_evaluation_is_sized_as_a_phase_of_its_own(tiny_qwen2_dir):
  cfg = run_config(tiny_qwen2_dir)
  training_only = memory.estimate(train.plan(cfg))
  assert training_only.eval_parts == {} and training_only.peak == training_only.total
  cfg.eval = evaluation.default_eval_config()  # as `jaxlayer train` adds to its configs
  cfg.eval.update(batch_size=5, num_samples=2, max_new_tokens=3, replicate_params=True)
  assert memory.estimate(train.plan(cfg)).eval_parts == {}  # it does not evaluate
  cfg.sweep = default_sweep_config()  # a sweep scores every run
  estimate = memory.estimate(train.plan(cfg))
  model, model_cfg = models.from_pretrained(tiny_qwen2_dir)
  whole = sum(x.nbytes for x in models.named_params(model).values())
  # Every call: 5 prompt rows (bucketed to the 8 batch shards: 8) of up to 12 tokens, one
  # sample of 3 tokens each: mean@2's rows take one of a problem's 2 samples each, as rows of
  # 2 samples (8 x 2 = 16) would hold more than eval.batch_size=5 completions.
  cache = cache_bytes(model_cfg, prompts=8, prompt_len=12, rows=8, new=3)
  assert estimate.eval_parts == {"weights": training_only.parts["weights"],
                                 "whole weights on each device": whole,
                                 "KV cache of one generate call": cache}
  assert estimate.parts == training_only.parts  # training is sized as before
  assert estimate.peak == max(estimate.total, estimate.eval_total)
  assert "evaluation (jaxlayer eval, the sweep's scoring):" in estimate.table().splitlines()
  # Evaluations during training: the state kept between steps stays on the device.
  del cfg.sweep
  cfg.logging.eval_every = 5
  estimate = memory.estimate(train.plan(cfg))
  kept = ("weights", "KL reference (trained leaves)", "optimizer state")
  assert estimate.eval_parts == {**{name: training_only.parts[name] for name in kept},
                                 "whole weights on each device": whole,
                                 "KV cache of one generate call": cache}
  assert ("evaluation during training (logging.eval_every):"
          in estimate.table().splitlines())
  # A task scored by mean@K samples K completions per problem: the largest call of any pass is
  # sized. At eval.batch_size=5 every pass's calls are as above.
  cfg.eval.tasks = f"{cfg.task.name},countdown:mean@4"
  assert memory.estimate(train.plan(cfg)).eval_parts["KV cache of one generate call"] == cache
  # At 16 with 4 problems: greedy calls of 4 prompts (8 bucketed); mean@2's 8 completions, one
  # a row (8 rows); mean@4's 16 in 8 rows of 2 samples, the largest.
  cfg.eval.update(batch_size=16, num_problems=4)
  cache = cache_bytes(model_cfg, prompts=8, prompt_len=12, rows=8 * 2, new=3)
  assert memory.estimate(train.plan(cfg)).eval_parts["KV cache of one generate call"] == cache


@pytest.mark.eight_devices
def test_activations_follow_the_selection_the_rows_and_remat(tiny_qwen2_dir):
  def estimate(**train_overrides):
    return memory.estimate(train.plan(run_config(tiny_qwen2_dir, **train_overrides)))

  top_block, every_block = estimate(), estimate(layers="all")  # layers.1 is the top block
  cfg = models.ModelConfig.from_json_file(tiny_qwen2_dir / "config.json")
  # remat keeps each block input above the lowest trained block (2 rows per device).
  block_input = 2 * (12 + 6) * cfg.hidden_size * 4
  assert block_input <= part(top_block, KEPT) < part(every_block, KEPT)
  assert 2 * block_input <= part(every_block, KEPT) < 2 * part(top_block, KEPT)
  # Per row, but for a few row-independent residuals (rotary angles).
  assert part(estimate(micro_batch_size=32), KEPT) == pytest.approx(2 * part(top_block, KEPT),
                                                                    rel=0.02)
  # With remat the update holds what it keeps plus one block's activations at a time: less
  # than it keeps without remat, and as much when only one block is in the backward pass.
  recomputed = "update: one block's recomputed"
  for layers in ("layers.1", "layers.0", "all"):
    with_remat, without = estimate(layers=layers), estimate(layers=layers, remat=False)
    assert recomputed not in " ".join(without.parts)
    peak = part(with_remat, KEPT) + part(with_remat, recomputed)
    assert 0 < part(with_remat, KEPT) < peak <= part(without, KEPT), layers
    if layers == "layers.1":
      assert peak == part(without, KEPT)
  assert top_block.total == sum(top_block.parts.values())


@pytest.mark.parametrize("trainable, blocks", [
    (("layers.5.mlp.up_proj.kernel", "layers.3.attn_norm.scale"), 5),  # blocks 3 to 7
    (("layers.7.mlp.up_proj.kernel",), 1),
    (("embed.embedding", "layers.6.mlp.up_proj.kernel"), 8),  # from the embedding up: all
    (("final_norm.scale",), 0),
])
def test_the_backward_pass_goes_down_to_the_lowest_trained_block(trainable, blocks):
  assert memory._backward_blocks(trainable, num_layers=8) == blocks


def test_table_says_when_the_total_does_not_fit(tiny_qwen2_dir, monkeypatch):
  cfg = run_config(tiny_qwen2_dir)
  cfg.mesh.update(data=1, fsdp=1, num_devices=1)
  cfg.train.micro_batch_size = 0
  plan = train.plan(cfg)
  monkeypatch.setattr(memory, "device_limit", lambda: 10**12)
  roomy = memory.estimate(plan)
  assert "does not fit" not in roomy.table()
  monkeypatch.setattr(memory, "device_limit", lambda: roomy.total // 2)
  table = memory.estimate(plan).table()
  assert table.splitlines()[-1].endswith("(200% of it at the peak: does not fit)")


def test_cli_prints_every_part_and_names_bad_input(tiny_qwen2_dir, capsys, monkeypatch):
  monkeypatch.setattr(memory, "device_limit", lambda: None)  # a CPU's: no device memory line
  args = ["memory", "--config", "configs/grpo_arithmetic.py",
          f"--config.model.path={tiny_qwen2_dir}", "--config.mesh.num_devices=1"]
  cli.main(args)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("memory per device, estimated (1 device,")
  names = [line.rsplit("  ", 1)[0].strip() for line in lines[1:]]
  assert names[0] == "weights" and names[-1] == "total"
  sizes = [float(line.split()[-2]) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[line.split()[-1]]
           for line in lines[1:]]
  assert math.isclose(sum(sizes[:-1]), sizes[-1], rel_tol=0.01)
  cli.main(args + ["--compile"])
  compiled = capsys.readouterr().out.split("\n\n")[-1].splitlines()
  assert compiled[0].startswith(
      f"the update step as XLA compiles it for this {jax.default_backend()}, one device")
  assert compiled[1].startswith("arguments") and compiled[-1].startswith("total")
  with pytest.raises(SystemExit, match=r"jaxlayer memory: .*layers\.9.*the model has 2 blocks"):
    cli.main(args + ["--config.train.layers=layers.9"])


def test_cli_names_a_run_directorys_base_model_to_size(tiny_qwen2_dir, tmp_path, capsys,
                                                        monkeypatch):
  monkeypatch.setattr(memory, "device_limit", lambda: None)
  run_dir = tmp_path / "run"
  checkpoint.write_run_files(run_dir, default_config(), str(tiny_qwen2_dir), {})
  args = ["memory", "--config", "configs/grpo_arithmetic.py", "--config.mesh.num_devices=1"]
  with pytest.raises(SystemExit) as error:
    cli.main(args + [f"--config.model.path={run_dir}"])
  assert str(error.value) == (
      f"jaxlayer memory: {run_dir} is a jaxlayer run directory, not a Hugging Face checkpoint: "
      f"pass its base model, --config.model.path={tiny_qwen2_dir}, which has the run's shapes "
      "and so takes the same memory (training on from the run takes its export: `jaxlayer "
      f"export --run {run_dir} --out DIR`).")
  cli.main(args + [f"--config.model.path={tiny_qwen2_dir}"])  # what it names sizes
  assert capsys.readouterr().out.startswith("memory per device, estimated (1 device,")
  run = json.loads((run_dir / checkpoint.RUN_FILE).read_text())
  (run_dir / checkpoint.RUN_FILE).write_text(json.dumps(run | {"base_model": "/moved/away"}))
  with pytest.raises(SystemExit, match=r"pass its base model, its directory or hub id as "
                     r"model\.path \(it was in /moved/away\), which has the run's shapes"):
    cli.main(args + [f"--config.model.path={run_dir}"])


@pytest.mark.eight_devices
def test_compiled_update_takes_the_estimated_state_and_a_mini_batch(tiny_qwen2_dir):
  """XLA's own count of the update's arguments on a device: the weights and optimizer state
  the estimate gives, and the device's rows of a mini-batch, counted by hand."""
  config = run_config(tiny_qwen2_dir)
  config.rollout.max_prompt_tokens = 13  # the train step pads prompts to a bucket: 14
  plan = train.plan(config)
  estimate, compiled = memory.estimate(plan), memory.compile_update(plan)
  rows = plan.mini_batch_size // 8  # over data 2 x fsdp 4
  seq, responses = 14 + 6, 6  # the bucketed prompt and the responses
  # input ids (int32) and attention mask (bool); four float32 [rows, responses] arrays with
  # KL on: response mask, old and reference log-probs, advantages; is_response float32 [rows].
  batch = rows * seq * (4 + 1) + 4 * rows * responses * 4 + rows * 4
  assert compiled.arguments == (estimate.parts["weights"] + estimate.parts["optimizer state"]
                                + batch)
  # The donated trained leaves and optimizer state come back in place.
  assert compiled.aliased == (estimate.parts["KL reference (trained leaves)"]
                              + estimate.parts["optimizer state"])
  assert compiled.temporaries > 0 and compiled.total > compiled.arguments
  assert compiled.table().splitlines()[-1].split()[0] == "total"


def test_training_warns_before_loading_when_the_estimate_does_not_fit(tiny_qwen2_dir,
                                                                      monkeypatch, capsys):
  cfg = run_config(tiny_qwen2_dir)
  cfg.mesh.update(data=1, fsdp=1, num_devices=1)
  cfg.train.micro_batch_size = 0
  plan = train.plan(cfg)
  monkeypatch.setattr(memory, "device_limit", lambda: 10**12)
  train.warn_if_memory_short(plan)
  assert capsys.readouterr() == ("", "")
  monkeypatch.setattr(memory, "device_limit", lambda: 1000)
  train.warn_if_memory_short(plan)
  printed = capsys.readouterr()
  warning = printed.err  # (a warning: stdout is a command's results')
  assert printed.out == ""
  assert "may not fit in device memory" in warning and "does not fit" in warning
  assert "Lower rollout.prompts_per_call" in warning
  # A backend that does not report its memory (a CPU) is not sized at all.
  monkeypatch.setattr(memory, "device_limit", lambda: None)
  monkeypatch.setattr(memory, "estimate", lambda plan: pytest.fail("sized without a limit"))
  train.warn_if_memory_short(plan)


def test_cli_fetches_only_the_config_of_a_hub_model(tiny_qwen2_dir, tmp_path, monkeypatch,
                                                     capsys):
  import huggingface_hub

  monkeypatch.setattr(memory, "device_limit", lambda: None)  # a CPU's: no device memory line

  fetched = []

  def fake_snapshot_download(repo_id, allow_patterns):  # the hub, offline: a local snapshot
    fetched.append((repo_id, allow_patterns))
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_bytes((tiny_qwen2_dir / "config.json").read_bytes())
    return str(snapshot)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
  cli.main(["memory", "--config", "configs/grpo_arithmetic.py", "--config.model.path=Org/Model",
            "--config.mesh.num_devices=1"])
  assert fetched == [("Org/Model", ["config.json"])]
  assert capsys.readouterr().out.splitlines()[-1].startswith("total")
  with pytest.raises(SystemExit, match="jaxlayer memory: Set the model: --config.model.path"):
    cli.main(["memory", "--config", "configs/grpo_arithmetic.py"])


# (paper_qwen3_grpo.py's argument picks the model: each is sized.)
@pytest.mark.parametrize("config_file", sorted(p.name for p in CONFIGS.glob("*.py")) +
                         ["paper_qwen3_grpo.py:4b", "paper_qwen3_grpo.py:8b"])
def test_every_shipped_config_is_sized(config_file, tiny_qwen2_dir, tmp_path, capsys):
  # The tiny model's config.json with room for the longest config's tokens (R1-Distill's 1,024
  # + 8,192; sizing reads nothing else of the model).
  model_config = json.loads((tiny_qwen2_dir / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**model_config,
                                                    "max_position_embeddings": 16384}))
  cli.main(["memory", "--config", str(CONFIGS / config_file), "--config.train.layers=layers.1",
            f"--config.model.path={tmp_path}", "--config.mesh.num_devices=1"])
  lines = capsys.readouterr().out.splitlines()
  totals = [line for line in lines if line.startswith("total ")]
  assert len(totals) == (2 if "evaluation (jaxlayer eval, the sweep's scoring):" in lines else 1)


# Qwen2.5-1.5B-Instruct's config.json (its shape is all that sizing reads).
QWEN2P5_1P5B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "hidden_act": "silu", "use_sliding_window": False, "bos_token_id": 151643,
    "eos_token_id": 151645}


@pytest.mark.eight_devices
def test_the_alfworld_paper_config_fits_an_80_gb_device_for_one_block(tmp_path):
  """configs/paper_qwen2p5_1p5b_alfworld_gigpo.py on 8 devices: an update of its 128 episodes
  of up to 50 turns in one pass kept ~7,600 GB of activations per device; its micro-batches
  and recomputed activations bring block 14's run under 60 GB, room to spare on 80 GB."""
  (tmp_path / "config.json").write_text(json.dumps(QWEN2P5_1P5B_INSTRUCT))
  cfg = cli.load_config(["--config", str(CONFIGS / "paper_qwen2p5_1p5b_alfworld_gigpo.py"),
                         f"--config.model.path={tmp_path}", "--config.run_dir=unused",
                         "--config.mesh.num_devices=8"], "test")
  estimate = memory.estimate(train.plan(cfg))
  assert f"{KEPT} (64 sequences per device)" in estimate.parts  # 8 episodes x 50 turns, padded
  assert estimate.total < 60e9


def test_a_multi_turn_update_is_sized_with_a_row_per_turn():
  """configs/gigpo_gridworld.py trains 64 episodes of 4 turns a step: 256 rows an update (as
  its runs log in trained_turns), each a context and an action."""
  def estimate(max_turns: int):
    cfg = cli.load_config(["--config", str(CONFIGS / "gigpo_gridworld.py"),
                           "--config.run_dir=unused", "--config.mesh.num_devices=1",
                           f"--config.env.max_turns={max_turns}"], "test")
    return memory.estimate(train.plan(cfg))

  four, one = estimate(4), estimate(1)
  assert f"{KEPT} (256 sequences per device)" in four.parts
  assert f"{KEPT} (64 sequences per device)" in one.parts
  assert part(four, KEPT) == pytest.approx(4 * part(one, KEPT), rel=0.02)
