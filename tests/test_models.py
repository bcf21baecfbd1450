"""The model and loss against the reference (facebookresearch/simsiam, builder.py)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from reference import ReferenceSimSiam
from torch import nn

from simsiam_hub.models import SimSiam, build_backbone, projector_layers, simsiam_loss


def _shapes(model):
    return {k: (tuple(v.shape), v.requires_grad) for k, v in model.named_parameters()}


@pytest.mark.parametrize("arch,dim,pred_dim", [("resnet50", 2048, 512), ("resnet18", 256, 64)])
def test_parameters_match_reference_builder(arch, dim, pred_dim):
    ours = SimSiam(arch, dim, pred_dim)
    ref = ReferenceSimSiam(getattr(torchvision.models, arch), dim, pred_dim)
    assert _shapes(ours) == _shapes(ref)  # names, shapes and which are frozen
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    if arch == "resnet50":
        # backbone 23,508,032 + projector 3 x 2048^2 + BN + fc bias + predictor 2 x 2048 x 512 + BN + bias
        projector = 3 * 2048 * 2048 + 2 * 2 * 2048 + 2048
        predictor = 2 * 2048 * 512 + 2 * 512 + 2048
        assert sum(p.numel() for p in ours.parameters()) == 23_508_032 + projector + predictor == 38_201_408
    assert not ours.encoder.fc[6].bias.requires_grad
    assert not ours.encoder.fc[7].affine
    last_bns = [
        b.bn3 if arch == "resnet50" else b.bn2 for layer in (ours.encoder.layer1, ours.encoder.layer4) for b in layer
    ]
    assert all(float(bn.weight.abs().sum()) == 0 for bn in last_bns)  # zero-init residual


def test_forward_matches_reference_given_same_weights():
    torch.manual_seed(0)
    ours, ref = SimSiam("resnet18", 128, 32), ReferenceSimSiam(torchvision.models.resnet18, 128, 32)
    ref.load_state_dict(ours.state_dict())
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    for a, b in zip(ours(x1, x2), ref(x1, x2)):
        torch.testing.assert_close(a, b)


def test_two_layer_projector_of_the_papers_cifar_recipe():
    """proj_layers=2 drops the middle Linear-BN-ReLU; everything else is the 3-layer model's."""
    torch.manual_seed(0)
    three = SimSiam("resnet18", 64, 16, small_stem=True)
    torch.manual_seed(0)
    two = SimSiam("resnet18", 64, 16, small_stem=True, proj_layers=2)
    kinds = [(type(m).__name__, getattr(m, "out_features", getattr(m, "num_features", None))) for m in two.encoder.fc]
    assert kinds == [("Linear", 512), ("BatchNorm1d", 512), ("ReLU", None), ("Linear", 64), ("BatchNorm1d", 64)]
    assert not two.encoder.fc[3].bias.requires_grad and not two.encoder.fc[4].affine
    assert two.encoder.fc[0].bias is None
    shapes = _shapes(three)
    for key in (
        "encoder.fc.3.weight",
        "encoder.fc.4.weight",
        "encoder.fc.4.bias",
        "encoder.fc.6.weight",
        "encoder.fc.6.bias",
    ):
        del shapes[key]
    shapes.update({"encoder.fc.3.weight": ((64, 512), True), "encoder.fc.3.bias": ((64,), False)})
    assert _shapes(two) == shapes
    # the backbone's initialisation does not depend on the projector (it is drawn before it)
    for key, value in three.encoder.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, two.encoder.state_dict()[key]), key
    assert [t.shape for t in two(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))] == [(4, 64)] * 4
    assert (projector_layers(two.state_dict()), projector_layers(three.state_dict())) == (2, 3)
    with pytest.raises(ValueError, match="proj_layers=4"):
        SimSiam("resnet18", proj_layers=4)


def test_small_stem_and_backbone():
    backbone = build_backbone("resnet18", small_stem=True)
    assert backbone.conv1.kernel_size == (3, 3) and isinstance(backbone.maxpool, nn.Identity)
    assert backbone.conv1.stride == (1, 1) and backbone.conv1.padding == (1, 1)
    assert backbone(torch.randn(2, 3, 28, 28)).shape == (2, 512)
    # the spatial sizes the small stem promises (no downsampling before layer2): a wrong stride shows here
    sizes = {}
    hooks = [
        getattr(backbone, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-2:]))
        for name in ("conv1", "layer1", "layer2", "layer3", "layer4")
    ]
    backbone(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert {k: tuple(v) for k, v in sizes.items()} == {
        "conv1": (32, 32),
        "layer1": (32, 32),
        "layer2": (16, 16),
        "layer3": (8, 8),
        "layer4": (4, 4),
    }
    standard = build_backbone("resnet18")
    assert standard.conv1.stride == (2, 2) and isinstance(standard.maxpool, nn.MaxPool2d)
    with pytest.raises(ValueError, match="unknown arch 'vit'"):
        build_backbone("vit")


def test_loss_equals_formula():
    torch.manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(8, 16) for _ in range(4))
    expected = -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
    by_hand = -0.5 * (
        ((p1 / p1.norm(dim=1, keepdim=True)) * (z2 / z2.norm(dim=1, keepdim=True))).sum(1).mean()
        + ((p2 / p2.norm(dim=1, keepdim=True)) * (z1 / z1.norm(dim=1, keepdim=True))).sum(1).mean()
    )
    torch.testing.assert_close(simsiam_loss(p1, p2, z1, z2), expected)
    torch.testing.assert_close(simsiam_loss(p1, p2, z1, z2), by_hand)
    assert simsiam_loss(z2, z1, z1, z2).item() == pytest.approx(-1.0)  # p equal to the other view's z


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_blocks_the_target_branch(stop_gradient):
    torch.manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(8, 16, requires_grad=True) for _ in range(4))
    simsiam_loss(p1, p2, z1, z2, stop_gradient=stop_gradient).backward()
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    if stop_gradient:
        assert z1.grad is None and z2.grad is None
    else:
        assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_stop_gradient_reaches_the_encoder_only_through_p():
    """With stop-gradient, the encoder's gradient equals the one through the predictor path alone."""
    torch.manual_seed(0)
    model = SimSiam("resnet18", 64, 16)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    p1, p2, z1, z2 = model(x1, x2)
    grads = torch.autograd.grad(simsiam_loss(p1, p2, z1, z2), [z1, z2])
    p1d = model.predictor(z1)  # same graph: only p depends on z when z is a stop-gradient target
    assert all(g.abs().sum() > 0 for g in grads)
    ref = torch.autograd.grad(simsiam_loss(p1d, p2, z1.detach(), z2.detach()), [z1], retain_graph=True)[0]
    torch.testing.assert_close(grads[0], ref)
