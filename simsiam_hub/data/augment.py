"""Augmentations: the MoCo v2 two-crop recipe that SimSiam pretrains with, and eval transforms.

Reference: facebookresearch/simsiam `main_simsiam.py` and `simsiam/loader.py`.
"""

from __future__ import annotations

import math
import random

from PIL import ImageFilter
from torchvision import transforms as T

from . import DEFAULT_IMAGE_SIZE
from .datasets import dataset_info

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Eval-time resize: the shorter side goes to size / CROP_PCT, then a centre crop (256 -> 224).
CROP_PCT = 0.875
INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


class GaussianBlur:
    """PIL Gaussian blur with sigma drawn uniformly from ``sigma`` (SimCLR / MoCo v2)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self):
        return f"{type(self).__name__}(sigma={self.sigma})"


class TwoCropsTransform:
    """Two independent draws of ``base`` on one image: the query and key views."""

    def __init__(self, base):
        self.base = base

    def __call__(self, img):
        return [self.base(img), self.base(img)]

    def __repr__(self):
        return f"{type(self).__name__}({self.base!r})"


def moco_v2_augmentation(
    size: int = DEFAULT_IMAGE_SIZE,
    *,
    min_scale: float = 0.2,
    blur_prob: float = 0.5,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """One view of the MoCo v2 recipe: crop, colour jitter (p=0.8), grayscale (p=0.2),
    blur (p=0.5, sigma in [0.1, 2]), flip, then a normalised float tensor (3, size, size)."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([GaussianBlur((0.1, 2.0))], p=blur_prob),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def two_crop_augmentation(size: int = DEFAULT_IMAGE_SIZE, **kwargs):
    """The pretraining transform: two independent MoCo v2 views of each image (``kwargs`` as for
    :func:`moco_v2_augmentation`). ``simsiam_hub.data.fast_augment`` computes the same draws faster."""
    return TwoCropsTransform(moco_v2_augmentation(size, **kwargs))


def eval_crop_pct(dataset: str | None) -> float:
    """The fraction of the image the eval view keeps: 1 for datasets evaluated whole
    (``DatasetInfo.whole_image_eval``: Fashion-MNIST, CIFAR-10), else ImageNet's 0.875."""
    return 1.0 if dataset_info(dataset).whole_image_eval else CROP_PCT


def eval_resize(size: int, crop_pct: float) -> int:
    """The shorter side the eval view resizes to before its centre crop: floor(size / crop_pct),
    as timm's ``create_transform`` computes it (so timm users and ``model.transform`` agree)."""
    return math.floor(size / crop_pct)


def eval_transform(
    size: int = DEFAULT_IMAGE_SIZE,
    *,
    dataset: str | None = None,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """Resize the shorter side to size / crop_pct (``crop_pct`` defaults to :func:`eval_crop_pct`
    of ``dataset``: 256 for 224 on ImageNet-like data, ``size`` itself for whole-image
    datasets), centre-crop ``size``, normalise."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
    crop_pct = eval_crop_pct(dataset) if crop_pct is None else crop_pct
    return T.Compose(
        [
            T.Resize(eval_resize(size, crop_pct), interpolation=INTERPOLATIONS[interpolation]),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def transform_from_pretrained_cfg(pretrained_cfg: dict):
    """The eval transform a timm ``pretrained_cfg`` describes (input_size, crop_pct,
    interpolation, mean, std): what a model folder's ``config.json`` says about its inputs."""
    size = pretrained_cfg.get("input_size", [3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE])[-1]
    return eval_transform(
        size,
        crop_pct=pretrained_cfg.get("crop_pct", CROP_PCT),
        interpolation=pretrained_cfg.get("interpolation", "bilinear"),
        mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
    )


def linear_train_transform(
    size: int = DEFAULT_IMAGE_SIZE, *, min_scale: float = 0.08, mean=IMAGENET_MEAN, std=IMAGENET_STD
):
    """The linear-evaluation training transform (reference ``main_lincls.py``):
    RandomResizedCrop(size) at torchvision's default scale (0.08, 1), horizontal flip, normalise."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
