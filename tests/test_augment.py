"""The two-crop MoCo v2 augmentation keeps its law, in the reference (PIL) and the fast path.

The reference's random choices are read by wrapping the torchvision / PIL functions it
calls; the fast path's by wrapping its ``draw``. Both are then held to the recipe: colour
jitter 0.8 (factors 0.6-1.4, hue +-0.1, random order), grayscale 0.2, blur 0.5 (sigma
0.1-2.0), flip 0.5, crop scale 0.2-1.0, and two views drawn independently. The fast path
must also make the very same draws as the reference from the same RNG state and produce
nearly the same pixels; and the benchmark's fast training step must compute the
reference step's loss in fp32.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import JITTER_OPS

from simsiam_hub.config import PretrainConfig, load_config
from simsiam_hub.data.augment import IMAGENET_MEAN, IMAGENET_STD, two_crop_augmentation
from simsiam_hub.data.fast_augment import FastTwoCropsTransform, ViewParams, decode_for_crops
from simsiam_hub.models import SimSiam

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("pretrain_throughput", ROOT / "bench" / "pretrain_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


def _views_from_events(events) -> list[ViewParams]:
    """Split the reference's recorded calls into per-view parameters (a crop opens a view)."""
    views, current = [], None
    for name, value in events + [("crop", None)]:
        if name == "crop":
            if current is not None:
                order = tuple(JITTER_OPS[n] for n in current["jitter"])
                factors = [current["jitter"].get(n) for n in JITTER_OPS]
                jitter = (order, *factors) if order else None
                views.append(ViewParams(current["box"], jitter, current["grayscale"], current["blur"], current["flip"]))
            current = {"box": value, "jitter": {}, "grayscale": False, "blur": None, "flip": False}
        elif name in JITTER_OPS:
            current["jitter"][name] = value
        elif name == "blur":
            current["blur"] = value
        else:
            current[name] = True
    return views


def _reference_draws(record, images, seed) -> list[list[ViewParams]]:
    transform = two_crop_augmentation(16)
    out = []
    _seed(seed)
    for image in images:
        record.clear()
        transform(image)
        out.append(_views_from_events(record))
    return out


def _fast_draws(images, seed) -> list[list[ViewParams]]:
    """The fast transform run on ``images``, its draws recorded by wrapping ``view.draw``."""
    transform = FastTwoCropsTransform(16)
    drawn: list[ViewParams] = []
    draw = transform.view.draw
    transform.view.draw = lambda image: drawn.append(draw(image)) or drawn[-1]
    _seed(seed)
    out = []
    for image in images:
        drawn.clear()
        views = transform(image)
        assert [v.shape for v in views] == [(3, 16, 16)] * 2
        out.append(list(drawn))
    return out


def _photos(n: int, width: int, height: int) -> list[Image.Image]:
    return [BENCH.make_photo(i, width, height) for i in range(n)]


def test_fast_path_draws_exactly_what_the_reference_draws(record_reference):
    """Same RNG state in, same choices and same RNG state out, for all image shapes
    (including RandomResizedCrop's centre-crop fallback on a very elongated image)."""
    images = [Image.new("RGB", size) for size in [(200, 150), (150, 200), (64, 64), (400, 20)] * 40]
    ref = _reference_draws(record_reference, images, seed=7)
    ref_state = (torch.get_rng_state(), random.getstate())
    fast = _fast_draws(images, seed=7)
    assert fast == ref
    assert torch.equal(torch.get_rng_state(), ref_state[0]) and random.getstate() == ref_state[1]
    # 400x20 admits no crop of the law: the fallback, a centred 4:3 crop of full height.
    assert all(view.box == (0, (400 - 27) // 2, 20, 27) for pair in ref[3::4] for view in pair)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_augmentation_law(path, record_reference):
    """Rates, ranges and the independence of the two views, from 1200 images (2400 views)."""
    images = _photos(8, 200, 150) * 150
    draws = _reference_draws(record_reference, images, seed=1) if path == "reference" else _fast_draws(images, seed=2)
    check_moco_v2_law(draws, image_size=(200, 150))


def check_moco_v2_law(draws: list[list[ViewParams]], image_size: tuple[int, int]) -> None:
    """The recipe's rates, ranges and independence, from 1200 pairs of draws on images of
    ``image_size`` (width, height); tests/test_device_augment.py checks its path with it too."""
    width, height = image_size
    views = [v for pair in draws for v in pair]
    n = len(views)
    assert n == 2400

    def rate(flags):
        return sum(flags) / len(flags)

    # Bernoulli rates: about 4.5 standard deviations of tolerance at n = 2400.
    assert rate([v.jitter is not None for v in views]) == pytest.approx(0.8, abs=0.037)
    assert rate([v.grayscale for v in views]) == pytest.approx(0.2, abs=0.037)
    assert rate([v.blur_sigma is not None for v in views]) == pytest.approx(0.5, abs=0.045)
    assert rate([v.flip for v in views]) == pytest.approx(0.5, abs=0.045)

    # Crop scale: area fraction in [0.2, 1] (up to the rounding of the sides), both ends
    # reached, and distributed as the law says (Kolmogorov-Smirnov distance, 1% level).
    scales = np.sort([v.box[2] * v.box[3] / (width * height) for v in views])
    assert scales.min() >= 0.2 * 0.97 and scales.max() <= 1.0
    assert scales.min() < 0.21 and scales.max() > 0.95
    ks = np.abs(_crop_scale_cdf(scales, aspect=width / height) - np.arange(1, n + 1) / n).max()
    assert ks < 1.63 / np.sqrt(n) + 0.005  # + the rounding of the box sides

    sigmas = np.array([v.blur_sigma for v in views if v.blur_sigma is not None])
    assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0
    assert sigmas.min() < 0.12 and sigmas.max() > 1.98
    assert sigmas.mean() == pytest.approx(1.05, abs=0.05)

    jitters = [v.jitter for v in views if v.jitter is not None]
    factors = np.array([j[1:] for j in jitters])
    assert factors[:, :3].min() >= 0.6 and factors[:, :3].max() <= 1.4
    assert factors[:, :3].min() < 0.62 and factors[:, :3].max() > 1.38
    assert factors[:, 3].min() >= -0.1 and factors[:, 3].max() <= 0.1
    assert np.abs(factors.mean(0) - [1, 1, 1, 0]).max() < 0.03
    orders = {j[0] for j in jitters}
    assert orders == set(itertools.permutations(range(4)))  # all 24 orders occur

    # The two views of an image: drawn independently, not copied.
    first, second = [p[0] for p in draws], [p[1] for p in draws]
    assert rate([a.flip and b.flip for a, b in zip(first, second)]) == pytest.approx(0.25, abs=0.055)
    assert rate([a.grayscale == b.grayscale for a, b in zip(first, second)]) == pytest.approx(0.68, abs=0.06)
    s1 = np.array([a.box[2] * a.box[3] for a in first], dtype=float)
    s2 = np.array([b.box[2] * b.box[3] for b in second], dtype=float)
    assert abs(np.corrcoef(s1, s2)[0, 1]) < 0.12
    assert rate([a.box != b.box for a, b in zip(first, second)]) > 0.99


def _crop_scale_cdf(scales: np.ndarray, aspect: float) -> np.ndarray:
    """CDF of RandomResizedCrop's area fraction on a width/height = ``aspect`` image.

    The law: s ~ U(0.2, 1), log r ~ U(log 3/4, log 4/3), redrawn until the box fits, i.e.
    until r <= aspect / s and r >= s * aspect; so the density of s is proportional to the
    probability that r fits. (Ten failed draws in a row, the fallback, are negligible here.)
    """
    lo, hi = np.log(3 / 4), np.log(4 / 3)
    grid = np.linspace(0.2, 1.0, 4001)
    fits = np.clip((np.minimum(hi, np.log(aspect / grid)) - np.maximum(lo, np.log(grid * aspect))) / (hi - lo), 0, 1)
    cdf = np.concatenate([[0], np.cumsum((fits[1:] + fits[:-1]) / 2)])
    return np.interp(scales, grid, cdf / cdf[-1])


def _levels(view: torch.Tensor) -> torch.Tensor:
    """A normalised view back to 0..255."""
    return (view * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) * 255


def test_fast_pixels_match_the_reference():
    """Same RNG state: the fast views equal the reference's up to small numerical differences."""
    images = _photos(12, 120, 90)
    reference, fast = two_crop_augmentation(48), FastTwoCropsTransform(48)
    diffs, control = [], []
    for i, image in enumerate(images):
        _seed(i)
        ref_views = reference(image)
        _seed(i)
        fast_views = fast(image)
        _seed(i + 1000)
        other_views = fast(image)
        for r, f, o in zip(ref_views, fast_views, other_views):
            assert f.shape == r.shape == (3, 48, 48) and f.dtype == torch.float32
            diffs.append((_levels(f) - _levels(r)).abs())
            control.append((_levels(o) - _levels(r)).abs().mean())
    mean_diff = torch.stack([d.mean() for d in diffs])
    # Measured: about 1 level on average (PIL rounds to 8 bits after every op and
    # approximates the blur), at most a few levels in a view.
    assert mean_diff.max() < 3.0
    assert mean_diff.mean() < 1.5
    assert torch.quantile(torch.cat([d.flatten() for d in diffs]), 0.99) < 8
    # Views of other draws differ by tens of levels: the comparison can tell.
    assert torch.stack(control).mean() > 10 * mean_diff.mean()


def test_reduced_size_jpeg_decoding():
    """An undecoded JPEG is decoded at 1/2 or 1/4 scale when both crops allow it, with the
    same crop law (boxes drawn on the full size) and nearly the reference's pixels."""
    buf = io.BytesIO()
    BENCH.make_photo(0, 640, 480).save(buf, "JPEG", quality=90)
    data = buf.getvalue()

    lazy = Image.open(io.BytesIO(data))
    decoded, scale = decode_for_crops(lazy, [(0, 0, 300, 400), (10, 10, 200, 150)], 64)
    assert scale == 2 and decoded.size == (320, 240)
    decoded, scale = decode_for_crops(Image.open(io.BytesIO(data)), [(0, 0, 480, 640)] * 2, 64)
    assert scale == 4 and decoded.size == (160, 120)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    assert decode_for_crops(full, [(0, 0, 480, 640)] * 2, 64) == (full, 1)  # already decoded

    reference, fast = two_crop_augmentation(64), FastTwoCropsTransform(64)
    drafted = 0
    for seed in range(10):
        _seed(seed)
        ref_views = reference(Image.open(io.BytesIO(data)).convert("RGB"))
        _seed(seed)
        image = Image.open(io.BytesIO(data))
        fast_views = fast(image)
        drafted += image.size != (640, 480)
        for r, f in zip(ref_views, fast_views):
            assert (_levels(f) - _levels(r)).abs().mean() < 3.0
    assert drafted >= 5


def test_fast_step_computes_the_reference_loss_in_fp32():
    """The benchmark's steps: ours (channels_last) and the reference's (NCHW), both fp32, on
    the same batch from the same weights: the same loss and the same update."""
    torch.manual_seed(0)
    reference = SimSiam("resnet18", dim=256, pred_dim=64)
    ours = SimSiam("resnet18", dim=256, pred_dim=64)
    ours.load_state_dict(reference.state_dict())
    ours.to(memory_format=torch.channels_last)
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    ref_opt, our_opt = BENCH.reference_optimizer(reference, 8), BENCH.ours_optimizer(ours, 8)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(2):
        ref_loss = BENCH.reference_step(reference, ref_opt, x1, x2)
        our_loss = BENCH.ours_step(ours, our_opt, scaler, x1, x2, amp_dtype=None, channels_last=True)
        assert our_loss == pytest.approx(ref_loss, abs=1e-5)
    for (name, a), b in zip(reference.named_parameters(), ours.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert ours.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_engine_option_selects_the_fast_path_and_views_stay_reproducible():
    from simsiam_hub.engine import pretrain_views

    small = ["data.dataset=synthetic", "data.synthetic_size=8", "data.image_size=24", "run.seed=3"]
    cfg = load_config(PretrainConfig, overrides=[*small, "data.fast_augment=true"])
    assert cfg.data.fast_augment and not load_config(PretrainConfig).data.fast_augment
    # the engine's own choice of transform, for each setting
    views = pretrain_views(cfg)
    assert isinstance(views.transform, FastTwoCropsTransform)
    plain = pretrain_views(load_config(PretrainConfig, overrides=small))
    assert not isinstance(plain.transform, FastTwoCropsTransform)
    (a1, a2), label, _ = views[5]
    (b1, b2), _, _ = views[5]
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)
    views.epoch = 1
    (c1, _), _, _ = views[5]
    assert not torch.equal(a1, c1)
    # The engine's two paths see the same crops, flips and colour choices for an item.
    (r1, r2), _, _ = plain[5]
    assert (_levels(r1) - _levels(a1)).abs().mean() < 3.0


def test_eval_view_keeps_whole_small_images_and_crops_imagenet_style():
    from simsiam_hub.data.augment import eval_crop_pct, eval_transform

    # A 28 px "garment" touching the frame: its outermost rows are bright, the rest dark.
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0], pixels[-1] = 255, 255
    img = Image.fromarray(pixels).convert("RGB")
    whole = eval_transform(48, dataset="fashion_mnist")(img)
    cropped = eval_transform(48, dataset="imagefolder")(img)
    assert whole.shape == cropped.shape == (3, 48, 48)
    bright = (255 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert whole[0, 0].min() > 0.9 * bright and whole[0, -1].min() > 0.9 * bright  # the frame's rows survive
    assert cropped.max() < 0.1 * bright  # a 0.875 centre crop cut them off
    assert eval_crop_pct("cifar10") == 1.0 and eval_crop_pct(None) == 0.875
