"""Pretraining sources against the ImageFolder path: images/s of one loader process, and the
folder scan's time per 100,000 files.

The same JPEGs (generated, ``--size`` px, random content) are read as an ImageFolder (the
baseline: torchvision's loader), an unlabelled folder, a file list, shards written by
make-shards and a saved Hugging Face dataset (when ``datasets`` is installed); each item is
decoded and given the pretraining's two 224 px views (the MoCo v2 augmentation), in one process,
as one data-loader worker does. Passes are interleaved and the median of ``--runs`` is taken, so
the ratios compare like with like in this one run.

The scan: ``--scan-files`` empty ``.jpg`` files in 100 folders, listed by a fresh scan and then
checked against the cached listing (one stat per folder); both scaled to 100,000 files.

    python bench/sources_throughput.py [--images 96] [--runs 3] [--scan-files 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simsiam_hub.config import PretrainConfig, load_config
from simsiam_hub.data.augment import two_crop_augmentation
from simsiam_hub.data.datasets import SeededViews, build_dataset
from simsiam_hub.data.sources import make_shards, scan_folder


def make_jpegs(root: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # smooth random content: JPEG sizes closer to photos than white noise
        small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        path = root / "train" / f"class{i % 4}" / f"img{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        paths.append(path)
    (root / "val").mkdir(exist_ok=True)
    return paths


def throughput(dataset, runs: int) -> list[float]:
    views = SeededViews(dataset, two_crop_augmentation(224), seed=0)
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for i in range(len(views)):
            views[i]
        rates.append(len(views) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=320, help="JPEG side in pixels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scan-files", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_jpegs(tmp / "imagefolder", args.images, args.size)
        listing = tmp / "list.txt"
        listing.write_text("".join(f"{p}\n" for p in sorted(paths)))
        shards = make_shards(tmp / "imagefolder" / "train", tmp / "shards", max_count=32)
        sources = {
            "imagefolder (baseline)": ["data.dataset=imagefolder", f"data.root={tmp / 'imagefolder'}"],
            "folder": ["data.dataset=folder", f"data.root={tmp / 'imagefolder' / 'train'}"],
            "filelist": ["data.dataset=filelist", f"data.root={listing}"],
            "webdataset": [
                "data.dataset=webdataset",
                f"data.root={tmp}/shards/shard-{{000000..{len(shards) - 1:06d}}}.tar",
            ],
        }
        try:
            import datasets

            datasets.Dataset.from_dict(
                {"image": [str(p) for p in sorted(paths)]}, features=datasets.Features({"image": datasets.Image()})
            ).save_to_disk(str(tmp / "hf"))
            sources["hf"] = ["data.dataset=hf", f"data.root={tmp / 'hf'}"]
        except ImportError:
            print("datasets not installed: hf left out")
        built = {
            name: build_dataset(load_config(PretrainConfig, None, args_).data, "train", cache_dir=tmp / "run")
            for name, args_ in sources.items()
        }
        rates = {name: [] for name in built}
        for _ in range(args.runs):  # interleaved passes
            for name, dataset in built.items():
                rates[name] += throughput(dataset, 1)
        base = statistics.median(rates["imagefolder (baseline)"])
        print(f"{args.images} JPEGs of {args.size}x{args.size} px -> two 224 px views, one process, torch threads 1")
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"  {rate:7.1f} images/s  median of {args.runs}  x{rate / base:.3f} of imagefolder  {name}")

        scan_root = tmp / "scan"
        per_folder = max(args.scan_files // 100, 1)
        for d in range(100):
            folder = scan_root / f"d{d:03d}"
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"f{i:06d}.jpg").touch()
        n = per_folder * 100
        start = time.perf_counter()
        assert len(scan_folder(scan_root, tmp / "scan_run")) == n
        fresh = time.perf_counter() - start
        start = time.perf_counter()
        scan_folder(scan_root, tmp / "scan_run")
        cached = time.perf_counter() - start
        print(f"folder scan of {n} empty files in 100 folders (local disk, page cache warm):")
        print(f"  fresh scan {fresh:.3f} s = {fresh * 100_000 / n:.2f} s per 100,000 files")
        print(f"  cached listing, checked {cached:.3f} s = {cached * 100_000 / n:.2f} s per 100,000 files")


if __name__ == "__main__":
    main()
