"""Precision: the training step and feature extraction in bf16 autocast and in fp32, in one run.

The speed side of ``amp=auto``'s choice (simsiam_hub.precision.resolve_amp); the accuracy side
is docs/run_logs/bf16_training/ and docs/evaluation.md. Everything runs in one process, the
variants interleaved and each figure the median of repeats, so the ratios hold on a shared
machine even when the absolute rates do not. The pieces are bench/pretrain_throughput.py's:

Training step (same model, same weights at the start, same batch, already in memory):
  reference  facebookresearch/simsiam's loop: fp32, NCHW (pretrain_throughput.reference_step)
  fp32       ours (engine's step: channels_last, models.simsiam_loss) with run.amp=off
  bf16       the same with run.amp=bf16 (autocast; the loss stays fp32)
Feature extraction (eval.knn.extract_features, channels_last, eval mode): the backbone's pooled
and l2-normalised features of the same images in fp32 and in bf16 autocast, with how far the
bf16 features are from the fp32 ones (largest |cosine - 1| over the images).

On a CPU without AVX512-BF16 or AMX, oneDNN emulates bf16 (the same rounding, more work): the
run says which the CPU has, and what resolve_amp('auto') picks there.

    python bench/precision.py                     # ResNet-50, 32 px, batch 16: a few minutes on 2 cores
    python bench/precision.py --arch resnet18 --steps 2 --feature-images 64
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import Variant, machine_description, make_batch, make_jpegs, timed_step  # noqa: E402

from simsiam_hub.eval.knn import extract_features  # noqa: E402
from simsiam_hub.models import SimSiam  # noqa: E402
from simsiam_hub.precision import precision_name, resolve_amp  # noqa: E402


def native_bf16() -> dict[str, bool]:
    """What torch sees of this CPU's bf16 hardware (False where torch lacks the query)."""
    return {
        name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)()) for name in ("avx512_bf16", "amx_tile")
    }


def training_variants(args, device) -> dict[str, Variant]:
    torch.manual_seed(0)
    state = SimSiam(args.arch).state_dict()
    out = {"reference": Variant("reference", state, argparse.Namespace(**{**vars(args), "amp": "off"}), device)}
    for amp, label in (("off", "fp32"), ("bf16", "bf16")):
        out[label] = Variant("ours", state, argparse.Namespace(**{**vars(args), "amp": amp}), device)
    return out


def bench_training(args, device, x1, x2) -> dict[str, float]:
    """Median seconds per step of each variant, interleaved (step 0 warms up and is dropped)."""
    variants = training_variants(args, device)
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.steps + 1):
        for name in names if r % 2 == 0 else names[::-1]:
            t = timed_step(variants[name], x1, x2, device)
            if r:
                times[name].append(t)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_features(args, device, images: torch.Tensor) -> tuple[dict[str, float], float]:
    """Median seconds per pass over ``images`` in fp32 and bf16, and the largest |cos - 1|
    between an image's bf16 and fp32 features."""
    torch.manual_seed(0)
    backbone = copy.deepcopy(SimSiam(args.arch).encoder)
    backbone.fc = torch.nn.Identity()
    backbone.to(device).to(memory_format=torch.channels_last)
    loader = [(b, torch.zeros(len(b))) for b in images.split(args.feature_batch)]
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    times: dict[str, list[float]] = {name: [] for name in dtypes}
    features = {}
    for r in range(args.feature_repeats + 1):
        for name in list(dtypes) if r % 2 == 0 else list(dtypes)[::-1]:
            start = time.perf_counter()
            features[name], _ = extract_features(
                backbone, loader, device=device, amp_dtype=dtypes[name], channels_last=True
            )
            if r:
                times[name].append(time.perf_counter() - start)
    error = ((features["bf16"] * features["fp32"]).sum(1) - 1).abs().max().item()
    return {name: statistics.median(t) for name, t in times.items()}, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--size", type=int, default=32, help="crop size in pixels (the demo's: 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="training images per step (two views each)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant (after a warm-up)")
    parser.add_argument("--feature-images", type=int, default=256, help="images per feature-extraction pass")
    parser.add_argument("--feature-batch", type=int, default=128, help="feature-extraction batch")
    parser.add_argument("--feature-repeats", type=int, default=3, help="timed passes per precision (after a warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (unset: torch's default, one per core)")
    args = parser.parse_args(argv)
    for name in ("size", "batch_size", "steps", "feature_images", "feature_batch", "feature_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size < 32:
        parser.error(f"--size must be >= 32 (ResNet downsamples 32x), got {args.size}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    native = native_bf16()
    print(f"machine: {machine_description(device)}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if device.type == "cpu":
        has = [name for name, ok in native.items() if ok]
        print(
            f"native bf16: {'yes (' + ', '.join(has) + ')' if has else 'no (no AVX512-BF16, no AMX): bf16 is emulated'}; "
            f"resolve_amp('auto') here: {precision_name(resolve_amp('auto', device))}"
        )
    wall = time.perf_counter()

    x1, x2 = make_batch(make_jpegs(8, 64, 64), args.batch_size, args.size)
    x1, x2 = x1.to(device), x2.to(device)
    step = bench_training(args, device, x1, x2)
    print(
        f"\ntraining step: {args.arch}, {args.size} px, batch {args.batch_size} (x2 views), "
        f"median of {args.steps} interleaved steps"
    )
    print(f"{'variant':<12}{'s/step':>9}{'images/s':>10}")
    for name, t in step.items():
        print(f"{name:<12}{t:>9.3f}{args.batch_size / t:>10.2f}")
    print(f"bf16 / fp32 speed: {step['fp32'] / step['bf16']:.2f}x")
    print(f"fp32 / reference speed: {step['reference'] / step['fp32']:.2f}x")
    print(f"bf16 / reference speed: {step['reference'] / step['bf16']:.2f}x")

    images = torch.cat([x1, x2]).repeat(
        (args.feature_images + 2 * args.batch_size - 1) // (2 * args.batch_size), 1, 1, 1
    )
    images = images[: args.feature_images].to(device)
    feats, error = bench_features(args, device, images)
    print(
        f"\nfeature extraction: {args.arch} backbone, {len(images)} images of {args.size} px, batch "
        f"{args.feature_batch}, median of {args.feature_repeats} passes"
    )
    print(f"{'precision':<12}{'s/pass':>9}{'images/s':>10}")
    for name, t in feats.items():
        print(f"{name:<12}{t:>9.3f}{len(images) / t:>10.1f}")
    print(f"bf16 / fp32 speed: {feats['fp32'] / feats['bf16']:.2f}x")
    print(f"largest |cos(bf16 feature, fp32 feature) - 1| over the images: {error:.2e}")
    print(f"wall {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
