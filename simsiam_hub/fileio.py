"""Atomic file writes: a file appears under its final name complete, or not at all; and a lock
that keeps two processes from writing one output folder."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import tempfile
from pathlib import Path

from .errors import SimsiamHubError

LOCK_NAME = ".lock"


class FolderInUseError(SimsiamHubError, RuntimeError):
    """Another live process holds the folder's lock."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _new_file_mode() -> int:
    """0666 less the process umask: the mode a plain ``open(path, "w")`` creates. Read once:
    reading the umask means setting it, which would race files other threads create."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    On any error the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp makes it 0600; give what open() would
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str = "run.output_dir"):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) for the ``with`` block.

    A second process asking for it is refused at once with :class:`FolderInUseError`, naming
    the holder; two trainers in one folder would truncate each other's logs and interleave
    checkpoints. The lock is the kernel's (``flock``): it goes with the process, so a killed
    run leaves no stale lock behind. Where ``fcntl`` is missing (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that did not say which"
            raise FolderInUseError(
                f"{folder} is in use by another process ({holder}): two of them writing one folder would "
                f"overwrite each other's checkpoints and logs; wait for it to end, stop it, or set another {purpose}"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
