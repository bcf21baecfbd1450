"""A faster two-crop MoCo v2 augmentation with the reference's exact random law.

:class:`FastTwoCropsTransform` is a drop-in for ``augment.two_crop_augmentation`` (a PIL
image in, two normalised float tensors (3, size, size) out). What it keeps from the
reference (``augment.moco_v2_augmentation``): every random draw, made with torchvision's
own ``get_params`` from the same generators (torch's global RNG, and python's ``random``
for the blur sigma) in the same order, so that for one RNG state both paths choose the
same crop box, jitter factors and order, grayscale, blur sigma and flip. What it changes
is how the pixels are computed:

- the colour jitter, grayscale and blur run as a few float ops on a (3, size, size)
  tensor instead of PIL round trips; PIL's hue (RGB -> HSV -> RGB) was half the
  reference's time;
- the crop is resized with torch's antialiased uint8 bilinear kernel (PIL's algorithm,
  vectorised);
- a JPEG that is not decoded yet (``Image.open`` without ``convert``) is decoded at a
  reduced scale (``Image.draft``) when both crops stay at least ``size`` pixels wide at
  that scale; the crop boxes are drawn on the full size and mapped.

Numerical differences against the PIL path, with the same draws (measured on 500x375
photos at 224 px: 1.3 levels of 255 on average, 99% of pixels within 5 levels, a few
pixels up to about 25; tests/test_augment.py holds them): PIL rounds to 8 bits after
every op (about 0.4 levels per jitter op) and this path does not; the hue is shifted in
float HSV, exactly as torchvision's tensor ``adjust_hue`` (PIL rounds H, S and V to 8
bits, 0.6 levels; the shift itself is quantised as PIL's is, to ``int(255 * hue) / 256``
of a turn); the blur is an exact Gaussian truncated at 3 sigma with edges replicated (PIL
approximates it by three box filters: 0.1-0.4 levels); the crop's resampling agrees with
PIL's to rounding. Reduced-size JPEG decoding replaces part of the antialiasing filter by
the DCT's own downscaling.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from . import DEFAULT_IMAGE_SIZE
from .augment import moco_v2_augmentation

# ITU-R 601-2 luma, the weights of PIL's convert("L") and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# HSV -> RGB: channel n takes k = (n + H) mod 6 with n = 5, 3, 1 for R, G, B.
_HSV_OFFSETS = (5.0, 3.0, 1.0)
_SEXTANT_OFFSETS = (0.0, 2.0, 4.0)


@dataclass(frozen=True)
class ViewParams:
    """The random choices of one view, in the reference's terms.

    ``box`` is (top, left, height, width) on the original image; ``jitter`` is None or
    (order, brightness, contrast, saturation, hue) as ``ColorJitter.get_params`` draws
    them, ``order`` a tuple of the op indices 0..3; ``blur_sigma`` None means no blur.
    """

    box: tuple[int, int, int, int]
    jitter: tuple | None
    grayscale: bool
    blur_sigma: float | None
    flip: bool


class FastMocoV2View:
    """One MoCo v2 view: :meth:`draw` the choices, :meth:`apply` them to decoded pixels.

    The recipe's parameters are read from the reference's own ``Compose``
    (``augment.moco_v2_augmentation(size, **kwargs)``), so the two cannot drift apart.
    """

    def __init__(self, size: int = DEFAULT_IMAGE_SIZE, **kwargs):
        recipe = moco_v2_augmentation(size, **kwargs).transforms
        kinds = (
            T.RandomResizedCrop,
            T.RandomApply,
            T.RandomGrayscale,
            T.RandomApply,
            T.RandomHorizontalFlip,
            T.ToTensor,
            T.Normalize,
        )
        if len(recipe) != len(kinds) or not all(isinstance(t, k) for t, k in zip(recipe, kinds)):
            raise TypeError(f"fast_augment mirrors a MoCo v2 recipe of {[k.__name__ for k in kinds]}; found {recipe}")
        self.size = size
        self.crop = recipe[0]
        self.jitter, self.jitter_p = recipe[1].transforms[0], recipe[1].p
        self.grayscale_p = recipe[2].p
        self.sigma, self.blur_p = recipe[3].transforms[0].sigma, recipe[3].p
        self.flip_p = recipe[4].p
        mean = torch.tensor(recipe[6].mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(recipe[6].std, dtype=torch.float32).view(3, 1, 1)
        # (x / 255 - mean) / std as one multiply and one subtract on 0..255 values.
        self._norm_scale, self._norm_shift = 1.0 / (255.0 * std), mean / std

    def draw(self, image) -> ViewParams:
        """The reference's draws for one view, in its order (``image`` only gives the size)."""
        box = self.crop.get_params(image, self.crop.scale, self.crop.ratio)
        jitter = None
        if not self.jitter_p < torch.rand(1):  # RandomApply's test
            j = self.jitter
            order, b, c, s, h = j.get_params(j.brightness, j.contrast, j.saturation, j.hue)
            jitter = (tuple(order.tolist()), b, c, s, h)
        grayscale = bool(torch.rand(1) < self.grayscale_p)
        blur_sigma = random.uniform(*self.sigma) if not self.blur_p < torch.rand(1) else None
        flip = bool(torch.rand(1) < self.flip_p)
        return ViewParams(tuple(int(v) for v in box), jitter, grayscale, blur_sigma, flip)

    def apply(self, source, params: ViewParams, scale: int = 1) -> torch.Tensor:
        """The view as a normalised float tensor (3, size, size).

        ``source`` is the image as a uint8 tensor (H, W, 3) at the size the box refers to
        (``scale`` 1), or a PIL image decoded at 1/``scale`` of that size.
        """
        x = self.resized_crop(source, params.box, scale).float()
        if params.jitter is not None:
            order, b, c, s, h = params.jitter
            for op in order:
                if op == 0:
                    x.mul_(b).clamp_(0, 255)
                elif op == 1:
                    # PIL blends with the image's mean luma, rounded to an integer.
                    mean = float(int(_gray(x).mean() + 0.5))
                    x.sub_(mean).mul_(c).add_(mean).clamp_(0, 255)
                elif op == 2:
                    gray = _gray(x)
                    x.sub_(gray).mul_(s).add_(gray).clamp_(0, 255)
                else:
                    x = _shift_hue(x, h)
        if params.grayscale:
            x = _gray(x)  # one channel until the normalisation broadcasts it to three
        if params.blur_sigma is not None:
            x = _gaussian_blur(x, params.blur_sigma)
        if params.flip:
            x = x.flip(-1)
        return (x * self._norm_scale).sub_(self._norm_shift).contiguous()

    def resized_crop(self, source, box, scale: int = 1) -> torch.Tensor:
        """The box of ``source`` (as for :meth:`apply`) resized to uint8 (3, size, size)."""
        top, left, height, width = box
        out = (self.size, self.size)
        if scale == 1:
            crop = source[top : top + height, left : left + width].permute(2, 0, 1)[None]
            # Channels-last uint8: torch's vectorised antialiased bilinear kernel.
            return TF.resize(crop, list(out), interpolation=T.InterpolationMode.BILINEAR, antialias=True)[0]
        # Reduced decode: the box falls on fractional pixels; PIL's resize takes it as is.
        fbox = (left / scale, top / scale, (left + width) / scale, (top + height) / scale)
        resized = source.resize(out, Image.BILINEAR, box=fbox)
        return torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1)

    def __repr__(self):
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.crop.scale}, ratio={self.crop.ratio}, "
            f"{self.jitter} p={self.jitter_p}, grayscale p={self.grayscale_p}, blur sigma={self.sigma} p={self.blur_p}, "
            f"flip p={self.flip_p})"
        )


class FastTwoCropsTransform:
    """Two independent MoCo v2 views of a PIL image, drawn as the reference draws them."""

    def __init__(self, size: int = DEFAULT_IMAGE_SIZE, **kwargs):
        """``kwargs`` as for ``augment.moco_v2_augmentation`` (min_scale, blur_prob, mean, std)."""
        self.view = FastMocoV2View(size, **kwargs)

    def __call__(self, image) -> list[torch.Tensor]:
        first, second = self.view.draw(image), self.view.draw(image)
        decoded, scale = decode_for_crops(image, [first.box, second.box], self.view.size)
        source = torch.from_numpy(np.array(decoded, dtype=np.uint8)) if scale == 1 else decoded
        return [self.view.apply(source, first, scale), self.view.apply(source, second, scale)]

    def __repr__(self):
        return f"{type(self).__name__}({self.view!r})"


def decode_for_crops(image: Image.Image, boxes, size: int) -> tuple[Image.Image, int]:
    """An RGB image holding ``boxes`` at >= ``size`` pixels, and its reduction factor.

    A JPEG not decoded yet is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
    scaling, ``Image.draft``) when every box still spans ``size`` pixels there; anything
    else is used at full size.
    """
    scale = 1
    if getattr(image, "format", None) == "JPEG" and image.tile:  # tile is emptied by load()
        smallest = min(min(height, width) for _, _, height, width in boxes)
        while scale < 8 and smallest >= 2 * scale * size:
            scale *= 2
        if scale > 1:
            width, height = image.size
            image.draft("RGB", (width // scale, height // scale))
            # draft picks the largest power of two that keeps the requested size: ours.
            scale = round(width / image.size[0])
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, scale


# The pixel ops below take (3, H, W) or a batch (N, 3, H, W): device_augment.py applies them
# to the views of a batch that drew them.
def _channel(x: torch.Tensor, index: int) -> torch.Tensor:
    return x.narrow(-3, index, 1)


@functools.cache
def _per_channel(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """A (3, 1, 1) constant on ``device``, made there once (not copied over at every call)."""
    return torch.tensor(values).view(3, 1, 1).to(device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (..., 1, H, W) of an RGB tensor (..., 3, H, W)."""
    return (_channel(x, 0) * _LUMA[0]).add_(_channel(x, 1), alpha=_LUMA[1]).add_(_channel(x, 2), alpha=_LUMA[2])


def _shift_hue(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Rotate the HSV hue of a (3, H, W) tensor of 0..255 values by ``hue`` of a turn.

    The shift is quantised as torchvision's PIL path does it (PIL's hue has 256 steps and
    the factor becomes int(hue * 255) of them). Written with elementwise arithmetic, sign,
    abs and clamp only: on CPU those are vectorised, while argmax, floor, comparisons,
    ``where`` and reductions over the channel dimension are several times slower.
    """
    steps = hue_steps(hue)
    return x if steps == 0 else _rotate_hue(x, 6.0 * steps / 256.0)


def hue_steps(hue: float) -> int:
    """The hue factor as the 1/256 turns that PIL's path of ``adjust_hue`` shifts by."""
    return int(hue * 255)  # truncation toward zero, as np.int32(hue * 255)


def _rotate_hue(x: torch.Tensor, sextants) -> torch.Tensor:
    """Add ``sextants`` (a float, or a tensor (N, 1, 1, 1): one per image) to the HSV hue
    of (..., 3, H, W), in sixths of a turn."""
    r, g, b = _channel(x, 0), _channel(x, 1), _channel(x, 2)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    inv_c = c.clamp_min(1e-6).reciprocal_()
    # Each channel's candidate hue in sextants, valid where that channel is the maximum:
    # R: (g - b) / c mod 6, G: (b - r) / c + 2, B: (r - g) / c + 4. Where two channels tie
    # for the maximum their candidates agree, so the mean over the maxima is the hue.
    d = torch.empty_like(x)
    d_r, d_g, d_b = _channel(d, 0), _channel(d, 1), _channel(d, 2)
    torch.sub(g, b, out=d_r)
    torch.sub(b, r, out=d_g)
    torch.sub(r, g, out=d_b)
    wrap = torch.sign(d_r).clamp_(max=0)  # -1 where R's candidate is negative
    d.mul_(inv_c).add_(_per_channel(_SEXTANT_OFFSETS, x.device))
    d_r.sub_(wrap, alpha=6.0)
    is_max = torch.sign(x - v).add_(1.0)  # exactly 1 on the maxima, 0 elsewhere
    d.mul_(is_max)
    maxima = (_channel(is_max, 0) + _channel(is_max, 1)).add_(_channel(is_max, 2))
    hue6 = (d_r + d_g).add_(d_b).div_(maxima)  # in [0, 6)
    # HSV -> RGB with the shifted hue: channel n = v - c * T((n + hue6) mod 6) for n = 5, 3, 1,
    # T(k) = clamp(min(k, 4 - k), 0, 1). Here k lies in (0.4, 11.6), where T(k mod 6) is
    # clamp(2 - ||k - 5| - 3|, 0, 1): 2 minus the distance to the nearer of 2 and 8.
    k = torch.add(_per_channel(_HSV_OFFSETS, x.device) + (sextants - 5.0), hue6)
    weight = k.abs_().sub_(3.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return weight.mul_(c).neg_().add_(v)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W), kernel radius ceil(3 sigma), edges replicated."""
    weights = gaussian_kernel(sigma)
    radius = len(weights) // 2
    for dim in (-1, -2):
        n = x.shape[dim]
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        padded = F.pad(x[None], pad, mode="replicate")[0]
        out = padded.narrow(dim, 0, n) * weights[0]
        for i in range(1, len(weights)):
            out.add_(padded.narrow(dim, i, n), alpha=weights[i])
        x = out
    return x


def gaussian_kernel(sigma: float) -> list[float]:
    """The blur's 1-D taps: a Gaussian of ``sigma`` truncated at radius ceil(3 sigma), summing to 1."""
    radius = max(1, math.ceil(3 * sigma))
    weights = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    total = sum(weights)
    return [w / total for w in weights]
