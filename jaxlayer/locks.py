"""One writer per run, sweep, export or evaluation directory.

`exclusive(directory, key)` holds an advisory lock file in the directory (filelock: flock on
Unix) while a run, a sweep, an export or an evaluation writes there. A second `jaxlayer train`,
`sweep`, `export` or `eval` started on the same directory is refused before it writes anything,
instead of interleaving its checkpoints and results with the first one's. The operating system
releases the lock when its process ends, so a crashed or killed run leaves nothing stale behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import filelock

from jaxlayer import distributed, paths

LOCK_FILE = ".jaxlayer.lock"


class DirectoryInUseError(ValueError):
  """Another process holds the directory's lock."""


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, key: str, enabled: bool = True,
              tidy: bool = False) -> Iterator[None]:
  """Holds DIRECTORY/.jaxlayer.lock (creating the directory) while the block runs.

  key: the setting that chose the directory (e.g. "run_dir"), named in the error. enabled:
  False takes no lock (the processes of a multi-host run other than the one that writes).
  tidy: removes the lock file when the block ends, and the directory if the lock made it and
  it holds nothing else (an export, evaluation or training run that failed before writing), with
  the parents it made for it that hold nothing else; a killed process leaves the file, which the
  next one takes.
  Raises DirectoryInUseError when another process holds the lock, ValueError when the directory
  cannot be one (paths.local_path: a file, a link to a missing target) or cannot be written (a
  read-only mount, another user's directory); on several hosts every process calls it, and all
  of them stop when the writing one finds the directory in use.
  """
  directory, lock, made = Path(directory), None, []
  with distributed.failing_together(f"Taking {key}={os.fspath(directory)!r}"):
    if enabled:
      paths.local_path(directory, key)
      made = [path for path in (directory, *directory.parents) if not path.exists()]
      lock = filelock.FileLock(directory / LOCK_FILE, timeout=0)
      try:
        with paths.naming_an_unwritable_directory(directory, key):
          with paths.naming_a_full_disk(directory):
            directory.mkdir(parents=True, exist_ok=True)
          lock.acquire()
      except filelock.Timeout:
        raise DirectoryInUseError(
            f"{directory} is in use: {_holder(directory / LOCK_FILE)} is writing there (it holds "
            f"{directory / LOCK_FILE}). Wait for it to finish or stop it, or choose another "
            f"{key}.") from None
      except NotImplementedError:  # a file system without flock (some network mounts)
        warnings.warn(f"{directory}: this file system cannot lock files, so nothing stops a "
                      "second process from writing there at the same time.", stacklevel=3)
        lock = None
      else:  # who holds it, for the error of a second process
        try:
          (directory / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        except OSError as err:
          # A full disk: the lock holds all the same, and what the block writes names the disk.
          if not paths.is_disk_full(err):
            _let_go(lock, directory, made, tidy)
            raise
  try:
    yield
  finally:
    if lock is not None:
      _let_go(lock, directory, made, tidy)


def _let_go(lock: filelock.FileLock, directory: Path, made: list[Path], tidy: bool) -> None:
  """Releases `lock` on `directory`; tidy: removes the lock file, and the directories `made` for
  it (the directory first, then its parents) that hold nothing else."""
  if tidy:
    # Unlinked while held: a process that opened the file meanwhile finds it unlinked when it
    # gets the lock, and starts over on a new file (filelock).
    (directory / LOCK_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # (not empty: what the block, or another, wrote)
      for made_directory in made:
        made_directory.rmdir()
  lock.release()


def _holder(lock_file: Path) -> str:
  """The process holding lock_file as it wrote itself there, e.g. "jaxlayer process 4242 on
  tpu-vm-0" (a process that has not written itself yet: "another jaxlayer process")."""
  try:
    pid, host = lock_file.read_text().split()
  except (OSError, ValueError):
    return "another jaxlayer process"
  return f"jaxlayer process {pid} on {host}"
