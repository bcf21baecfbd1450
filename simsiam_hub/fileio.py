"""Writing files safely: a file or a folder appears under its final name complete, or not at
all; a full disk is said in one line; one process at a time writes an output folder."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import SimsiamHubError, UsageError

__all__ = [
    "FolderInUseError",
    "StorageError",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_folder",
    "folder_lock",
]

LOCK_NAME = ".lock"
OWNER_NAME = ".lock.owner"


class FolderInUseError(SimsiamHubError, RuntimeError):
    """Another live process holds the folder's lock."""


class StorageError(SimsiamHubError, OSError):
    """A write that failed for lack of space (or another refusal of the file system)."""


class DestinationError(UsageError):
    """A path that cannot be written as asked: a name too long, or a file where a folder must be."""


TEMP_SUFFIX_ROOM = 20  # what a temporary's name adds to the final name (".NAME.partial-XXXXXXXX")


def _name_max(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_path_writable(path: Path) -> None:
    """Every name in ``path`` fits the file system (with room for the temporary's), and no part
    of it above the final name is a file."""
    limit = _name_max(path.parent)
    for i, part in enumerate(path.parts):
        room = limit - (TEMP_SUFFIX_ROOM if i == len(path.parts) - 1 else 0)
        if len(os.fsencode(part)) > room:
            raise DestinationError(
                f"the name {part[:24]}... in {Path(*path.parts[:i]) if i else Path('.')} is {len(os.fsencode(part))} "
                f"bytes long; this file system takes at most {room} there: choose a shorter name"
            )
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise DestinationError(f"{path}: {parent} is a file, not a folder to write into")


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns them, deepest first, to remove on failure."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer), or gone: leave it
            return


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
def _umask() -> int:
    """The process umask. Read once: reading it means setting it, which would race files other
    threads create."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    """0666 less the umask: the mode a plain ``open(path, "w")`` creates."""
    return 0o666 & ~_umask()


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: itself, or one in its cause/context chain (torch.save
    reports a failed write as a RuntimeError whose context is the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def _storage_errors(path: Path):
    """Re-raise a write that the file system refused (disk full, quota, file size limit) as a
    one-line :class:`StorageError` naming ``path``; any other error passes unchanged."""
    try:
        yield
    except Exception as err:
        os_error = _os_error_in(err)
        if os_error is None or os_error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        reason = {
            errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "the disk quota is exhausted",
            errno.EFBIG: "the file grew past the size this process may write (ulimit -f)",
        }[os_error.errno]
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise StorageError(f"{reason} while writing {path} ({free}): {kept}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    On any error the temporary file is removed and ``path`` keeps its old content; a write
    refused for lack of space raises :class:`StorageError`.
    """
    path = Path(path)
    check_path_writable(path)
    if path.is_dir():
        raise SimsiamHubError(f"{path} is a folder: expected a file path to write")
    created = _make_parents(path)
    done = False
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            with _storage_errors(path):
                yield tmp
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, _new_file_mode())  # mkstemp makes it 0600; give what open() would
                os.replace(tmp, path)
                _fsync_dir(path.parent)
                done = True
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        if not done:
            _remove_empty(created)  # a failed write leaves no empty folders behind


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: a failed write then carries its OSError
            torch.save(obj, f)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# --- whole folders ----------------------------------------------------------------------------

_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths in one step


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically where the kernel can (Linux), else return False."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole.

    On disk ``path`` is the old folder or the new one, never a mix of their files: the new
    folder is built apart and swapped in with one rename (an atomic exchange on Linux; elsewhere
    the old folder is moved aside first, for a moment leaving no folder), so a reader that opens
    the folder once reads one version. A failure or a kill while building leaves ``path`` as it
    was and a hidden ``.NAME.partial-*`` folder beside it.
    """
    path = Path(path)
    check_path_writable(path)
    if path.exists() and not path.is_dir():
        raise SimsiamHubError(f"{path} is a file: expected a folder path to write")
    created = _make_parents(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except BaseException:
        _remove_empty(created)
        raise
    done = False
    try:
        with _storage_errors(path):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give what mkdir would
            for child in tmp.iterdir():
                _fsync_file(child)
            _fsync_dir(tmp)
            if not path.exists():
                os.rename(tmp, path)
            elif _exchange(tmp, path):
                shutil.rmtree(tmp)  # now the old folder
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
                os.rename(tmp, path)
                shutil.rmtree(old)
            _fsync_dir(path.parent)
            done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)  # a failed export leaves no empty parent folders behind


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


# --- one writer per folder ------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str = "run.output_dir"):
    """Hold an exclusive lock on ``folder`` for the ``with`` block (the ``filelock`` library's
    kernel lock on ``.lock``: it goes with the process, so a killed run leaves none behind).

    A second process asking for it is refused at once with :class:`FolderInUseError`, naming the
    holder; two trainers in one folder would truncate each other's logs and interleave
    checkpoints. The holder's pid and host go into ``.lock.owner`` (filelock truncates the lock
    file itself on every attempt, so it cannot carry them).
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = folder / OWNER_NAME
        holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else ""
        raise FolderInUseError(
            f"{folder} is in use by another process ({holder or 'a process that did not say which'}): two of them "
            f"writing one folder would overwrite each other's checkpoints and logs; wait for it to end, stop it, "
            f"or set another {purpose}"
        ) from None
    try:
        (folder / OWNER_NAME).write_text(f"pid {os.getpid()} on {socket.gethostname()}\n", encoding="utf-8")
        yield
    finally:
        lock.release()


def main_process_folder_lock(folder: str | os.PathLike, purpose: str = "run.output_dir"):
    """:func:`folder_lock` in the main process of a distributed run (``RANK`` 0 or unset); the
    other ranks write through it and hold nothing."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return folder_lock(folder, purpose)
