"""How far the fast two-crop augmentation's pixels are from the reference's, for the same draws.

For each of N generated 500x375 photos (the throughput benchmark's, JPEG quality 90, decoded),
both pipelines run from the same RNG state, so that they make the same random choices (crop,
jitter factors and order, grayscale, blur sigma, flip; tests/test_augment.py checks that), and
their views are compared in levels of 255 (the normalisation undone). Printed: the mean absolute
difference over all views, the worst view's mean, the 99th percentile and the maximum over all
pixels; and, as a control, the same for the fast path run from another RNG state.

    python bench/augment_pixel_diff.py [--images 32] [--sizes 224 128]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import machine_description, make_jpegs  # noqa: E402

from simsiam_hub.data.augment import IMAGENET_MEAN, IMAGENET_STD, two_crop_augmentation  # noqa: E402
from simsiam_hub.data.fast_augment import FastTwoCropsTransform  # noqa: E402


def levels(view: torch.Tensor) -> torch.Tensor:
    return (view * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) * 255


def seeded(transform, image, seed: int):
    torch.manual_seed(seed)
    random.seed(seed)
    return transform(image)


def compare(images, size: int) -> dict[str, float]:
    reference, fast = two_crop_augmentation(size), FastTwoCropsTransform(size)
    diffs, control = [], []
    for i, image in enumerate(images):
        for r, f, o in zip(seeded(reference, image, i), seeded(fast, image, i), seeded(fast, image, i + 10_000)):
            diffs.append((levels(f) - levels(r)).abs().flatten())
            control.append((levels(o) - levels(r)).abs().mean().item())
    every = torch.cat(diffs)
    return {
        "views": len(diffs),
        "mean": every.mean().item(),
        "worst_view": max(d.mean().item() for d in diffs),
        "p99": torch.quantile(
            every[torch.randperm(len(every), generator=torch.Generator().manual_seed(0))[:1_000_000]], 0.99
        ).item(),
        "max": every.max().item(),
        "control_mean": sum(control) / len(control),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine_description(torch.device('cpu'))}")
    print(
        f"command: python bench/augment_pixel_diff.py --images {args.images} --sizes {' '.join(map(str, args.sizes))}"
    )
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in make_jpegs(args.images)]
    print("\nfast vs reference two-crop views, same draws, levels of 255 (p99 over up to 1e6 sampled pixels)")
    print("size   views   mean   worst view   p99    max    control: other draws, mean")
    for size in args.sizes:
        c = compare(images, size)
        print(
            f"{size:4d}   {c['views']:5d}  {c['mean']:5.2f}   {c['worst_view']:10.2f}  {c['p99']:5.1f}  {c['max']:5.1f}   {c['control_mean']:5.1f}"
        )


if __name__ == "__main__":
    main()
