"""Atomic writes: complete under the final name or not there at all, with the mode open() gives;
whole folders swapped in; a full disk said in one line; the folder lock."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading

import pytest

from simsiam_hub.fileio import (
    FolderInUseError,
    StorageError,
    _umask,
    atomic_folder,
    atomic_path,
    atomic_torch_save,
    atomic_write_text,
    folder_lock,
)


def test_atomic_write_has_the_usual_mode_and_a_failure_keeps_the_old_file(tmp_path):
    old_umask = os.umask(0o022)
    _umask.cache_clear()  # the umask is read once per process; read it under this one
    try:
        target = atomic_write_text("first\n", tmp_path / "report.md")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
        with pytest.raises(RuntimeError):
            with atomic_path(target) as tmp:
                tmp.write_text("half a fil")
                raise RuntimeError("killed mid-write")
        with atomic_folder(tmp_path / "folder") as tmp:
            (tmp / "a.txt").write_text("a")
        assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(old_umask)
        _umask.cache_clear()
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "report.md"]  # no temporary file left behind


def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path):
    target = atomic_write_text("old\n", tmp_path / "results.json")

    class FullDisk:  # a write the file system refuses, as a full disk does
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        StorageError,
        match=rf"no space left on the device while writing {target} \(\d+ MiB free there\): the previous file is kept",
    ):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"ne")  # part of the new file, then the disk is full
            FullDisk().write(b"w")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE refuses writes this way on Linux")
def test_torch_save_past_the_file_size_limit_is_one_clear_error(tmp_path):
    """A real refused write through torch.save (its error is a RuntimeError with the OSError as
    context): a process limited to 100 kB per file saves a 400 kB checkpoint."""
    code = f"""
import resource, signal, sys, torch
from simsiam_hub.fileio import StorageError, atomic_torch_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    atomic_torch_save({{"w": torch.zeros(100_000)}}, {str(tmp_path / "ckpt.pt")!r})
except StorageError as err:
    print(err)
    sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.startswith("the file grew past the size this process may write (ulimit -f) while writing"), (
        proc.stdout
    )
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary file left


def test_atomic_folder_swaps_the_whole_folder_and_a_failure_keeps_the_old_one(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        (tmp / "weights").write_text("v1")
        (tmp / "config").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "weights").write_text("v2")
            raise RuntimeError("killed between two files")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"weights": "v1", "config": "v1"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    # A reader that opens the folder once (a directory descriptor) and reads its files there,
    # while the folder is replaced again and again, sees one version, whole.
    seen, stop = set(), threading.Event()

    def read_version() -> frozenset:
        fd = os.open(target, os.O_RDONLY)
        try:
            texts = set()
            for name in ("weights", "config"):
                with open(os.open(name, os.O_RDONLY, dir_fd=fd)) as f:
                    texts.add(f.read())
            return frozenset(texts)
        finally:
            os.close(fd)

    def reader():
        while not stop.is_set():
            try:
                seen.add(read_version())
            except FileNotFoundError:  # opened the old folder just before it was deleted
                pass

    thread = threading.Thread(target=reader)
    thread.start()
    for version in range(2, 40):
        with atomic_folder(target) as tmp:
            (tmp / "weights").write_text(f"v{version}")
            (tmp / "config").write_text(f"v{version}")
    stop.set()
    thread.join()
    assert seen and all(len(versions) == 1 for versions in seen), seen
    assert {p.read_text() for p in target.iterdir()} == {"v39"}


def test_atomic_torch_save_round_trips(tmp_path):
    import torch

    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))

    # a write that fails part way keeps the old file whole and leaves no temporary beside it
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle this"):
        atomic_torch_save({"w": torch.arange(5), "x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_folder_lock_refuses_a_second_holder_and_is_released_after(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder):
        assert (folder / ".lock.owner").read_text().startswith(f"pid {os.getpid()} on ")
        # a second open of the lock file is another holder, even in this process (flock semantics)
        with pytest.raises(
            FolderInUseError,
            match=rf"{folder} is in use by another process \(pid {os.getpid()} on .*set another run.output_dir",
        ):
            with folder_lock(folder):
                pass
    with folder_lock(folder):  # released: free again
        pass
