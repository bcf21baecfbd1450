"""SimSiam: backbone + projection MLP (the encoder), prediction MLP, and its loss.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021. The module
layout follows facebookresearch/simsiam `simsiam/builder.py` exactly, so that our
parameter names are the official checkpoint's without the `module.` prefix:
``encoder.*`` (a torchvision ResNet whose ``fc`` is the projector, ``encoder.fc.0..7``)
and ``predictor.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = [
    "ARCHS",
    "PROJ_LAYERS",
    "build_resnet",
    "build_backbone",
    "feature_dim",
    "SimSiam",
    "projector_layers",
    "simsiam_loss",
    "PooledFeatures",
    "initial_backbone",
]

ARCHS = ("resnet18", "resnet34", "resnet50")
PROJ_LAYERS = (3, 2)  # projector depth: 3 (builder.py, ImageNet) | 2 (the paper's CIFAR-10, Appendix D)


def build_resnet(
    arch: str = "resnet50",
    *,
    num_classes: int = 1000,
    small_stem: bool = False,
    zero_init_residual: bool = True,
) -> torchvision.models.ResNet:
    """A torchvision ResNet, optionally with the small-image stem.

    ``small_stem`` swaps the 7x7/2 conv and the max-pool for one 3x3/1 conv, the usual
    stem for 28-32 px images (CIFAR, Fashion-MNIST); parameter names are unchanged.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: expected one of {', '.join(ARCHS)}")
    model = getattr(torchvision.models, arch)(
        weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual
    )
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model


def build_backbone(arch: str = "resnet50", *, small_stem: bool = False) -> torchvision.models.ResNet:
    """The feature extractor alone: a ResNet with ``fc = Identity`` (global-pooled output)."""
    model = build_resnet(arch, small_stem=small_stem)
    model.fc = nn.Identity()
    return model


def feature_dim(arch: str) -> int:
    """Width of the pooled backbone output (2048 for ResNet-50, 512 for ResNet-18/34)."""
    return 2048 if arch == "resnet50" else 512


class SimSiam(nn.Module):
    """Encoder f (backbone + projector, 3 layers by default) and predictor h.

    ``forward(x1, x2)`` takes two views of shape (N, 3, H, W) and returns
    ``(p1, p2, z1, z2)``, each (N, dim); z is *not* detached here: the stop-gradient
    is the loss's business (see :func:`simsiam_loss`), so that the collapse ablation
    is one flag.

    ``proj_layers=2`` drops the projector's middle Linear-BN-ReLU: the paper's CIFAR-10 model
    ("followed by a 2-layer projection MLP", Appendix D; its layers are not spelled out, so the
    widths and BN are the 3-layer one's). The last Linear is then ``encoder.fc.3``, not ``.6``.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        dim: int = 2048,
        pred_dim: int = 512,
        *,
        small_stem: bool = False,
        proj_layers: int = 3,
    ):
        super().__init__()
        if proj_layers not in PROJ_LAYERS:
            raise ValueError(f"proj_layers={proj_layers!r}: expected one of {PROJ_LAYERS}")
        self.arch, self.dim, self.pred_dim, self.small_stem, self.proj_layers = (
            arch,
            dim,
            pred_dim,
            small_stem,
            proj_layers,
        )
        self.encoder = build_resnet(arch, num_classes=dim, small_stem=small_stem, zero_init_residual=True)
        prev_dim = self.encoder.fc.weight.shape[1]
        hidden = [nn.Linear(prev_dim, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(inplace=True)]
        if proj_layers == 3:
            hidden += [nn.Linear(prev_dim, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(inplace=True)]
        self.encoder.fc = nn.Sequential(*hidden, self.encoder.fc, nn.BatchNorm1d(dim, affine=False))
        # The reference freezes the bias of the last projector Linear (it is followed by BN).
        self.encoder.fc[-2].bias.requires_grad = False
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        z1 = self.encoder(x1)
        z2 = self.encoder(x2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def projector_layers(state: dict) -> int:
    """The projector depth (3 or 2) of a whole-model state dict (``encoder.fc.*`` keys)."""
    return 3 if "encoder.fc.6.weight" in state else 2


def simsiam_loss(
    p1: torch.Tensor,
    p2: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    stop_gradient: bool = True,
) -> torch.Tensor:
    """Symmetric negative cosine similarity, D(p1, sg(z2))/2 + D(p2, sg(z1))/2, in [-1, 1].

    Computed in fp32 (or fp64) whatever the autocast dtype. ``stop_gradient=False`` is the
    paper's collapse ablation (Fig. 2): the loss then falls to -1 with a constant output.
    """
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    p1, p2, z1, z2 = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (p1, p2, z1, z2))
    return -(F.cosine_similarity(p1, z2, dim=-1).mean() + F.cosine_similarity(p2, z1, dim=-1).mean()) * 0.5


class PooledFeatures(nn.Module):
    """A view of a ResNet that stops at the global-pooled features, ignoring its ``fc``.

    Shares the ResNet's modules (no copy), so the SimSiam encoder can be evaluated by
    k-NN mid-training without detaching its projector.
    """

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        self.resnet = resnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
        return torch.flatten(r.avgpool(x), 1)


def initial_backbone(
    arch: str, *, small_stem: bool = False, dim: int = 2048, pred_dim: int = 512, proj_layers: int = 3, seed: int = 0
) -> PooledFeatures:
    """The backbone a pretraining run of this model and seed starts from (the engine seeds
    torch, then builds :class:`SimSiam`; the head widths matter, as the head's init draws from
    the same generator): the "random init" baseline. The caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PooledFeatures(
            SimSiam(arch, dim, pred_dim, small_stem=small_stem, proj_layers=proj_layers).encoder
        ).eval()
