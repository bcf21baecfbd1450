"""Bad input gets one clear line that says what was expected and what was found: config files,
dataset files, evaluation options. (Checkpoints: test_weights.py, test_engine.py; model
folders: test_model_folder.py.)"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from simsiam_hub.cli import main
from simsiam_hub.config import ConfigError, LinclsConfig, PretrainConfig, load_config
from simsiam_hub.data.datasets import FASHION_MNIST_DIRS, DatasetError, FashionMNIST, seeded_subset

FMNIST = Path(FASHION_MNIST_DIRS[0])


@pytest.mark.parametrize(
    "text,message",
    [
        ("optim:\n  epochs: [1, 2\n", r"bad.yaml is not valid YAML at line 3, column 1"),
        (
            "- optim\n- data\n",
            r"bad.yaml: expected a mapping of config sections \(model:, data:, ...\) at the top level, found a list",
        ),
        (
            "_base_: missing_base.yaml\noptim:\n  epochs: 3\n",
            r"bad.yaml: its _base_ 'missing_base.yaml' was not found \(looked for .*missing_base.yaml\)",
        ),
        ("optim:\n  epochs: 0\n", r"config value optim.epochs=0 is invalid: expected a positive integer"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, path)
    assert main(["pretrain", "--config", str(path)]) == 2  # a usage error
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simsiam-hub pretrain: error:")


def test_linear_evaluation_refuses_pretraining_only_keys():
    """Linear evaluation has no two-crop augmentation: a key it would ignore is refused."""
    for key in ("data.fast_augment=true", "data.blur_prob=0.2"):
        with pytest.raises(ConfigError, match=f"unknown config key '{key.split('=')[0]}'"):
            load_config(LinclsConfig, None, [key])


@pytest.mark.skipif(
    not (FMNIST / "t10k-labels-idx1-ubyte.gz").is_file(), reason="Fashion-MNIST is installed by `make data`"
)
def test_fashion_mnist_files_missing_or_truncated_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match=r"Fashion-MNIST t10k idx files not found in .*empty.*data.download=true"):
        FashionMNIST(tmp_path / "empty", train=False)  # no network use without data.download
    cut = tmp_path / "cut"
    cut.mkdir()
    data = (FMNIST / "t10k-images-idx3-ubyte.gz").read_bytes()
    (cut / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    (cut / "t10k-labels-idx1-ubyte.gz").write_bytes((FMNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz is truncated or corrupt \(EOFError"):
        FashionMNIST(cut, train=False)
    (cut / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(data)[:-100]))  # a short file
    with pytest.raises(DatasetError, match=r"is truncated: header says \(10000, 28, 28\), found 7839900 values"):
        FashionMNIST(cut, train=False)


def test_k_larger_than_the_bank_is_refused_and_large_subsets_are_said(tmp_path, capsys, caplog):
    from PIL import Image

    for split in ("train", "val"):
        for k in range(2):
            folder = tmp_path / "data" / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (16, 16), (200 * k, 30 * i, 90)).save(folder / f"{i}.png")
    (tmp_path / "model").mkdir()
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    common = [
        "knn",
        str(tmp_path / "r18.pth"),
        "--data",
        str(tmp_path / "data"),
        "--image-size",
        "16",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*common, "--k", "20", "--output", str(tmp_path / "knn.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "k-NN with k=20 needs a bank of at least k images, the bank has 12" in err
    with caplog.at_level(logging.WARNING):
        assert main([*common, "--k", "5", "--train-subset", "100", "--output", str(tmp_path / "knn.json")]) == 0
    assert any(
        "k-NN bank of 100 asked for, but the set has 12 items: using all of them" in r.getMessage()
        for r in caplog.records
    )
    assert "(12 bank, 12 queries, k=5" in capsys.readouterr().out  # what was used is printed and recorded


def test_seeded_subset_larger_than_the_set_is_the_set():
    items = list(range(10, 15))
    whole = seeded_subset(items, 10)
    assert [whole[i] for i in range(len(whole))] == items  # the same items in the same order, not just 5 of them
    part = seeded_subset(items, 3, seed=1)
    drawn = [part[i] for i in range(len(part))]
    assert (
        len(set(drawn)) == 3
        and set(drawn) <= set(items)
        and drawn == [seeded_subset(items, 3, seed=1)[i] for i in range(3)]
    )
