"""Datasets: ImageFolder (ImageNet layout), Fashion-MNIST (idx files), CIFAR-10 and a synthetic
set; what is known of each (:data:`DATASETS`); and the seeded two-view wrapper pretraining uses.

Every dataset yields ``(PIL RGB image, int label)``; transforms are applied on top.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset, Subset

from ..errors import SimsiamHubError, UsageError

log = logging.getLogger(__name__)

# Where Debian's `dataset-fashion-mnist` package puts the idx files.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What simsiam-hub knows of a dataset, in one place.

    ``eval_split``: the name, in results, of the split ``build_dataset(..., "val")`` returns (the
    test set where a dataset has no val split). ``whole_image_eval``: the eval view keeps the
    whole image (datasets of whole, centred objects a few dozen pixels wide: the CIFAR
    convention), else it is resized to size / 0.875 and centre-cropped as on ImageNet.
    ``license``: the licence weights trained on it inherit (None: unknown). ``hub_id``: its
    Hugging Face Hub dataset, for model cards. ``num_classes``: None where the data decides.
    """

    eval_split: str = "val"
    whole_image_eval: bool = False
    license: str | None = None
    hub_id: str | None = None
    num_classes: int | None = None
    labelled: bool | None = True  # None: the data decides (a Hugging Face dataset's label column)


DATASETS = {
    "imagefolder": DatasetInfo(),
    "fashion_mnist": DatasetInfo("test", True, "mit", "zalando-datasets/fashion_mnist", 10),
    "cifar10": DatasetInfo("test", True, None, "uoft-cs/cifar10", 10),
    "synthetic": DatasetInfo("val", False, "apache-2.0", None, 4),
    # Pretraining sources (sources.py): unlabelled folders, file lists and tar shards; Hugging Face datasets.
    "folder": DatasetInfo(labelled=False),
    "filelist": DatasetInfo(labelled=False),
    "webdataset": DatasetInfo(labelled=False),
    "hf": DatasetInfo(labelled=None),
}
SOURCES = ("folder", "filelist", "webdataset", "hf")


def dataset_info(name: str | None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a name we do not build (``imagenet-1k``...) gets the defaults."""
    return DATASETS.get(name or "", DatasetInfo())


class DatasetError(SimsiamHubError, ValueError):
    """A dataset path that is missing, empty or not in the expected layout."""


class DataRootError(DatasetError, UsageError):
    """A ``data.root`` that does not exist: a usage error (exit code 2)."""


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): the MNIST family's format."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}): replace it with a complete copy"
        ) from None
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise DatasetError(f"{path} is not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
            if (folder / name).is_file():
                return folder / name
    return None


class FashionMNIST(Dataset):
    """Fashion-MNIST from its idx files, as 28x28 images replicated to RGB.

    ``root`` is a folder holding the four idx files (gzipped or not, also in torchvision's
    ``FashionMNIST/raw`` layout); None looks in Debian's package folder. With
    ``download=True`` and no files found, torchvision downloads them into ``root``; without it
    nothing is fetched over the network.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(
        self, root: str | os.PathLike | None = None, train: bool = True, transform=None, download: bool = False
    ):
        prefix = "train" if train else "t10k"
        candidates = [Path(root)] if root else [Path(d) for d in FASHION_MNIST_DIRS]
        for folder in candidates:
            images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
            labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                break
        else:
            if download and root:
                _download("FashionMNIST", root, train)
                return self.__init__(root, train, transform, download=False)
            where = ", ".join(str(c) for c in candidates)
            raise DatasetError(
                f"Fashion-MNIST {prefix} idx files not found in {where}: expected "
                f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] "
                "(`apt-get install dataset-fashion-mnist`, or data.root=DIR data.download=true to download them)"
            )
        self.images = _read_idx(images)
        self.targets = torch.from_numpy(_read_idx(labels).astype(np.int64))
        if len(self.images) != len(self.targets):
            raise DatasetError(f"{images} and {labels} disagree: {len(self.images)} images, {len(self.targets)} labels")
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        img = Image.fromarray(self.images[index], mode="L").convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def _download(name: str, root, train: bool):
    """torchvision's dataset ``name`` downloaded into ``root``; a failure is one clear line."""
    import torchvision

    try:
        return getattr(torchvision.datasets, name)(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        reason = str(getattr(err, "reason", err)).splitlines()[0][:200]
        raise DatasetError(
            f"{name} is not in {root} and could not be downloaded: {type(err).__name__}: {reason}"
        ) from None


class SyntheticShapes(Dataset):
    """Small images of coloured shapes on textured backgrounds, one shape per class.

    Deterministic per (seed, index): the same index always gives the same image. Class
    identity lives in the shape, not in the colour, so augmentations cannot erase it.
    """

    classes = ("disc", "square", "triangle", "cross")

    def __init__(self, size: int = 512, image_size: int = 32, seed: int = 0, transform=None):
        self.size, self.image_size, self.seed, self.transform = size, image_size, seed, transform
        self.targets = torch.arange(size) % len(self.classes)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        s = self.image_size
        background = rng.integers(0, 256, size=3)
        noise = rng.normal(0, 20, size=(s, s, 3))
        img = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        label = int(self.targets[index])
        r = s * rng.uniform(0.2, 0.35)
        cx, cy = s * rng.uniform(0.35, 0.65, size=2)
        color = tuple(int(c) for c in (255 - background + rng.integers(-40, 40, size=3)) % 256)
        if label == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif label == 1:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif label == 2:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
        else:
            w = r / 3
            draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
            draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)
        return (self.transform(img) if self.transform else img), label


def _image_folder(root: Path, split: str, transform):
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"ImageFolder split not found: {folder} (expected {root}/{{train,val}}/CLASS/IMAGE)")
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetError(f"ImageFolder {folder} holds no images: {err}") from None


def build_dataset(data_cfg, split: str, transform=None, cache_dir=None) -> Dataset:
    """The ``train`` or ``val`` split of the dataset that ``data_cfg`` names.

    Layouts: imagefolder ``ROOT/{train,val}/CLASS/*.jpg``; fashion_mnist the idx files
    (val = the 10,000 test images); cifar10 torchvision's files (val = test); synthetic a
    generated set (val = other seeds); folder, filelist, webdataset and hf: :mod:`.sources`
    (``cache_dir``: where folder listings and shard indexes are cached, the run folder).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    name = data_cfg.dataset
    if name in SOURCES:
        from .sources import build_source  # sources imports this module

        return build_source(data_cfg, split, transform, cache_dir)
    root = Path(data_cfg.root).expanduser() if data_cfg.root else None
    if root is not None and not root.exists():
        raise DataRootError(f"data.root does not exist: {root} (expected the dataset's folder)")
    if name == "imagefolder":
        if root is None:
            raise DatasetError("data.root is required for imagefolder (a folder with train/ and val/)")
        return _image_folder(root, split, transform)
    if name == "fashion_mnist":
        return FashionMNIST(root, train=split == "train", transform=transform, download=data_cfg.download)
    if name == "cifar10":
        import torchvision

        if root is None:
            raise DatasetError("data.root is required for cifar10 (a folder for torchvision's CIFAR-10 files)")
        if data_cfg.download:
            _download("CIFAR10", root, split == "train")
        try:
            return torchvision.datasets.CIFAR10(str(root), train=split == "train", transform=transform)
        except (RuntimeError, OSError) as err:
            raise DatasetError(
                f"CIFAR-10 not found in {root} ({err}); data.download=true lets torchvision download it"
            ) from None
    if name == "synthetic":
        n = data_cfg.synthetic_size if split == "train" else max(data_cfg.synthetic_size // 4, 16)
        return SyntheticShapes(
            n, image_size=max(data_cfg.image_size, 16), seed=0 if split == "train" else 1, transform=transform
        )
    raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def targets_of(dataset: Dataset) -> torch.Tensor:
    """Integer labels of every item, without decoding images where the dataset allows."""
    if isinstance(dataset, Subset):
        return targets_of(dataset.dataset)[torch.as_tensor(dataset.indices)]
    if isinstance(dataset, SeededViews):
        return targets_of(dataset.dataset)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [label for _, label in dataset]
    return torch.as_tensor(targets, dtype=torch.long)


def seeded_subset(dataset: Dataset, size: int | None, seed: int = 0, what: str = "subset") -> Dataset:
    """A fixed random subset of ``size`` items; the whole set when size is None, or larger than
    the set (which is logged, naming ``what``: the caller records ``len()`` of the result)."""
    if size is not None and size > len(dataset):
        log.warning("%s of %d asked for, but the set has %d items: using all of them", what, size, len(dataset))
    if size is None or size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    return Subset(dataset, torch.randperm(len(dataset), generator=generator)[:size].tolist())


def item_name(dataset: Dataset, index: int) -> str:
    """A person's name for item ``index``: its file for image folders, else ``item N``."""
    while isinstance(dataset, (Subset, SeededViews)):
        if isinstance(dataset, Subset):
            index = dataset.indices[index]
        dataset = dataset.dataset
    if hasattr(dataset, "name_of"):
        return dataset.name_of(index)
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else f"item {index} of {type(dataset).__name__}"


def base_dataset(dataset: Dataset) -> Dataset:
    """The source under any :class:`Subset` and :class:`SeededViews` wrappers."""
    while isinstance(dataset, (Subset, SeededViews)):
        dataset = dataset.dataset
    return dataset


def is_labelled(dataset: Dataset) -> bool:
    """Whether a dataset's items carry labels (the new sources may not: label -1)."""
    return bool(getattr(base_dataset(dataset), "labelled", True))


# PIL's ways of saying a file is not a readable image (DecompressionBombError is not an OSError;
# some decoders raise SyntaxError or ValueError on malformed headers).
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
MAX_TRIES = 8  # replacement draws for an unreadable image before the item itself fails


class SeededViews(Dataset):
    """Applies ``transform`` with random state seeded by (seed, epoch, index), and passes over
    unreadable images.

    Each image's views then depend on neither the number of data-loader workers nor the
    number of ranks nor an interruption: a resumed run, a 1-process run and a 2-process
    run all see the same pixels. An image that cannot be read (a truncated JPEG at ImageNet
    scale) is logged by name and replaced by another drawn from the same seed, so that resume
    stays exact; items are ``(views, label, bad)``, ``bad`` the indices that failed, padded
    with -1, for the caller to count.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self):
        return len(self.dataset)

    def _item_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch) * 100_000_007 + index

    def __getitem__(self, index):
        item_seed = self._item_seed(index)
        bad = torch.full((MAX_TRIES,), -1, dtype=torch.long)
        chosen = index
        for attempt in range(MAX_TRIES):
            try:
                image, label = self.dataset[chosen]
                break
            except UNREADABLE as err:
                bad[attempt] = chosen
                replacement = int(
                    torch.randint(len(self.dataset), (1,), generator=torch.Generator().manual_seed(item_seed + attempt))
                )
                log.warning(
                    "skipping unreadable image %s (%s: %s); item %d in its place",
                    item_name(self.dataset, chosen),
                    type(err).__name__,
                    str(err)[:120],
                    replacement,
                )
                chosen = replacement
        else:
            raise DatasetError(
                f"{MAX_TRIES} images in a row could not be read, the last {item_name(self.dataset, chosen)}: is the dataset readable?"
            )
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            random.seed(item_seed)
            try:
                views = self.transform(image)
            finally:
                random.setstate(state)
        return views, label, bad


def _as_is(image):
    return image


EVAL_MAX_BAD_IMAGES = 100  # unreadable images an evaluation passes over before it stops (as data.max_bad_images)


def readable(dataset: Dataset) -> SeededViews:
    """``dataset`` for evaluation with pretraining's handling of unreadable images
    (:class:`SeededViews` with the dataset's own transform): one is logged by name and replaced by
    another image drawn from a fixed seed, and items are ``(image, label, bad)``; the caller counts
    ``bad`` against a bound (:func:`count_bad_images`)."""
    return SeededViews(dataset, _as_is, seed=0)


def count_bad_images(dataset: Dataset, bad: set[int], what: str = "evaluation", limit: int | None = None) -> None:
    """Log how many images of ``dataset`` could not be read (each was logged by name when it was
    passed over); more than ``limit`` (default :data:`EVAL_MAX_BAD_IMAGES`) stops the run with a
    :class:`DatasetError` naming some."""
    if not bad:
        return
    limit = EVAL_MAX_BAD_IMAGES if limit is None else limit
    names = ", ".join(item_name(dataset, i) for i in sorted(bad)[:5])
    if len(bad) > limit:
        raise DatasetError(
            f"{len(bad)} images could not be read in the {what}, more than {limit} (first: {names}): is the dataset readable?"
        )
    log.warning("%s: %d unreadable images replaced by seeded draws of others (first: %s)", what, len(bad), names)
