"""Evaluation runs in fp32 unless asked otherwise, on every machine.

The features of early SimSiam checkpoints (and of many backbones) are a large common vector plus
small differences between images. bf16 keeps 8 bits of mantissa, about 0.4% of each value: the
size of those differences, so the cosine ranking k-NN relies on is lost. ``torch.autocast`` in
bf16 rounds the same way on every CPU (natively or emulated), so these tests hold anywhere.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from simsiam_hub.cli import main
from simsiam_hub.config import DataConfig, LinclsConfig, PretrainConfig
from simsiam_hub.eval.knn import eval_loader, extract_features, knn_accuracy, knn_datasets
from simsiam_hub.models import build_backbone
from simsiam_hub.precision import EVAL_AMP, resolve_amp

# Classes of nearby colours under mild noise: a random network's pooled features separate them by
# differences of about 0.03. The common offset puts them at about 1.5% of the features' size: far
# above fp32's rounding, a few times bf16's spacing.
COLORS = [(130, 110, 110), (110, 130, 110), (110, 110, 130), (125, 125, 105)]
COMMON_OFFSET = 2.0
K = 10
IMAGE_SIZE = 24


@pytest.fixture(scope="module")
def near_colours(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("near_colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 8)):
        for c, color in enumerate(COLORS):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.array(color) * rng.uniform(0.9, 1.1) + rng.normal(0, 25, (IMAGE_SIZE, IMAGE_SIZE, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def offset_network():
    """A ResNet-18 whose pooled features are a large common vector plus small differences."""
    torch.manual_seed(0)
    net = build_backbone("resnet18", small_stem=True).eval()
    with torch.no_grad():
        net.layer4[-1].bn2.bias += COMMON_OFFSET
    return net


def loaders(root: Path):
    bank, query = knn_datasets(
        DataConfig(dataset="imagefolder", root=str(root), image_size=IMAGE_SIZE, num_workers=0), None, None
    )
    return [eval_loader(d, batch_size=64, num_workers=0, device=torch.device("cpu")) for d in (bank, query)]


@torch.no_grad()
def float64_reference(net, root: Path):
    """Features, labels and k-NN top-1 computed in float64 from end to end."""
    net64 = copy.deepcopy(net).double()
    (bx, by), (qx, qy) = (
        [torch.cat(t) for t in zip(*[(net64(x.double()), y) for x, y, _ in loader])] for loader in loaders(root)
    )
    bx, qx = F.normalize(bx, dim=1), F.normalize(qx, dim=1)
    return (bx, by), (qx, qy), knn_accuracy(bx, by, qx, qy, k=K)["top1"]


def similarity_error(bank_x, query_x, ref_bank_x, ref_query_x) -> float:
    """The largest error of the query-bank cosine similarities, relative to how much they vary
    over the bank: what decides which neighbours vote."""
    ref = ref_query_x @ ref_bank_x.T
    return ((query_x.double() @ bank_x.double().T - ref).abs().max() / ref.std(dim=1).mean()).item()


def test_every_evaluation_defaults_to_fp32_on_every_device():
    for device in ("cpu", "cuda"):
        assert resolve_amp(EVAL_AMP, torch.device(device)) is None
    assert PretrainConfig().monitor.amp == EVAL_AMP  # the training run's k-NN monitor
    assert LinclsConfig().run.amp == EVAL_AMP  # linear evaluation and the probe's features
    assert PretrainConfig().run.amp == "auto"  # training itself may autocast


def test_default_evaluation_matches_float64_and_bf16_does_not(offset_network, near_colours):
    (ref_bx, _), (ref_qx, _), ref_top1 = float64_reference(offset_network, near_colours)
    spread = (ref_bx - ref_bx.mean(0)).norm(dim=1).mean().item()  # what tells the images apart
    found = {}
    for name, amp in (("default", EVAL_AMP), ("bf16", "bf16")):  # what each evaluation path calls
        bank_loader, query_loader = loaders(near_colours)
        dtype = resolve_amp(amp, torch.device("cpu"))
        bx, by = extract_features(offset_network, bank_loader, amp_dtype=dtype)
        qx, qy = extract_features(offset_network, query_loader, amp_dtype=dtype)
        found[name] = dict(
            error=(bx.double() - ref_bx).norm(dim=1).max().item() / spread,
            similarity_error=similarity_error(bx, qx, ref_bx, ref_qx),
            top1=knn_accuracy(bx, by, qx, qy, k=K)["top1"],
        )
    # fp32: the features agree with float64 to rounding, and so do neighbours and accuracy.
    assert found["default"]["error"] < 1e-3, found
    # (fp32's own rounding of similarities near 1 is a few percent of their spread here.)
    assert found["default"]["similarity_error"] < 0.1 and found["default"]["top1"] == ref_top1, found
    # bf16: errors of the size of the differences between images, and larger in the similarities.
    assert found["bf16"]["error"] > 0.3 and found["bf16"]["similarity_error"] > 0.5, found


def test_knn_command_evaluates_in_fp32_unless_asked(offset_network, near_colours, tmp_path, capsys):
    weights = tmp_path / "offset.safetensors"
    save_file({k: v.contiguous() for k, v in offset_network.state_dict().items()}, weights)
    _, _, ref_top1 = float64_reference(offset_network, near_colours)
    common = [
        "knn",
        str(weights),
        "--dataset",
        "imagefolder",
        "--data",
        str(near_colours),
        "--image-size",
        str(IMAGE_SIZE),
        "--k",
        str(K),
        "--workers",
        "0",
        "--no-progress",
    ]
    recorded = {}
    for name, extra in (("default", []), ("bf16", ["--amp", "bf16"])):
        out = tmp_path / f"results_{name}.json"
        assert main([*common, "--output", str(out), *extra]) == 0, capsys.readouterr().err
        top1 = next(r for r in json.loads(out.read_text())["results"] if r["metric"] == "top1")
        recorded[name] = (top1["value"], top1["recipe"]["precision"])
    assert recorded["default"] == (ref_top1, "fp32"), recorded
    assert recorded["bf16"][1] == "bf16"
