"""Named model variants (the official SimSiam releases and ours) and simsiam-hub's one cache.

A variant names where its weights live: a Hub repo (``repo_id``, the first choice) and, for
the official releases, the original checkpoint (``source_url``) that
``simsiam-hub import-official`` converts when the Hub repo does not exist yet.

The cache (``$SIMSIAM_HUB_CACHE``, else ``$HF_HOME/simsiam_hub``) holds downloaded checkpoints,
each with its SHA-256, and the model folders converted from them; Hub repos stay in
huggingface_hub's own cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import SimsiamHubError

__all__ = [
    "GITHUB_REPO",
    "CODE_URL",
    "OFFICIAL_CODE_URL",
    "PAPER_URL",
    "DownloadError",
    "Variant",
    "VARIANTS",
    "DEFAULT_VARIANT",
    "torch_hub_repo",
    "get_variant",
    "pin_variable",
    "pinned_sha256",
    "trust_status",
    "cache_dir",
    "download_path",
    "converted_dir",
    "download",
    "variant_status",
]

log = logging.getLogger(__name__)

HUB_ORG = "simsiam-hub"  # the Hub organisation our model repos live under
# This code's GitHub repository (OWNER/NAME): torch.hub.load's first argument and the model
# card's install line (`pip install "simsiam-hub @ git+CODE_URL"`). The one place to change it;
# `simsiam-hub export --code-url` overrides it per model folder.
GITHUB_REPO = "simsiam-hub/simsiam-hub"
CODE_URL = f"https://github.com/{GITHUB_REPO}"
OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/simsiam/models"
OFFICIAL_CODE_URL = "https://github.com/facebookresearch/simsiam"
PAPER_URL = "https://arxiv.org/abs/2011.10566"


class DownloadError(SimsiamHubError, OSError):
    """A URL that could not be downloaded."""


@dataclass(frozen=True)
class Variant:
    name: str
    repo_id: str  # its Hub model repo
    source_url: Optional[str]  # the original checkpoint, converted when the Hub repo is missing
    arch: str
    epochs: Optional[int]  # None where the run that makes it decides (see its model card)
    batch_size: Optional[int]
    dataset: str
    recipe: str
    top1: Optional[float]  # published ImageNet linear-evaluation top-1 (%), None if not measured
    license: str
    # SHA-256 of source_url's file where its publisher gives one; the official releases give
    # none, so the first download's digest is recorded and every later use is checked against it.
    sha256: Optional[str] = None


VARIANTS = (
    Variant(
        name="simsiam-resnet50-100ep-bs512",
        repo_id=f"{HUB_ORG}/simsiam-resnet50-100ep-bs512",
        source_url=f"{OFFICIAL_BASE_URL}/100ep/pretrain/checkpoint_0099.pth.tar",
        arch="resnet50",
        epochs=100,
        batch_size=512,
        dataset="imagenet-1k",
        recipe="official release: ImageNet-1k, 100 epochs, batch 512 on 8 GPUs with SyncBN, SGD lr 0.1 "
        "(0.05 x 512/256), momentum 0.9, wd 1e-4, cosine, --fix-pred-lr, MoCo v2 augmentation at 224 px",
        top1=68.1,
        license="cc-by-nc-4.0",
    ),
    Variant(
        name="simsiam-resnet50-100ep-bs256",
        repo_id=f"{HUB_ORG}/simsiam-resnet50-100ep-bs256",
        source_url=f"{OFFICIAL_BASE_URL}/100ep-256bs/pretrain/checkpoint_0099.pth.tar",
        arch="resnet50",
        epochs=100,
        batch_size=256,
        dataset="imagenet-1k",
        recipe="official release: ImageNet-1k, 100 epochs, batch 256, SGD lr 0.05, momentum 0.9, wd 1e-4, "
        "cosine, --fix-pred-lr, MoCo v2 augmentation at 224 px",
        top1=68.3,
        license="cc-by-nc-4.0",
    ),
    Variant(
        name="simsiam-resnet18-fashion-mnist",
        repo_id=f"{HUB_ORG}/simsiam-resnet18-fashion-mnist",
        source_url=None,
        arch="resnet18",
        epochs=None,
        batch_size=None,
        dataset="fashion_mnist",
        recipe="ours: configs/pretrain/fashion_mnist_resnet18_hour.yaml, 5 epochs on 2 CPU cores",
        top1=None,
        license="mit",
    ),
)
DEFAULT_VARIANT = "simsiam-resnet50-100ep-bs512"  # the paper's recipe; torch.hub's default


def torch_hub_repo(code_url: str) -> str | None:
    """torch.hub's ``OWNER/NAME`` for a GitHub URL (torch.hub loads from GitHub only), else None."""
    prefix = "https://github.com/"
    if not code_url.startswith(prefix):
        return None
    parts = code_url[len(prefix) :].strip("/").removesuffix(".git").split("/")
    return "/".join(parts) if len(parts) == 2 and all(parts) else None


def get_variant(name_or_repo_id: str) -> Variant | None:
    """The variant with this name or Hub repo id, or None."""
    for variant in VARIANTS:
        if name_or_repo_id in (variant.name, variant.repo_id):
            return variant
    return None


def pin_variable(variant: Variant) -> str:
    """The environment variable that pins a variant's download digest:
    ``SIMSIAM_HUB_SHA256_<NAME>``, its name upper-cased with ``-`` and ``.`` as ``_``
    (``SIMSIAM_HUB_SHA256_SIMSIAM_RESNET50_100EP_BS512``)."""
    return "SIMSIAM_HUB_SHA256_" + re.sub(r"[^A-Z0-9]", "_", variant.name.upper())


def pinned_sha256(variant: Variant) -> str | None:
    """The SHA-256 a variant's download must have: the user's pin (:func:`pin_variable`), else
    the publisher's (``variant.sha256``), else None (trusted on first use)."""
    pinned = os.environ.get(pin_variable(variant), "").strip().lower()
    if pinned and not re.fullmatch(r"[0-9a-f]{64}", pinned):
        raise DownloadError(f"{pin_variable(variant)}={pinned!r}: expected a SHA-256 digest (64 hex digits)")
    return pinned or variant.sha256


def trust_status(variant: Variant) -> str:
    """How a variant's original checkpoint is checked: pinned, trusted on first use (and the
    digest recorded then), or not applicable (a Hub-only variant)."""
    if variant.source_url is None:
        return "hub only"
    if os.environ.get(pin_variable(variant)):
        return f"pinned ({pin_variable(variant)})"
    if variant.sha256:
        return "pinned (publisher)"
    recorded = download_path(variant.source_url).with_name(download_path(variant.source_url).name + ".sha256")
    if recorded.is_file():
        return f"trusted on first use: {recorded.read_text().split()[0][:16]}..."
    return "trusted on first use"


def cache_dir() -> Path:
    """``$SIMSIAM_HUB_CACHE``, else ``simsiam_hub`` under huggingface_hub's home (``$HF_HOME``,
    by default ``~/.cache/huggingface``)."""
    from huggingface_hub import constants

    if os.environ.get("SIMSIAM_HUB_CACHE"):
        return Path(os.environ["SIMSIAM_HUB_CACHE"]).expanduser()
    return Path(constants.HF_HOME).expanduser() / "simsiam_hub"


def download_path(url: str) -> Path:
    """Where ``url`` is cached: its file name under a folder named by the URL's hash (the two
    official releases share the name ``checkpoint_0099.pth.tar``)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / "downloads" / digest / (url.rstrip("/").rsplit("/", 1)[-1] or "download")


def converted_dir(variant: Variant) -> Path:
    """The model folder a variant's original checkpoint is converted into."""
    return cache_dir() / "models" / variant.name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str | None, url: str, pinned_by: str | None = None) -> Path:
    """``path``, its SHA-256 checked against ``expected`` or the digest recorded at download."""
    recorded = path.with_name(path.name + ".sha256")
    if not expected:
        pinned_by = None
    expected = expected or (recorded.read_text().split()[0] if recorded.is_file() else None)
    actual = file_sha256(path)
    if expected and actual != expected:
        what = f"the digest pinned by {pinned_by}" if pinned_by else "expected"
        raise DownloadError(
            f"{path} (from {url}) has SHA-256 {actual}, {what} {expected}: the file is corrupt or was replaced"
            + ("; refusing it" if pinned_by else "; delete it to download it again")
        )
    if not recorded.is_file():
        recorded.write_text(f"{actual}  {path.name}\n")
    return path


def download(
    url: str,
    *,
    sha256: str | None = None,
    progress: bool = True,
    license: str | None = None,
    pinned_by: str | None = None,
) -> Path:
    """Download ``url`` into the cache with a progress bar, once: a cached file is reused after
    its SHA-256 is checked (against ``sha256``, else the digest recorded when it was downloaded).
    A first download says its ``license`` and the digest it recorded. ``pinned_by``: where
    ``sha256`` came from, for the error. With ``HF_HUB_OFFLINE=1`` nothing is downloaded."""
    import urllib.error

    from huggingface_hub import constants
    from torch.hub import download_url_to_file

    dest = download_path(url)
    if dest.is_file():
        return _verified(dest, sha256, url, pinned_by)
    if constants.HF_HUB_OFFLINE:
        raise DownloadError(
            f"HF_HUB_OFFLINE=1: {url} is not in the cache ({dest.parent}) and nothing is downloaded offline"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes to a temporary file beside `dest` and renames it when complete.
        download_url_to_file(url, str(dest), progress=progress)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"could not download {url}: expected HTTP 200, found HTTP {err.code} {err.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"could not download {url}: {getattr(err, 'reason', err)}") from None
    try:
        _verified(dest, sha256, url, pinned_by)
    except DownloadError:
        dest.unlink(missing_ok=True)
        raise
    digest = file_sha256(dest)
    log.warning(
        "downloaded %s: licence %s; SHA-256 %s (%s), recorded in %s and checked at every later use",
        url,
        license or "not stated by the source",
        digest,
        "matches the pinned digest" if sha256 else "trusted on first use: the publisher gives no digest",
        dest.with_name(dest.name + ".sha256"),
    )
    return dest


def variant_status(variant: Variant) -> str:
    """What of a variant is already on this machine: in the Hub cache, converted, downloaded."""
    from huggingface_hub import try_to_load_from_cache

    found = []
    cached = try_to_load_from_cache(variant.repo_id, "model.safetensors")
    if isinstance(cached, str):
        found.append("hub cache")
    if (converted_dir(variant) / "model.safetensors").is_file():
        found.append("converted")
    elif variant.source_url and download_path(variant.source_url).is_file():
        found.append("downloaded")
    return ", ".join(found) or "-"
