"""Partition rules: which mesh axis splits which dimension of each parameter.

Mesh axes: "data" (batch only), "fsdp" (batch and parameter shards), "tensor" (heads / MLP
width). A dimension that the mesh axis size does not divide stays replicated, so tiny models
run on any mesh.
"""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlayer.text import counted

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the dotted parameter path, spec per dimension). First match wins.
PARTITION_RULES = (
    (r"embed\.embedding$", P("tensor", "fsdp")),  # [vocab, d_model]
    (r"attn\.[qkv]_proj\.kernel$", P("fsdp", "tensor")),  # [d_model, heads*head_dim]
    (r"attn\.[qkv]_proj\.bias$", P("tensor")),  # [heads*head_dim]
    (r"attn\.o_proj\.kernel$", P("tensor", "fsdp")),  # [heads*head_dim, d_model]
    (r"mlp\.(gate|up)_proj\.kernel$", P("fsdp", "tensor")),  # [d_model, mlp]
    (r"mlp\.down_proj\.kernel$", P("tensor", "fsdp")),  # [mlp, d_model]
    (r"lm_head\.kernel$", P("fsdp", "tensor")),  # [d_model, vocab]
    (r"(norm|scale)", P()),  # RMSNorm scales: small, replicated
)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh over `devices` (default: jax.devices(), those of every
  host); one axis may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  asked = f"data={data} x fsdp={fsdp} x tensor={tensor}"
  if not all(isinstance(s, int) and not isinstance(s, bool) and (s >= 1 or s == -1)
             for s in sizes):
    raise ValueError(f"Mesh {asked}: each axis size must be an int >= 1, or -1 for the "
                     "remaining devices (in a config: mesh.data, mesh.fsdp, mesh.tensor).")
  if sizes.count(-1) > 1:
    raise ValueError(f"Mesh {asked}: at most one axis may be -1.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"Mesh {asked}: {counted(len(devices), 'device')} cannot be split by "
                       f"{known}, the product of the other axes; choose sizes whose product "
                       f"divides {len(devices)}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
        f"Mesh {asked} needs {counted(int(np.prod(sizes)), 'device')}, not {len(devices)}: "
        f"choose sizes whose product is {len(devices)}, or one of -1.")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def partition_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  """The rule for `path`, with axes that do not divide their dimension dropped."""
  for pattern, spec in PARTITION_RULES:
    if re.search(pattern, path):
      axes = tuple(spec) + (None,) * (len(shape) - len(spec))
      return P(*(axis if axis is None or dim % mesh.shape[axis] == 0 else None
                 for axis, dim in zip(axes, shape)))
  raise KeyError(f"No partition rule for parameter {path!r}.")


def param_sharding(path: str, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, partition_spec(path, shape, mesh))


def traced_on(mesh: Mesh | None, fn):
  """fn, traced on `mesh` (as is for None): under jit, the model then keeps its activations
  split by rows between blocks (`keep_batch_split`, `fsdp_gathered`)."""
  if mesh is None:
    return fn

  @functools.wraps(fn)
  def on_mesh(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return on_mesh


def _tracing_mesh() -> jax.sharding.AbstractMesh | None:
  """The mesh the program being traced is partitioned over by the compiler, if any (not inside
  a shard_map, whose code runs per device)."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or not mesh.are_all_axes_auto else mesh


def keep_batch_split(x: jax.Array) -> jax.Array:
  """x [batch, ...] split over the batch axes of the mesh a program is traced on (`traced_on`);
  x as is without one (or per device, in a shard_map), or when the shards do not divide the
  batch. The model marks its activations between blocks so: left to itself, XLA's partitioner
  gives them the fsdp split of the weights that made them and moves them between devices at
  every block (all-to-alls); kept split by rows, each device gathers the weights instead."""
  mesh = _tracing_mesh()
  if mesh is None or x.shape[0] % batch_shards(mesh):
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def fsdp_gathered(param: jax.Array, path: str) -> jax.Array:
  """The parameter at `path` whole along the fsdp axis (split as before along the others) in a
  program traced on a mesh (`traced_on`), as is without one: an embedding table gathered
  before the lookup, so that each device looks up its own rows."""
  mesh = _tracing_mesh()
  if mesh is None:
    return param
  spec = partition_spec(path, param.shape, mesh)
  return jax.lax.with_sharding_constraint(
      param, P(*(None if axis == "fsdp" else axis for axis in spec)))


def batch_shards(mesh) -> int:
  """How many ways a mesh (or abstract mesh) splits a batch: its data x fsdp devices."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dimension split over data and fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *(None,) * (ndim - 1)))
