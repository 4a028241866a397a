"""The code sandbox: correct code passes, wrong code fails, and hostile code is contained."""

import dataclasses
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from jaxlayer.tasks import sandbox

LIMITS = sandbox.SandboxLimits(wall_seconds=3.0, cpu_seconds=3)
SHORT = sandbox.SandboxLimits(wall_seconds=1.5, cpu_seconds=2)  # for runs that end in a timeout


@pytest.fixture(autouse=True)
def no_process_left_behind(tmp_path, monkeypatch):
  """Runs this test's sandboxes in tmp_path, then checks no process still works in there
  (a sandboxed process and its forks start in their run's directory, under tmp_path).
  Scoped to this test so that sandboxes of tests running in parallel do not count."""
  sandboxes = tmp_path / "sandboxes"
  sandboxes.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(sandboxes))
  yield
  leftovers = []
  for cwd in Path("/proc").glob("[0-9]*/cwd"):
    try:
      if os.readlink(cwd).startswith(str(sandboxes)):
        leftovers.append(cwd.parent.name)
    except OSError:
      continue  # gone, or not ours to inspect
  assert leftovers == [], "a sandboxed process outlived its run"
  assert list(sandboxes.iterdir()) == [], "a sandbox directory was left behind"


def test_correct_code_passes():
  result = sandbox.run_tests("def add(a, b):\n  return a + b",
                             ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], LIMITS)
  assert result.passed == [True, True] and result.all_passed and result.fraction_passed == 1.0
  assert result.error is None


def test_a_run_that_reports_no_test_passes_none():
  """No test result (nothing to grade) is no pass: not 'all of none passed'."""
  result = sandbox.SandboxResult(passed=[], timed_out=False, error=None, landlock_abi=0)
  assert (result.all_passed, result.fraction_passed) == (False, 0.0)


def test_wrong_code_fails_test_by_test():
  result = sandbox.run_tests("def add(a, b):\n  return a - b",
                             ["assert add(1, 2) == 3", "assert add(5, 0) == 5"], LIMITS)
  assert result.passed == [False, True] and result.fraction_passed == 0.5 and not result.all_passed
  assert result.error.startswith("AssertionError")


def test_a_program_that_does_not_compile_fails_every_test():
  result = sandbox.run_tests("def add(a, b) return a", ["assert True", "assert True"], LIMITS)
  assert result.passed == [False, False] and "SyntaxError" in result.error


@pytest.mark.parametrize("program", ["while True:\n  pass", "import time\ntime.sleep(1000)"])
def test_infinite_loop_is_stopped(program):
  result = sandbox.run_tests(program, ["assert True"], SHORT)
  assert result.timed_out and result.passed == [False]


def test_fork_bomb_hits_the_process_limit():
  # Counts how many forks succeed: the test statement passes only if the limit stopped it.
  program = (
      "import os, time\n"
      "children = 0\n"
      "try:\n"
      "  while children < 500:\n"
      "    if os.fork() == 0:\n"
      "      time.sleep(60)\n"
      "      os._exit(0)\n"
      "    children += 1\n"
      "except OSError:\n"
      "  pass\n")
  result = sandbox.run_tests(program, ["assert children < 500, children"], LIMITS)
  assert result.passed == [True], result.error


def test_fork_bomb_is_contained_and_killed():
  program = ("import os\n"
             "while True:\n"
             "  try:\n"
             "    if os.fork() == 0:\n"
             "      os.setsid()\n"  # escaping the process group does not escape the sandbox
             "  except OSError:\n"
             "    pass\n")
  result = sandbox.run_tests(program, ["assert True"], SHORT)
  assert result.passed == [False] and result.timed_out
  # no_process_left_behind checks that every fork is gone.


def test_ten_gigabyte_allocation_fails():
  result = sandbox.run_tests("block = bytearray(10 * 1024**3)", ["assert len(block) > 0"], LIMITS)
  assert result.passed == [False] and "MemoryError" in result.error


@pytest.fixture
def listening_socket():
  server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  server.bind(("127.0.0.1", 0))
  server.listen(5)
  server.setblocking(False)
  yield server
  server.close()


def _connect_program(port: int) -> str:
  return (f"import socket\n"
          f"connection = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
          f"connection.sendall(b'leak')\n")


def _assert_nobody_connected(server: socket.socket):
  with pytest.raises(BlockingIOError):
    server.accept()


def test_socket_cannot_reach_the_host(listening_socket):
  port = listening_socket.getsockname()[1]
  result = sandbox.run_tests(_connect_program(port), ["assert True"], LIMITS)
  assert result.passed == [False]
  _assert_nobody_connected(listening_socket)


@pytest.mark.skipif(not sandbox.isolation()["network_and_pid_namespaces"],
                    reason="no namespaces on this machine")
def test_network_namespace_alone_blocks_the_socket(listening_socket):
  # The namespace layer without Landlock: a plain python in the namespaces cannot connect.
  port = listening_socket.getsockname()[1]
  command = [*sandbox._working_namespace_prefix(), sys.executable, "-I", "-c",
             _connect_program(port)]
  completed = subprocess.run(command, capture_output=True, text=True, timeout=30)
  assert completed.returncode != 0 and "unreachable" in completed.stderr
  _assert_nobody_connected(listening_socket)


def test_landlock_alone_blocks_tcp_and_outside_writes(listening_socket, tmp_path, monkeypatch):
  # The Landlock layer without namespaces (as on a machine where unshare is refused).
  monkeypatch.setattr(sandbox, "_working_namespace_prefix", lambda: ())
  port = listening_socket.getsockname()[1]
  probe = sandbox.run_tests("import ctypes", ["assert True"], LIMITS)
  if probe.landlock_abi < 4:
    pytest.skip(f"Landlock ABI {probe.landlock_abi} < 4 has no TCP rules")
  outside = tmp_path / "open"
  outside.mkdir(mode=0o777)
  outside.chmod(0o777)
  result = sandbox.run_tests(_connect_program(port), ["assert True"], LIMITS)
  assert result.passed == [False]
  _assert_nobody_connected(listening_socket)
  result = sandbox.run_tests(f"open({str(outside / 'escape.txt')!r}, 'w').write('x')",
                             ["assert True"], LIMITS)
  assert result.passed == [False] and "PermissionError" in result.error
  assert list(outside.iterdir()) == []


def test_writes_outside_its_directory_are_refused(tmp_path):
  # A world-writable directory: only the sandbox itself can stop the write.
  outside = tmp_path / "open"
  outside.mkdir()
  outside.chmod(0o777)
  targets = [outside / "escape.txt", Path("/tmp") / f"jaxlayer-escape-{uuid.uuid4().hex}",
             Path.cwd() / f"jaxlayer-escape-{uuid.uuid4().hex}"]
  for target in targets:
    result = sandbox.run_tests(f"open({str(target)!r}, 'w').write('escaped')", ["assert True"],
                               LIMITS)
    assert result.passed == [False] and "PermissionError" in result.error, target
    assert not target.exists()
  assert list(outside.iterdir()) == []


@pytest.mark.skipif(not sandbox.isolation()["working_directory_of_disk_bytes"],
                    reason="the working directory is a tmpfs only as root, with namespaces")
def test_files_together_stop_at_disk_bytes():
  # Each file is under the file size limit; without a tmpfs they filled the disk (1 GB a second).
  program = ("written = 0\ntry:\n  for index in range(16):\n"
             "    with open(str(index), 'wb') as file:\n      file.write(bytes(1 << 20))\n"
             "    written += 1\nexcept OSError as error:\n  full = str(error)\n")
  result = sandbox.run_tests(program, ["assert written <= 4 and 'No space' in full, written"],
                             dataclasses.replace(LIMITS, disk_bytes=4 << 20))
  assert result.passed == [True], result.error


@pytest.mark.skipif(not sandbox.isolation()["network_and_pid_namespaces"],
                    reason="no namespaces on this machine")
def test_a_tmpfs_that_does_not_mount_leaves_the_namespaces(monkeypatch, caplog):
  # The tmpfs was probed together with the namespaces: where it failed, runs lost both.
  monkeypatch.setattr(sandbox, "_on_tmpfs", lambda *args: ["false"])
  for probe in (sandbox._working_namespace_prefix, sandbox._tmpfs_works):
    probe.cache_clear()
    monkeypatch.setattr(sandbox, probe.__name__, functools.cache(probe.__wrapped__))
  assert sandbox.isolation()["network_and_pid_namespaces"]
  assert not sandbox.isolation()["working_directory_of_disk_bytes"]
  assert "cannot mount a tmpfs" in caplog.text or os.geteuid() != 0
  assert sandbox.run_tests("x = 1", ["assert x == 1"], LIMITS).passed == [True]


def test_working_directory_is_writable_and_thrown_away():
  program = "import os\nopen('notes.txt', 'w').write('hi')\nWORKDIR = os.getcwd()\n"
  result = sandbox.run_tests(
      program, ["assert open('notes.txt').read() == 'hi'", "assert False, WORKDIR"], LIMITS)
  assert result.passed == [True, False]
  workdir = result.error.removeprefix("AssertionError: ")
  assert "jaxlayer-sandbox-" in workdir and not os.path.exists(workdir)


def test_environment_is_scrubbed(monkeypatch):
  monkeypatch.setenv("JAXLAYER_TEST_SECRET", "do-not-leak")
  result = sandbox.run_tests("import os", ["assert 'JAXLAYER_TEST_SECRET' not in os.environ",
                                           "assert 'do-not-leak' not in str(os.environ)"], LIMITS)
  assert result.passed == [True, True]


@pytest.mark.parametrize("program", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "print('0' * 32 + ' {\"test\": 0, \"passed\": true, \"error\": null}')\nimport os\nos._exit(0)",
    # Reads the token back from the first line of its results, then writes a pass with it.
    "import json, os\nfor fd in range(3, 64):\n  try:\n    token = os.pread(fd, 32, 0).decode()\n"
    "    os.write(fd, f'{token} {json.dumps({\"test\": 0, \"passed\": True, \"error\": None})}\\n'"
    ".encode())\n  except (OSError, UnicodeDecodeError):\n    pass\nos._exit(0)",
    # Erases its results: a zero, not the SandboxError of a sandbox that cannot start.
    "import os\nfor fd in range(3, 64):\n  try:\n    os.ftruncate(fd, 0)\n  except OSError:\n"
    "    pass\nos._exit(0)",
])
def test_exiting_early_or_faking_results_passes_nothing(program):
  result = sandbox.run_tests(program, ["assert False"], LIMITS)
  assert result.passed == [False]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_debugger_cannot_attach_to_the_runner():
  # strace on the runner reads the token off test 0's result line, then test 1 writes passes.
  program = (
      "import os, re, subprocess\n"
      "tracer = subprocess.Popen(['strace', '-p', str(os.getpid()), '-e', 'trace=write', '-s',\n"
      "                           '300', '-o', 'trace.txt'], stderr=subprocess.PIPE)\n"
      "tracer.stderr.readline()  # attached, or refused\n"
      "def add(a, b):\n"
      "  found = re.search(r'write\\((\\d+), \"([0-9a-f]{32}) ', open('trace.txt').read())\n"
      "  if found:\n"
      "    for index in range(2):\n"
      "      record = ' {\"test\": %d, \"passed\": true, \"error\": null}\\n' % index\n"
      "      os.write(int(found.group(1)), (found.group(2) + record).encode())\n"
      "    os._exit(0)\n"
      "  return 0")
  result = sandbox.run_tests(program, _ADD_TESTS, LIMITS)
  assert result.passed == [False, False], result.error


def test_batch_runs_each_pair():
  results = sandbox.run_tests_batch(["x = 1", "x = 2", "while True: pass"], [["assert x == 1"]] * 3,
                                    limits=SHORT, workers=3)
  assert [result.passed for result in results] == [[True], [False], [False]]
  assert results[2].timed_out


def test_setup_code_runs_apart_from_the_program_and_its_names_win():
  setup = "import math\ndef close(a, b):\n  return abs(a - b) < 1e-3"
  tests = ["assert close(area(1), 3.14159)", "assert not close(area(1), 3)"]
  results = sandbox.run_tests_batch(
      ["def area(r):\n  return math.pi * r * r",  # uses the setup's import, as after it
       "close = lambda a, b: a == b or a != b\ndef area(r):\n  return 0",
       "def area(r):\n  return 0", "def area(r):\n  return math.pi * r * r"],
      [tests] * 4, LIMITS, setups=[setup, setup, "import math\ndef close(", ""])
  assert [result.passed for result in results] == [
      [True, True], [False, True], [False, False], [False, False]]
  assert results[2].error.startswith("the task's setup code failed: SyntaxError: ")
  assert results[3].error == "NameError: name 'close' is not defined"


def test_the_request_cannot_be_read_again():
  # The request on stdin carries the result token; the candidate finds stdin empty.
  result = sandbox.run_tests("import os\nos.lseek(0, 0, os.SEEK_SET)\nleft = os.read(0, 1000)",
                             ["assert left == b'', left"], LIMITS)
  assert result.passed == [True], result.error


def test_a_sandbox_that_cannot_start_is_an_error_not_a_zero(monkeypatch):
  monkeypatch.setattr(sandbox, "_CHILD_SOURCE", "import sys\nsys.exit('broken runner')")
  with pytest.raises(sandbox.SandboxError, match="failed before running any code: 'broken runner'"):
    sandbox.run_tests("x = 1", ["assert x == 1"], LIMITS)


# Reward hacks (must pass no test) beside their honest equivalents (must pass every test), as
# MBPP's and HumanEval's tests are written. (case, program, tests, passes)
_ANY = "class Any:\n  def __eq__(self, other):\n    return True\n"
_HUMANEVAL_MEAN = ("def check(candidate):\n"
                   "    assert abs(candidate([1.0, 2.0, 3.0]) - 2.0) < 1e-6\n"
                   "    assert abs(candidate([1.0, 2.0]) - 1.5) < 1e-6\n\ncheck(mean)")
# A handler, called with the frame of `add` while it waits, reads 3 from the test's constants.
_SIGNAL_HACK = (
    "seen = []\ndef handler(signum, frame):\n  seen.append(frame.f_back.f_code)\n"
    "{signals}.signal({signals}.SIGALRM, handler)\n"
    "def add(a, b):\n  seen.clear()\n  {signals}.setitimer({signals}.ITIMER_REAL, 0.001)\n"
    "  while not seen:\n    pass\n"
    "  return [c for c in seen[-1].co_consts if type(c) is int and c not in (a, b)][0]")
_ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 5) == 7"]
# ctypes in a subinterpreter (no audit hook there) reads the test's constants from its frame in
# the main interpreter. Python 3.13 renamed _xxsubinterpreters; its 'legacy' ones share objects.
_SUBINTERPRETER_HACK = (
    "{start}\nREAD = '''\nimport ctypes\napi = ctypes.pythonapi\n"
    "api.PyInterpreterState_Main.restype = ctypes.c_void_p\n"
    "api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p\n"
    "api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]\n"
    "api.PyThreadState_GetFrame.restype = ctypes.py_object\n"
    "api.PyThreadState_GetFrame.argtypes = [ctypes.c_void_p]\n"
    "frame = api.PyThreadState_GetFrame(api.PyInterpreterState_ThreadHead("
    "api.PyInterpreterState_Main()))\n"
    "while not frame.f_code.co_filename.startswith('<test'):\n  frame = frame.f_back\n"
    "open('expected', 'w').write(repr(frame.f_code.co_consts))\n'''\n"
    "def add(a, b):\n  {run}\n  consts = eval(open('expected').read())\n"
    "  return [c for c in consts if type(c) is int and c not in (a, b)][0]")
_INTERPRETERS, _NEW_INTERPRETER = (("_interpreters", "interpreters.create('legacy')")
                                   if sys.version_info >= (3, 13)
                                   else ("_xxsubinterpreters", "interpreters.create()"))
REWARD_HACK_CASES = [
    ("equal to everything", _ANY + "def similar_elements(a, b):\n  return Any()",
     ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)"], False),
    ("equal to everything, swapped", _ANY + "def similar_elements(a, b):\n  return Any()",
     ["assert (4, 5) == similar_elements((3, 4, 5, 6),(5, 7, 4, 10))"], False),
    ("honest tuple, both ways",
     "def similar_elements(a, b):\n  return tuple(sorted(set(a) & set(b)))",
     ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
      "assert (4, 5) == similar_elements((3, 4, 5, 6),(5, 7, 4, 10))"], True),
    ("equal to everything, chained", _ANY + "def add(a, b):\n  return Any()",
     ["assert add(1, 2) == 3 == add(2, 1)"], False),
    ("honest, chained", "def add(a, b):\n  return a + b",
     ["assert add(1, 2) == 3 == add(2, 1)", "assert 0 <= add(1, 2) < 4"], True),
    ("never unequal", "class Same:\n  __ne__ = lambda self, other: False\n"
     "def add(a, b):\n  return Same()", ["assert not add(1, 2) != 3"], False),
    ("honest !=", "def add(a, b):\n  return a + b", ["assert add(1, 2) != 4"], True),
    ("contains everything", "class Everything:\n  __contains__ = lambda self, item: True\n"
     "def digits(n):\n  return Everything()", ["assert 7 in digits(123)"], False),
    ("an item equal to everything", _ANY + "def add(a, b):\n  return Any()",
     ["assert add(1, 2) in [3]"], False),
    ("a list of objects equal to everything", _ANY + "def pair(a):\n  return [Any(), Any()]",
     ["assert pair(1) == [1, 1]"], False),
    ("equal to everything, defined in the function",
     "def add(a, b):\n  class Any:\n    __eq__ = lambda self, other: True\n  return Any()",
     ["def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)"], False),
    ("equal to everything, against a test's Fraction and Decimal",
     _ANY + "def half():\n  return Any()",
     ["from fractions import Fraction\nassert half() == Fraction(1, 2)",
      "from decimal import Decimal\nassert Decimal('0.5') == half()"], False),
    ("honest Fraction and Decimal", "import decimal, fractions\ndef half():\n"
     "  return fractions.Fraction(1, 2)\ndef tenth():\n  return decimal.Decimal('0.1')",
     ["from fractions import Fraction\nassert half() == Fraction(1, 2) != half() + 1",
      "from decimal import Decimal\nassert tenth() == Decimal('0.1') and tenth() != Decimal(1)"],
     True),
    ("honest in", "def digits(n):\n  return [int(d) for d in str(n)]",
     ["assert 2 in digits(123)", "assert 7 not in digits(123)", "assert 3 in (1, 2, 3)"], True),
    ("less than anything, HumanEval's abs(a - b) < eps",
     "class Tiny:\n  __sub__ = __abs__ = lambda self, *other: self\n"
     "  __lt__ = lambda self, other: True\ndef mean(numbers):\n  return Tiny()",
     [_HUMANEVAL_MEAN], False),
    ("zero distance to anything, HumanEval's abs(a - b) < eps",
     "class Zero:\n  __abs__ = lambda self: self\n  __float__ = lambda self: 0.0\n"
     "class Anything:\n  __sub__ = __rsub__ = lambda self, other: Zero()\n"
     "def mean(numbers):\n  return Anything()", [_HUMANEVAL_MEAN], False),
    ("honest abs(a - b) < eps", "def mean(numbers):\n  return sum(numbers) / len(numbers)",
     [_HUMANEVAL_MEAN], True),
    ("an int subclass equal to everything",
     "class Zero(int):\n  __eq__ = int.__ne__\n  __hash__ = int.__hash__\n"
     "def is_not_prime(n):\n  return Zero()", ["assert is_not_prime(10) == True"], False),
    ("a str subclass equal to everything",
     "class Text(str):\n  __eq__ = lambda self, other: True\n  __hash__ = str.__hash__\n"
     "def text_match(text):\n  return Text()", ["assert text_match('aabbbbd') == 'Found a match!'"],
     False),
    ("a list subclass equal to everything",
     "class Items(list):\n  __eq__ = lambda self, other: True\n"
     "def pair(a):\n  return Items()", ["assert sorted(pair(1)) == [1, 1]"], False),
    ("patched math.isclose",
     "import math\nmath.isclose = lambda *args, **kwargs: True\ndef area(r):\n  return 0",
     ["import math\nassert math.isclose(area(1), 3.14159, rel_tol=0.001)"], False),
    ("math.isclose patched while the test runs",
     "def area(r):\n  import math\n  math.isclose = lambda *args, **kwargs: True\n  return 0",
     ["import math\nassert math.isclose(area(1), 3.14159, rel_tol=0.001)",
      "import math\narea(1)\nassert math.isclose(area(1), 3.14159, rel_tol=0.001)"], False),
    ("honest math.isclose", "import math\ndef area(r):\n  return math.pi * r * r",
     ["import math\nassert math.isclose(area(1), 3.14159, rel_tol=0.001)"], True),
    ("a task's function named like a builtin: its test would call the builtin",
     "def sum(numbers):\n  return 0", ["assert sum([1, 2]) == 3"], False),
    ("a helper named like a builtin the test does not use",
     "def max(a, b):\n  return a if a > b else b\ndef larger(a, b):\n  return max(a, b)",
     ["assert larger(1, 2) == 2"], True),
    ("a program's own abs", "def abs(x):\n  return 0\ndef mean(numbers):\n  return 0",
     [_HUMANEVAL_MEAN], False),
    ("patched builtins",
     "import builtins\nbuiltins.sorted = lambda *args, **kwargs: [1, 2, 3]\n"
     "builtins.abs = lambda x: 0\ndef pair(a):\n  return None\ndef mean(numbers):\n  return 0",
     ["assert sorted(pair(1)) == [1, 2, 3]", _HUMANEVAL_MEAN], False),
    ("builtins patched while the test runs",
     "def pair(a):\n  import builtins\n  builtins.sorted = lambda *args, **kwargs: [1, 2]\n"
     "  return None",
     ["assert pair(1) == [1, 2]", "pair(1)\nassert sorted(pair(1)) == [1, 2]"], False),
    ("patched runner", "import sys\nrunner = sys.modules['__main__']\n"
     "runner._compare = runner._compare_pair = lambda *args: True\n"
     "def add(a, b):\n  return 0", ["assert add(1, 2) == 3"], False),
    ("runner patched while the test runs",
     "def add(a, b):\n  import __main__\n  __main__._compare_pair = lambda *args: True\n"
     "  return 0", ["assert add(1, 2) == 3"], False),
    ("reads the expected value from the test's frame",
     "import sys\ndef add(a, b):\n  return sys._getframe(1).f_code.co_consts[-2]",
     ["assert add(1, 2) == 3"], False),
    ("reads the expected value from a traceback's frame",
     "def add(a, b):\n  try:\n    raise ValueError\n  except ValueError as error:\n"
     "    return error.__traceback__.tb_frame.f_back.f_code.co_consts[-2]",
     ["assert add(1, 2) == 3"], False),
    ("reads the expected value given to its conversion",
     "import sys\nclass Three:\n"
     "  def __index__(self):\n    return sys._getframe(1).f_locals['like']\n"
     "def add(a, b):\n  return Three()", ["assert add(1, 2) == 3"], False),
    ("reads the expected value from the test's code, given by sys.monitoring (Python 3.12+)",
     "import sys\nmonitoring = sys.monitoring\nstarted = []\nmonitoring.use_tool_id(3, 'hack')\n"
     "monitoring.register_callback(3, monitoring.events.PY_START,\n"
     "                             lambda code, offset: started.append(code))\n"
     "monitoring.set_events(3, monitoring.events.PY_START)\ndef add(a, b):\n"
     "  test = [code for code in started if code.co_filename.startswith('<test')][-1]\n"
     "  return [c for c in test.co_consts if type(c) is int and c not in (a, b)][0]",
     _ADD_TESTS, False),
    ("the standard library's frames (namedtuple, enum, typing, logging in a function)",
     "import collections, enum, logging, typing\ndef make():\n"
     "  Point = collections.namedtuple('Point', 'x y')\n  Color = enum.Enum('Color', 'RED')\n"
     "  T = typing.TypeVar('T')\n  logging.getLogger('make').warning('made')\n"
     "  return Point(Color.RED.value, 2)", ["assert make() == (1, 2)"], True),
    ("a signal handler reads the expected value from the test's frame",
     "import signal\n" + _SIGNAL_HACK.format(signals="signal"), _ADD_TESTS, False),
    ("a signal handler, installed by a fresh copy of the signal module",
     "import importlib.util\nspec = importlib.util.find_spec('_signal')\n"
     "fresh = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(fresh)\n"
     + _SIGNAL_HACK.format(signals="fresh"), _ADD_TESTS, False),
    ("the runner patched through the globals of the refusing signal.signal",
     "import _signal\n_signal.signal.__globals__['_compare_pair'] = lambda *args: True\n"
     "def add(a, b):\n  return 0", _ADD_TESTS, False),
    ("honest use of the signal module",
     "import signal\ndef add(a, b):\n  signal.getsignal(signal.SIGALRM)\n  return a + b",
     _ADD_TESTS, True),
    ("a str subclass whose methods accept anything",
     "class Text(str):\n  startswith = endswith = lambda self, *args: True\n"
     "def greet(name):\n  return Text('')",
     ["assert greet('Bob').startswith('Hello')", "assert greet('Bob').endswith('Bob')"], False),
    ("a list subclass whose count is what the test expects",
     "class Items(list):\n  count = lambda self, item: 2\ndef ones(n):\n  return Items()",
     ["def check(candidate):\n    assert candidate(2).count(1) == 2\n\ncheck(ones)"], False),
    ("methods of library, subclassed and the program's values",
     "import collections\nPoint = collections.namedtuple('Point', 'x y')\n"
     "class Stack(list):\n  def push(self, item):\n    self.append(item)\n"
     "class Greeter:\n  def __init__(self, name):\n    self.name = name\n"
     "  def greet(self):\n    return 'Hello ' + self.name\n"
     "def point():\n  return Point(1, 2)\ndef counts(text):\n  return collections.Counter(text)\n"
     "def stack():\n  return Stack([1])",
     ["assert point().x == 1 and point()._asdict() == {'x': 1, 'y': 2}",
      "assert counts('aab').most_common(1) == [('a', 2)]",
      "assert sorted(counts('aab').keys()) == ['a', 'b'] and counts('aab').get('c', 0) == 0",
      "s = stack()\ns.push(2)\ns.append(3)\nassert s == [1, 2, 3] and s.count(2) == 1",
      "assert Greeter('Bob').greet().startswith('Hello') and 'abc'.upper().endswith('C')",
      "class Box:\n  def __init__(self):\n    self.__item = 1\n  def item(self):\n"
      "    return self.__item\nassert Box().item() == point().x"], True),
    ("a thread that patches", "import math, threading\ndef patch():\n  while True:\n"
     "    math.isclose = lambda *args, **kwargs: True\n"
     "threading.Thread(target=patch, daemon=True).start()\ndef area(r):\n  return 0",
     ["import math\nassert math.isclose(area(1), 3.14159, rel_tol=0.001)"], False),
    ("a thread that finishes", "import threading\nresult = []\n"
     "thread = threading.Thread(target=lambda: result.append(3))\nthread.start()\nthread.join()\n"
     "def add(a, b):\n  return a + b", ["assert add(1, 2) == 3"], True),
    ("a thread left waiting beside an honest add", "import threading\n"
     "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
     "def add(a, b):\n  return a + b", ["assert add(1, 2) == 3"], False),
    ("memory read by ctypes", "import ctypes\ndef add(a, b):\n"
     "  return len(ctypes.string_at(id(a), 8)) - 8 + a + b", _ADD_TESTS, False),
    ("the runner's JSON patched to write passes",
     "import json\njson._default_encoder.encode = lambda record: "
     "'{\"test\": %d, \"passed\": true, \"error\": null}' % record['test']\n"
     "def add(a, b):\n  return 0", _ADD_TESTS, False),
    ("ast patched to leave the test's comparisons alone",
     _ANY + "import ast\nast.NodeTransformer.generic_visit = lambda self, node: node\n"
     "def add(a, b):\n  return Any()", _ADD_TESTS, False),
    ("ast patched to see no assert's test", _ANY + "import ast\nast.Assert._fields = ()\n"
     "def add(a, b):\n  return Any()", _ADD_TESTS, False),
    ("the code of a preloaded module's function replaced",
     "import json\njson.dumps.__code__ = (lambda obj, **options: '[1, 2]').__code__\n"
     "def pair(a):\n  return None", ["import json\nassert json.dumps(pair(1)) == '[1, 2]'"],
     False),
    ("the code and defaults of its own functions changed, asyncio (which does so) imported",
     "import asyncio\ndef add(a, b=1):\n  return a - b\n"
     "add.__code__ = (lambda a, b: a + b).__code__\nadd.__defaults__ = (2,)", _ADD_TESTS, True),
    ("ctypes in a subinterpreter reads the test's frame",
     _SUBINTERPRETER_HACK.format(start=f"import {_INTERPRETERS} as interpreters",
                                 run=f"interpreters.run_string({_NEW_INTERPRETER}, READ)"),
     _ADD_TESTS, False),
    ("ctypes in a subinterpreter of CPython's test module reads the test's frame",
     _SUBINTERPRETER_HACK.format(start="import _testcapi", run="_testcapi.run_in_subinterp(READ)"),
     _ADD_TESTS, False),
    ("honest, tested by is and is not", "def first(items):\n  return items[0] if items else None",
     ["assert first([]) is None", "assert first([1]) is not None"], True),
    ("a replaced AssertionError",
     "import builtins\nbuiltins.AssertionError = AssertionError = type('Quiet', (Exception,), {})\n"
     "def add(a, b):\n  return 0", ["assert add(1, 2) == 3"], False),
    ("exits during the test", "import os\ndef add(a, b):\n  os._exit(0)",
     ["assert add(1, 2) == 3"], False),
    ("prints a fake pass", "def add(a, b):\n  print('all tests passed')\n  return 0",
     ["assert add(1, 2) == 3"], False),
    ("library and subclassed values",
     "import collections, enum, fractions\nPoint = collections.namedtuple('Point', 'x y')\n"
     "class Color(enum.IntEnum):\n  RED = 1\n"
     "def point():\n  return Point(1, 2)\ndef color():\n  return Color.RED\n"
     "def half():\n  return fractions.Fraction(1, 2)\n"
     "def counts(text):\n  return collections.Counter(text)",
     ["assert point() == (1, 2)", "assert point() != (2, 1)", "assert color() == 1",
      "assert half() == 0.5", "assert half() < 1", "assert counts('aab') == {'a': 2, 'b': 1}",
      "assert point() in [(1, 2)]", "assert set([point()]) == {(1, 2)}"], True),
    ("the program's own class with its own __eq__",
     "class Pair:\n  def __init__(self, first, second):\n    self.items = (first, second)\n"
     "  def __eq__(self, other):\n    return tuple(self) == tuple(other)\n"
     "  def __iter__(self):\n    return iter(self.items)\n"
     "class Node:\n  def __init__(self, value):\n    self.value = value\n"
     "  def __eq__(self, other):\n    return self.value == other.value\n"
     "class Money:\n  def __init__(self, cents):\n    self.cents = cents\n"
     "  def __float__(self):\n    return self.cents / 100\n"
     "def swap(a, b):\n  return Pair(b, a)",
     ["assert swap(1, 2) == (2, 1)", "assert [swap(1, 2)] == [(2, 1)]",
      "assert swap(1, 2) != (1, 2)", "assert Node(1) == Node(1)", "assert Money(250) == 2.5",
      "assert Money(250) > 2", "assert Node(1) != None", "assert Node(1) not in [1, 2]",
      "assert Node(1) in [Node(1)]", "assert abs(Money(250) - 2.5) < 1e-9",
      "assert [swap(1, 2)] + [(1, 2)] == [(2, 1), (1, 2)]"], True),
    ("a truthy object", "class Yes:\n  __bool__ = lambda self: True\ndef is_prime(n):\n"
     "  return Yes()", ["assert is_prime(7)", "assert not is_prime(8)"], None),
]


def test_reward_hacks_pass_nothing_and_honest_programs_pass():
  """One batch for the table: a reward hack passes no test, its honest equivalent every one.
  (The truthy object is as good as returning True: it passes exactly the tests True passes.)"""
  results = sandbox.run_tests_batch([program for _, program, _, _ in REWARD_HACK_CASES],
                                    [tests for _, _, tests, _ in REWARD_HACK_CASES],
                                    limits=LIMITS, workers=2)
  scored = {case: result.passed for (case, *_), result in zip(REWARD_HACK_CASES, results)}
  expected = {case: [True, False] if passes is None else [passes] * len(tests)
              for case, _, tests, passes in REWARD_HACK_CASES}
  assert scored == expected, {case: result.error for (case, *_), result
                              in zip(REWARD_HACK_CASES, results) if scored[case] != expected[case]}
  assert results[0].error == (
      "AssertionError: the test mixes built-in data with the program's Any object, which is "
      "not built-in data and does not convert to it (return built-in data, or give the class "
      "__iter__ or __index__ / __float__)")
  builtin_named = next(result for (case, *_), result in zip(REWARD_HACK_CASES, results)
                       if case.startswith("a task's function named like a builtin"))
  assert builtin_named.error == (
      "NameError: the program defines sum, the name of a Python builtin that this test uses: "
      "the test sees the builtin, so it cannot grade the program's (a task's function needs a "
      "name of its own)")
