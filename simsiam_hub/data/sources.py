"""Unlabelled image sources for pretraining: a folder (any depth), a file list, tar shards in the
WebDataset layout, and Hugging Face datasets (a Hub id, a ``save_to_disk`` folder or parquet files).

Every source is map-style with a fixed order, so the seeded views (per seed, epoch and index),
the resumable DDP sampler and exact resume work as for an ImageFolder. Items are
``(PIL RGB image, label)``, the label -1 where the source has none (``labelled`` False). Images
are decoded here from bytes or a path as torchvision's ImageFolder does (``convert('RGB')``), so
the same image gives the same pixels from every source; a file PIL cannot read raises one of
:data:`~.datasets.UNREADABLE` and :class:`~.datasets.SeededViews` skips it by name.

Folder listings and shard indexes are cached in the run folder (``data_index/``) and rebuilt
when the modification times they were built from change, or with ``data.rescan=true``.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from ..errors import UsageError
from ..fileio import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")  # preference order within a sample
UNLABELLED = -1
INDEX_VERSION = 1


class SourceError(UsageError):
    """Data that cannot be pretrained on as given (exit 2, before any training step). Not a
    :class:`~.datasets.DatasetError`: datasets.py imports this module, not the other way round."""


def decode_rgb(source) -> Image.Image:
    """An image file (a path or bytes) as RGB, as torchvision's ImageFolder loader does it."""
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else open(source, "rb")
    with f:
        img = Image.open(f)
        return img.convert("RGB")


def fingerprint(names) -> str:
    """A short digest of a source's ordered item names (for model cards and cache keys)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


class ImageFiles(Dataset):
    """Image files in a fixed order, no labels."""

    labelled = False

    def __init__(self, paths: list[str], transform=None, kind: str = "folder"):
        self.paths, self.transform, self.kind = paths, transform, kind

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        img = decode_rgb(self.paths[index])
        return (self.transform(img) if self.transform else img), UNLABELLED

    def name_of(self, index: int) -> str:
        return self.paths[index]

    def describe(self) -> dict:
        return {"kind": self.kind, "images": len(self), "fingerprint": fingerprint(self.paths)}


# --- a folder ----------------------------------------------------------------------------------


def _cache_file(cache_dir, kind: str, key: str) -> Path | None:
    if cache_dir is None:
        return None
    return Path(cache_dir) / "data_index" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def _read_cache(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cached if cached.get("version") == INDEX_VERSION else None


def _write_cache(path: Path | None, content: dict) -> None:
    if path is None:
        return
    try:
        atomic_write_text(json.dumps(dict(content, version=INDEX_VERSION)), path)
    except OSError as err:  # a cache that cannot be written costs a rescan next time, nothing else
        log.warning("could not cache the data index in %s: %s", path, err)


def _dirs_unchanged(root: Path, dirs: dict) -> bool:
    """A listing is still valid while every folder it saw keeps its mtime: adding, removing or
    renaming an entry changes its folder's mtime. One stat per folder, none per file."""
    try:
        return all(os.stat(root / rel if rel else root).st_mtime_ns == mtime for rel, mtime in dirs.items())
    except OSError:
        return False


def _walk(root: Path) -> tuple[list[str], dict[str, int]]:
    files, dirs = [], {}
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        dirs[rel] = os.stat(folder).st_mtime_ns
        with os.scandir(folder) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                    files.append(name)
    files.sort()
    return files, dirs


def scan_folder(root: str | os.PathLike, cache_dir=None, rescan: bool = False) -> list[str]:
    """Every image under ``root`` at any depth, as sorted relative paths; cached in
    ``cache_dir/data_index`` and rebuilt when a folder's mtime changed or ``rescan``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"data.root is not a folder: {root} (data.dataset=folder reads the images under it)")
    cache = _cache_file(cache_dir, "folder", str(root.resolve()))
    cached = None if rescan else _read_cache(cache)
    start = time.perf_counter()
    if cached and cached.get("root") == str(root.resolve()) and _dirs_unchanged(root, cached["dirs"]):
        files = cached["files"]
        log.info(
            "data: %d images in %s (listing from %s, checked in %.2f s)",
            len(files),
            root,
            cache,
            time.perf_counter() - start,
        )
    else:
        files, dirs = _walk(root)
        seconds = time.perf_counter() - start
        log.info("data: %d images in %s (scanned %d folders in %.2f s)", len(files), root, len(dirs), seconds)
        if files:
            _write_cache(cache, {"root": str(root.resolve()), "dirs": dirs, "files": files})
    if not files:
        raise SourceError(f"no images under {root}: looked for {' '.join(IMAGE_EXTENSIONS)} (any case) at any depth")
    return files


def folder_source(root, cache_dir=None, rescan: bool = False, transform=None) -> ImageFiles:
    root = Path(root).expanduser()
    files = scan_folder(root, cache_dir, rescan)
    source = ImageFiles([str(root / f) for f in files], transform, "folder")
    source.names = files  # relative paths: what the fingerprint describes, not where they are
    return source


# --- a file list ---------------------------------------------------------------------------------


def read_file_list(list_path) -> list[str]:
    """The paths a list names (one a line, relative to the list's folder or absolute, ``#``
    comments), in its order; missing files are one error naming how many and the first five."""
    list_path = Path(list_path).expanduser()
    if not list_path.is_file():
        raise SourceError(f"data.root is not a file list: {list_path} (expected a text file, one image path a line)")
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SourceError(f"{list_path} is not a text file: expected one image path a line") from None
    base = list_path.parent
    paths = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(str(base / Path(line).expanduser()))  # an absolute line replaces base
    if not paths:
        raise SourceError(f"{list_path} names no files (empty lines and # comments are skipped)")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SourceError(
            f"{list_path}: {len(missing)} of {len(paths)} listed files are missing, the first five: {', '.join(missing[:5])}"
        )
    log.info("data: %d images listed in %s", len(paths), list_path)
    return paths


def filelist_source(list_path, transform=None) -> ImageFiles:
    list_path = Path(list_path).expanduser()
    paths = read_file_list(list_path)
    source = ImageFiles(paths, transform, "filelist")
    source.names = [os.path.relpath(p, list_path.parent) for p in paths]
    return source


# --- tar shards (WebDataset layout) -----------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar a-001.tar a-002.tar; ``{x,y}`` alternatives; nested."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end() :], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        a, b = numeric.groups()
        width = len(a) if a.startswith("0") else 0
        choices = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        choices = body.split(",")
    return [out for choice in choices for out in expand_braces(head + choice + tail)]


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def index_shard(path: str) -> dict:
    """One image per sample (the first of :data:`SHARD_IMAGE_KEYS` it holds): keys, data offsets
    and sizes, read from the tar headers (no image is decoded)."""
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isfile():
                    key, ext = _split_key(member.name)
                    samples.setdefault(key, {})[ext] = (member.offset_data, member.size)
    except tarfile.ReadError as err:
        raise SourceError(f"shard {path} is not an uncompressed tar file ({err})") from None
    keys, offsets, sizes, skipped = [], [], [], 0
    for key, members in samples.items():
        ext = next((e for e in SHARD_IMAGE_KEYS if e in members), None)
        if ext is None:
            skipped += 1
            continue
        keys.append(f"{key}.{ext}")
        offsets.append(members[ext][0])
        sizes.append(members[ext][1])
    if skipped:
        log.warning(
            "shard %s: %d samples hold no image (keys %s) and are left out", path, skipped, "/".join(SHARD_IMAGE_KEYS)
        )
    return {"keys": keys, "offsets": offsets, "sizes": sizes}


class TarShards(Dataset):
    """Samples of tar shards by index: each shard's member offsets are read once (cached in the
    run folder, checked against the shard's size and mtime), then an image is one ``pread``."""

    labelled = False

    def __init__(self, pattern: str, cache_dir=None, rescan: bool = False, transform=None):
        self.transform = transform
        shards = expand_braces(os.path.expanduser(pattern))
        present = [s for s in shards if os.path.isfile(s)]
        if not present:
            raise SourceError(
                f"data.root={pattern!r} matches no shard: none of its {len(shards)} names exist (the first: {shards[0]})"
            )
        if len(present) < len(shards):
            missing = [s for s in shards if s not in set(present)]
            raise SourceError(
                f"data.root={pattern!r}: {len(missing)} of {len(shards)} shards are missing, the first five: {', '.join(missing[:5])}"
            )
        cache = _cache_file(cache_dir, "shards", "\n".join(os.path.abspath(s) for s in shards))
        cached = (None if rescan else _read_cache(cache)) or {}
        start, index, reused = time.perf_counter(), {}, 0
        for shard in shards:
            st = os.stat(shard)
            stamp = [st.st_size, st.st_mtime_ns]
            entry = cached.get("shards", {}).get(shard)
            if entry and entry["stamp"] == stamp:
                reused += 1
            else:
                entry = dict(index_shard(shard), stamp=stamp)
            index[shard] = entry
        self.shards = shards
        self.keys = [k for s in shards for k in index[s]["keys"]]
        self.offsets = [o for s in shards for o in index[s]["offsets"]]
        self.sizes = [n for s in shards for n in index[s]["sizes"]]
        self.ends, total = [], 0  # cumulative sample counts: item i is in shard bisect(ends, i)
        for s in shards:
            total += len(index[s]["keys"])
            self.ends.append(total)
        if reused < len(shards):
            _write_cache(cache, {"shards": index})
        log.info(
            "data: %d images in %d shards (%d indexed, %d from cache, %.2f s)",
            total,
            len(shards),
            len(shards) - reused,
            reused,
            time.perf_counter() - start,
        )
        if not total:
            raise SourceError(f"data.root={pattern!r}: its shards hold no images (keys {', '.join(SHARD_IMAGE_KEYS)})")
        self._fds: dict = {}

    def __len__(self):
        return len(self.keys)

    def _shard_of(self, index: int) -> int:
        return bisect.bisect_right(self.ends, index)

    def _fd(self, shard: int) -> int:
        key = (os.getpid(), shard)  # descriptors are not shared across loader processes
        if key not in self._fds:
            self._fds[key] = os.open(self.shards[shard], os.O_RDONLY)
        return self._fds[key]

    def __getstate__(self):
        return dict(self.__dict__, _fds={})

    def __getitem__(self, index):
        data = os.pread(self._fd(self._shard_of(index)), self.sizes[index], self.offsets[index])
        img = decode_rgb(data)
        return (self.transform(img) if self.transform else img), UNLABELLED

    def name_of(self, index: int) -> str:
        return f"{self.shards[self._shard_of(index)]}:{self.keys[index]}"

    @property
    def names(self):
        return self.keys

    def describe(self) -> dict:
        return {"kind": "webdataset", "images": len(self), "fingerprint": fingerprint(self.keys)}


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise UsageError(f"--max-size {text!r} is not a size: expected bytes, or a number with K, M, G or T")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def make_shards(
    src, out, *, max_count: int = 10_000, max_size="1G", prefix: str = "shard", rescan: bool = False
) -> list[Path]:
    """Write the images of a folder or file list into ``out/PREFIX-000000.tar``... in the folder's
    sorted (or the list's) order, as WebDataset samples keyed by their position; a shard closes at
    ``max_count`` images or before it passes ``max_size`` bytes. Returns the shards written."""
    src = Path(src).expanduser()
    limit = _parse_size(max_size)
    if max_count < 1:
        raise UsageError(f"--max-count must be positive, got {max_count}")
    source = folder_source(src) if src.is_dir() else filelist_source(src)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tar, count, size = None, 0, 0

    def close():
        if tar is not None:
            tar.close()
            os.replace(written[-1].with_suffix(".tar.tmp"), written[-1])

    for i, path in enumerate(source.paths):
        ext = Path(path).suffix.lower().lstrip(".")
        nbytes = os.path.getsize(path)
        if tar is None or count >= max_count or (count and size + nbytes + 1024 > limit):
            close()
            written.append(out / f"{prefix}-{len(written):06d}.tar")
            tar, count, size = tarfile.open(written[-1].with_suffix(".tar.tmp"), "w", format=tarfile.USTAR_FORMAT), 0, 0
        for name, data in ((f"{i:09d}.{ext}", Path(path).read_bytes()), (f"{i:09d}.txt", source.names[i].encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
        count, size = count + 1, size + nbytes + 1024
    close()
    return written


# --- Hugging Face datasets ---------------------------------------------------------------------


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise SourceError("data.dataset=hf needs the `datasets` package: pip install 'simsiam-hub[data]'") from None
    return datasets


class HFImages(Dataset):
    """A split of a Hugging Face dataset, map-style over its memory-mapped Arrow table; images
    are decoded here from their stored bytes (so a corrupt row is skipped by name)."""

    def __init__(self, root: str, split: str, *, image_column=None, label_column=None, revision=None, transform=None):
        datasets = _import_datasets()
        self.transform, self.root, self.split, self.revision = transform, root, split, revision
        local = Path(root).expanduser()
        try:
            if local.is_dir() and any(local.glob("*.json")) and not any(local.rglob("*.parquet")):
                loaded = datasets.load_from_disk(str(local))
            elif local.is_dir():
                loaded = datasets.load_dataset("parquet", data_dir=str(local))
            else:
                loaded = datasets.load_dataset(root, revision=revision)
        except FileNotFoundError as err:
            raise SourceError(f"Hugging Face dataset {root!r} not found: {str(err).splitlines()[0][:200]}") from None
        except Exception as err:  # the Hub client's errors have no common base below Exception
            if type(err).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"):
                raise SourceError(f"Hugging Face dataset {root!r}: {str(err).splitlines()[0][:200]}") from None
            raise
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise SourceError(
                    f"{root} has no split {split!r}: its splits are {', '.join(loaded)} (data.split / data.val_split)"
                )
            loaded = loaded[split]
        features = loaded.features
        columns = list(features)
        if image_column is None:
            image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
            if image_column is None:
                raise SourceError(
                    f"{root} has no image column: its columns are {', '.join(columns)} (data.image_column)"
                )
        elif image_column not in features:
            raise SourceError(
                f"{root} has no column {image_column!r}: its columns are {', '.join(columns)} (data.image_column)"
            )
        if label_column is None:
            label_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        elif label_column not in features:
            raise SourceError(
                f"{root} has no column {label_column!r}: its columns are {', '.join(columns)} (data.label_column)"
            )
        self.image_column, self.label_column = image_column, label_column
        self.labelled = label_column is not None
        if isinstance(features[image_column], datasets.Image):
            loaded = loaded.cast_column(image_column, datasets.Image(decode=False))
        self.table = loaded
        log.info("data: %d images in %s split %s (column %s)", len(loaded), root, split, image_column)

    def __len__(self):
        return len(self.table)

    def __getitem__(self, index):
        row = self.table[index]
        value = row[self.image_column]
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise OSError("the row holds no image")
        img = decode_rgb(value)
        label = int(row[self.label_column]) if self.labelled else UNLABELLED
        return (self.transform(img) if self.transform else img), label

    @property
    def targets(self):
        if not self.labelled:
            raise SourceError(f"{self.root} has no label column (data.label_column): labels were asked of it")
        return self.table[self.label_column]

    def name_of(self, index: int) -> str:
        return f"{self.root} {self.split} row {index}"

    def describe(self) -> dict:
        local = Path(self.root).expanduser().is_dir()
        if local:
            return {"kind": "hf", "images": len(self), "fingerprint": getattr(self.table, "_fingerprint", "")[:16]}
        return {"kind": "hf", "images": len(self), "hub_id": self.root, "revision": self.revision, "split": self.split}


# --- from a config -------------------------------------------------------------------------------

UNLABELLED_SOURCES = ("folder", "filelist", "webdataset")


def build_source(data_cfg, split: str, transform=None, cache_dir=None) -> Dataset:
    """The source ``data_cfg`` names (one of :data:`~.datasets.DATASETS`' new kinds)."""
    name, root = data_cfg.dataset, data_cfg.root
    if not root:
        raise SourceError(f"data.root is required for data.dataset={name}")
    if name in UNLABELLED_SOURCES and split != "train":
        raise SourceError(
            f"data.dataset={name} has no labels: evaluation needs a labelled set (an imagefolder, or an hf dataset with a label column)"
        )
    rescan = getattr(data_cfg, "rescan", False)
    if name == "folder":
        return folder_source(root, cache_dir, rescan, transform)
    if name == "filelist":
        return filelist_source(root, transform)
    if name == "webdataset":
        return TarShards(root, cache_dir, rescan, transform)
    if name == "hf":
        return HFImages(
            root,
            data_cfg.split if split == "train" else data_cfg.val_split,
            image_column=data_cfg.image_column,
            label_column=data_cfg.label_column,
            revision=data_cfg.revision,
            transform=transform,
        )
    raise SourceError(f"unknown source {name!r}")
