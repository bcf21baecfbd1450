"""Atomic writes: complete under the final name or not there at all, with the mode open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from simsiam_hub.fileio import _new_file_mode, atomic_path, atomic_write_text


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
