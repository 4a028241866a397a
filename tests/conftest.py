"""Shared test set-up: offline hub, 8 fake CPU devices, tiny random HF checkpoints."""

import os
import socket
import subprocess
import sys
import textwrap

# Set before jax / transformers are imported anywhere. Tests that compare runs bit for bit
# (resumed = uninterrupted) need GPUs' deterministic reductions (README, GPUs). The tests' tiny
# models take far longer to compile than to run, so XLA:CPU compiles them the quick way
# (TEST_XLA_FLAGS, also given to the tests' subprocesses): backend (LLVM) optimisation off
# (~40% less compile time) and, where this XLA still has them, fusions emitted by the classic
# emitters instead of the MLIR fusion emitters (~35% less again). Results differ from the
# default's by float rounding only (~1e-7 relative).
QUICK_FUSIONS = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flag: str) -> bool:
  """Whether this jaxlib's XLA knows `flag` (an unknown flag in XLA_FLAGS aborts the process,
  and experimental ones like QUICK_FUSIONS come and go between versions). Asked once, by the
  first process of the session; pytest-xdist's workers and the tests' subprocesses inherit the
  answer through TEST_XLA_FLAGS_ENV."""
  probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"],
                         env={**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"},
                         capture_output=True)
  return probe.returncode == 0


TEST_XLA_FLAGS_ENV = "JAXLAYER_TEST_XLA_FLAGS"
if TEST_XLA_FLAGS_ENV not in os.environ:
  quick_flags = ["--xla_backend_optimization_level=0"]
  if _xla_accepts(QUICK_FUSIONS):
    quick_flags.append(QUICK_FUSIONS)
  os.environ[TEST_XLA_FLAGS_ENV] = " ".join(quick_flags)
TEST_XLA_FLAGS = os.environ[TEST_XLA_FLAGS_ENV]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_gpu_deterministic_ops=true " + TEST_XLA_FLAGS).strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
  """Skips the tests marked eight_devices where JAX's backend has fewer devices: the 8 devices
  above are CPU devices, which JAX does not use when it finds a GPU or TPU."""
  import jax

  if len(jax.devices()) >= 8:
    return
  skip = pytest.mark.skip(reason=f"needs 8 devices; {jax.default_backend()} has "
                          f"{len(jax.devices())} (JAX_PLATFORMS=cpu runs it)")
  for item in items:
    if item.get_closest_marker("eight_devices"):
      item.add_marker(skip)


def _checkpoint_with_tokenizer(directory, model_type, **config_overrides):
  """A random checkpoint (hf_fixtures.tiny_config) and a byte-level tokenizer in directory.
  hf_fixtures needs torch, so it is imported here, not with this file: the tests that need no
  torch also run on a Python that torch does not install on."""
  from tests import hf_fixtures

  config = hf_fixtures.tiny_config(model_type, **config_overrides)
  hf_fixtures.save_random_checkpoint(directory, config)
  hf_fixtures.save_byte_level_tokenizer(directory, vocab_size=config.vocab_size)
  return directory


@pytest.fixture(autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """XLA's compiled programs go to one persistent cache for the whole session, so a program that
  several tests compile is compiled once (also by the other pytest-xdist worker). A test whose
  run points JAX at a cache of its own gets the shared one back afterwards."""
  import jax

  from jaxlayer.rl import train

  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the session's directory, which holds each worker's
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  train.use_compilation_cache(str(root / "xla_cache"))
  yield


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
  """A random Qwen2 checkpoint (untied, GQA 4/2, biases perturbed) with a byte-level tokenizer."""
  return _checkpoint_with_tokenizer(tmp_path_factory.mktemp("qwen2"), "qwen2", vocab_size=300)


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
  """A random Qwen3 checkpoint (tied, head_dim != hidden/heads, q/k norms perturbed)."""
  return _checkpoint_with_tokenizer(tmp_path_factory.mktemp("qwen3"), "qwen3", vocab_size=300,
                                    tie_word_embeddings=True)


@pytest.fixture
def decode_loops(monkeypatch):
  """The row count of every decode loop the sampler traces from now on, in order (a loop per
  device where each device decodes its own rows)."""
  from jaxlayer import sampling

  loops = []
  decode_rows = sampling._decode_rows

  def recording(model, first_logits, cache, *args, **kwargs):
    loops.append(cache.values[0].shape[0])
    return decode_rows(model, first_logits, cache, *args, **kwargs)

  monkeypatch.setattr(sampling, "_decode_rows", recording)
  return loops


@pytest.fixture
def dead_pid():
  """The process id of a process that has ended (and been reaped)."""
  process = subprocess.Popen([sys.executable, "-c", ""])
  process.wait()
  return process.pid


@pytest.fixture
def writers_leftovers(dead_pid):
  """leave(directory): puts into `directory` the temporary files that writers killed (SIGKILL)
  while replacing its files left (".NAME.PID@HOST.RANDOM.SUFFIX": paths.replacing), beside those
  that must stay: a running writer's, another host's, and names without the mark (a user's
  notes, Orbax's unfinished checkpoint). Returns (the paths to remove, the paths to keep), each
  sorted."""
  host = socket.gethostname()

  def leave(directory):
    removed = [directory / f".config.json.{dead_pid}@{host}.k2x_9abc.tmp",
               directory / f".curves.png.{dead_pid}@{host}.q7w3e4r5.png"]
    kept = [directory / f".run.json.{os.getpid()}@{host}.a1b2c3d4.tmp",  # a writer at work
            directory / f".run.json.{dead_pid}@other-host.a1b2c3d4.tmp",  # cannot be asked
            directory / "notes.tmp", directory / ".notes.tmp"]
    for path in removed + kept:
      path.write_text("x")
    orbax_unfinished = directory / "4.orbax-checkpoint-tmp-1732460000"
    orbax_unfinished.mkdir()
    return sorted(removed), sorted([*kept, orbax_unfinished])

  return leave


@pytest.fixture
def held_by_another_process():
  """start(directory): a process that holds the directory's lock (jaxlayer.locks), as a run or a
  sweep writing there does, until the test ends or kills it."""
  holders = []

  def start(directory):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from jaxlayer import locks
        with locks.exclusive({str(directory)!r}, "run_dir"):
          print("holding", flush=True)
          time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    holders.append(holder)
    assert holder.stdout.readline().strip() == "holding"
    return holder

  yield start
  for holder in holders:
    holder.kill()
    holder.wait()


@pytest.fixture
def hub_model(tmp_path, monkeypatch):
  """The hub id 'tiny-org/tiny-arith', which huggingface_hub resolves (offline) to the shipped
  tiny model in a Hugging Face cache of the test's own, laid out as a download leaves it:
  models--ORG--NAME/snapshots/REVISION/FILE, a relative link to blobs/SHA256 (the name the hub
  gives an LFS file's blob), and refs/main naming the revision (huggingface_hub has no call that
  adds local files to its cache).
  huggingface_hub reads HF_HUB_CACHE when it is imported, so its constant is set too (the
  variable for the test's subprocesses)."""
  import hashlib
  from pathlib import Path

  from huggingface_hub import constants

  from jaxlayer import assets

  hub_id, revision = "tiny-org/tiny-arith", "0123456789abcdef0123456789abcdef01234567"
  cache = tmp_path / "hf_cache"
  repo = cache / f"models--{hub_id.replace('/', '--')}"
  snapshot = repo / "snapshots" / revision
  for directory in (repo / "blobs", repo / "refs", snapshot):
    directory.mkdir(parents=True)
  (repo / "refs" / "main").write_text(revision)
  for file in sorted(Path(assets.TINY_ARITH).iterdir()):
    blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
    blob.write_bytes(file.read_bytes())
    (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
  return hub_id
