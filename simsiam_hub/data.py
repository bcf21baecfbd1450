"""Datasets: ImageFolder (ImageNet layout), Fashion-MNIST (idx files) and a synthetic set.

Every dataset yields ``(PIL RGB image, int label)``; transforms are applied on top.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset, Subset

from .errors import SimsiamHubError

DATASETS = ("imagefolder", "fashion_mnist", "cifar10", "synthetic")
# Where Debian's `dataset-fashion-mnist` package puts the idx files.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class DatasetError(SimsiamHubError, ValueError):
    """A dataset path that is missing, empty or not in the expected layout."""


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): the MNIST family's format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
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
    ``download=True`` and no files found, torchvision downloads them into ``root``.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True, transform=None, download: bool = False):
        prefix = "train" if train else "t10k"
        candidates = [Path(root)] if root else [Path(d) for d in FASHION_MNIST_DIRS]
        for folder in candidates:
            images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
            labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                break
        else:
            if download and root:
                import torchvision

                torchvision.datasets.FashionMNIST(root, train=train, download=True)
                return self.__init__(root, train, transform, download=False)
            where = ", ".join(str(c) for c in candidates)
            raise DatasetError(
                f"Fashion-MNIST {prefix} idx files not found in {where}: expected "
                f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] "
                "(`apt-get install dataset-fashion-mnist`, or data.root=DIR with a download)"
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


def build_dataset(data_cfg, split: str, transform=None) -> Dataset:
    """The ``train`` or ``val`` split of the dataset that ``data_cfg`` names.

    Layouts: imagefolder ``ROOT/{train,val}/CLASS/*.jpg``; fashion_mnist the idx files
    (val = the 10,000 test images); cifar10 torchvision's files (val = test); synthetic a
    generated set (val = other seeds).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    name = data_cfg.dataset
    root = Path(data_cfg.root).expanduser() if data_cfg.root else None
    if root is not None and not root.exists():
        raise DatasetError(f"data.root does not exist: {root}")
    if name == "imagefolder":
        if root is None:
            raise DatasetError("data.root is required for imagefolder (a folder with train/ and val/)")
        return _image_folder(root, split, transform)
    if name == "fashion_mnist":
        return FashionMNIST(root, train=split == "train", transform=transform, download=root is not None)
    if name == "cifar10":
        import torchvision

        if root is None:
            raise DatasetError("data.root is required for cifar10 (a folder for torchvision's CIFAR-10 files)")
        try:
            return torchvision.datasets.CIFAR10(str(root), train=split == "train", transform=transform, download=True)
        except (RuntimeError, OSError) as err:
            raise DatasetError(f"CIFAR-10 not found in {root} and could not be downloaded: {err}") from None
    if name == "synthetic":
        n = data_cfg.synthetic_size if split == "train" else max(data_cfg.synthetic_size // 4, 16)
        return SyntheticShapes(n, image_size=max(data_cfg.image_size, 16), seed=0 if split == "train" else 1, transform=transform)
    raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def targets_of(dataset: Dataset) -> torch.Tensor:
    """Integer labels of every item, without decoding images where the dataset allows."""
    if isinstance(dataset, Subset):
        return targets_of(dataset.dataset)[torch.as_tensor(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [label for _, label in dataset]
    return torch.as_tensor(targets, dtype=torch.long)


def seeded_subset(dataset: Dataset, size: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of ``size`` items (the whole set when size is None or larger)."""
    if size is None or size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    return Subset(dataset, torch.randperm(len(dataset), generator=generator)[:size].tolist())
