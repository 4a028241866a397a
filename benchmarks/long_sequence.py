"""Long sequences in chunks against in one piece: memory and time of the update step, one run.

Attention over sequences longer than `models.qwen.ATTENTION_QUERY_CHUNK` (512) tokens runs
in chunks of queries, and the output projection over responses longer than
`rl.step.LOGITS_POSITION_CHUNK` (512) in chunks of positions, each chunk recomputed in the
backward pass. This benchmark compiles the same update step both ways (the one-piece way by
raising both limits past the sequence) on one sequence of each length, and reports XLA's
temporary bytes of the step (`memory_analysis`) and the best of --repeats timed calls, the two
ways taking turns. Ratios are chunked / one piece. A small Qwen2 (hidden 256, 4 blocks, 8
query and 4 KV heads, vocabulary 32,768, tied), float32, GRPO loss, SGD, remat on and off.
XLA:CPU ignores remat's recomputation of whole blocks, so its counts with remat are those
without; the chunks are loops, which it does keep.

    python benchmarks/long_sequence.py            # 1,024 / 2,048 / 4,096 tokens (~10 minutes)
    python benchmarks/long_sequence.py --quick    # 768 tokens, smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxlayer import models  # noqa: E402
from jaxlayer.models import qwen  # noqa: E402
from jaxlayer.rl import losses, step  # noqa: E402
from rollout import print_table_header  # noqa: E402
from train_step import best_times_in_turns  # noqa: E402  (its rows: "state" and "times")

CONFIG = {"model_type": "qwen2", "vocab_size": 32768, "hidden_size": 256,
          "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8,
          "num_key_value_heads": 4, "max_position_embeddings": 8192, "tie_word_embeddings": True}
PROMPT = 256  # tokens of the sequence before its response


def make_batch(vocab: int, tokens: int) -> dict[str, jax.Array]:
  """One sequence: PROMPT prompt tokens, the rest response."""
  rng = np.random.default_rng(0)
  response = tokens - PROMPT
  return jax.device_put({
      "input_ids": rng.integers(0, vocab, (1, tokens)).astype(np.int32),
      "attention_mask": np.ones((1, tokens), bool),
      "response_mask": np.ones((1, response), np.float32),
      "is_response": np.ones(1, np.float32),
      "old_logprobs": np.full((1, response), -np.log(vocab), np.float32),
      "advantages": np.ones((1, response), np.float32)})


def prepare(model: qwen.Qwen, batch: dict, remat: bool, chunked: bool) -> dict:
  """The compiled update step (chunked, or in one piece), its inputs and XLA's temporaries."""
  limit = 512 if chunked else 10**9
  qwen.ATTENTION_QUERY_CHUNK = step.LOGITS_POSITION_CHUNK = limit  # read when traced
  split, params = step.split_model(model, list(models.named_params(model)))
  params = {path: jnp.array(leaf) for path, leaf in params.items()}  # its own: donated
  tx = optax.sgd(1e-6)
  update = step.make_update_step(split, tx, losses.LossConfig(), 1.0, remat=remat)
  opt_state = tx.init(params)
  compiled = update.lower(params, opt_state, split.frozen, batch).compile()
  return {"temporaries": compiled.memory_analysis().temp_size_in_bytes, "times": [],
          "state": [compiled, params, opt_state, split.frozen, batch]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="one short length (smoke run)")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (best of)")
  args = parser.parse_args()
  lengths = [768] if args.quick else [1024, 2048, 4096]
  cfg = models.ModelConfig.from_hf_dict(CONFIG)
  model = models.Qwen(cfg, rngs=nnx.Rngs(0))
  defaults = qwen.ATTENTION_QUERY_CHUNK, step.LOGITS_POSITION_CHUNK
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), float32; one sequence "
        f"({PROMPT} prompt tokens, the rest response); chunks of at most {defaults[0]} queries "
        f"and {defaults[1]} logit positions\n")
  header = ("| tokens | remat | one piece: temporaries MB | chunked MB | x | one piece s | "
            "chunked s | x |")
  print_table_header(header)
  for tokens in lengths:
    batch = make_batch(cfg.vocab_size, tokens)
    for remat in (False, True):
      whole, chunked = rows = [prepare(model, batch, remat, chunked) for chunked in (False, True)]
      best_times_in_turns(rows, args.repeats)
      print(f"| {tokens} | {remat} | {whole['temporaries'] / 1e6:.0f} | "
            f"{chunked['temporaries'] / 1e6:.0f} | "
            f"{chunked['temporaries'] / whole['temporaries']:.2f} | {whole['seconds']:.2f} | "
            f"{chunked['seconds']:.2f} | {chunked['seconds'] / whole['seconds']:.2f} |")
  qwen.ATTENTION_QUERY_CHUNK, step.LOGITS_POSITION_CHUNK = defaults


if __name__ == "__main__":
  main()
