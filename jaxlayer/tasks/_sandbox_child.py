"""The program the sandbox runs in its child process (`python -I -c <this file's text>`).

Standard library only: it is not imported as part of jaxlayer. It reads one JSON request from
stdin, locks itself down (resource limits, not dumpable, Landlock, seccomp), compiles the
tests, then runs the benchmark's setup code, the candidate program and each test in turn, and
writes one result line per test to the stdout it was started with. Everything the candidate
prints goes to stderr. Once the program runs, the runner uses no Python code of the standard
library the program could patch: the tests were compiled before (ast), and result lines are
written by built-in code (not json.dumps).

Result lines carry a random token sent by the parent, so a candidate that exits
early or prints fake results cannot pass a test it did not run. The token is in this
process's memory: without Landlock (landlock_abi 0), a program reads it from /proc/self/mem.

A test passes only on values, not on objects that answer comparisons themselves:
- every comparison in a test (`==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, each link
  of a chain such as `a == b == c`, either operand order) and its arithmetic (`+ - * / //
  % **`: `abs(f(x) - expected) < eps`) work on built-in data with the built-in types' own
  methods. A subclass of a built-in type counts as its built-in
  value (a namedtuple is its tuple, an IntEnum its int, a Counter its dict, an int
  subclass with its own __eq__ its int). A value of another class, at any depth, compared
  with built-in data is first converted to that data's type by the value's own
  conversions, which never see the expected value: numbers by __index__ (else
  __complex__ / __float__: Fraction(1, 2) == 0.5), lists, tuples, sets and dicts by
  iteration (a class of the program that iterates as (2, 1) equals (2, 1)). A value that
  does not convert differs from the data: `!=` and `not in` hold, other operations fail
  the test with a message saying so. Where neither side is built-in data (the program's
  objects compared with each other, or with a test's Fraction) their own comparison
  decides, for `==` and `!=` each side's own __eq__ (equal only where both say so);
  `is` and truthiness (`assert f(x)`) are Python's, which no object can bend towards an
  expected value it never sees;
- a method or attribute a test reads from a subclass of built-in data is the built-in type's
  own (`f(x).startswith("ab")` is str.startswith on a program's str subclass, list.count on
  its list subclass); attributes the built-in type lacks (a namedtuple's fields, a Counter's
  most_common) and those of the program's other objects are their own. (The elements of an
  exact list still compare by their own __eq__ inside list.count or list.index);
- a test sees the builtins and the modules loaded before the program ran as they were
  then (math is preloaded): a program's own `abs` or `sorted`, or its patches to the
  builtins module, to math.isclose or (by sys.modules) to this runner, reach no test,
  even when made while the test runs, and changing the code or defaults of those modules'
  functions (json.dumps.__code__) raises PermissionError; patches to modules loaded later (by
  the program) do reach tests, as do fakes it puts in sys.modules or sys.meta_path for a
  module a test imports that was not loaded before (unittest, numpy), and changes to the
  classes and objects the preloaded modules hold (collections.Counter.update = ...). (So a
  task whose function is named like a builtin, `sum`, cannot be graded: a test that uses a
  builtin's name the program defined fails, saying so);
- a program that leaves threads running fails every test;
- the benchmark's setup code (MBPP's test_setup_code) runs before the program, in a namespace
  of its own, so the program can neither alter nor see what it builds; its names then replace
  the program's (as when it runs between the program and the tests), before every test;
- the program cannot reach frames (sys._getframe, inspect, a traceback's or generator's
  frame: a test's expected values are its frames' constants), objects by gc, tracers
  (sys.monitoring's too: its callbacks get a test's code), ctypes or subinterpreters (which
  run without the hook): each raises ValueError (an audit hook, which cannot be removed);
- the program cannot install signal handlers, which are called with the running frame:
  `signal.signal` raises PermissionError (a seccomp filter, on x86_64 and arm64, refuses
  any other way of setting one).
The tests still run in the candidate's interpreter: a C extension (the program could build
one where a compiler is installed) could still reach the runner, and so can a program handed
a function the test defines (a sort key, a predicate): its __globals__ hold the test's
__jaxlayer_check__, whose globals are this runner's, and through them a program can switch off
every guard here (checked: `_compare_pair` patched, every later comparison holds). This is a
guard against accidents and reward hacks, not a proof.
"""

import _signal
import _thread
import ast
import builtins
import ctypes
import json
import math  # loaded before the program runs: tests see it unpatched
import operator
import os
import platform
import resource
import sys
from _json import encode_basestring_ascii as _json_string  # C: no program changes it
from types import FunctionType

# The runner's functions, all defined below, look builtins up in this copy, taken before
# the program runs: a program that patches the builtins module leaves them as they are.
__builtins__ = dict(vars(builtins))

# Landlock (Linux >= 5.13): the same syscall numbers on x86_64 and arm64.
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
# Filesystem rights, one bit each, by the Landlock ABI version that introduced them.
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1}  # ABI 1: bits 0-12, 2: + refer
_FS_RIGHTS_LATEST = (1 << 15) - 1  # ABI 3 on: + truncate (later device ioctl stays allowed)
_FS_READ_RIGHTS = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FS_TRUNCATE = 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
# seccomp: the audit architecture and rt_sigaction's syscall number, by machine.
_SECCOMP_ARCH_AND_SIGACTION = {"x86_64": (0xC000003E, 13), "aarch64": (0xC00000B7, 134)}
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_SECCOMP_RET_ALLOW, _SECCOMP_RET_EPERM = 0x7FFF0000, 0x00050000 | 1
_BPF_LOAD_WORD, _BPF_JUMP_IF_EQUAL, _BPF_RETURN = 0x20, 0x15, 0x06
# struct seccomp_data offsets: syscall number, architecture, low and high half of argument 1.
_SECCOMP_NR, _SECCOMP_ARCH, _SECCOMP_ARG1_LOW, _SECCOMP_ARG1_HIGH = 0, 4, 24, 28


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


class _SockFilter(ctypes.Structure):
  _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
              ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
  _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _refuse_signal_handlers():
  """Refuse new signal handlers from here on: a Python handler is called with the running
  frame (a test's, the runner's), so it could read expected values or patch a test while it
  compares. `signal.signal` raises PermissionError saying so; underneath, a seccomp filter
  fails every rt_sigaction that sets an action (queries still work), so that a fresh copy of
  the signal module cannot install one either. Timers and signals themselves stay allowed: with
  default actions they only end the run (the parent's wall-clock deadline does not use them).
  Where the machine or kernel has no seccomp, only `signal.signal` refuses.
  """
  # Defined apart from this module: the program reaches it, so its globals must not be ours.
  refusing = {"__builtins__": {"PermissionError": PermissionError}}
  exec("def signal(*arguments):\n"
       "  raise PermissionError('the code sandbox refuses signal handlers: a handler receives "
       "the running frame (the test\\'s); time limits are the sandbox\\'s own')", refusing)
  _signal.signal = refusing["signal"]
  if platform.machine() not in _SECCOMP_ARCH_AND_SIGACTION:
    return
  arch, sigaction = _SECCOMP_ARCH_AND_SIGACTION[platform.machine()]
  program = [  # (code, jump if true, jump if false, k); jumps count from the next instruction
      (_BPF_LOAD_WORD, 0, 0, _SECCOMP_ARCH),
      (_BPF_JUMP_IF_EQUAL, 0, 7, arch),  # another architecture's syscalls: refused
      (_BPF_LOAD_WORD, 0, 0, _SECCOMP_NR),
      (_BPF_JUMP_IF_EQUAL, 0, 4, sigaction),  # any other syscall: allowed
      (_BPF_LOAD_WORD, 0, 0, _SECCOMP_ARG1_LOW),
      (_BPF_JUMP_IF_EQUAL, 0, 3, 0),  # a new action (argument 1 not NULL): refused
      (_BPF_LOAD_WORD, 0, 0, _SECCOMP_ARG1_HIGH),
      (_BPF_JUMP_IF_EQUAL, 0, 1, 0),
      (_BPF_RETURN, 0, 0, _SECCOMP_RET_ALLOW),
      (_BPF_RETURN, 0, 0, _SECCOMP_RET_EPERM),
  ]
  filters = (_SockFilter * len(program))(*(_SockFilter(*line) for line in program))
  fprog = _SockFprog(len=len(program), filter=filters)
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
    libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)


def _refuse_debuggers():
  """Makes this process not dumpable: a debugger the program starts (strace, gdb) cannot attach
  to it and read the token off a result line it writes, nor can a fork read its memory."""
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


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


# A test's comparisons see built-in data: a value's base is the first of these types its
# class derives from (bool before int; bool and NoneType take no subclasses).
_BUILTIN_DATA_TYPES = (bool, int, float, complex, str, bytes, type(None), list, tuple, set,
                       frozenset, dict)
_NUMBER_TYPES = (bool, int, float, complex)
_CONTAINER_TYPES = (list, tuple, set, frozenset, dict)
_COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}
_OPERATOR_OF_NODE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                     ast.GtE: ">=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
                     ast.NotIn: "not in"}
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
               "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
_ARITHMETIC_OF_NODE = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
                       ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_CHECK = "__jaxlayer_check__"
_ATTRIBUTE = "__jaxlayer_attribute__"
_NO_HINT = object()
_index = operator.index
# What the program may not do (audit events): reach frames (the runner's, a test's constants),
# objects it was not handed (gc), tracers, raw memory (ctypes), or start a subinterpreter (which
# runs without this hook: ctypes there reads the test's frame).
_REFUSED_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys.settrace",
                             "sys.setprofile", "sys.monitoring.register_callback",
                             "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                             "cpython.PyInterpreterState_New"})
_FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
# Modules that start subinterpreters (_interpreters is Python 3.13's _xxsubinterpreters; CPython's
# test modules run code in one): Python 3.13 creates one without an audit event, so their import is
# refused, under any package name (an extension module's init function is named by the last part).
_SUBINTERPRETER_MODULES = frozenset({"_xxsubinterpreters", "_interpreters", "_testcapi",
                                     "_testinternalcapi"})
# Read through `type` itself, so that a class cannot answer with a fake MRO.
_mro_of = type.__dict__["__mro__"].__get__


class _NotBuiltinData(Exception):
  """A value that is not built-in data and does not convert to what it is compared with."""


def _builtin_base(value):
  mro = _mro_of(type(value))
  return next((base for base in _BUILTIN_DATA_TYPES if base in mro), None)


def _converted(value, like):
  """value, of a class outside built-in data, converted to the type of `like` by the
  value's own conversions, which never see `like`: a number by __index__ (else
  __complex__ / __float__), a list, tuple, set or dict by iteration."""
  kind = _builtin_base(like)
  try:
    if kind in _NUMBER_TYPES:
      try:
        return _index(value)
      except TypeError:
        number = complex(value)
        return number if kind is complex or number.imag else number.real
    if kind in _CONTAINER_TYPES:
      return kind(value)
  except TypeError:
    pass
  raise _NotBuiltinData(value)


def _as_builtin_data(value, like=_NO_HINT):
  """value as exact built-in data, read with the built-in types' own methods (a namedtuple
  is its tuple, an int subclass its int). A value of another class, at any depth, is
  first converted (_converted) to the type of its counterpart in `like`."""
  base = _builtin_base(value)
  if base is None:
    if like is _NO_HINT:
      raise _NotBuiltinData(value)
    value = _converted(value, like)
    base = _builtin_base(value)
  if base is bool or base is type(None):
    return value
  if base in (int, float, complex):
    return base.__add__(value, base())  # an exact copy of a subclass's number
  if base in (str, bytes):
    return base().join((value,))  # an exact copy of a subclass's text
  if base is dict:
    hints = like if _builtin_base(like) is dict else {}
    items = []
    for key, item in dict.items(value):
      key = _as_builtin_data(key)
      items.append((key, _as_builtin_data(item, dict.get(hints, key, _NO_HINT))))
    return dict(items)
  if base in (set, frozenset):
    return base(_as_builtin_data(item) for item in set.__iter__(value))
  hints = like if _builtin_base(like) in (list, tuple) else ()
  items = [_as_builtin_data(item, hints[i] if i < len(hints) else _NO_HINT)
           for i, item in enumerate(base.__iter__(value))]
  return base(items)


def _as_builtin_pair(left, right):
  """Both sides as built-in data, the one that is not converted to the other's type; None
  where neither side is built-in data."""
  try:
    left_data = _as_builtin_data(left)
  except _NotBuiltinData:
    try:
      right_data = _as_builtin_data(right)
    except _NotBuiltinData:
      return None
    return _as_builtin_data(left, right_data), right_data
  return left_data, _as_builtin_data(right, left_data)


def _compare_pair(operator_, left, right):
  """One comparison of a test, by the built-in types on _as_builtin_pair. A value that does
  not convert to the built-in data it is compared with differs from it (`!=` holds, the
  others fail the test); where neither side is built-in data, the objects' own comparison
  decides (the program's objects with each other), `==` and `!=` by both sides'
  (_equal_by_both)."""
  if operator_ in ("is", "is not"):
    return (left is right) == (operator_ == "is")
  if operator_ in ("in", "not in"):
    return _contains(right, left) == (operator_ == "in")
  try:
    pair = _as_builtin_pair(left, right)
  except _NotBuiltinData:
    if operator_ == "!=":
      return True
    raise
  if pair is None:
    if operator_ in ("==", "!="):
      return _equal_by_both(left, right) == (operator_ == "==")
    return bool(_COMPARISONS[operator_](left, right))
  return _COMPARISONS[operator_](*pair)


def _equal_by_both(left, right):
  """Whether each side's own __eq__ says it equals the other, without Python's fallback to the
  other side's: an object equal to everything does not equal a test's Fraction, or a Node the
  setup code built, which do not know it."""
  for value, other in ((left, right), (right, left)):
    equal = next(vars(klass)["__eq__"] for klass in _mro_of(type(value))
                 if "__eq__" in vars(klass))(value, other)
    if equal is NotImplemented or not equal:
      return False
  return True


def _contains(container, item):
  """`item in container` by _compare_pair on the container's elements (read by its own
  iteration where it is not built-in data), substrings in built-in text."""
  try:
    container = _as_builtin_data(container)
  except _NotBuiltinData:
    try:
      _as_builtin_data(item)
    except _NotBuiltinData:
      return bool(item in container)
    container = _converted(container, [])
  if isinstance(container, (str, bytes)):
    return _as_builtin_data(item) in container
  return any(not _compare_pair("!=", item, element) for element in container)


def _calculate(operator_, left, right):
  """A test's arithmetic on built-in data (_as_builtin_pair), so that the program's object
  never sees the expected value (`abs(f(x) - expected) < eps`); where neither side is
  built-in data, Python's."""
  pair = _as_builtin_pair(left, right)
  return _ARITHMETIC[operator_](*((left, right) if pair is None else pair))


def _check(operators, *operands):
  """A test's comparison `operands[0] operators[0] operands[1] ...` (chained as in Python,
  every operand evaluated first; each pair by _compare_pair) or arithmetic (_calculate)."""
  try:
    if operators[0] in _ARITHMETIC:
      return _calculate(operators[0], *operands)
    return all(_compare_pair(operator_, left, right)
               for operator_, left, right in zip(operators, operands, operands[1:]))
  except _NotBuiltinData as error:
    raise AssertionError(
        f"the test mixes built-in data with the program's {type(error.args[0]).__name__} "
        "object, which is not built-in data and does not convert to it (return built-in "
        "data, or give the class __iter__ or __index__ / __float__)") from None


def _attribute(value, name):
  """A test's `value.name`. On a value of a subclass of built-in data, the built-in type's own
  attribute, bound to the value (`f(x).startswith("ab")` is str.startswith, whatever the
  program's str subclass defines); an attribute the built-in type lacks (a namedtuple's field)
  and any other value's attribute are Python's."""
  base = _builtin_base(value)
  if base is not None and type(value) is not base:
    for klass in _mro_of(base):
      if name in vars(klass):
        attribute = vars(klass)[name]
        bind = getattr(type(attribute), "__get__", None)
        return attribute if bind is None else bind(attribute, value, type(value))
  return getattr(value, name)


class _CheckOperations(ast.NodeTransformer):
  """Routes every comparison (chained or not) and arithmetic operation of a test through
  _check, and every attribute it reads through _attribute."""

  def _call_check(self, node, operators, operands):
    symbols = ast.Tuple(elts=[ast.Constant(symbol) for symbol in operators], ctx=ast.Load())
    call = ast.Call(func=ast.Name(id=_CHECK, ctx=ast.Load()), args=[symbols, *operands],
                    keywords=[])
    return ast.copy_location(call, node)

  def visit_Compare(self, node):
    self.generic_visit(node)
    return self._call_check(node, [_OPERATOR_OF_NODE[type(op)] for op in node.ops],
                            [node.left, *node.comparators])

  def visit_BinOp(self, node):
    self.generic_visit(node)
    if type(node.op) not in _ARITHMETIC_OF_NODE:
      return node
    return self._call_check(node, [_ARITHMETIC_OF_NODE[type(node.op)]], [node.left, node.right])

  def visit_Attribute(self, node):
    self.generic_visit(node)
    private = node.attr.startswith("__") and not node.attr.endswith("__")
    if not isinstance(node.ctx, ast.Load) or private:  # a private name is mangled on compiling
      return node
    call = ast.Call(func=ast.Name(id=_ATTRIBUTE, ctx=ast.Load()),
                    args=[node.value, ast.Constant(node.attr)], keywords=[])
    return ast.copy_location(call, node)


def _compile_test(test, index):
  """The test's code, its operations routed through _check, and the names of builtins it uses.
  Compiled before the program runs, which could otherwise change how (patching ast)."""
  tree = ast.parse(test, f"<test {index}>")
  used_builtins = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
                   and node.id in __builtins__ and not node.id.startswith("__")}
  tree = _CheckOperations().visit(tree)
  return compile(ast.fix_missing_locations(tree), f"<test {index}>", "exec"), used_builtins


def _refuse_shadowed_builtins(used_builtins, namespace):
  """Raises NameError where the test calls a builtin that the program defined anew (def sum):
  the test would call the builtin, which any program passes, so it cannot grade this one."""
  shadowed = sorted(name for name in used_builtins if name in namespace)
  if shadowed:
    raise NameError(
        f"the program defines {', '.join(shadowed)}, the name of a Python builtin that this test "
        "uses: the test sees the builtin, so it cannot grade the program's (a task's function "
        "needs a name of its own)")


def _refuse_introspection(event, arguments, preloaded_globals):
  """Audit hook, for good once the program starts. ValueError, as where frames are not
  available: namedtuple, enum, typing and logging carry on without them. PermissionError for
  changing the code or defaults of a function of a module loaded before the program ran (ids
  of their globals in preloaded_globals): tests call those modules as they were."""
  if (event in _REFUSED_EVENTS or event.startswith("ctypes.")
      or (event == "object.__getattr__" and arguments[1] in _FRAME_ATTRIBUTES)
      or (event == "import"  # the name as an exact str: a subclass's own rpartition cannot lie
          and "".join((arguments[0],)).rpartition(".")[2] in _SUBINTERPRETER_MODULES)):
    raise ValueError(f"the code sandbox refuses {event}: programs may not inspect frames, "
                     "other objects, tracers or memory")
  if (event in ("object.__setattr__", "object.__delattr__") and type(arguments[0]) is FunctionType
      and id(arguments[0].__globals__) in preloaded_globals):
    raise PermissionError(f"the code sandbox refuses changing {arguments[1]} of a function of a "
                          "module loaded before the program: tests call those as they were")


def _module_attributes():
  """Every loaded module and its attributes, by name, taken before the program runs."""
  return {name: (module, dict(vars(module))) for name, module in list(sys.modules.items())}


def _restore_modules(modules):
  """Puts back the modules and attributes the program replaced (the runner's own included)."""
  for name, (module, attributes) in modules.items():
    sys.modules[name] = module
    current = vars(module)
    for key, value in attributes.items():
      if current.get(key, _NO_HINT) is not value:
        current[key] = value


def _copy_of_module(module, attributes):
  """A module object holding `attributes`: what the program does to `module` later
  (patching math.isclose while a test calls it) does not reach the copy."""
  copy = type(sys)(module.__name__)
  vars(copy).update(attributes)
  return copy


def _test_namespace(namespace, modules):
  """The namespace a test runs in: the program's names, but not those that shadow builtins
  (`abs`, `sorted`, `int` are the real ones), and copies of the modules loaded before the
  program ran, here and from the test's imports."""
  module_names = {id(module): name for name, (module, _) in modules.items()}
  test_namespace = {
      name: _copy_of_module(*modules[module_names[id(value)]]) if id(value) in module_names
      else value for name, value in namespace.items() if name not in __builtins__}
  real_import = __builtins__["__import__"]

  def import_copy(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    imported = name if fromlist else name.partition(".")[0]
    return _copy_of_module(*modules[imported]) if level == 0 and imported in modules else module

  test_builtins = {**__builtins__, "__import__": import_copy}
  test_namespace.update({"__name__": "__sandbox__", "__builtins__": test_builtins,
                         _CHECK: _check, _ATTRIBUTE: _attribute})
  return test_namespace


def _run_setup(setup):
  """The names the benchmark's setup code defines, run in a namespace of its own before the
  program (which therefore cannot alter what it builds, nor see it)."""
  setup_namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
  exec(compile(setup, "<setup>", "exec"), setup_namespace)
  return {name: value for name, value in setup_namespace.items()
          if name not in ("__name__", "__builtins__")}


def _error_text(error):
  return f"{type(error).__name__}: {error}"[:1000]


def _json(value):
  """value (a dict of str keys and int, bool, None or str values) as JSON, by built-in code
  alone: json.dumps runs Python code the program can change (json._default_encoder.encode)."""
  if type(value) is dict:
    return "{" + ", ".join(f"{_json(key)}: {_json(item)}" for key, item in value.items()) + "}"
  if type(value) is str:
    return _json_string(value)
  return "null" if value is None else str(value).lower()  # true, false, 3


def main():
  request = json.loads(sys.stdin.read())
  token = request["token"]
  results = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)  # the candidate's prints go to stderr
  os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the request (and its token) cannot be re-read
  os.chdir(request["workdir"])
  _set_limits(request["limits"])
  _refuse_debuggers()
  landlock_abi = _landlock(request["workdir"], request["read_paths"])
  _refuse_signal_handlers()
  results.write(f"{token} {_json({'landlock_abi': landlock_abi})}\n")
  del sys.modules["__main__"]  # this runner: no `import __main__` reaches its functions
  compiled_tests = []  # (code, names of builtins it uses, error compiling it)
  for index, test in enumerate(request["tests"]):
    try:
      compiled_tests.append((*_compile_test(test, index), None))
    except Exception as error:
      compiled_tests.append((None, set(), _error_text(error)))
  try:
    setup_names = _run_setup(request["setup"])
    error_before_tests = None
  except BaseException as error:
    setup_names = {}
    error_before_tests = f"the task's setup code failed: {_error_text(error)}"[:1000]
  modules = _module_attributes()  # the setup's imports included
  preloaded_globals = frozenset(id(vars(module)) for module, _ in modules.values())
  sys.addaudithook(lambda event, arguments: _refuse_introspection(event, arguments,
                                                                  preloaded_globals))
  namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
  try:
    if error_before_tests is None:
      exec(compile(request["program"], "<candidate>", "exec"), namespace)
  except BaseException as error:  # SystemExit included: exiting early passes nothing
    error_before_tests = _error_text(error)
  for index, (code, used_builtins, error_compiling) in enumerate(compiled_tests):
    _restore_modules(modules)
    error = error_before_tests or error_compiling
    if error is None and _thread._count() > 0:
      error = "the program left threads running, which could change the tests as they run"
    if error is None:
      namespace.update(setup_names)  # again: a function of the program may have rebound them
      try:
        _refuse_shadowed_builtins(used_builtins, namespace)
        exec(code, _test_namespace(namespace, modules))
      except BaseException as test_error:
        error = _error_text(test_error)
    _restore_modules(modules)
    results.write(f"{token} {_json({'test': index, 'passed': error is None, 'error': error})}\n")
  results.flush()
  os._exit(0)  # skip atexit handlers the candidate may have registered


if __name__ == "__main__":  # `python -c` runs it as __main__; an import does nothing
  main()
