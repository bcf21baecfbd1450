"""Pretraining end to end from a folder of JPEGs: the reference pipeline against ours.

Each pipeline reads the same generated ImageNet-sized JPEGs (500x375, quality 90, made by
pretrain_throughput.make_photo) through torchvision's ImageFolder and a DataLoader with
``--workers`` processes (default: one per core), and trains SimSiam on them:

  reference      the two-crop PIL augmentation on the workers (augment.two_crop_augmentation),
                 float views copied to the device, pretrain_throughput.reference_step (fp32,
                 NCHW): what facebookresearch/simsiam's main_simsiam.py runs
  ours-loader    data.SeededViews over fast_augment.FastTwoCropsTransform on the workers, then
                 pretrain_throughput.ours_step (autocast as precision.resolve_amp, channels_last):
                 the engine with data.fast_augment=true
  ours-device    data.SeededViews over device_augment.DeviceTwoCropsTransform on the workers
                 (draws, decode, uint8 crops), DeviceTwoCropsTransform.finish on the training device,
                 then ours_step: the engine with data.augment_on=device

Per pipeline: pairs/s (images/s, two views each), the loader wait (the share of the wall time
the loop spent waiting for the next batch), the GPU busy fraction (the share of the wall time
between each step's first queued GPU work and its end, CUDA events: an upper bound, as gaps
inside a step count as busy; where nvidia-ml-py is installed, also NVML's utilization, sampled every
0.1 s: the share of time a kernel was running), and the peak GPU memory
(``torch.cuda.max_memory_allocated``).
The models are warmed up (cuDNN plans, torch.compile) on a random batch before the loader
starts; then the first ``--workers`` batches (each worker's first, which arrive together) are
skipped and the next ``--steps`` (at least twice the workers) are timed. The ratios are the
point: both pipelines run in one process on the same files, one after the other.

    python bench/end_to_end.py                                       # GPU: ResNet-50, 224 px, batch 256
    python bench/end_to_end.py --arch resnet18 --size 32 --batch-size 8 --steps 2 --images 32 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pretrain_throughput as bench  # noqa: E402

from simsiam_hub.data.augment import two_crop_augmentation  # noqa: E402
from simsiam_hub.data.datasets import SeededViews  # noqa: E402
from simsiam_hub.data.device_augment import DeviceTwoCropsTransform  # noqa: E402
from simsiam_hub.data.fast_augment import FastTwoCropsTransform  # noqa: E402
from simsiam_hub.models import SimSiam  # noqa: E402

PIPELINES = ("reference", "ours-loader", "ours-device")
CLASSES = 8


def _write_jpeg(job) -> None:
    index, path = job
    bench.make_photo(index).save(path, "JPEG", quality=90)


def jpeg_folder(root: Path, n: int, workers: int) -> Path:
    """``root/train/class_k/NNNNNN.jpg``: n generated 500x375 JPEGs, made once (kept if present)."""
    jobs = [(i, root / "train" / f"class_{i % CLASSES}" / f"{i:06d}.jpg") for i in range(n)]
    todo = [job for job in jobs if not job[1].exists()]
    for k in range(CLASSES):
        (root / "train" / f"class_{k}").mkdir(parents=True, exist_ok=True)
    if todo:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(_write_jpeg, todo, chunksize=16)
    return root / "train"


class Pipeline:
    """A loader over the folder and the step that consumes its batches."""

    def __init__(self, name: str, folder: Path, args, variants: dict, device: torch.device):
        self.name, self.device = name, device
        if name == "reference":
            dataset = ImageFolder(str(folder), transform=two_crop_augmentation(args.size))
        elif name == "ours-loader":
            dataset = SeededViews(ImageFolder(str(folder)), FastTwoCropsTransform(args.size), seed=0)
        else:
            self.device_views = DeviceTwoCropsTransform(args.size)
            dataset = SeededViews(ImageFolder(str(folder)), self.device_views, seed=0)
        self.variant = variants["reference" if name == "reference" else "ours"]
        total = (args.workers + args.steps) * args.batch_size
        sampler = RandomSampler(dataset, num_samples=total, generator=torch.Generator().manual_seed(0))
        self.loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=sampler,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
        )

    def step(self, batch) -> None:
        (x1, x2), _, _ = batch
        if self.name == "ours-device":
            x1, x2 = self.device_views.finish([x1, x2], self.device)
        else:
            x1, x2 = x1.to(self.device, non_blocking=True), x2.to(self.device, non_blocking=True)
        self.variant.step(x1, x2)


class UtilizationSampler:
    """NVML's GPU utilization (percent), sampled in a thread while active; None without NVML."""

    def __init__(self, device: torch.device, period: float = 0.1):
        self.device, self.period, self.samples = device, period, []
        try:
            torch.cuda.utilization(device)
            self.available = True
        except Exception:  # no nvidia-ml-py, or no NVML on this machine
            self.available = False

    def __enter__(self):
        self.stop = threading.Event()
        if self.available:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(self.period):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc):
        self.stop.set()
        if self.available:
            self.thread.join()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def measure(pipeline: Pipeline, skip: int, steps: int, batch_size: int) -> dict:
    """Pairs/s, loader wait and GPU busy shares, peak GPU memory over ``steps`` steps after ``skip``."""
    device, cuda = pipeline.device, pipeline.device.type == "cuda"
    batches = iter(pipeline.loader)
    for _ in range(skip):
        pipeline.step(next(batches))
    bench._sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    spans, wait = [], 0.0
    with UtilizationSampler(device) if cuda else contextlib.nullcontext() as nvml:
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t
            if cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
            pipeline.step(batch)
            if cuda:
                end.record()
                spans.append((begin, end))
        bench._sync(device)
        wall = time.perf_counter() - start
    del batches  # stops the workers
    busy = sum(b.elapsed_time(e) for b, e in spans) / 1000 / wall if cuda else None
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    util = nvml.mean() if cuda else None
    return {
        "pairs_s": steps * batch_size / wall,
        "s_step": wall / steps,
        "wait": wait / wall,
        "busy": busy,
        "nvml": util,
        "peak_mib": peak,
    }


def time_finish(folder: Path, args, device: torch.device, repeats: int = 5) -> float:
    """Seconds that DeviceTwoCropsTransform.finish takes for one batch of pairs on ``device``
    (median of ``repeats``, after one warm-up), the crops already on the host."""
    transform = DeviceTwoCropsTransform(args.size)
    views = SeededViews(ImageFolder(str(folder)), transform, seed=0)
    first, second = next(iter(DataLoader(views, batch_size=args.batch_size, num_workers=min(args.workers, 8))))[0]
    if device.type == "cuda":
        first, second = (type(v)(v.crop.pin_memory(), v.params) for v in (first, second))
    times = []
    for _ in range(repeats + 1):
        bench._sync(device)
        start = time.perf_counter()
        transform.finish([first, second], device)
        bench._sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--size", type=int, default=224 if cuda else 64, help="training crop size in pixels")
    parser.add_argument("--batch-size", type=int, default=256 if cuda else 16, help="images per step (two views each)")
    parser.add_argument("--steps", type=int, default=32, help="timed steps per pipeline (raised to twice --workers)")
    parser.add_argument("--workers", type=int, default=cores, help="data-loader processes")
    parser.add_argument("--images", type=int, default=2048, help="JPEGs in the generated folder")
    parser.add_argument(
        "--jpeg-dir", type=Path, help="where the JPEG folder is made or reused (default: a temporary folder)"
    )
    parser.add_argument(
        "--amp", default="auto", choices=("auto", "bf16", "fp16", "off"), help="ours' autocast, as run.amp"
    )
    parser.add_argument("--compile", action="store_true", help="ours under torch.compile (run.compile=true)")
    parser.add_argument(
        "--pipelines", default=",".join(PIPELINES), help="which to run, comma-separated, of " + ", ".join(PIPELINES)
    )
    args = parser.parse_args(argv)
    chosen = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    if not chosen or any(p not in PIPELINES for p in chosen):
        parser.error(f"--pipelines takes names from {', '.join(PIPELINES)}; got {args.pipelines!r}")
    for name in ("size", "batch_size", "steps", "workers", "images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.steps = max(args.steps, 2 * args.workers)
    if args.images < args.batch_size:
        parser.error(f"--images ({args.images}) must hold at least one batch (--batch-size {args.batch_size})")

    device = torch.device("cuda" if cuda else "cpu")
    print(f"machine: {bench.machine_description(device)}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.jpeg_dir or Path(tmp)
        start = time.perf_counter()
        folder = jpeg_folder(root, args.images, args.workers)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 2**20
        print(
            f"data: {args.images} JPEGs 500x375 (quality 90, {size_mb / args.images * 1024:.0f} kB each) in {folder}, made in {time.perf_counter() - start:.1f} s"
        )

        amp = bench.resolve_amp(args.amp, device)
        print(
            f"step: {args.arch}, {args.size} px, batch {args.batch_size} (x2 views), {device.type}; {args.workers} loader workers; "
            f"ours: autocast {str(amp).replace('torch.', '') if amp else 'off'}, channels_last{', torch.compile' if args.compile else ''}; reference: fp32, NCHW"
        )
        print(f"timed: {args.steps} steps per pipeline after {args.workers} skipped (the workers' first batches)")
        torch.manual_seed(0)
        state = SimSiam(args.arch).state_dict()
        variants = {"reference": bench.Variant("reference", state, args, device)}
        if any(p.startswith("ours") for p in chosen):  # one model for both ours pipelines: compiled once
            variants["ours"] = bench.Variant("ours+compile" if args.compile else "ours", state, args, device)
        del state
        warm = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
        for variant in variants.values():  # cuDNN plans, compilation: before any loader starts
            for _ in range(2):
                variant.step(warm, warm.flip(-1))

        results = {}
        for name in chosen:
            pipeline = Pipeline(name, folder, args, variants, device)
            results[name] = measure(pipeline, args.workers, args.steps, args.batch_size)
            del pipeline
        finish_s = time_finish(folder, args, device) if "ours-device" in chosen else None

    def fmt(value, spec, none="n/a"):
        return none if value is None else format(value, spec)

    print(
        f"\n{'pipeline':<14}{'pairs/s':>9}{'s/step':>9}{'loader wait':>13}{'GPU busy':>10}{'NVML util':>11}{'peak GPU MiB':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<14}{r['pairs_s']:>9.1f}{r['s_step']:>9.3f}{r['wait']:>13.1%}{fmt(r['busy'], '.1%'):>10}"
            f"{fmt(r['nvml'], '.1%'):>11}{fmt(r['peak_mib'], '.0f'):>14}"
        )
    if finish_s is not None:
        print(
            f"DeviceTwoCropsTransform.finish alone on {device.type}: {finish_s * 1000:.1f} ms per batch of {args.batch_size} pairs "
            f"({args.batch_size / finish_s:.0f} pairs/s)"
        )
    if "reference" in results:
        for name in results:
            if name != "reference":
                print(f"{name} / reference: {results[name]['pairs_s'] / results['reference']['pairs_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
