"""The Ray launcher on a local cluster: every run recorded by the driver, a dead worker's run
retried without touching finished runs, a failed run redone alone on resume, in-flight runs
killed when the sweep stops, and no process left behind by a cluster the sweep started."""

import importlib
import os
import signal
import socket
import sys
import time
import warnings

import psutil
import pytest

from jaxlayer import envs, tasks
from jaxlayer.rl import advantages, algorithms
from jaxlayer.sweep import launchers, report, runner, store
from jaxlayer.sweep.contribution import UndefinedContributionWarning
from tests import registered_fakes
from tests.sweep_fakes import REPO, FakeRL, FakeTasksRL, FileLoggedRL, make_config

ray = pytest.importorskip("ray")

NUM_LAYERS = 3
BLOCKS = {0: 14, 1: 26, 2: 20}  # solved problems per block (base 12, full 24)


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
  """The plots are tested in test_report.py; here they would only cost time."""
  monkeypatch.setattr(report, "plot_contribution", lambda sweep, path: path.touch())
  monkeypatch.setattr(report, "plot_curves", lambda results, num_layers, title, path: path.touch())


@pytest.fixture(autouse=True)
def importable_fakes(monkeypatch):
  """Ray workers import tests.sweep_fakes (the pickled train / eval functions live there)."""
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def _module_cluster():
  yield
  if ray.is_initialized():
    ray.shutdown()


@pytest.fixture
def ray_cluster(_module_cluster, importable_fakes):
  """One local 2-CPU cluster shared by the tests of this module (started at first use). The
  tests that disconnect from it come after every test that uses it, so it starts once."""
  if not ray.is_initialized():
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})


def _ray_config(sweep_dir, layers="0,1", max_retries=2, address="local"):
  config = make_config(sweep_dir, layers=layers)
  config.sweep.launcher = "ray"
  config.sweep.ray.address = address
  config.sweep.ray.max_retries = max_retries
  return config


def _run(config, fake):
  return runner.run_sweep(config, train_fn=fake.train, eval_fn=fake.eval, num_layers=NUM_LAYERS)


def _result_bytes(sweep_dir) -> dict[str, bytes]:
  return {path.parent.name: path.read_bytes()
          for path in sorted((sweep_dir / store.RUNS).glob(f"*/{store.RESULT}"))}


def _still_the_same(sweep_dir, before: dict[str, bytes]) -> bool:
  """Whether every result.json in `before` is still there, byte for byte."""
  now = _result_bytes(sweep_dir)
  return all(now.get(run) == data for run, data in before.items())


def _base_and_full_recorded_here(sweep_dir, layers: str) -> dict[str, bytes]:
  """Runs base and full RL of a sweep with the local launcher, stopped (Ctrl-C) in block 0's
  training, so a Ray sweep resuming it sends only its blocks to the cluster; returns what is
  recorded (`_result_bytes`)."""
  with pytest.raises(KeyboardInterrupt):
    _run(make_config(sweep_dir, layers=layers), FakeRL(BLOCKS, interrupt_on_train_call=2))
  return _result_bytes(sweep_dir)


def test_failed_run_others_recorded_own_cluster_stopped_resume_redoes_it_alone(tmp_path):
  if ray.is_initialized():  # the launcher must start (and stop) its own cluster here
    ray.shutdown()
  children_before = {p.pid for p in psutil.Process().children(recursive=True)}
  fake = FileLoggedRL(BLOCKS, tmp_path, exit_once_on_layer=1)

  def stop_as_ctrl_c(signum, frame):  # `jaxlayer sweep`'s, which ray.init replaced
    raise KeyboardInterrupt

  previous = signal.signal(signal.SIGTERM, stop_as_ctrl_c)
  try:
    with pytest.raises(launchers.RunsFailed, match="1 run failed.*\nlayer01-seed0: "):
      _run(_ray_config(tmp_path / "sweep", max_retries=0), fake)
    assert signal.getsignal(signal.SIGTERM) is stop_as_ctrl_c
  finally:
    signal.signal(signal.SIGTERM, previous)

  assert sorted(fake.calls()) == sorted(["eval base 0", "train full 0", "eval full 0",
                                         "train 0 0", "eval 0 0", "train 1 0"])
  recorded = _result_bytes(tmp_path / "sweep")
  assert sorted(recorded) == ["base-seed0", "full-seed0", "layer00-seed0"]
  assert not (tmp_path / "sweep/sweep.json").exists()
  assert not ray.is_initialized()
  left = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
  _, alive = psutil.wait_procs(left, timeout=30)
  assert alive == [], f"processes left by the Ray launcher: {[p.cmdline() for p in alive]}"

  resumed = FakeRL(BLOCKS)  # the same directory, resumed here with the local launcher
  config = _ray_config(tmp_path / "sweep")
  config.sweep.launcher = "local"
  _run(config, resumed)
  assert resumed.train_calls == [((1,), 0)] and resumed.eval_calls == [((1, 0), 0)]
  assert _still_the_same(tmp_path / "sweep", recorded)
  assert store.read_json(tmp_path / "sweep/runs/layer01-seed0/result.json")["score"] == 26 / 40


def test_a_run_that_raises_is_named_with_its_error_in_one_line(tmp_path, ray_cluster):
  _base_and_full_recorded_here(tmp_path / "sweep", layers="0,1")  # blocks 0 and 1 run on Ray
  fake = FileLoggedRL(BLOCKS, tmp_path, raise_on_layer=1)
  with pytest.raises(launchers.RunsFailed) as failed:
    _run(_ray_config(tmp_path / "sweep"), fake)
  assert str(failed.value).splitlines()[1:] == [f"layer01-seed0: ValueError: {fake.RAISED}"]
  assert fake.calls().count("train 1 0") == 1  # the run's own error is not retried
  assert sorted(_result_bytes(tmp_path / "sweep")) == ["base-seed0", "full-seed0", "layer00-seed0"]


def test_dead_worker_is_retried_and_a_resumed_sweep_runs_only_the_missing_runs(
    tmp_path, ray_cluster):
  sweep_dir = tmp_path / "sweep"
  finished = _base_and_full_recorded_here(sweep_dir, layers="0,1")
  assert sorted(finished) == ["base-seed0", "full-seed0"]

  fake = FileLoggedRL(BLOCKS, tmp_path, exit_once_on_layer=1)
  _run(_ray_config(sweep_dir, max_retries=1), fake)
  # block 1's first worker died and its run was retried; nothing finished ran again
  assert sorted(fake.calls()) == sorted(["train 0 0", "eval 0 0", "train 1 0", "train 1 0",
                                         "eval 1 0"])
  assert (tmp_path / "exited-1-0").exists()
  assert _still_the_same(sweep_dir, finished)
  results = {r["run"]: r for r in store.load_results(sweep_dir)}
  assert sorted(results) == ["base-seed0", "full-seed0", "layer00-seed0", "layer01-seed0"]
  assert (results["layer00-seed0"]["score"], results["layer01-seed0"]["score"]) == (14 / 40,
                                                                                    26 / 40)
  assert len(results["layer01-seed0"]["reward_curve"]) == fake.steps
  assert not (sweep_dir / "runs/layer01-seed0/train/checkpoint").exists()  # (by the driver)
  assert (sweep_dir / "sweep.json").is_file()
  assert ray.is_initialized()  # the caller's cluster is left as it was


@pytest.mark.slow  # six worker processes, ~25 s: the rungs' logic is tested with the local launcher
def test_halving_sends_each_rung_to_the_cluster_in_turn(tmp_path, ray_cluster):
  config = _ray_config(tmp_path / "sweep")  # blocks 0 and 1; train.steps = 60
  config.sweep.halving_steps = "15"
  fake = FileLoggedRL(BLOCKS, tmp_path, rung_correct={("full", 15): 16, (0, 15): 15, (1, 15): 13})
  _run(config, fake)
  trained = [line for line in fake.calls() if line.startswith("train")]
  assert sorted(trained[:3]) == ["train 0 0 @15", "train 1 0 @15", "train full 0 @15"]
  assert sorted(trained[3:]) == ["train 0 0", "train full 0"]  # block 0 led after 15 steps
  assert store.read_json(tmp_path / "sweep/runs/layer01-seed0/result-step15.json")["score"] == (
      13 / 40)
  assert not (tmp_path / "sweep/runs/layer01-seed0/train/checkpoint").exists()


def test_runs_scored_over_tasks_come_back_from_the_cluster_with_every_task(tmp_path,
                                                                           ray_cluster):
  sweep_dir = _run(_ray_config(tmp_path / "sweep", layers="0"), FakeTasksRL(BLOCKS))
  base = store.read_json(sweep_dir / "runs/base-seed0/result.json")
  # alpha: 12 of 40 solved; beta: full credit on 3 of 20 problems, half credit on 3.
  assert base["score"] == (12 / 40 + 4.5 / 20) / 2
  assert {name: task["score"] for name, task in base["tasks"].items()} == {"alpha": 12 / 40,
                                                                          "beta": 4.5 / 20}
  assert store.read_json(sweep_dir / "sweep.json")["metric"] == "mean of alpha pass@1, beta mean@2"


# What a config file may register: (registry, registered_fakes' entry).
FAKE_ENTRIES = ((envs.ENVS, registered_fakes.GuessTheNumber),
                (tasks.TASKS, registered_fakes.GuessTask),
                (algorithms.ALGORITHMS, registered_fakes.GUESS_ALGORITHM),
                (advantages.ADVANTAGE_ESTIMATORS, registered_fakes.guess_advantages))


def register_the_fakes(monkeypatch):
  """Registers registered_fakes' environment, task and algorithm, as a config file would."""
  for registry, entry in FAKE_ENTRIES:
    monkeypatch.setitem(registry, registered_fakes.NAME, entry)


def test_what_the_driver_registered_is_registered_in_a_worker(monkeypatch):
  # An algorithm of the config file's was unknown on the workers: its runs failed there alone.
  register_the_fakes(monkeypatch)
  entries = launchers.pickled_registries(ray)
  for registry, _ in FAKE_ENTRIES:  # a worker: jaxlayer's own entries alone
    monkeypatch.delitem(registry, registered_fakes.NAME)
  launchers.register_entries(entries)
  registered_fakes.check_registered()


def test_what_the_driver_registered_is_known_to_the_workers_of_a_sweep(
    tmp_path, ray_cluster, monkeypatch):
  register_the_fakes(monkeypatch)
  _base_and_full_recorded_here(tmp_path / "sweep", layers="0")  # block 0 trains on Ray
  sweep_dir = _run(_ray_config(tmp_path / "sweep", layers="0"),
                   registered_fakes.RegistryCheckingRL(BLOCKS))
  assert sorted(_result_bytes(sweep_dir)) == ["base-seed0", "full-seed0", "layer00-seed0"]


def test_a_worker_formats_jaxlayers_warnings_in_one_line_as_the_command_does():
  """A Ray worker's warnings reach the driver as the worker prints them: jaxlayer's were in
  Python's format (file, line, code), where `jaxlayer sweep` prints its own in one line."""
  python_format = warnings.formatwarning

  def run(spec):  # what a warning of jaxlayer's looks like in the task
    return {"printed": warnings.formatwarning("S_full == S_base", UndefinedContributionWarning,
                                              __file__, 1)}

  assert launchers._run_task(run, [], store.RunSpec("base", 0)) == {
      "printed": "jaxlayer: warning: S_full == S_base\n"}
  assert warnings.formatwarning is python_format


def test_a_registered_class_whose_module_a_worker_cannot_import_is_named_with_it(
    tmp_path, monkeypatch):
  (tmp_path / "my_envs_of_the_driver.py").write_text("class GuessTheNumber:\n  pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  module = importlib.import_module("my_envs_of_the_driver")
  monkeypatch.setitem(envs.ENVS, "guess", module.GuessTheNumber)
  entries = launchers.pickled_registries(ray)
  # a worker: the module is not on its path
  monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(tmp_path)])
  monkeypatch.delitem(sys.modules, "my_envs_of_the_driver")
  with pytest.raises(ImportError, match=r"^environment 'guess', registered where the sweep was "
                     r"started, cannot be loaded on this Ray worker \(ModuleNotFoundError: No "
                     r"module named 'my_envs_of_the_driver'\): .*PYTHONPATH"):
    launchers.register_entries(entries)


def test_a_sweep_stopped_by_an_error_kills_its_runs_in_flight(tmp_path, ray_cluster):
  sweep_dir = tmp_path / "sweep"
  _run(make_config(sweep_dir, layers="0"), FakeRL(BLOCKS))  # scored on 40 problems
  fake = FileLoggedRL(BLOCKS, tmp_path, hang_on_layer=1, num_problems=50)
  with pytest.raises(ValueError, match="layer02-seed0 was evaluated on 50 problems"):
    _run(_ray_config(sweep_dir, layers="0-2"), fake)  # block 2 ends while block 1 hangs
  hung = psutil.Process(int((tmp_path / "hang.pid").read_text()))
  _, alive = psutil.wait_procs([hung], timeout=30)
  assert alive == [], "the run still in flight when the sweep stopped was not killed"
  assert sorted(_result_bytes(sweep_dir)) == ["base-seed0", "full-seed0", "layer00-seed0"]
  assert store.read_json(sweep_dir / "runs/layer00-seed0/result.json")["num_problems"] == 40


def test_a_run_no_node_can_hold_is_refused_instead_of_waiting_forever(tmp_path, ray_cluster):
  config = _ray_config(tmp_path / "sweep")
  config.sweep.ray.num_gpus = 1.0
  with pytest.raises(ValueError, match="no node of the cluster has that much"):
    _run(config, FakeRL(BLOCKS))
  assert store.load_results(tmp_path / "sweep") == []


def test_each_run_reserves_the_configured_resources():
  config = make_config("unused").sweep
  config.ray.num_cpus, config.ray.num_gpus, config.ray.num_tpus = 4.0, 1.0, 8
  assert launchers.ray_task_options(config.ray) == {
      "num_cpus": 4.0, "num_gpus": 1.0, "resources": {"TPU": 8}, "max_retries": 2, "max_calls": 1}
  config.ray.num_tpus = 0
  assert "resources" not in launchers.ray_task_options(config.ray)


@pytest.mark.parametrize("key, value, message", [
    ("num_gpus", -1.0, "sweep.ray.num_gpus=-1.0: give a number >= 0"),
    ("max_retries", -2, "sweep.ray.max_retries=-2"),
    ("num_cpus", 0.0, "reserves nothing per run")])
def test_bad_ray_settings_fail_before_the_sweep_directory_is_made(tmp_path, key, value, message):
  config = _ray_config(tmp_path / "sweep")
  config.sweep.ray[key] = value
  with pytest.raises(ValueError, match=message):
    _run(config, FakeRL(BLOCKS))
  assert not (tmp_path / "sweep").exists()


def test_unknown_launcher_and_missing_ray_are_clear_errors(tmp_path, monkeypatch):
  config = _ray_config(tmp_path / "sweep")
  config.sweep.launcher = "slurm"
  with pytest.raises(ValueError, match=r"sweep.launcher='slurm': choose one of \['local', 'ray'\]"):
    _run(config, FakeRL(BLOCKS))
  config.sweep.launcher = "ray"
  monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
  with pytest.raises(ValueError, match="needs Ray, which is not installed.*jaxlayer\\[ray\\]"):
    _run(config, FakeRL(BLOCKS))
  assert not (tmp_path / "sweep").exists()


def _closed_port() -> int:
  """A local TCP port that nothing listens on."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.mark.parametrize("address, environment, message", [
    ("127.0.0.1:{port}", "", r"sweep.ray.address='127.0.0.1:{port}': no Ray cluster answers"),
    ("", "127.0.0.1:{port}", r"RAY_ADDRESS='127.0.0.1:{port}': no Ray cluster answers"),
    ("headnode", "", r"sweep.ray.address='headnode': give the head node as HOST:PORT")],
    ids=["address", "RAY_ADDRESS", "no port"])
def test_an_address_no_cluster_answers_at_fails_at_once_before_the_sweep_directory_is_made(
    tmp_path, monkeypatch, address, environment, message):
  if ray.is_initialized():  # connected already, the sweep would not look at the address
    ray.shutdown()
  port = _closed_port()
  monkeypatch.setenv("RAY_ADDRESS", environment.format(port=port))
  start = time.monotonic()
  with pytest.raises(ValueError, match=message.format(port=port)):
    _run(_ray_config(tmp_path / "sweep", address=address.format(port=port)), FakeRL(BLOCKS))
  assert time.monotonic() - start < 10
  assert not (tmp_path / "sweep").exists()


def test_a_cluster_that_refuses_the_driver_is_a_clear_error(tmp_path, monkeypatch):
  if ray.is_initialized():
    ray.shutdown()

  def refuse(**kwargs):  # what ray.init raises when the cluster wants a token the driver lacks
    raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}")

  monkeypatch.setattr(ray, "init", refuse)
  with pytest.raises(ValueError, match=r"sweep.ray.address='auto': could not join a Ray cluster "
                     r"there \(Failed to connect to Ray cluster at auto\).*RAY_AUTH_MODE=token"):
    _run(_ray_config(tmp_path / "sweep", address="auto"), FakeRL(BLOCKS))
  assert store.load_results(tmp_path / "sweep") == []
