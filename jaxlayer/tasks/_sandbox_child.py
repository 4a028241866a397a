"""The program the sandbox runs in its child process (`python -I -c <this file's text>`).

Standard library only: it is not imported as part of jaxlayer. It reads one JSON
request from stdin, locks itself down (resource limits, Landlock), then runs the
candidate program and each test in turn, and writes one result line per test to
the stdout it was started with. Everything the candidate prints goes to stderr.

Result lines carry a random token sent by the parent, so a candidate that exits
early or prints fake results cannot pass a test it did not run. A test's `==`, `!=`,
`in` and `not in` between built-in data (the expected value) and a value whose class
takes those comparisons from the candidate's own code (an object equal to everything)
fails the test. (The tests run in the candidate's interpreter: code that inspects the
runner's frames could still forge results, and chained comparisons such as `a == b == c`
are not checked. This is a guard against accidents and cheap reward hacks, not a proof.)
"""

import ast
import ctypes
import json
import operator
import os
import platform
import resource
import sys

# Landlock (Linux >= 5.13): the same syscall numbers on x86_64 and arm64.
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
# Filesystem rights, one bit each, by the Landlock ABI version that introduced them.
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1}  # ABI 1: bits 0-12, 2: + refer
_FS_RIGHTS_LATEST = (1 << 15) - 1  # ABI 3 on: + truncate (later device ioctl stays allowed)
_FS_READ_RIGHTS = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FS_TRUNCATE = 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
  _fields_ = [
      ("handled_access_fs", ctypes.c_uint64),
      ("handled_access_net", ctypes.c_uint64),
      ("scoped", ctypes.c_uint64),
  ]


class _PathBeneathAttr(ctypes.Structure):
  _pack_ = 1
  _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(workdir, read_paths):
  """Confine this process with Landlock: read and execute only under read_paths and
  workdir, write only under workdir (and /dev/null), no TCP bind/connect, no signals
  or abstract unix sockets out of the sandbox.

  Returns the Landlock ABI version applied, or 0 where the kernel has no Landlock.
  """
  if platform.machine() not in ("x86_64", "aarch64"):
    return 0
  libc = ctypes.CDLL(None, use_errno=True)
  libc.syscall.restype = ctypes.c_long
  abi = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                     _LANDLOCK_CREATE_RULESET_VERSION)
  if abi < 1:
    return 0
  all_fs_rights = _FS_RIGHTS_BY_ABI.get(abi, _FS_RIGHTS_LATEST)
  attr = _RulesetAttr(handled_access_fs=all_fs_rights)
  size = 8  # ABI 1-3 know only handled_access_fs
  if abi >= 4:
    attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
    size = 16
  if abi >= 6:
    attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    size = 24
  ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
  if ruleset < 0:
    raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
  file_write_rights = _FS_WRITE_FILE | (all_fs_rights & _FS_TRUNCATE)
  rules = [(path, _FS_READ_RIGHTS) for path in read_paths]
  rules += [(workdir, all_fs_rights), ("/dev/null", _FS_READ_FILE | file_write_rights)]
  for path, rights in rules:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    if not os.path.isdir(path):
      rights &= _FS_EXECUTE | _FS_READ_FILE | file_write_rights  # file rules take file rights only
    rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
    if libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.byref(rule), 0) != 0:
      raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    os.close(fd)
  if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
  if libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
    raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
  os.close(ruleset)
  return abi


def _set_limits(limits):
  for name, value in (
      ("RLIMIT_CPU", limits["cpu_seconds"]),
      ("RLIMIT_AS", limits["memory_bytes"]),
      ("RLIMIT_NPROC", limits["max_processes"]),
      ("RLIMIT_FSIZE", limits["file_size_bytes"]),
      ("RLIMIT_NOFILE", limits["open_files"]),
      ("RLIMIT_CORE", 0),
  ):
    resource.setrlimit(getattr(resource, name), (value, value))


# What a test's comparisons may hold on the expected side: built-in data, exact types only.
_BUILTIN_DATA_TYPES = frozenset(
    {bool, int, float, complex, str, bytes, type(None), list, tuple, set, frozenset, dict})
_SEQUENCE_TYPES = (list, tuple, set, frozenset)
# The methods `==`, `!=` and `in` answer with; the candidate's code must not supply them.
_COMPARISON_METHODS = ("__eq__", "__ne__", "__contains__", "__iter__", "__len__", "__getitem__")
_MAX_VALUES_CHECKED = 1_000_000
_COMPARISONS = {"==": operator.eq, "!=": operator.ne,
                "in": lambda item, container: item in container,
                "not in": lambda item, container: item not in container}
_COMPARISON_OF_NODE = {ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in"}
_CHECKED_COMPARE = "__jaxlayer_checked_compare__"
# Read through `type` itself, so that a class cannot answer with a fake MRO or __dict__.
_mro_of = type.__dict__["__mro__"].__get__
_dict_of = type.__dict__["__dict__"].__get__


def _values(root):
  """root and the values inside its lists, tuples, sets and dicts (up to
  _MAX_VALUES_CHECKED), read with the built-in types' methods, never the value's own."""
  pending, seen = [root], set()
  while pending and len(seen) < _MAX_VALUES_CHECKED:
    value = pending.pop()
    if id(value) in seen:
      continue
    seen.add(id(value))
    yield value
    mro = _mro_of(type(value))
    if dict in mro:
      pending.extend(dict.keys(value))
      pending.extend(dict.values(value))
    else:
      sequence_type = next((t for t in _SEQUENCE_TYPES if t in mro), None)
      if sequence_type is not None:
        pending.extend(sequence_type.__iter__(value))


def _is_builtin_data(value):
  return all(type(v) in _BUILTIN_DATA_TYPES for v in _values(value))


def _method_from_candidate(cls, name):
  """Whether the method `name` of cls comes from code without a source file (the
  candidate's), or is a built-in method of another name or class (`__eq__ = int.__ne__`)."""
  for klass in _mro_of(cls):
    attributes = _dict_of(klass)
    if name not in attributes:
      continue
    method = attributes[name]
    if method is None:  # "unhashable"-style opt-outs make the comparison raise
      return False
    code = getattr(method, "__code__", None)
    if code is not None:
      filename = code.co_filename
      return not (os.path.isabs(filename) or filename.startswith("<frozen "))
    return not (getattr(method, "__objclass__", None) is klass
                and getattr(method, "__name__", None) == name)
  return False


def _compares_by_candidate_code(value):
  classes = {type(v) for v in _values(value)} - _BUILTIN_DATA_TYPES
  return next((cls for cls in classes
               if any(_method_from_candidate(cls, name) for name in _COMPARISON_METHODS)), None)


def _checked_compare(comparison, left, right):
  """`left <comparison> right`, failing the test where one side is built-in data and
  the other side's class takes the comparison from the candidate's code."""
  for side, other in ((left, right), (right, left)):
    if _is_builtin_data(other):
      cls = _compares_by_candidate_code(side)
      if cls is not None:
        raise AssertionError(f"the tests compare built-in values, but the program's "
                             f"{cls.__name__} objects take their comparisons from its own code")
  return _COMPARISONS[comparison](left, right)


class _CheckComparisons(ast.NodeTransformer):
  """Routes each single `==`, `!=`, `in` and `not in` of a test through _checked_compare."""

  def visit_Compare(self, node):
    self.generic_visit(node)
    if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARISON_OF_NODE:
      return node
    comparison = _COMPARISON_OF_NODE[type(node.ops[0])]
    call = ast.Call(func=ast.Name(id=_CHECKED_COMPARE, ctx=ast.Load()),
                    args=[ast.Constant(comparison), node.left, node.comparators[0]], keywords=[])
    return ast.copy_location(call, node)


def _compile_test(test, index):
  tree = _CheckComparisons().visit(ast.parse(test, f"<test {index}>"))
  return compile(ast.fix_missing_locations(tree), f"<test {index}>", "exec")


def main():
  request = json.loads(sys.stdin.read())
  token = request["token"]
  results = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)  # the candidate's prints go to stderr
  os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the request (and its token) cannot be re-read
  os.chdir(request["workdir"])
  _set_limits(request["limits"])
  landlock_abi = _landlock(request["workdir"], request["read_paths"])
  results.write(f"{token} {json.dumps({'landlock_abi': landlock_abi})}\n")
  namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
  try:
    exec(compile(request["program"], "<candidate>", "exec"), namespace)
    program_error = None
  except BaseException as error:  # SystemExit included: exiting early passes nothing
    program_error = f"{type(error).__name__}: {error}"[:1000]
  for index, test in enumerate(request["tests"]):
    error = program_error
    if error is None:
      try:
        namespace[_CHECKED_COMPARE] = _checked_compare  # again: the program may have replaced it
        exec(_compile_test(test, index), namespace)
      except BaseException as test_error:
        error = f"{type(test_error).__name__}: {test_error}"[:1000]
    results.write(f"{token} "
                  f"{json.dumps({'test': index, 'passed': error is None, 'error': error})}\n")
  results.flush()
  os._exit(0)  # skip atexit handlers the candidate may have registered


if __name__ == "__main__":  # `python -c` runs it as __main__; an import does nothing
  main()
