"""What `data.augment_on=device` moves, measured on one CPU thread (no GPU needed).

1. The colour ops (jitter, grayscale, blur, flip, normalisation) after the crop: applied view by
   view as `data.fast_augment=true`'s loader does (`FastMocoV2View.apply`), against batched over
   all views as the training device does (`DeviceTwoCropsTransform.apply`), interleaved, on the
   same uint8 crops with the same draws. On a CPU the device path moves this work out of the
   loader processes; this says whether batching also makes it cheaper.
2. The share of JPEG decoding in the device path's loader work (decode, then the draws and the
   two uint8 crops), which bounds what GPU decoding (nvJPEG, DALI) could add.

Both on the throughput benchmark's generated 500x375 JPEGs, the median over rounds.

    python bench/device_augment_cpu.py [--images 32] [--size 224] [--rounds 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import machine_description, make_jpegs  # noqa: E402

from simsiam_hub.data.device_augment import DeviceTwoCropsTransform, unpack_params  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def colour_ops(jpegs: list[bytes], size: int, rounds: int) -> dict[str, float]:
    device_view = DeviceTwoCropsTransform(size)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in jpegs]
    torch.manual_seed(0)
    random.seed(0)
    batch = default_collate([device_view(image) for image in images])
    crops = torch.cat([view.crop for view in batch])
    params = torch.cat([view.params for view in batch])
    # the crop is already taken: the per-view path gets the whole crop as its box
    draws = [dataclasses.replace(unpack_params(row), box=(0, 0, size, size)) for row in params]

    def per_view():
        for crop, draw in zip(crops, draws):
            device_view.view.apply(crop.permute(1, 2, 0).contiguous(), draw)

    def batched():
        device_view.apply(crops, params)

    times = {"per view": [], "batched": []}
    for r in range(rounds + 1):
        order = [("per view", per_view), ("batched", batched)]
        for name, fn in order if r % 2 else order[::-1]:
            start = time.perf_counter()
            fn()
            if r:  # the first round warms up
                times[name].append((time.perf_counter() - start) / len(draws))
    return {name: median_ms(t) for name, t in times.items()}


def decode_share(jpegs: list[bytes], size: int, rounds: int) -> dict[str, float]:
    device_view = DeviceTwoCropsTransform(size)
    times = {"decode": [], "decode + draws + crops": []}
    for r in range(rounds + 1):
        torch.manual_seed(r)
        random.seed(r)
        start = time.perf_counter()
        for data in jpegs:
            Image.open(io.BytesIO(data)).convert("RGB")
        decoded = time.perf_counter()
        for data in jpegs:
            device_view(Image.open(io.BytesIO(data)).convert("RGB"))
        if r:
            times["decode"].append((decoded - start) / len(jpegs))
            times["decode + draws + crops"].append((time.perf_counter() - decoded) / len(jpegs))
    return {name: median_ms(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine_description(torch.device('cpu'))}")
    print(
        f"command: python bench/device_augment_cpu.py --images {args.images} --size {args.size} --rounds {args.rounds}"
    )
    jpegs = make_jpegs(args.images)
    ops = colour_ops(jpegs, args.size, args.rounds)
    print(
        f"\ncolour ops after the crop, {2 * args.images} views of {args.size} px, ms per view (median of {args.rounds} rounds)"
    )
    print(
        f"per view (fast_augment's loader) {ops['per view']:.2f}   batched (device path) {ops['batched']:.2f}   batched / per view {ops['batched'] / ops['per view']:.2f}x"
    )
    share = decode_share(jpegs, args.size, args.rounds)
    print(f"\nthe device path's loader work, ms per image (median of {args.rounds} rounds)")
    print(
        f"decode {share['decode']:.2f}   decode + draws + two crops {share['decode + draws + crops']:.2f}   "
        f"decoding's share {share['decode'] / share['decode + draws + crops']:.0%}"
    )


if __name__ == "__main__":
    main()
