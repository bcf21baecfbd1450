"""Pretraining throughput: our training step and two-crop augmentation against the reference's.

Everything runs in one process, the variants interleaved and each figure the median of
repeats, so that the ratios hold on a shared machine even when the absolute rates do not.

Training step, same model (``models.SimSiam``), same batch size, same batch:
  reference  what facebookresearch/simsiam's loop does: fp32, NCHW, nn.CosineSimilarity loss
             on detached z, SGD (momentum 0.9, wd 1e-4, lr 0.05 * batch / 256)
  ours       what simsiam_hub.engine does: autocast to ``resolve_amp('auto', device)``
             (bf16 on GPUs and on CPUs with AVX512-BF16 or AMX, else fp32; --amp forces
             one), channels_last model and inputs, ``models.simsiam_loss``,
             ``optim.build_pretrain_optimizer``
Both start from the same weights; the batch (two views per image, made by the reference
augmentation from generated JPEGs) is already on the device, so neither pays for it.
Peak memory: on GPU ``torch.cuda.max_memory_allocated`` during one step above what was
allocated before it; on CPU the peak resident set during two steps above the resident set
before them, in a fresh subprocess per variant (it counts everything the steps allocate:
activations, gradients, optimizer state, oneDNN's caches and what the allocator keeps).
Achieved TFLOP/s: fvcore's count of the forward pass (one multiply-add = one flop in
fvcore) x 2 FLOP per multiply-add x 3 (forward + backward).

Two-crop augmentation, one thread (images/s per core), on generated 500x375 JPEGs
(about 55 kB each at quality 90, decoded in the loop as ImageFolder does) and on small
32x32 images:
  reference   augment.two_crop_augmentation (PIL), from the decoded image
  fast        fast_augment.FastTwoCropsTransform from the decoded image (what the engine
              gets with data.fast_augment=true and ImageFolder's decoding loader)
  fast+draft  the same from the undecoded JPEG (``Image.open`` only), which lets it decode
              at 1/2, 1/4 or 1/8 scale when both crops allow it
  crop only   the loader's part of data.augment_on=device
              (device_augment.DeviceTwoCropsTransform): the draws and the uint8 crops, from the
              decoded image; jitter, grayscale, blur and flip then run batched on the device

``--compile`` adds a third training variant, ours under ``torch.compile`` (the engine's
run.compile=true). End to end from a JPEG folder, with loader workers: bench/end_to_end.py.

    python bench/pretrain_throughput.py                  # CPU: ResNet-50, 128 px, batch 32
    python bench/pretrain_throughput.py --steps 2 --arch resnet18 --size 64 --no-memory
On a GPU the defaults become 224 px, batch 256.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simsiam_hub.config import OptimConfig  # noqa: E402
from simsiam_hub.data.augment import two_crop_augmentation  # noqa: E402
from simsiam_hub.data.device_augment import DeviceTwoCropsTransform  # noqa: E402
from simsiam_hub.data.fast_augment import FastTwoCropsTransform  # noqa: E402
from simsiam_hub.models import SimSiam, simsiam_loss  # noqa: E402
from simsiam_hub.optim import build_pretrain_optimizer  # noqa: E402
from simsiam_hub.precision import autocast_context, resolve_amp  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM (and H200) datasheet, bf16 dense (no sparsity)


# --- the two training steps ----------------------------------------------------------------
def reference_optimizer(model: SimSiam, batch_size: int) -> torch.optim.SGD:
    """The reference's SGD: lr 0.05 * batch / 256, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(model.parameters(), 0.05 * batch_size / 256, momentum=0.9, weight_decay=1e-4)


def reference_step(model: SimSiam, optimizer, x1: torch.Tensor, x2: torch.Tensor) -> float:
    """One step of facebookresearch/simsiam ``main_simsiam.train``: fp32, NCHW, as written there."""
    criterion = torch.nn.CosineSimilarity(dim=1)
    p1, p2, z1, z2 = model(x1, x2)
    z1, z2 = z1.detach(), z2.detach()  # the reference model returns z detached
    loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    value = loss.item()  # the reference logs it every step (AverageMeter)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return value


def ours_optimizer(model: SimSiam, batch_size: int) -> torch.optim.SGD:
    return build_pretrain_optimizer(model, OptimConfig(batch_size=batch_size))


def ours_step(model: SimSiam, optimizer, scaler, x1, x2, *, amp_dtype, channels_last: bool) -> float:
    """One step as ``engine.Trainer._step`` takes it (single process)."""
    if channels_last:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    with autocast_context(x1.device, amp_dtype):
        p1, p2, z1, z2 = model(x1, x2)
    loss = simsiam_loss(p1, p2, z1, z2)
    value = loss.item()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return value


class Variant:
    """A model, its optimizer and its step function, ready to time."""

    def __init__(self, name: str, state: dict, args, device: torch.device):
        self.name = name
        self.model = SimSiam(args.arch)
        self.model.load_state_dict(state)
        self.model.to(device).train()
        self.ours = name.startswith("ours")  # "ours", or "ours+compile": the same under torch.compile
        self.amp_dtype = resolve_amp(args.amp, device) if self.ours else None
        self.net = self.model
        if self.ours:
            self.model.to(memory_format=torch.channels_last)
            self.optimizer = ours_optimizer(self.model, args.batch_size)
            self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
            if name == "ours+compile":
                self.net = torch.compile(self.model)  # compiles on the first (warm-up) step
        else:
            self.optimizer = reference_optimizer(self.model, args.batch_size)

    def step(self, x1, x2) -> float:
        if self.ours:
            return ours_step(
                self.net, self.optimizer, self.scaler, x1, x2, amp_dtype=self.amp_dtype, channels_last=True
            )
        return reference_step(self.model, self.optimizer, x1, x2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(variant: Variant, x1, x2, device) -> float:
    _sync(device)
    start = time.perf_counter()
    variant.step(x1, x2)
    _sync(device)
    return time.perf_counter() - start


# --- data --------------------------------------------------------------------------------------
def make_photo(seed: int, width: int = 500, height: int = 375) -> Image.Image:
    """A photo-like RGB image: smooth colour fields, texture noise and a dozen shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    fields = [np.sin(xx * rng.uniform(2, 12) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(2, 12)) for _ in range(3)]
    pixels = np.stack(fields, -1) * 60 + rng.uniform(60, 190, 3) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.02, 0.15) * width
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def make_jpegs(n: int, width: int = 500, height: int = 375) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        make_photo(i, width, height).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_batch(jpegs: list[bytes], batch_size: int, size: int, seed: int = 0):
    """Two views of ``batch_size`` images, by the reference augmentation (seeded)."""
    torch.manual_seed(seed)
    random.seed(seed)
    transform = two_crop_augmentation(size)
    views = [transform(Image.open(io.BytesIO(jpegs[i % len(jpegs)])).convert("RGB")) for i in range(batch_size)]
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


# --- augmentation benchmark ------------------------------------------------------------------
def bench_augmentation(jpegs: list[bytes], size: int, repeats: int) -> dict[str, float]:
    """Median images/s (two views each) of each pipeline on one thread, interleaved."""
    reference, fast = two_crop_augmentation(size), FastTwoCropsTransform(size)
    crop_only = DeviceTwoCropsTransform(size)
    pipelines = {
        "reference": lambda data: reference(Image.open(io.BytesIO(data)).convert("RGB")),
        "fast": lambda data: fast(Image.open(io.BytesIO(data)).convert("RGB")),
        "fast+draft": lambda data: fast(Image.open(io.BytesIO(data))),
        "crop only": lambda data: crop_only(Image.open(io.BytesIO(data)).convert("RGB")),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    names = list(pipelines)
    for r in range(repeats + 1):  # the first round warms up and is dropped
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.manual_seed(r)
            random.seed(r)
            start = time.perf_counter()
            for data in jpegs:
                pipelines[name](data)
            if r:
                rates[name].append(len(jpegs) / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def draft_fraction(jpegs: list[bytes], size: int, n: int = 400) -> float:
    """How often the fast path can decode at reduced scale (both crops >= 2x the output)."""
    fast = FastTwoCropsTransform(size)
    torch.manual_seed(0)
    random.seed(0)
    hits = 0
    for i in range(n):
        image = Image.open(io.BytesIO(jpegs[i % len(jpegs)]))
        boxes = [fast.view.draw(image).box for _ in range(2)]
        hits += min(min(b[2], b[3]) for b in boxes) >= 2 * size
    return hits / n


# --- memory ------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def memory_probe(args) -> dict:
    """Run in a fresh process: how far two steps of one variant raise the resident set (CPU).

    Linux: the peak RSS (VmHWM) is reset to the current RSS just before the steps (writing 5
    to /proc/self/clear_refs), so import-time peaks do not hide the steps' own. Elsewhere:
    the growth of ``ru_maxrss``, which a larger earlier peak can hide.
    """
    device = torch.device("cpu")
    torch.manual_seed(0)
    state = SimSiam(args.arch).state_dict()
    x1 = torch.randn(args.batch_size, 3, args.size, args.size)
    x2 = torch.randn_like(x1)
    variant = Variant(args.memory_probe, state, args, device)
    del state
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, method = _proc_status_kib("VmRSS"), "VmHWM"
    except OSError:
        before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    for _ in range(2):
        variant.step(x1, x2)
    peak = _proc_status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"growth_mib": (peak - before) / 1024, "peak_mib": peak / 1024, "method": method}


def cpu_memory(args) -> dict[str, dict]:
    out = {}
    for name in ("reference", "ours"):
        cmd = [
            sys.executable,
            __file__,
            "--memory-probe",
            name,
            "--arch",
            args.arch,
            "--size",
            str(args.size),
            "--batch-size",
            str(args.batch_size),
            "--amp",
            args.amp,
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# --- FLOPs -------------------------------------------------------------------------------------
def training_flops_per_image(arch: str, size: int) -> float | None:
    """FLOPs of one training step per image (two views): fvcore's forward count x 2 x 3."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore uses torch.jit, which warns it is deprecated
        try:
            from fvcore.nn import FlopCountAnalysis
        except ImportError:
            return None
        model = SimSiam(arch).eval()  # eval: BatchNorm1d takes a batch of one
        x = torch.randn(1, 3, size, size)
        counter = FlopCountAnalysis(model, (x, x)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return counter.total() * 2 * 3


# --- report ------------------------------------------------------------------------------------
def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--size", type=int, default=224 if cuda else 128, help="training crop size in pixels")
    parser.add_argument("--batch-size", type=int, default=256 if cuda else 32, help="images per step (two views each)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--aug-images", type=int, default=32, help="JPEGs per augmentation round")
    parser.add_argument("--aug-repeats", type=int, default=5, help="timed augmentation rounds per pipeline")
    parser.add_argument("--aug-size", type=int, default=224, help="augmentation output size on the 500x375 JPEGs")
    parser.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "bf16", "fp16", "off"),
        help="our step's autocast, as run.amp (auto: precision.resolve_amp)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads for the training steps (unset: torch's default, one per core)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile (run.compile=true)")
    parser.add_argument("--skip-train", action="store_true", help="only the augmentation benchmark")
    parser.add_argument("--skip-aug", action="store_true", help="only the training-step benchmark")
    parser.add_argument("--memory-probe", choices=("reference", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("size", "batch_size", "steps", "aug_images", "aug_repeats", "aug_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size < 32:
        parser.error(f"--size must be >= 32 (ResNet downsamples 32x), got {args.size}")

    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return 0

    device = torch.device("cuda" if cuda else "cpu")
    print(f"machine: {machine_description(device)}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    jpegs = make_jpegs(max(args.aug_images, 8))

    aug_rates = {}
    if not args.skip_aug:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        print(
            f"\ntwo-crop augmentation, images/s on one core (median of {args.aug_repeats} rounds of {len(jpegs)} images)"
        )
        print(
            f"{'input -> output':<22}{'reference':>11}{'fast':>9}{'fast+draft':>12}{'fast/ref':>10}{'draft/ref':>11}{'drafted':>9}"
            f"{'crop only':>11}{'crop/ref':>10}"
        )
        small = []
        for i in range(len(jpegs)):
            buf = io.BytesIO()
            make_photo(i, 32, 32).save(buf, "PNG")
            small.append(buf.getvalue())
        cases = [("500x375 JPEG", jpegs, args.aug_size)]
        if args.size != args.aug_size:
            cases.append(("500x375 JPEG", jpegs, args.size))
        cases.append(("32x32 PNG", small, 32))
        for label, data, size in cases:
            rates = bench_augmentation(data, size, args.aug_repeats)
            drafted = draft_fraction(data, size) if data is jpegs else 0.0
            aug_rates[size] = rates
            print(
                f"{label + ' -> ' + str(size):<22}{rates['reference']:>11.1f}{rates['fast']:>9.1f}{rates['fast+draft']:>12.1f}"
                f"{rates['fast'] / rates['reference']:>9.2f}x{rates['fast+draft'] / rates['reference']:>10.2f}x{drafted:>9.0%}"
                f"{rates['crop only']:>11.1f}{rates['crop only'] / rates['reference']:>9.2f}x"
            )
        torch.set_num_threads(threads)

    if args.skip_train:
        return 0
    print(f"\ntraining step: {args.arch}, {args.size} px, batch {args.batch_size} (x2 views), {device.type}")
    amp = resolve_amp(args.amp, device)
    why = " (no native bf16 on this CPU: resolve_amp('auto') keeps fp32)" if amp is None and args.amp == "auto" else ""
    print(
        f"ours: autocast {str(amp).replace('torch.', '') if amp else 'off'}{why}, channels_last; reference: fp32, NCHW"
    )
    if device.type == "cuda":
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        print(
            f"reference on the GPU as torch runs it by default: cuDNN convolutions in TF32 {tf32}, matmuls TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}"
        )
    x1, x2 = make_batch(jpegs, args.batch_size, args.size)
    x1, x2 = x1.to(device), x2.to(device)
    torch.manual_seed(0)
    state = SimSiam(args.arch).state_dict()
    names = ("reference", "ours", "ours+compile") if args.compile else ("reference", "ours")
    variants = [Variant(name, state, args, device) for name in names]
    del state
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    peak_gpu = {}
    for r in range(args.steps + 1):  # step 0 warms up (oneDNN/cuDNN plans, bf16 weight casts)
        for v in variants if r % 2 == 0 else variants[::-1]:
            if device.type == "cuda" and r == 1:
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            t = timed_step(v, x1, x2, device)
            if device.type == "cuda" and r == 1:
                peak_gpu[v.name] = (torch.cuda.max_memory_allocated(device) - resident) / 2**20
            if r:
                times[v.name].append(t)
    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    flops = training_flops_per_image(args.arch, args.size)
    print(f"{'variant':<12}{'images/s':>10}{'s/step':>9}{'TFLOP/s':>9}   (median of {args.steps} steps, interleaved)")
    for name in names:
        tflops = f"{rate[name] * flops / 1e12:>9.3f}" if flops else f"{'n/a':>9}"
        print(f"{name:<14}{rate[name]:>8.2f}{statistics.median(times[name]):>9.3f}{tflops}")
    for name in names[1:]:
        print(f"{name} / reference: {rate[name] / rate['reference']:.2f}x")
    if flops:
        print(f"FLOPs per image (two views, forward + backward, fvcore x 2 x 3): {flops / 1e9:.1f} GFLOP")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        if "H100" in name or "H200" in name:  # the same GH100 compute
            print(
                f"ours: {rate['ours'] * flops / 1e12 / H100_BF16_DENSE_TFLOPS:.1%} of the {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s bf16 dense peak ({name})"
            )

    if device.type == "cuda":
        print(
            "peak GPU memory of one step above the tensors resident before it (max_memory_allocated): "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in peak_gpu.items())
        )
    elif not args.no_memory:
        mem = cpu_memory(args)
        method = mem["ours"]["method"]
        print(
            f"peak memory of two steps above the resident set before them (fresh process each, {method}): "
            + ", ".join(f"{k} {v['growth_mib']:.0f} MiB (process peak {v['peak_mib']:.0f} MiB)" for k, v in mem.items())
        )

    if aug_rates:
        need = {name: rate["ours"] / r for name, r in aug_rates.get(args.size, {}).items()}
        if need:
            print(
                f"\nloader vs step at {args.size} px: the step takes {rate['ours']:.1f} images/s; two-crop augmentation needs "
                + ", ".join(f"{v:.2f} cores ({k})" for k, v in need.items())
                + " to keep up (data_wait_frac in train_log.csv shows it in a real run)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
