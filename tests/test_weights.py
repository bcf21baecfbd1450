"""Weights formats: official SimSiam, MoCo, torchvision and training checkpoints in,
safetensors out, and clear refusals of what does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import randomize_batchnorm
from torch import nn

from simsiam_hub.cli import main
from simsiam_hub.hub.export import export, import_official
from simsiam_hub.hub.loading import from_pretrained, load_backbone_state_dict
from simsiam_hub.hub.weights import (
    WeightsError,
    load_simsiam_state_dict,
    read_safetensors,
    read_weights,
    save_safetensors,
)
from simsiam_hub.models import PooledFeatures, SimSiam, build_resnet


def images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_official_checkpoint_imports_and_its_features_match(official_checkpoint, tmp_path):
    out = import_official(official_checkpoint.path, tmp_path / "official")
    model = from_pretrained(out)
    assert isinstance(model.fc, nn.Identity) and not model.training
    reference = PooledFeatures(official_checkpoint.model.encoder).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert_same_tensors(model.state_dict(), official_checkpoint.backbone)
    # The whole model (projector and predictor too), to continue pretraining.
    whole = from_pretrained(out, head="simsiam")
    assert isinstance(whole, SimSiam) and (whole.dim, whole.pred_dim) == (2048, 512)
    assert_same_tensors(whole.state_dict(), official_checkpoint.model.state_dict())
    assert_same_tensors(load_simsiam_state_dict(official_checkpoint.path), official_checkpoint.model.state_dict())

    config = json.loads((out / "config.json").read_text())
    assert config["simsiam"]["method"] == "simsiam" and config["simsiam"]["epochs"] == 100
    assert config["pretrained_cfg"]["license"] == "cc-by-nc-4.0"
    _, metadata = read_safetensors(out / "model.safetensors")
    assert metadata["arch"] == "resnet50" and metadata["source"] == "checkpoint_0099.pth.tar"


def test_moco_and_torchvision_layouts_give_the_backbone(official_checkpoint, tmp_path):
    backbone = official_checkpoint.backbone
    moco = {f"module.encoder_q.{k}": v for k, v in backbone.items()}
    moco.update(
        {
            "module.encoder_q.fc.weight": torch.randn(128, 2048),
            "module.encoder_q.fc.bias": torch.zeros(128),
            "module.encoder_k.conv1.weight": torch.randn(64, 3, 7, 7),
            "module.queue": torch.randn(128, 4096),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        }
    )
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": moco}, tmp_path / "moco_v2_200ep.pth.tar")
    loaded = read_weights(tmp_path / "moco_v2_200ep.pth.tar")
    assert (loaded.kind, loaded.method, loaded.arch, loaded.simsiam) == ("moco", "moco", "resnet50", None)
    assert_same_tensors(loaded.backbone, backbone)

    # torchvision's published weights have an ImageNet fc and (old ones) no BN counters.
    plain = {k: v for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    plain.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    torch.save(plain, tmp_path / "resnet50_supervised.pth")
    got = load_backbone_state_dict(tmp_path / "resnet50_supervised.pth")
    assert sorted(got) == sorted(backbone) and "fc.weight" not in got
    assert all(torch.equal(got[k], v) for k, v in plain.items() if not k.startswith("fc."))
    assert all(got[k].item() == 0 for k in got if k.endswith("num_batches_tracked"))


def test_training_checkpoint_gives_backbone_and_whole_model(training_checkpoint):
    state = torch.load(training_checkpoint, map_location="cpu", weights_only=True)["model"]
    expected = {
        k[len("encoder.") :]: v
        for k, v in state.items()
        if k.startswith("encoder.") and not k.startswith("encoder.fc.")
    }
    assert_same_tensors(load_backbone_state_dict(training_checkpoint), expected)
    assert_same_tensors(load_simsiam_state_dict(training_checkpoint), state)


def test_small_stem_model_round_trips_through_a_folder(tmp_path):
    """config.json records arch and stem: from_pretrained rebuilds a small-stem ResNet-18."""
    torch.manual_seed(0)
    model = randomize_batchnorm(SimSiam("resnet18", dim=64, pred_dim=16, small_stem=True)).eval()
    save_safetensors(model.state_dict(), tmp_path / "simsiam.safetensors", {"format": "pt"})
    out = export(tmp_path / "simsiam.safetensors", tmp_path / "r18", dataset="fashion_mnist")
    config = json.loads((out / "config.json").read_text())
    assert config["simsiam"]["arch"] == "resnet18" and config["simsiam"]["small_stem"] is True
    assert config["num_features"] == 512 and config["pretrained_cfg"]["license"] == "mit"
    loaded = from_pretrained(out)
    assert loaded.conv1.kernel_size == (3, 3) and isinstance(loaded.maxpool, nn.Identity)
    x = images(32)
    with torch.no_grad():
        assert torch.equal(loaded(x), PooledFeatures(model.encoder)(x))
    whole = from_pretrained(out, head="simsiam")
    assert (whole.dim, whole.pred_dim, whole.small_stem) == (64, 16, True)
    assert_same_tensors(whole.state_dict(), model.state_dict())
    # A small-stem network is not the standard ResNet-50 that detection transfer expects.
    with pytest.raises(WeightsError, match=r"conv1.weight: expected \[64, 3, 7, 7\], found \[64, 3, 3, 3\]"):
        load_backbone_state_dict(out, arch="resnet18")


@pytest.fixture(scope="module")
def resnet18_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("r18")
    torch.save(build_resnet("resnet18").state_dict(), folder / "resnet18.pth")
    return export(folder / "resnet18.pth", folder / "model")


def test_truncated_files_are_refused(resnet18_folder, tmp_path):
    data = (resnet18_folder / "model.safetensors").read_bytes()
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_bytes((resnet18_folder / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file .*truncated"):
        from_pretrained(broken)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_backbone_state_dict(broken / "model.safetensors", arch=None)

    pickled = (resnet18_folder.parent / "resnet18.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(pickled[: len(pickled) // 3])
    with pytest.raises(
        WeightsError,
        match=r"cut.pth is not a readable checkpoint \(truncated or not a torch file\?\): RuntimeError: PytorchStreamReader failed",
    ):
        read_weights(tmp_path / "cut.pth")


class Payload:
    """Unpickling this would create ``marker``: a stand-in for a pickle's arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_a_non_tensor_payload_is_refused(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "checkpoint_0099.pth.tar"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "extra": Payload(marker)}, evil)
    with pytest.raises(WeightsError) as refused:
        read_weights(evil)
    assert not marker.exists()  # refused without running it
    # It names what it found and says it was not loaded; it never suggests the unsafe way.
    assert "was refused and not loaded: it holds a pickled Python object (getattr)" in str(refused.value)
    assert "weights_only=False" not in str(refused.value) and "Re-running" not in str(refused.value)

    assert (
        main(["import-official", str(evil), "--out", str(tmp_path / "out")]) == 1
    )  # a runtime error, not a usage error
    err = capsys.readouterr().err
    assert err.startswith("simsiam-hub import-official: error:") and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out").exists()

    torch.save({"state_dict": {"conv1.weight": [0.1, 0.2]}}, tmp_path / "lists.pth")
    with pytest.raises(WeightsError, match="expected a state dict of tensors, found list at key 'conv1.weight'"):
        read_weights(tmp_path / "lists.pth")


def test_unknown_layout_and_wrong_architecture_are_refused(tmp_path):
    r18 = build_resnet("resnet18").state_dict()
    torch.save({f"backbone.body.{k}": v for k, v in r18.items()}, tmp_path / "detector.pth")
    with pytest.raises(
        WeightsError, match=r"unknown layout: expected .*module.encoder.*; found prefixes \['backbone.'\]"
    ):
        read_weights(tmp_path / "detector.pth")

    torch.save(r18, tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError) as err:
        load_backbone_state_dict(tmp_path / "resnet18.pth")  # a ResNet-50 is expected
    message = str(err.value)
    assert "does not fit a resnet50 backbone" in message and "missing" in message
    assert "layer1.0.conv1.weight: expected [64, 64, 1, 1], found [64, 64, 3, 3]" in message
    assert sorted(load_backbone_state_dict(tmp_path / "resnet18.pth", arch=None)) == sorted(
        k for k in r18 if not k.startswith("fc.")
    )

    deeper = dict(r18, **{"layer3.2.conv1.weight": torch.zeros(256, 256, 3, 3)})  # a block too many
    torch.save(deeper, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"not a ResNet this library builds: .*found basic blocks \(2, 2, 3, 2\)"):
        read_weights(tmp_path / "odd.pth")
