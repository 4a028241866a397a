"""One writer per run or sweep directory (jaxlayer.locks), held by a real second process."""

import errno
import os
import re
import socket

import pytest

from jaxlayer import locks


def test_a_directory_held_by_another_process_is_refused_until_that_process_ends(
    tmp_path, held_by_another_process):
  directory = tmp_path / "run"
  holder = held_by_another_process(directory)
  with pytest.raises(locks.DirectoryInUseError, match=re.escape(
      f"{directory} is in use: jaxlayer process {holder.pid} on {socket.gethostname()} is "
      f"writing there (it holds {directory / locks.LOCK_FILE}). Wait for it to finish or stop "
      "it, or choose another sweep.dir.")):
    with locks.exclusive(directory, "sweep.dir"):
      pytest.fail("entered a directory another process holds")
  holder.kill()  # killed, not stopped cleanly: the operating system frees the lock
  holder.wait()
  with locks.exclusive(directory, "run_dir"):
    with pytest.raises(locks.DirectoryInUseError):  # held by this process now
      with locks.exclusive(directory, "run_dir"):
        pass
  with locks.exclusive(directory, "run_dir", enabled=False):  # a host that does not write
    with locks.exclusive(directory, "run_dir"):
      pass


def test_a_tidy_lock_removes_only_the_empty_directory_it_made(tmp_path):
  """An export or evaluation that fails before writing leaves nothing behind (it left the
  parents it made for the directory), but a directory that was there before, or holds what the
  block wrote, stays (without the lock file)."""
  made, existing, written = tmp_path / "made", tmp_path / "existing", tmp_path / "written"
  existing.mkdir()
  for directory in (made, made / "in" / "new" / "parents", existing, written):
    with locks.exclusive(directory, "--out", tidy=True):
      if directory == written:
        (directory / "eval.json").write_text("{}")
  assert not made.exists()
  assert list(existing.iterdir()) == []
  assert [path.name for path in written.iterdir()] == ["eval.json"]


def test_a_full_disk_while_naming_the_lock_holder_leaves_the_lock_held(tmp_path, monkeypatch):
  """The holder's pid in the lock file is a courtesy: a full disk there leaves the lock taken,
  and what the block writes names the disk; any other error stops the block, and lets the
  lock go (the next command may take the directory), tidying what it made."""
  directory, write_text = tmp_path / "run", type(tmp_path).write_text

  def failing_write(path, text, *arguments, **options):
    if path.name == locks.LOCK_FILE and failing:
      raise OSError(failing, os.strerror(failing))
    return write_text(path, text, *arguments, **options)

  monkeypatch.setattr(type(tmp_path), "write_text", failing_write)
  failing = errno.ENOSPC
  with locks.exclusive(directory, "run_dir"):
    with pytest.raises(locks.DirectoryInUseError):  # taken all the same
      with locks.exclusive(directory, "run_dir"):
        pass
  failing = errno.EACCES
  with pytest.raises(PermissionError):
    with locks.exclusive(directory, "run_dir"):
      pytest.fail("entered a directory whose lock file could not be written")
  with pytest.raises(PermissionError):
    with locks.exclusive(tmp_path / "new" / "eval", "--out", tidy=True):
      pytest.fail("entered a directory whose lock file could not be written")
  assert not (tmp_path / "new").exists()
  failing = None  # the lock file is named again
  with locks.exclusive(directory, "run_dir"):  # the lock was let go
    pass


@pytest.mark.parametrize("inside", ["", "sub"])
def test_a_link_to_a_missing_directory_is_named_not_a_bare_file_exists_error(tmp_path, inside):
  """Library calls that skip paths.local_path reach the lock with a broken link (one to a disk
  not mounted yet): it raised FileExistsError: [Errno 17]. Now the CLI's error, and no
  directory is made at the link's target."""
  link, target = tmp_path / "run", tmp_path / "unmounted" / "run"
  link.symlink_to(target)
  target = os.path.realpath(target)  # (tmp_path may be under a link itself)
  directory = link / inside
  where = "is" if not inside else f"is inside {link}, which is"
  with pytest.raises(ValueError, match=re.escape(
      f"run_dir={str(directory)!r} {where} a link to {target}, which does not exist: create "
      f"{target}, point the link at a directory, or give another directory.")):
    with locks.exclusive(directory, "run_dir", tidy=True):
      pytest.fail("took a lock under a broken link")
  assert link.is_symlink() and not os.path.lexists(target)


@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES])
def test_a_directory_that_cannot_be_written_is_named_with_the_fix(tmp_path, monkeypatch, error):
  """A run directory on a read-only mount (a finished run's, say) or one of another user's: the
  lock file's OSError ended `jaxlayer train`, `sweep`, `export` and `eval` in a traceback."""
  directory = tmp_path / "run"
  directory.mkdir()

  def cannot_write(lock, *args, **kwargs):
    raise OSError(error, os.strerror(error), lock.lock_file)

  monkeypatch.setattr(locks.filelock.FileLock, "acquire", cannot_write)
  with pytest.raises(ValueError, match=re.escape(
      f"run_dir={str(directory)!r} cannot be written ({os.strerror(error)}: "
      f"{directory / locks.LOCK_FILE}); jaxlayer writes there. Mount it read-write, or give "
      "another run_dir (a copy of this one on a disk you can write, to go on from what it "
      "holds).")):
    with locks.exclusive(directory, "run_dir", tidy=True):
      pytest.fail("wrote into a directory that cannot be written")
  assert list(directory.iterdir()) == []
