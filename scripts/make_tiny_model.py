"""Builds the shipped tiny model: a byte-level tokenizer and an 8-block Qwen2 trained by SFT.

The model learns the `arithmetic` task (2-digit + and -) only partly, so that RL has room
to improve it: training stops as soon as greedy accuracy on held-out problems reaches
`--target`. Deterministic per seed. The shipped model took 1,450 steps and 31 minutes on a
shared 2-core CPU (its training.json records both).

    python scripts/make_tiny_model.py --out jaxlayer/assets/tiny-arith
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformers
from flax import nnx
from tokenizers import Tokenizer, decoders, models as tokenizer_models, pre_tokenizers, trainers
from tqdm import tqdm

from jaxlayer import models
from jaxlayer.tasks import format_prompt, get_task

EOS = "<|endoftext|>"
SEQ_LEN = 16  # a prompt ("99-99=") is at most 6 tokens, an answer ("-99") 3, plus EOS


def build_tokenizer(out_dir: Path) -> transformers.PreTrainedTokenizerFast:
  """Byte-level BPE with every byte in the vocabulary: what Qwen2Tokenizer rebuilds anyway.

  Qwen2's pre-tokenizer splits digits one by one, so merges would never apply to the
  arithmetic text; the vocabulary is the 256 byte symbols plus the end-of-text token.
  """
  tokenizer = Tokenizer(tokenizer_models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 1, special_tokens=[EOS],
                                initial_alphabet=alphabet, show_progress=False)
  tokenizer.train_from_iterator(["0123456789+-=\n"], trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS,
                                              pad_token=EOS)
  fast.save_pretrained(out_dir)
  return fast


def model_config(tokenizer) -> models.ModelConfig:
  hf = transformers.Qwen2Config(
      vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=8,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
      tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
      bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
  ).to_dict()
  hf["architectures"] = ["Qwen2ForCausalLM"]
  return models.ModelConfig.from_hf_dict(hf)


def encode(tokenizer, problems) -> tuple[np.ndarray, np.ndarray]:
  """Prompt + answer + EOS, right-padded: ids [n, SEQ_LEN] and a loss mask on answer tokens."""
  ids = np.full((len(problems), SEQ_LEN), tokenizer.eos_token_id, np.int32)
  loss_mask = np.zeros((len(problems), SEQ_LEN), bool)
  prompts = tokenizer([format_prompt(p) for p in problems])["input_ids"]
  answers = tokenizer([p.answer for p in problems])["input_ids"]
  for row, (prompt, answer) in enumerate(zip(prompts, answers)):
    answer = answer + [tokenizer.eos_token_id]
    ids[row, :len(prompt) + len(answer)] = prompt + answer
    # Position t predicts token t+1: the loss covers the predictions of the answer tokens.
    loss_mask[row, len(prompt) - 1:len(prompt) + len(answer) - 1] = True
  return ids, loss_mask


def token_losses(model, ids):
  """Next-token cross-entropy [batch, seq-1] and whether the argmax was right."""
  logits = model(ids[:, :-1])  # [batch, seq-1, vocab]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])
  return losses, jnp.argmax(logits, -1) == ids[:, 1:]


@functools.cache
def adamw(learning_rate: float, max_steps: int) -> optax.GradientTransformation:
  """AdamW with warm-up and cosine decay; one object per setting, so that another run in
  the same process (the tests) finds `train_step` compiled."""
  warmup = min(100, max_steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max_steps)
  return optax.adamw(schedule, weight_decay=0.01)


@nnx.jit
def train_step(model, optimizer, ids, loss_mask):
  def loss_fn(model):
    losses, _ = token_losses(model, ids)
    mask = loss_mask[:, :-1]
    return (losses * mask).sum() / mask.sum()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def greedy_correct(model, ids, loss_mask):
  """Per problem: would greedy decoding reproduce the answer and EOS exactly?

  Greedy decoding emits the reference iff every reference token is the argmax given the
  reference prefix, so one teacher-forced forward scores the whole batch.
  """
  _, right = token_losses(model, ids)
  mask = loss_mask[:, :-1]
  return jnp.all(right | ~mask, axis=-1)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=Path, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--target", type=float, default=0.35,
                      help="stop when held-out greedy accuracy reaches this")
  parser.add_argument("--max-steps", type=int, default=3000)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--learning-rate", type=float, default=2e-3)
  parser.add_argument("--eval-every", type=int, default=50)
  args = parser.parse_args(argv)

  started = time.time()
  args.out.mkdir(parents=True, exist_ok=True)
  tokenizer = build_tokenizer(args.out)
  cfg = model_config(tokenizer)
  model = models.Qwen(cfg, rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, adamw(args.learning_rate, args.max_steps), wrt=nnx.Param)

  task = get_task("arithmetic", seed=args.seed)
  train_ids, train_mask = encode(tokenizer, task.train_problems())
  # Held out from training, but not the test split the sweep evaluates on.
  val_ids, val_mask = encode(tokenizer, get_task("arithmetic", seed=args.seed + 1000)
                             .train_problems()[:1000])
  rng = np.random.default_rng(args.seed)
  accuracy = 0.0
  bar = tqdm(range(1, args.max_steps + 1), desc="SFT", unit="step")
  for step in bar:
    rows = rng.integers(0, len(train_ids), args.batch_size)
    loss = train_step(model, optimizer, jnp.asarray(train_ids[rows]), jnp.asarray(train_mask[rows]))
    if step % args.eval_every == 0:
      accuracy = float(jnp.mean(greedy_correct(model, jnp.asarray(val_ids), jnp.asarray(val_mask))))
      bar.set_postfix(loss=f"{float(loss):.3f}", held_out_acc=f"{accuracy:.3f}")
      if accuracy >= args.target:
        break
  bar.close()

  cfg.hf_config["dtype"] = "float32"
  models.save_pretrained(model, args.out, overwrite=True)
  (args.out / "training.json").write_text(json.dumps({
      "seed": args.seed, "sft_steps": step, "held_out_greedy_accuracy": accuracy,
      "target": args.target, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
      "seconds": round(time.time() - started, 1),
  }, indent=2))
  print(f"wrote {args.out} after {step} SFT steps: held-out greedy accuracy {accuracy:.3f}, "
        f"{time.time() - started:.0f} s")


if __name__ == "__main__":
  main()
