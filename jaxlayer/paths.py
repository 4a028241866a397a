"""Directories jaxlayer reads and writes: paths of the local file system, never URLs.

Run and sweep directories rely on what a local (or mounted) file system gives: a lock held by
the writing process, write-then-rename for every result, Orbax's atomic checkpoint commits. A
`gs://` URL given as a path would silently become a local directory named `gs:`, so it is
refused with the fix. So is a file where a directory is to be, or a link to a missing target,
before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A full disk, or a full quota of the user's on it.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# A read-only file system, or a directory of another user's.
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
# An errno in the text of an error raised outside Python: TensorStore's (Orbax's checkpoints),
# Rust's io::Error (safetensors).
_ERRNO_IN_TEXT = re.compile(r"os_error_code='(\d+)'|\(os error (\d+)\)")


class DiskFullError(OSError):
  """No space was left to write a file: the message names it and the fix."""

  def __init__(self, path: str | os.PathLike):
    super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

  def __str__(self) -> str:
    return (f"no space left on the device to write {self.filename}: free space there (or move "
            "the directory to a larger disk) and run the same command again; the files written "
            "before are intact.")


def is_disk_full(err: BaseException) -> bool:
  """Whether `err` says the disk or the user's quota is full: an OSError, or an error of a library
  outside Python that gives the errno in its text only."""
  if isinstance(err, OSError):
    return err.errno in _NO_SPACE
  return any(int(code) in _NO_SPACE for match in _ERRNO_IN_TEXT.finditer(str(err))
             for code in match.groups() if code)


def require_path(path, key: str) -> None:
  """Raises a TypeError naming `key` when `path` is no path (a str or os.PathLike): a loaded
  model given where its directory goes, say."""
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"{key} must be a path (a str or pathlib.Path), got {type(path).__name__}.")


def local_path(path: str | os.PathLike, key: str) -> Path:
  """`path` as a Path with a leading ~ made the home directory (shells leave the ~ of
  --config.run_dir=~/x as it is), if it is a directory of the local file system or could become
  one: not a URL, not a file, nor inside one, nor a link to a missing target (`key` names it in
  the error)."""
  require_path(path, key)
  text = os.fspath(path)
  if _URL.match(text):
    raise ValueError(
        f"{key}={text!r} is a URL, but jaxlayer reads and writes directories through the local "
        "file system. Give a local path (copy to or from a bucket with `gcloud storage cp -r`); "
        "on several hosts, a directory that all of them mount (NFS, such as Filestore).")
  expanded = Path(text).expanduser()
  existing = next(p for p in (expanded, *expanded.parents) if os.path.lexists(p))
  where = "is" if existing == expanded else f"is inside {existing}, which is"
  if existing.is_symlink() and not existing.exists():
    target = os.path.realpath(existing)
    raise ValueError(f"{key}={text!r} {where} a link to {target}, which does not exist: create "
                     f"{target}, point the link at a directory, or give another directory.")
  if not existing.is_dir():
    raise ValueError(f"{key}={text!r} {where} a file, not a directory: give a directory.")
  return expanded


def marked(prefix: str) -> str:
  """`prefix` followed by this process's mark, "PID@HOST.": the name with which it starts a
  temporary file or directory, so that a later process can tell one that a killed process left
  (remove_leftovers, remove_temporary_leftovers)."""
  return f"{prefix}{os.getpid()}@{socket.gethostname()}."


def remove_leftovers(directory: Path, prefix: str, suffix: str = "") -> list[Path]:
  """Removes (and returns) what killed writers left in `directory`: the files and directories
  named `marked(prefix)` + a random part + `suffix` whose mark names a process of this host
  that no longer runs. Those of a running process or of another host (which cannot be asked
  from here), and every other name, stay."""
  return _removed(_of_dead_writers(directory, prefix, re.escape(prefix), re.escape(suffix)))


def temporary_leftovers(directory: Path) -> list[Path]:
  """The temporary files that writers killed while `replacing` a file of `directory` left
  there, of any name and suffix: ".NAME." + mark + a random part + ".SUFFIX", where the mark
  names a process of this host that no longer runs (those of a running process or another
  host are not, nor names without the mark, such as a user's notes.tmp)."""
  return _of_dead_writers(directory, ".", r"\..+\.", r"\.[a-z]+")


def remove_temporary_leftovers(directory: Path) -> list[Path]:
  """Removes (and returns) the temporary_leftovers of `directory`."""
  return _removed(temporary_leftovers(directory))


def is_temporary_file(path: Path, name: str) -> bool:
  """Whether `path` is named as the temporary file of a writer `replacing` (or creating:
  create_text) the file `name` beside it: ".NAME." + mark + a random part + ".SUFFIX", of a
  running process or a killed one, of any host."""
  pattern = _marked_names(rf"\.{re.escape(name)}\.", r"\.[a-z]+")
  return pattern.fullmatch(path.name) is not None


def _of_dead_writers(directory: Path, prefix: str, before_mark: str,
                     after_mark: str) -> list[Path]:
  """The files and directories of `directory` whose names start with `prefix` and match
  `_marked_names(before_mark, after_mark)`, where HOST is this host and process PID no longer
  runs."""
  pattern = _marked_names(before_mark, after_mark)
  host, dead = socket.gethostname(), []
  for path in sorted(directory.glob(f"{glob.escape(prefix)}*")):
    mark = pattern.fullmatch(path.name)
    if mark and mark[2] == host and not _runs(int(mark[1])):
      dead.append(path)
  return dead


def _marked_names(before_mark: str, after_mark: str) -> re.Pattern:
  """The names `before_mark` + "PID@HOST." + a random part + `after_mark` (regular
  expressions), with PID and HOST as groups 1 and 2."""
  return re.compile(rf"{before_mark}(\d+)@(.+)\.[a-z0-9_]+{after_mark}")


def _removed(leftovers: list[Path]) -> list[Path]:
  """Removes `leftovers` (files, or directories with what they hold) and returns them."""
  for path in leftovers:
    if path.is_dir() and not path.is_symlink():
      shutil.rmtree(path, ignore_errors=True)
    else:
      path.unlink(missing_ok=True)
  return leftovers


def _runs(pid: int) -> bool:
  """Whether a process `pid` runs on this host (one of another user's too)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's
    pass
  return True


@contextlib.contextmanager
def naming_a_full_disk(path: str | os.PathLike) -> Iterator[None]:
  """Within: a full disk raises DiskFullError naming `path` (one naming another file stays).
  The tracebacks that Orbax's threads log for it (through absl) are left out, from then on:
  the error says it in one line, and a thread may log after the error reached the caller."""
  logging.getLogger("absl").addFilter(_DISK_FULL_TRACEBACKS)  # (once: a filter is added once)
  try:
    yield
  except Exception as err:
    if is_disk_full(err) and not isinstance(err, DiskFullError):
      raise DiskFullError(path) from err
    raise


class _DiskFullTracebacks(logging.Filter):
  """Drops the log records that carry a full disk's error."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and is_disk_full(record.exc_info[1]))


_DISK_FULL_TRACEBACKS = _DiskFullTracebacks()


@contextlib.contextmanager
def naming_an_unwritable_directory(directory: str | os.PathLike, key: str) -> Iterator[None]:
  """Within: an OSError saying that `directory`, or a file in it, cannot be written (a
  read-only mount, another user's directory) raises ValueError naming `key` and the fix."""
  try:
    yield
  except OSError as err:
    if err.errno not in _NOT_WRITABLE:
      raise
    raise ValueError(
        f"{key}={os.fspath(directory)!r} cannot be written ({err.strerror}: {err.filename}); "
        f"jaxlayer writes there. Mount it read-write, or give another {key} (a copy of this one "
        "on a disk you can write, to go on from what it holds).") from None


@contextlib.contextmanager
def replacing(final: Path, suffix: str) -> Iterator[tuple[int, str]]:
  """Yields (open handle, name) of a new temporary file beside `final` to write, and renames it
  over `final` when the block ends: a reader (or a run restarted after a kill) sees the old file
  or the new one, never half of one. On an error the temporary file goes and `final` stays as
  it was; a full disk raises DiskFullError naming `final`.

  The file is readable as a plain open() would make it: mkstemp's own files are owner-only
  (0600), which kept colleagues on a shared cluster from reading sweep results.
  """
  with _temporary_beside(final, suffix) as (handle, tmp_name):
    yield handle, tmp_name
    os.replace(tmp_name, final)


@contextlib.contextmanager
def _temporary_beside(final: Path, suffix: str) -> Iterator[tuple[int, str]]:
  """Yields (open handle, name) of a new temporary file beside `final`, named `marked` (so that
  remove_temporary_leftovers finds it after a kill) and readable as a plain open() would make
  it; removes it when the block ends, unless the block moved it. A full disk raises
  DiskFullError naming `final`."""
  handle, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=marked(f".{final.name}."),
                                      suffix=suffix)
  try:
    with naming_a_full_disk(final):
      umask = os.umask(0)
      os.umask(umask)
      os.fchmod(handle, 0o666 & ~umask)
      yield handle, tmp_name
  finally:
    Path(tmp_name).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes text to a temporary file beside `path`, then renames it over `path` (`replacing`)."""
  with replacing(Path(path), ".tmp") as (handle, _):
    _write_and_sync(handle, text)


def create_text(path: str | os.PathLike, text: str) -> None:
  """Writes text to a new file `path`, whole as write_text_atomic writes it, but only where no
  file is there: raises FileExistsError, and leaves that file as it is, where one is (say, the
  one another process created since this one looked)."""
  path = Path(path)
  with _temporary_beside(path, ".tmp") as (handle, tmp_name):
    _write_and_sync(handle, text)
    try:
      # Atomic, and refused where `path` exists, on every POSIX file system, NFS included.
      os.link(tmp_name, path)
    except FileExistsError:
      raise
    except OSError:
      # A file system without hard links (some FUSE mounts, SMB shares): `path` is claimed by
      # creating it empty, exclusively, and the written file is then renamed over the claim.
      # Writing the text into the claimed file instead would show a reader half of it; this
      # way the text arrives whole, by the rename, and a reader in between sees an empty file
      # (the sweep's manifest.json: store.load_manifest names it).
      os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
      os.replace(tmp_name, path)


def write_together(texts: Mapping[Path, str]) -> None:
  """Writes files that belong together, the last of them the one that says they are complete
  (eval.json beside its generations.jsonl). Every text goes to a temporary file first, so a full
  disk changes none of the files; then the last file's old version goes and the files are
  renamed into place in order. A process killed in between leaves the others without the last
  one, never the new ones beside the last one's old version."""
  *others, last = texts
  with contextlib.ExitStack() as stack:
    for path in (last, *reversed(others)):  # the stack renames in the reverse order
      handle, _ = stack.enter_context(replacing(path, ".tmp"))
      _write_and_sync(handle, texts[path])
    last.unlink(missing_ok=True)


def _write_and_sync(handle: int, text: str) -> None:
  with os.fdopen(handle, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
