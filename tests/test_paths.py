"""jaxlayer.paths: files replaced whole, a full disk named with its fix."""

import errno
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxlayer import paths

# The text of TensorStore's error when Orbax filled a 6 MB tmpfs with a checkpoint.
TENSORSTORE_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "opt_state.1.count/0" in OCDBT database at local file '
    '"/tmp/full/r/checkpoints/3.orbax-checkpoint-tmp/optimizer.orbax-checkpoint-tmp/'
    'ocdbt.process_0/": Failed to write 735297 bytes to file 20: No space left on device '
    "[os_error_code='28']")


class _Killed(BaseException):
  """A SIGKILL: nothing after it runs, no handler sees it."""


def _disk_full(*args):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_the_file_as_it_was_and_names_it_with_the_fix(tmp_path, monkeypatch):
  (tmp_path / "eval.json").write_text("earlier results")
  monkeypatch.setattr(paths.os, "fsync", _disk_full)
  with pytest.raises(paths.DiskFullError) as raised:
    paths.write_text_atomic(tmp_path / "eval.json", "new results")
  assert str(raised.value).startswith(
      f"no space left on the device to write {tmp_path / 'eval.json'}: free space there")
  assert "\n" not in str(raised.value)
  assert os.listdir(tmp_path) == ["eval.json"]  # no temporary file left to fill the disk
  assert (tmp_path / "eval.json").read_text() == "earlier results"


@pytest.mark.parametrize("err, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (ValueError(TENSORSTORE_DISK_FULL), True),
    (ValueError(TENSORSTORE_DISK_FULL.replace("'28'", "'2'")), False),
    # safetensors' text (Rust's io::Error) when save_file met a full disk
    (Exception("Error while serializing: I/O error: No space left on device (os error 28)"), True),
])
def test_a_full_disk_is_recognised_in_the_errors_of_orbax_and_safetensors(err, full):
  assert paths.is_disk_full(err) == full


def test_files_written_together_never_pair_the_new_ones_with_the_old_last_one(tmp_path,
                                                                              monkeypatch):
  generations, report = tmp_path / "generations.jsonl", tmp_path / "eval.json"
  generations.write_text("old generations")
  report.write_text("old report")
  replace = os.replace

  def killed_before_the_last(source, target):
    if target == report:
      raise _Killed
    replace(source, target)

  monkeypatch.setattr(paths.os, "replace", killed_before_the_last)
  with pytest.raises(_Killed):
    paths.write_together({generations: "new generations", report: "new report"})
  assert generations.read_text() == "new generations"
  assert not report.exists()  # incomplete, and seen to be

  monkeypatch.setattr(paths.os, "replace", replace)
  generations.write_text("old generations")
  report.write_text("old report")
  fsync = os.fsync

  def fills_the_disk_with_the_generations(handle):  # the report's temporary file comes first
    if os.fstat(handle).st_size > len("new report"):
      _disk_full()
    fsync(handle)

  monkeypatch.setattr(paths.os, "fsync", fills_the_disk_with_the_generations)
  with pytest.raises(paths.DiskFullError, match=f"write {generations}: "):
    paths.write_together({generations: "new generations, longer", report: "new report"})
  assert generations.read_text() == "old generations" and report.read_text() == "old report"
  assert sorted(os.listdir(tmp_path)) == ["eval.json", "generations.jsonl"]


def test_only_what_a_dead_process_of_this_host_left_is_removed(tmp_path, dead_pid):
  """A temporary file or staging directory a killed writer left (SIGKILL: no cleanup) goes;
  a living process's, another host's, and any name without the mark stay."""
  host = socket.gethostname()
  left_file = tmp_path / f".eval.json.{dead_pid}@{host}.k2x_9abc.tmp"
  left_dir = tmp_path / f".eval.json.{dead_pid}@{host}.q7w3e4r5.tmp"
  kept = [tmp_path / f".eval.json.{os.getpid()}@{host}.a1b2c3d4.tmp",  # a writer at work
          tmp_path / f".eval.json.{dead_pid}@other-host.a1b2c3d4.tmp",  # cannot be asked
          tmp_path / f".eval.json.{dead_pid}@{host}.a1b2c3d4.bak",  # another suffix
          tmp_path / ".eval.json.mine.tmp", tmp_path / "eval.json"]
  for path in (left_file, *kept):
    path.write_text("x")
  left_dir.mkdir()
  (left_dir / "model.safetensors").write_text("weights")
  assert paths.remove_leftovers(tmp_path, ".eval.json.", ".tmp") == sorted([left_dir, left_file])
  assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_temporary_files_carry_the_mark_of_their_writer(tmp_path):
  """What paths.replacing writes is named as remove_leftovers expects of a killed writer."""
  with paths.replacing(tmp_path / "eval.json", ".tmp") as (handle, tmp_name):
    os.close(handle)
  assert re.fullmatch(rf"\.eval\.json\.{os.getpid()}@{re.escape(socket.gethostname())}"
                      r"\.[a-z0-9_]+\.tmp", Path(tmp_name).name)


def test_the_temporary_files_of_killed_writers_go_whatever_file_they_replaced(tmp_path,
                                                                              writers_leftovers):
  """A process killed (SIGKILL) inside paths.replacing leaves its temporary file, whatever file
  it replaced (run.json, a plot): remove_temporary_leftovers removes it, and those of the other
  killed writers of this host; a running writer's, another host's and unmarked names stay."""
  writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import time
      from pathlib import Path
      from jaxlayer import paths
      with paths.replacing(Path({str(tmp_path / "curves.png")!r}), ".png") as (_, tmp_name):
        print(tmp_name, flush=True)
        time.sleep(600)
      """)], stdout=subprocess.PIPE, text=True)
  killed_writers_file = Path(writer.stdout.readline().strip())
  writer.send_signal(signal.SIGKILL)
  writer.wait()
  removed, kept = writers_leftovers(tmp_path)
  assert killed_writers_file.is_file()
  assert paths.remove_temporary_leftovers(tmp_path) == sorted([*removed, killed_writers_file])
  assert sorted(tmp_path.iterdir()) == kept


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_created_file_never_replaces_one_that_is_there(tmp_path, monkeypatch, hard_links):
  """paths.create_text puts the whole text at a free name, readable as a plain open() makes a
  file, and refuses a taken one (FileExistsError), leaving that file as it is and no temporary
  file behind; also on a file system without hard links."""
  if not hard_links:
    def no_hard_links(source, target):
      raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), source, None, target)

    monkeypatch.setattr(os, "link", no_hard_links)
  path = tmp_path / "manifest.json"
  paths.create_text(path, "first\n")
  with pytest.raises(FileExistsError):
    paths.create_text(path, "second\n")
  assert path.read_text() == "first\n"
  assert sorted(tmp_path.iterdir()) == [path]
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
