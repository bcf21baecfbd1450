"""Model repos: locating one (a Hub repo id or a local folder), pushing and pulling.

Hub I/O is huggingface_hub's: ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and the Hub
cache behave as it documents, and its keywords (``revision``, ``cache_dir``, ``token``,
``local_files_only``, ``force_download``) are passed through. A local folder works wherever a
repo id does: the embedded default, no account and no network.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub import errors as hf
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from ..errors import SimsiamHubError, UsageError
from ..fileio import atomic_folder
from .export import export, rewrite_card
from .folder import (
    BACKBONE_FILE,
    CONFIG_FILE,
    MODEL_FILES,
    FolderError,
    check_destination,
    read_config,
    validate_folder,
)

__all__ = [
    "HubError",
    "RepoNotFoundError",
    "NotCachedError",
    "is_local",
    "progress_bars",
    "resolve_model_dir",
    "push_to_hub",
    "pull",
]

log = logging.getLogger(__name__)


class HubError(SimsiamHubError, RuntimeError):
    """A model repo that cannot be found, read or written."""


class RepoNotFoundError(HubError):
    """The Hub has no such repo (or it is private and the token does not open it)."""


class NotCachedError(HubError):
    """Offline (or the Hub unreachable) and the files were never downloaded."""


LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"


def is_local(ref: str | Path) -> bool:
    """A local folder rather than a Hub repo id: an existing path, or one written as a path
    (absolute, ``./``, ``../``, ``~``). Hub repo ids are ``NAME`` or ``ORG/NAME``."""
    text = str(ref)
    try:
        exists = Path(text).expanduser().exists()
    except OSError:  # a name too long to be a path (ENAMETOOLONG): the Hub's repo id check says why
        exists = False
    return exists or text.startswith(("/", "./", "../", "~", "."))


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None):
    """huggingface_hub's exceptions as one-line errors that say what was expected."""
    at = repo_id + (f" at revision {revision!r}" if revision else "")
    try:
        yield
    except hf.HFValidationError as err:
        raise UsageError(
            f"{repo_id!r} is neither an existing local folder nor a valid Hub repo id (expected ORG/NAME): {err}"
        ) from None
    except hf.RevisionNotFoundError:
        raise HubError(
            f"{at}: no such revision on {constants.ENDPOINT}: expected a branch, tag or commit id of {repo_id}"
        ) from None
    except hf.RepositoryNotFoundError:
        raise RepoNotFoundError(
            f"repo {repo_id} not found on {constants.ENDPOINT} (expected an existing model repo; if it is private, {LOGIN_HINT})"
        ) from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        raise NotCachedError(
            f"{at} is not in the Hub cache ({constants.HF_HUB_CACHE}) and {why}: download it once online "
            "(simsiam-hub pull), or pass a local model folder"
        ) from None
    except hf.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        detail = (getattr(err, "server_message", None) or str(err)).strip().splitlines()[0][:300]
        hint = f" ({LOGIN_HINT} with a token that may write there)" if status in (401, 403) else ""
        raise HubError(f"{at}: {constants.ENDPOINT} answered HTTP {status}: {detail}{hint}") from None
    except ValueError as err:
        if not _raised_by_huggingface_hub(err):
            raise
        # huggingface_hub refuses, before writing anything, a listed file name that would land
        # outside the download folder ("../x", an absolute path): a broken or hostile server.
        reason = str(err).splitlines()[0][:300]
        raise HubError(f"{at}: {constants.ENDPOINT} lists a file that cannot be downloaded safely: {reason}") from None
    except Exception as err:
        if not isinstance(err, transport_errors()):
            raise
        timed_out = isinstance(err, timeout_errors())
        what = "timed out" if timed_out else "failed"
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise HubError(
            f"{at}: the connection to {constants.ENDPOINT} {what} ({reason}): check the network, "
            "HF_ENDPOINT (the Hub's address), or set HF_HUB_OFFLINE=1 to use the Hub cache only"
        ) from None


def interruptible(func, *args, **kwargs):
    """``func(*args, **kwargs)`` in a daemon thread, so that Ctrl-C reaches the caller at once:
    huggingface_hub's download pool lets no exception through until the downloads under way
    have finished (minutes for a large file, forever from a stalled server)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = func(*args, **kwargs)
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="simsiam-hub-download", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _raised_by_huggingface_hub(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("huggingface_hub")


# The HTTP libraries huggingface_hub has sent requests through (httpx2 since 2.x, httpx and
# requests before): their transport errors (refused, reset, DNS, timeouts) by class.
_TRANSPORT_CLASSES = {
    "httpx2": ("TransportError", "TimeoutException"),
    "httpx": ("TransportError", "TimeoutException"),
    "requests.exceptions": ("ConnectionError", "Timeout"),
    "urllib3.exceptions": ("ProtocolError", "NewConnectionError", "TimeoutError"),
}
_TIMEOUT_CLASSES = {
    "httpx2": ("TimeoutException",),
    "httpx": ("TimeoutException",),
    "requests.exceptions": ("Timeout",),
    "urllib3.exceptions": ("TimeoutError",),
}


def _classes(table: dict) -> tuple[type, ...]:
    # Only a module already imported can have raised: nothing is imported for the check.
    found = []
    for module, names in table.items():
        mod = sys.modules.get(module)
        found += [
            getattr(mod, name) for name in names if mod is not None and isinstance(getattr(mod, name, None), type)
        ]
    return tuple(found)


def transport_errors() -> tuple[type, ...]:
    """The exception classes of a failed connection or a timeout, whatever library raised them."""
    return _classes(_TRANSPORT_CLASSES) + (ConnectionError, TimeoutError)


def timeout_errors() -> tuple[type, ...]:
    return _classes(_TIMEOUT_CLASSES) + (TimeoutError,)


@contextlib.contextmanager
def request_timeouts():
    """Timeouts on huggingface_hub's shared HTTP client for the block (it has none by default,
    so a server that accepts and never answers would hang a push): connect within
    ``HF_HUB_ETAG_TIMEOUT`` seconds, and no read or write may wait more than
    6 x ``HF_HUB_DOWNLOAD_TIMEOUT`` (60 s by default: the Hub may take a while to commit)."""
    from huggingface_hub.utils import get_session

    session = get_session()
    saved = getattr(session, "timeout", None)
    try:
        import httpx2

        session.timeout = httpx2.Timeout(6 * constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=constants.HF_HUB_ETAG_TIMEOUT)
    except (ImportError, AttributeError):  # another client: leave it as configured
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            session.timeout = saved


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """huggingface_hub's progress bars on or off for the block."""
    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


def resolve_model_dir(
    ref: str | Path,
    revision: str | None = None,
    files=(BACKBONE_FILE,),
    *,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    progress: bool = True,
) -> Path:
    """The folder holding ``config.json`` and ``files`` of a model repo: ``ref`` itself when it
    is a local folder, else the Hub cache's snapshot (downloading only those files)."""
    wanted = (CONFIG_FILE, *files)
    if is_local(ref):
        folder = Path(ref).expanduser()
        if revision:
            raise HubError(f"{ref} is a local folder: it has no revisions (revision={revision!r} given)")
        if not folder.is_dir():
            raise HubError(f"model folder not found: {folder} (expected a folder with {', '.join(wanted)})")
    else:
        with _hub_errors(str(ref), revision), progress_bars(progress):
            folder = Path(
                interruptible(
                    snapshot_download,
                    str(ref),
                    revision=revision,
                    allow_patterns=list(wanted),
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=local_files_only,
                    force_download=force_download,
                )
            )
    missing = [f for f in wanted if not (folder / f).is_file()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())[:10]
        where = f"{ref}" + (f" at revision {revision!r}" if revision else "")
        raise HubError(
            f"{where} is not a complete model repo: expected {', '.join(wanted)}; missing {missing}, found {found}"
        )
    return folder


def push_to_hub(
    source: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    results=(),
    token: str | bool | None = None,
    force: bool = False,
) -> str:
    """Upload a model folder (or a checkpoint, exported first) to a Hub repo in one commit.

    The folder is validated first (complete safetensors, the architecture config.json names).
    Creates the repo (and the ``revision`` branch) when missing; the card is rewritten for
    ``repo_id`` with ``results`` (results files) added; model files the folder no longer has
    are deleted from the repo. Returns the commit id. ``repo_id`` may also be a local folder
    path (``./hub/my-model``): it is then written whole and its path returned; it must be new,
    empty or a model folder, unless ``force``. ``token``: huggingface_hub's (``HF_TOKEN``,
    ``hf auth login``); never printed.
    """
    source = Path(source).expanduser()
    local = is_local(repo_id)
    if not local and constants.HF_HUB_OFFLINE:
        raise HubError(
            f"HF_HUB_OFFLINE=1: pushing to {repo_id} on {constants.ENDPOINT} needs the network; unset HF_HUB_OFFLINE (a local folder as the target works offline)"
        )
    with tempfile.TemporaryDirectory(prefix="simsiam-hub-push-") as tmp:
        if source.is_dir():
            validate_folder(source)
            folder = source
        elif source.is_file():
            folder = export(source, Path(tmp) / "exported")
        else:
            raise HubError(f"{source}: expected a model folder or a checkpoint, found nothing there")
        if read_config(folder)[0].license == "unknown":
            log.warning(
                "%s: the weights' licence is unknown (the training data's licence was not given): the card says so. "
                "Set data.license when pretraining, or edit the license in README.md and config.json",
                source,
            )
        staged = Path(tmp) / "staged"
        staged.mkdir()
        name = Path(repo_id).name if local else None
        rewrite_card(folder, staged, results=results, repo_id=None if local else repo_id, name=name)
        if local:
            return _push_local(staged, Path(repo_id).expanduser(), revision, force=force)
        api = HfApi(token=token)
        with _hub_errors(repo_id, revision), request_timeouts():
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staged,
                revision=revision,
                delete_patterns=list(MODEL_FILES),
                commit_message=commit_message or "Upload SimSiam model with simsiam-hub",
            )
        return info.oid


def _push_local(staged: Path, target: Path, revision: str | None, *, force: bool) -> str:
    if revision:
        raise HubError(f"{target} is a local folder: it has no revisions (revision={revision!r} given)")
    if target.resolve() == Path.cwd().resolve():
        raise FolderError(
            f"--repo-id {target} is the current folder: give the model folder's own path (e.g. ./hub/NAME)"
        )
    check_destination(target, force=force, what="--repo-id")
    with atomic_folder(target) as tmp:
        for child in staged.iterdir():
            shutil.copyfile(child, tmp / child.name)
    return str(target)


def pull(
    repo_id: str,
    revision: str | None = None,
    out: str | Path | None = None,
    *,
    token=None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download a model repo (all its files) into the Hub cache and return that folder, or copy
    it into ``out`` (written whole). A local folder is returned as is, or copied to ``out``.
    What arrives is validated as a model folder."""
    if out is not None:
        out = check_destination(out, force=force)
    if is_local(repo_id):
        folder = resolve_model_dir(repo_id, revision)
    else:
        with _hub_errors(repo_id, revision), progress_bars(progress):
            folder = Path(interruptible(snapshot_download, repo_id, revision=revision, token=token))
    validate_folder(folder, where=str(repo_id))
    if out is None:
        return folder
    with atomic_folder(out) as tmp:
        for name in MODEL_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
    return out
