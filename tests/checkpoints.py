"""Checkpoints the tests make: a real training checkpoint, and one in the official SimSiam layout
(tests/conftest.py makes each once per session)."""

from __future__ import annotations

from dataclasses import dataclass


def make_training_checkpoint(folder):
    """A real training checkpoint of a ResNet-50 SimSiam, from one engine step at 32 px."""
    from simsiam_hub.config import PretrainConfig, load_config
    from simsiam_hub.engine import pretrain

    overrides = [
        "model.arch=resnet50",
        "data.dataset=synthetic",
        "data.image_size=32",
        "data.synthetic_size=4",
        "data.num_workers=0",
        "optim.batch_size=4",
        "optim.epochs=1",
        "monitor.knn_every_epochs=0",
        "run.tensorboard=false",
        "run.progress=false",
        "run.amp=off",
        f"run.output_dir={folder}",
    ]
    return pretrain(load_config(PretrainConfig, None, overrides), resume=None).checkpoint


def reference_simsiam(dim: int = 2048, pred_dim: int = 512):
    """The reference architecture (tests/reference.py), with a ResNet-50."""
    import torchvision
    from reference import ReferenceSimSiam

    return ReferenceSimSiam(torchvision.models.resnet50, dim, pred_dim)


def randomize_batchnorm(model):
    """Random BatchNorm2d weights and statistics, so that features depend on every tensor
    (zero-init residuals leave each block's last BN at 0)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1234)
    return model


@dataclass
class OfficialCheckpoint:
    path: object  # checkpoint_0099.pth.tar in the official layout
    model: object  # the reference model whose weights it holds
    backbone: dict  # its trunk under torchvision names, no fc


def make_official_checkpoint(folder):
    """``checkpoint_0099.pth.tar`` as main_simsiam.py saves it under DDP: {epoch, arch,
    state_dict (``module.*``), optimizer (with momentum buffers)}.

    BatchNorm weights and statistics are randomised (:func:`randomize_batchnorm`).
    """
    import torch
    from torch import nn

    torch.manual_seed(1)
    model = randomize_batchnorm(reference_simsiam())
    wrapper = nn.Module()
    wrapper.module = model  # DDP's `module.` prefix
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # momentum buffers, as a real checkpoint has (weights move by the decay)
    optimizer.zero_grad(set_to_none=True)
    path = folder / "checkpoint_0099.pth.tar"
    torch.save(
        {"epoch": 100, "arch": "resnet50", "state_dict": wrapper.state_dict(), "optimizer": optimizer.state_dict()},
        path,
    )
    model.eval()
    backbone = {k: v.clone() for k, v in model.encoder.state_dict().items() if not k.startswith("fc.")}
    return OfficialCheckpoint(path, model, backbone)
