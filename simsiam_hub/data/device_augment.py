"""MoCo v2 views finished on the training device: the loader crops, the GPU does the rest.

With ``data.augment_on=device`` the data-loader workers do only what needs the whole image:
each view's random draws (:meth:`FastMocoV2View.draw`: the same generators in the same order as
the reference and ``fast_augment``, so the draws per (seed, epoch, index) are unchanged), the
decoding, and the crop resized to uint8 (size x size). A worker sends each view as a
:class:`CropView`: the uint8 crop (a quarter of the bytes of a float view) and the view's draws
packed in a row of 16 numbers. :meth:`DeviceTwoCropsTransform.finish` then applies colour jitter
(each view's own op order and factors), grayscale, blur (each view's own sigma), flip and the
normalisation to a whole batch, on whatever device the batch is: the GPU in training, the CPU
in tests.

The pixel ops are ``fast_augment``'s own functions and formulas, each applied to the views of
the batch that drew it: the views are grouped by (place in the jitter order, op), and for the
grayscale, the blur (by kernel radius) and the flip, and each group is gathered, changed and
put back. Everything that depends on the draws alone (the groups, the factors, the hue steps,
the blur taps) is worked out on the host from the packed draws, so the host never waits for the
device. The result equals ``FastMocoV2View.apply`` view by view up to float rounding (the blur
sums the same taps in the same order, but fused multiply-adds may round differently), with one
larger case: the contrast op blends with the mean luma rounded to an integer, a reduction whose
summation order differs; where that mean lies within rounding of a half-integer the two paths
can round it to neighbouring integers, which shifts the view uniformly by ``|1 - contrast|``
<= 0.4 of a level of 255 (at most 0.56 after a later brightness op). tests/test_device_augment.py
holds that bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import DEFAULT_IMAGE_SIZE
from .fast_augment import (
    FastMocoV2View,
    ViewParams,
    _gray,
    _per_channel,
    _rotate_hue,
    decode_for_crops,
    gaussian_kernel,
    hue_steps,
)

# A view's draws as one float64 row (exact for all of them: integers, the float32 jitter
# factors, the float64 blur sigma): the box (top, left, height, width), jitter applied (0/1),
# the jitter order (4 op indices), its factors (brightness, contrast, saturation, hue),
# grayscale (0/1), the blur sigma (0: no blur), flip (0/1).
PACKED_WIDTH = 16
_JITTER, _ORDER, _FACTORS, _GRAY, _SIGMA, _FLIP = 4, slice(5, 9), slice(9, 13), 13, 14, 15


def pack_params(params: ViewParams) -> torch.Tensor:
    """The draws of one view as a float64 row of :data:`PACKED_WIDTH` (see :func:`unpack_params`)."""
    row = torch.zeros(PACKED_WIDTH, dtype=torch.float64)
    row[:4] = torch.tensor(params.box, dtype=torch.float64)
    if params.jitter is not None:
        order, *factors = params.jitter
        row[_JITTER] = 1
        row[_ORDER] = torch.tensor(order, dtype=torch.float64)
        row[_FACTORS] = torch.tensor(factors, dtype=torch.float64)
    row[_GRAY] = params.grayscale
    row[_SIGMA] = params.blur_sigma or 0.0  # sigma >= 0.1 when drawn
    row[_FLIP] = params.flip
    return row


def unpack_params(row) -> ViewParams:
    """The :class:`ViewParams` that :func:`pack_params` packed (a row, or its ``tolist()``)."""
    v = row.tolist() if isinstance(row, torch.Tensor) else row
    jitter = (tuple(int(i) for i in v[_ORDER]), *v[_FACTORS]) if v[_JITTER] else None
    return ViewParams(tuple(int(i) for i in v[:4]), jitter, bool(v[_GRAY]), v[_SIGMA] or None, bool(v[_FLIP]))


class CropView(NamedTuple):
    """One view as the loader sends it; the DataLoader collates a batch of them field by field."""

    crop: torch.Tensor  # uint8 (3, size, size), or (N, 3, size, size) for a batch
    params: torch.Tensor  # float64 (PACKED_WIDTH,), or (N, PACKED_WIDTH): the packed draws


class DeviceTwoCropsTransform:
    """The loader's half of ``data.augment_on=device``: a PIL image in, two :class:`CropView` out.

    Draws exactly as :class:`fast_augment.FastTwoCropsTransform` does (both views' draws first,
    then the crops, so one JPEG is decoded once, at reduced size where both crops allow);
    :meth:`finish` turns a collated batch into the views that transform would have made.
    """

    def __init__(self, size: int = DEFAULT_IMAGE_SIZE, **kwargs):
        """``kwargs`` as for ``augment.moco_v2_augmentation`` (min_scale, blur_prob, mean, std)."""
        self.view = FastMocoV2View(size, **kwargs)
        # The normalisation's per-channel constants as numbers: the transform travels to the
        # loader workers, so it holds no device tensor (_per_channel keeps one per device).
        self._scale = tuple(self.view._norm_scale.flatten().tolist())
        self._shift = tuple(self.view._norm_shift.flatten().tolist())

    def __call__(self, image) -> list[CropView]:
        draws = [self.view.draw(image), self.view.draw(image)]
        decoded, scale = decode_for_crops(image, [p.box for p in draws], self.view.size)
        source = torch.from_numpy(np.array(decoded, dtype=np.uint8)) if scale == 1 else decoded
        return [CropView(self.view.resized_crop(source, p.box, scale), pack_params(p)) for p in draws]

    def finish(self, views: Sequence[CropView], device) -> list[torch.Tensor]:
        """Collated :class:`CropView` batches -> normalised float views (N, 3, size, size) on
        ``device``, one per batch, computed together."""
        crops = torch.cat([v.crop.to(device, non_blocking=True) for v in views])
        out = self.apply(crops, torch.cat([v.params for v in views]))
        return list(out.split([len(v.crop) for v in views]))

    def apply(self, crops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The batched :meth:`FastMocoV2View.apply`: uint8 crops (N, 3, S, S) on any device and
        their packed draws (N, :data:`PACKED_WIDTH`, on the CPU) -> float (N, 3, S, S) there."""
        draws = [unpack_params(row) for row in params.cpu().tolist()]
        x = crops.float()
        for position in range(4):  # each view runs its jitter ops in its own order
            for op in range(4):
                rows = [i for i, p in enumerate(draws) if p.jitter is not None and p.jitter[0][position] == op]
                _jitter(x, rows, op, [draws[i].jitter[1 + op] for i in rows])
        _update(x, [i for i, p in enumerate(draws) if p.grayscale], lambda v: _gray(v).expand_as(v))
        kernels = {i: gaussian_kernel(p.blur_sigma) for i, p in enumerate(draws) if p.blur_sigma is not None}
        for width in sorted({len(k) for k in kernels.values()}):  # one group per kernel radius
            rows = [i for i, k in kernels.items() if len(k) == width]
            # float32 taps: the rounding fast_augment's add_(alpha=w) gives each of them
            taps = _to_device(torch.tensor([kernels[i] for i in rows], dtype=torch.float32), x.device)
            _update(x, rows, lambda v, taps=taps: _blur(v, taps))
        _update(x, [i for i, p in enumerate(draws) if p.flip], lambda v: v.flip(-1))
        return x.mul_(_per_channel(self._scale, x.device)).sub_(_per_channel(self._shift, x.device))

    def __repr__(self):
        return f"{type(self).__name__}({self.view!r})"


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device``. To a GPU through pinned memory, so that the copy joins
    the stream's queue instead of waiting for the work already in it (a pageable copy waits)."""
    return (t.pin_memory() if device.type == "cuda" else t).to(device, non_blocking=True)


def _update(x: torch.Tensor, rows: list[int], fn) -> None:
    """x[rows] = fn(x[rows]) in place; nothing when ``rows`` is empty."""
    if rows:
        index = _to_device(torch.tensor(rows), x.device)
        x.index_copy_(0, index, fn(x.index_select(0, index)))


def _per_view(values, device) -> torch.Tensor:
    """One float32 factor per view, shaped (n, 1, 1, 1) to broadcast over (n, C, H, W)."""
    return _to_device(torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1), device)


def _jitter(x: torch.Tensor, rows: list[int], op: int, factors: list[float]) -> None:
    """One of ColorJitter's ops (0 brightness, 1 contrast, 2 saturation, 3 hue) on x[rows],
    as ``FastMocoV2View.apply`` computes it, with each view's own factor."""
    if op == 3:  # a hue factor under one step leaves the view as it is
        steps = [hue_steps(h) for h in factors]
        rows, steps = [r for r, s in zip(rows, steps) if s], [s for s in steps if s]
        factors = [6.0 * s / 256.0 for s in steps]  # the shift in sextants, exact in float32
    if not rows:
        return
    f = _per_view(factors, x.device)
    if op == 0:
        _update(x, rows, lambda v: v.mul_(f).clamp_(0, 255))
    elif op == 1:

        def contrast(v):
            # PIL blends with the image's mean luma, rounded to an integer.
            mean = _gray(v).mean(dim=(-3, -2, -1), keepdim=True).add_(0.5).floor_()
            return v.sub_(mean).mul_(f).add_(mean).clamp_(0, 255)

        _update(x, rows, contrast)
    elif op == 2:

        def saturation(v):
            gray = _gray(v)
            return v.sub_(gray).mul_(f).add_(gray).clamp_(0, 255)

        _update(x, rows, saturation)
    else:
        _update(x, rows, lambda v: _rotate_hue(v, f))


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable blur of (n, C, H, W), view i with its own taps[i] (n, 2 r + 1), edges replicated:
    ``_gaussian_blur``'s sums, in its order."""
    width = taps.shape[1]
    radius = width // 2
    weights = taps.t().reshape(width, -1, 1, 1, 1)  # weights[t]: tap t of each view, (n, 1, 1, 1)
    for dim in (-1, -2):
        n = x.shape[dim]
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        padded = F.pad(x, pad, mode="replicate")
        out = padded.narrow(dim, 0, n) * weights[0]
        for t in range(1, width):
            out.addcmul_(padded.narrow(dim, t, n), weights[t])
        x = out
    return x
