"""Load time: from a file on disk to a ready ResNet-50 backbone, ours against the reference.

- reference: ``torch.load`` of an official-layout ``checkpoint_0099.pth.tar`` (SimSiam model
  and its SGD momentum state, as the official release ships) with ``weights_only=True``, then
  ``load_state_dict`` into a freshly built torchvision ResNet-50;
- ours: ``simsiam_hub.from_pretrained`` on a local model folder: the network is built on the
  meta device (no random initialisation) and the safetensors tensors become its parameters
  (``assign=True``);
- for context: a normal build (random init) plus safetensors and ``load_state_dict``.

The files are made here from random weights (same sizes as the real ones), the runs are
interleaved, and the medians are compared in this one process. Files are read from the page
cache after the first run, for every path alike. Target: ours >= 10x faster.

    python bench/load_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from simsiam_hub.hub.export import import_official
from simsiam_hub.hub.loading import from_pretrained
from simsiam_hub.models import SimSiam


def make_official_checkpoint(path: Path) -> None:
    """An official-layout checkpoint: {epoch, arch, state_dict (``module.*``), optimizer}."""
    model = SimSiam("resnet50")
    wrapper = nn.Module()
    wrapper.module = model  # DDP's `module.` prefix
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # creates the momentum buffers the real checkpoints carry
    torch.save(
        {"epoch": 100, "arch": "resnet50", "state_dict": wrapper.state_dict(), "optimizer": optimizer.state_dict()},
        path,
    )


def reference_load(path: Path) -> nn.Module:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "module.encoder."
    state = {
        k[len(prefix) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(prefix) and not k.startswith(prefix + "fc.")
    }
    model = torchvision.models.resnet50()
    model.fc = nn.Identity()
    model.load_state_dict(state)
    return model.eval()


def plain_safetensors_load(folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    model = torchvision.models.resnet50()
    model.fc = nn.Identity()
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each path (after one warm-up)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="simsiam-load-bench-") as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "checkpoint_0099.pth.tar"
        make_official_checkpoint(checkpoint)
        folder = import_official(checkpoint, tmp / "model")
        print(
            f"official checkpoint: {checkpoint.stat().st_size / 1e6:.0f} MB; model.safetensors: "
            f"{(folder / 'model.safetensors').stat().st_size / 1e6:.0f} MB; torch threads: {torch.get_num_threads()}"
        )

        paths = {
            "reference: torch.load(.pth.tar) + build + load_state_dict": lambda: reference_load(checkpoint),
            "ours: from_pretrained(folder) (meta build + safetensors, assign=True)": lambda: from_pretrained(folder),
            "context: build + safetensors + load_state_dict": lambda: plain_safetensors_load(folder),
        }
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            outputs = [fn()(x) for fn in paths.values()]  # warm-up, and the same network each way
        assert all(torch.equal(outputs[0], o) for o in outputs[1:]), "the three paths disagree"
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, fn in paths.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians[next(iter(paths))]
    for name, median in medians.items():
        print(f"{median:8.3f} s  median of {args.runs}  x{reference / median:5.1f} vs reference  {name}")
    ours = medians[list(paths)[1]]
    print(f"speed-up of from_pretrained over the reference: {reference / ours:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
