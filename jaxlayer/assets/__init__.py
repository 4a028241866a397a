"""Files shipped with jaxlayer: the tiny model the default sweep and the quickstart use."""

from pathlib import Path

# 8-block Qwen2 (1.6M parameters) trained by SFT on `arithmetic` (scripts/make_tiny_model.py)
# to greedy pass@1 0.358 on the 1,000 test problems of configs/sweep_tiny.py: a Hugging Face
# directory.
TINY_ARITH = str(Path(__file__).parent / "tiny-arith")
