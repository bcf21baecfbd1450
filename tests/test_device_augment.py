"""data.augment_on=device: the loader's crops and draws, and the batched ops that finish them.

The loader's half must make the reference's draws (the ones fast_augment makes) and carry them
intact through the DataLoader's collation; the batched ops must give, view by view, what
``FastMocoV2View.apply`` gives, up to float rounding; and the engine must train with the switch
on, on the views the loader path makes. The device ops run on CPU tensors here; the tests marked
``gpu`` run them on CUDA as well and are skipped without it.
"""

from __future__ import annotations

import csv
import math
import random

import pytest
import torch
from PIL import Image
from test_augment import _levels, _photos, _reference_draws, _seed, check_moco_v2_law
from test_engine import final_model, tiny
from torch.utils.data import default_collate

from simsiam_hub.config import ConfigError, PretrainConfig, load_config
from simsiam_hub.data.datasets import SeededViews, SyntheticShapes
from simsiam_hub.data.device_augment import CropView, DeviceTwoCropsTransform, pack_params, unpack_params
from simsiam_hub.data.fast_augment import FastTwoCropsTransform, hue_steps
from simsiam_hub.engine import pretrain
from simsiam_hub.models import SimSiam

# Largest difference, in levels of 255, allowed between a batched view and the per-image one.
# Float rounding alone (another summation order, fused multiply-adds) stays within a few float32
# steps near 255 (1.5e-5 of a level) per op.
# The one larger effect: the contrast op rounds a mean luma to an integer, and where that mean
# lies within rounding of a half-integer the two paths can round it to neighbouring integers.
# The view then shifts uniformly by |1 - contrast| <= 0.4 of a level; saturation, hue, grayscale
# and blur pass a uniform shift on unchanged and brightness scales it by <= 1.4, so <= 0.56. The
# bounds leave margin over that, and the mean bound over one such view in a batch of 64.
MAX_LEVELS = 2.0
MEAN_LEVELS = 0.02

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _sent_draws(batches: list[CropView]) -> list[list]:
    """Per image, the two views' draws as the device receives them (unpacked from the batch)."""
    first, second = batches
    return [[unpack_params(a), unpack_params(b)] for a, b in zip(first.params, second.params)]


def _seeded(transform, images, seed0: int) -> list:
    """``transform`` on each image with the RNGs seeded per image, as SeededViews does."""
    out = []
    for i, image in enumerate(images):
        _seed(seed0 + i)
        out.append(transform(image))
    return out


def test_packing_keeps_every_draw():
    transform = DeviceTwoCropsTransform(16)
    _seed(0)
    views = [transform.view.draw(Image.new("RGB", (90, 60))) for _ in range(200)]
    assert all(unpack_params(pack_params(v)) == v for v in views)
    assert any(v.jitter is None for v in views) and any(v.blur_sigma is None for v in views)


def test_loader_sends_the_reference_draws(record_reference):
    """Same RNG state in, the reference's draws out (through the DataLoader's collation) and the
    same RNG state left behind: the views per (seed, epoch, index) are the reference's."""
    images = [Image.new("RGB", size) for size in [(200, 150), (150, 200), (64, 64), (400, 20)] * 40]
    ref = _reference_draws(record_reference, images, seed=7)
    ref_state = (torch.get_rng_state(), random.getstate())
    transform = DeviceTwoCropsTransform(16)
    _seed(7)
    items = [transform(image) for image in images]
    assert torch.equal(torch.get_rng_state(), ref_state[0]) and random.getstate() == ref_state[1]
    batches = default_collate(items)  # what a DataLoader hands the training loop
    assert [type(b) for b in batches] == [CropView, CropView]
    assert batches[0].crop.shape == (160, 3, 16, 16) and batches[0].crop.dtype == torch.uint8
    assert batches[0].params.dtype == torch.float64
    assert _sent_draws(batches) == ref


def test_loader_draws_keep_the_law():
    """test_augment's law (rates, ranges, independence) on the draws the device receives."""
    transform = DeviceTwoCropsTransform(16)
    _seed(2)
    batches = default_collate([transform(image) for image in _photos(8, 200, 150) * 150])
    check_moco_v2_law(_sent_draws(batches), image_size=(200, 150))


def _check_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    diff = (_levels(got) - _levels(expected)).abs()
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert diff.max() <= MAX_LEVELS, diff.max()
    assert diff.mean() <= MEAN_LEVELS, diff.mean()


def test_batched_ops_equal_fast_augment_view_by_view():
    """A collated batch finished at once equals FastMocoV2View.apply on each view (same draws),
    with every branch taken: each jitter op at each place in the order, hue factors under one
    step (no shift) and above, grayscale, blur of several radii, flip."""
    images = _photos(64, 120, 90)
    fast, device = FastTwoCropsTransform(48), DeviceTwoCropsTransform(48)
    expected = _seeded(fast, images, 0)
    batches = default_collate(_seeded(device, images, 0))
    got = device.finish(batches, "cpu")

    draws = [v for pair in _sent_draws(batches) for v in pair]
    jitters = [v.jitter for v in draws if v.jitter is not None]
    assert {(j[0][pos], pos) for j in jitters for pos in range(4)} == {(op, pos) for op in range(4) for pos in range(4)}
    assert {hue_steps(j[4]) == 0 for j in jitters} == {True, False}
    assert any(v.grayscale for v in draws) and any(v.flip for v in draws)
    assert len({math.ceil(3 * v.blur_sigma) for v in draws if v.blur_sigma}) >= 4  # kernels of 4+ radii in one batch

    for view in (0, 1):
        _check_close(got[view], torch.stack([pair[view] for pair in expected]))
    # Views of other draws differ by tens of levels: the comparison can tell.
    others = torch.stack([pair[0] for pair in _seeded(fast, images, 1000)])
    assert (_levels(others) - _levels(got[0])).abs().mean() > 10


def test_views_per_seed_epoch_and_index_match_the_loader_path():
    """In the engine's SeededViews, the device path's views of an item are the fast loader path's
    (same draws, pixels up to rounding) and stay the same on a second read; another epoch differs."""
    data = SyntheticShapes(8, image_size=32)
    device = DeviceTwoCropsTransform(24)
    views = SeededViews(data, device, seed=3)
    loader_views = SeededViews(data, FastTwoCropsTransform(24), seed=3)
    drawn = []
    draw = loader_views.transform.view.draw
    loader_views.transform.view.draw = lambda image: drawn.append(draw(image)) or drawn[-1]
    for epoch in (0, 1):
        views.epoch = loader_views.epoch = epoch
        drawn.clear()
        (a1, a2), label, _ = views[5]
        (b1, b2), _, _ = views[5]
        assert torch.equal(a1.crop, b1.crop) and torch.equal(a1.params, b1.params)
        (r1, r2), ref_label, _ = loader_views[5]
        assert label == ref_label and [unpack_params(a1.params), unpack_params(a2.params)] == drawn
        x1, x2 = device.finish(default_collate([[a1, a2]]), "cpu")
        _check_close(x1, r1[None])
        _check_close(x2, r2[None])
        if epoch == 0:
            first = x1
    assert (_levels(first) - _levels(x1)).abs().mean() > 5  # epoch 1 drew other views


def test_the_switch_is_validated_by_name():
    assert load_config(PretrainConfig).data.augment_on == "loader"  # today's path stays the default
    assert load_config(PretrainConfig, None, ["data.augment_on=device"]).data.augment_on == "device"
    with pytest.raises(ConfigError, match="data.augment_on='gpu' is invalid: expected one of 'loader', 'device'"):
        load_config(PretrainConfig, None, ["data.augment_on=gpu"])


def _step_losses(out) -> list[float]:
    with open(out / "train_log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _moved_parameters(out) -> int:
    """How many of the model's float tensors the run changed from the runs' common initialisation."""
    torch.manual_seed(0)  # the tiny runs' seed
    init = SimSiam("resnet18", 64, 16, small_stem=True).state_dict()
    return sum(
        bool((value - init[key]).abs().max() > 0)
        for key, value in final_model(out).items()
        if value.is_floating_point()
    )


def _device_and_loader_first_losses(tmp_path, *common) -> tuple[list[float], list[float]]:
    """Two tiny runs from the same initialisation: data.augment_on=device (one loader worker)
    and the loader path with fast_augment's ops (no worker); their logged step losses."""
    common = ("run.max_steps=2", "run.log_every_steps=1", "run.channels_last=false", *common)
    on_device = load_config(
        PretrainConfig, None, tiny(tmp_path / "device", *common, "data.augment_on=device", "data.num_workers=1")
    )
    on_loader = load_config(PretrainConfig, None, tiny(tmp_path / "loader", *common, "data.fast_augment=true"))
    assert pretrain(on_device, resume=None).step == 2
    pretrain(on_loader, resume=None)
    return _step_losses(tmp_path / "device"), _step_losses(tmp_path / "loader")


def test_engine_trains_with_views_finished_on_the_device(tmp_path):
    """The engine finishes the views on the training device (here the CPU): the same views as
    the loader path up to rounding, so the same first loss; and it trains."""
    device_losses, loader_losses = _device_and_loader_first_losses(tmp_path)
    assert len(device_losses) == 2 and all(-1.0 <= loss <= 1.0 for loss in device_losses)
    # The first step sees the same weights and the same batch up to rounding (measured here: the
    # same loss to the last digit). A contrast mean rounded to the other integer (see MAX_LEVELS)
    # moves a view by <= 0.4 of a level: about 2e-4 of this loss at most; views of other draws
    # moved it by about 7e-3.
    assert device_losses[0] == pytest.approx(loader_losses[0], abs=1e-3)
    assert _moved_parameters(tmp_path / "device") > 50


@pytest.mark.gpu
@needs_cuda
def test_cuda_finish_equals_the_cpu_finish():
    """The same batch finished on the GPU and on the CPU: equal up to rounding (no TF32 here: the
    ops are elementwise, reductions and index copies)."""
    images = _photos(64, 120, 90)
    device = DeviceTwoCropsTransform(48)
    batches = default_collate(_seeded(device, images, 0))
    on_cpu = device.finish(batches, "cpu")
    on_gpu = device.finish([CropView(b.crop.pin_memory(), b.params) for b in batches], "cuda")
    for c, g in zip(on_cpu, on_gpu):
        assert g.device.type == "cuda"
        _check_close(g.cpu(), c)


@pytest.mark.gpu
@needs_cuda
def test_cuda_engine_trains_with_views_finished_on_the_gpu(tmp_path, monkeypatch):
    """As on the CPU: the views finished on the GPU are the loader path's up to rounding (the
    first losses agree), the run trains, and the batches the step sees are CUDA tensors."""
    # TF32 would round the convolutions' inputs to 10 bits: the comparison is of the views.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    seen = []
    finish = DeviceTwoCropsTransform.finish
    monkeypatch.setattr(
        DeviceTwoCropsTransform,
        "finish",
        lambda self, views, device: seen.append(str(device)) or finish(self, views, device),
    )
    device_losses, loader_losses = _device_and_loader_first_losses(tmp_path)
    assert seen and set(seen) == {"cuda:0"}  # finished on the GPU, every batch
    assert len(device_losses) == 2 and all(-1.0 <= loss <= 1.0 for loss in device_losses)
    assert device_losses[0] == pytest.approx(loader_losses[0], abs=1e-3)
    assert _moved_parameters(tmp_path / "device") > 50
