"""Atomic writes: complete under the final name or not there at all, with the mode open() gives;
the folder lock."""

from __future__ import annotations

import os
import stat

import pytest

from simsiam_hub.fileio import FolderInUseError, _new_file_mode, atomic_path, atomic_write_text, folder_lock


def test_atomic_write_has_the_usual_mode_and_a_failure_keeps_the_old_file(tmp_path):
    old_umask = os.umask(0o022)
    _new_file_mode.cache_clear()  # the mode is read once per process; read it under this umask
    try:
        target = atomic_write_text("first\n", tmp_path / "report.md")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
        with pytest.raises(RuntimeError):
            with atomic_path(target) as tmp:
                tmp.write_text("half a fil")
                raise RuntimeError("killed mid-write")
    finally:
        os.umask(old_umask)
        _new_file_mode.cache_clear()
    assert target.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary file left behind


def test_folder_lock_refuses_a_second_holder_and_is_released_after(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder):
        assert (folder / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
        # a second open of the lock file is another holder, even in this process (flock semantics)
        with pytest.raises(FolderInUseError, match=rf"{folder} is in use by another process \(pid {os.getpid()} on .*set another run.output_dir"):
            with folder_lock(folder):
                pass
    with folder_lock(folder):  # released: free again
        pass
