"""Qwen-family decoders in Flax NNX and their Hugging Face import / export."""

from jaxlayer.models.config import AUTO_DTYPE, ModelConfig, checkpoint_dtype, resolve_dtype
from jaxlayer.models.hub import (from_pretrained, load_tokenizer, named_params, path_str,
                                 save_pretrained, stop_token_ids, stored_shapes,
                                 stored_tensors, weights_fingerprint)
from jaxlayer.models.qwen import KVCache, Qwen, require_model
from jaxlayer.models.sharding import batch_sharding, batch_shards, make_mesh

__all__ = ["AUTO_DTYPE", "KVCache", "ModelConfig", "Qwen", "batch_sharding", "batch_shards",
           "checkpoint_dtype", "from_pretrained", "load_tokenizer", "make_mesh", "named_params",
           "path_str", "require_model", "resolve_dtype", "save_pretrained", "stop_token_ids",
           "stored_shapes", "stored_tensors", "weights_fingerprint"]
