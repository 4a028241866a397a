"""Directories jaxlayer reads and writes: paths of the local file system, never URLs.

Run and sweep directories rely on what a local (or mounted) file system gives: a lock held by
the writing process, write-then-rename for every result, Orbax's atomic checkpoint commits. A
`gs://` URL given as a path would silently become a local directory named `gs:`, so it is
refused with the fix. So is a file where a directory is to be, before any work is done.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def local_path(path: str | os.PathLike, key: str) -> Path:
  """`path` as a Path, if it is a directory of the local file system or could become one: not a
  URL, not a file, nor inside one (`key` names it in the error)."""
  text = os.fspath(path)
  if _URL.match(text):
    raise ValueError(
        f"{key}={text!r} is a URL, but jaxlayer reads and writes directories through the local "
        "file system. Give a local path (copy to or from a bucket with `gcloud storage cp -r`); "
        "on several hosts, a directory that all of them mount (NFS, such as Filestore).")
  expanded = Path(text).expanduser()
  existing = next(p for p in (expanded, *expanded.parents) if os.path.lexists(p))
  if not existing.is_dir():
    where = "is" if existing == expanded else f"is inside {existing}, which is"
    raise ValueError(f"{key}={text!r} {where} a file, not a directory: give a directory.")
  return Path(text)


def temporary_file_beside(final: Path, suffix: str) -> tuple[int, str]:
  """(open handle, name) of a new temporary file in `final`'s directory, to be renamed over
  `final`, readable as a plain open() would make it: mkstemp's own files are owner-only (0600),
  which kept colleagues on a shared cluster from reading sweep results."""
  handle, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
  umask = os.umask(0)
  os.umask(umask)
  os.fchmod(handle, 0o666 & ~umask)
  return handle, name


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes text to a temporary file beside `path`, then renames it over `path`: a reader (or a
  run restarted after a kill) sees the old file or the new one, never half of one."""
  path = Path(path)
  handle, tmp_name = temporary_file_beside(path, ".tmp")
  try:
    with os.fdopen(handle, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_name, path)
  except BaseException:
    Path(tmp_name).unlink(missing_ok=True)
    raise
