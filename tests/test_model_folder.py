"""Model folders on a local disk: written whole, checked before they are published, never
written over a folder that is not one, described right (card, config, transform). The Hub side is tests/test_hub.py; the package's
layering and wheel, tests/test_package.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from huggingface_hub import ModelCard, metadata_load

from simsiam_hub.cli import main
from simsiam_hub.hub.export import export
from simsiam_hub.hub.folder import read_config
from simsiam_hub.hub.loading import from_pretrained
from simsiam_hub.hub.repo import push_to_hub
from simsiam_hub.hub.results import EvalResult
from simsiam_hub.hub.weights import save_safetensors

ROOT = Path(__file__).resolve().parents[1]


def resnet18_file(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path = folder / f"resnet18_seed{seed}.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return resnet18_file(folder, 0), resnet18_file(folder, 1)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# --- writing folders ------------------------------------------------------------------------------


def test_export_and_push_refuse_a_folder_that_is_not_a_model_folder(weights, tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    before = {
        "README.md": b"# my project\n",
        "config.json": b'{"mine": true}\n',
        "results.json": b"[]\n",
        "main.py": b"print(1)\n",
    }
    for name, data in before.items():
        (project / name).write_bytes(data)

    code, err = cli(capsys, "export", weights[0], "--out", project)
    assert code == 1 and err.count("\n") == 1
    assert (
        f"--out {project} is not empty and is not a simsiam-hub model folder (found README.md, config.json, main.py, results.json)"
        in err
    )
    code, err = cli(capsys, "push", weights[0], "--repo-id", project)
    assert code == 1 and "--repo-id" in err and "not a simsiam-hub model folder" in err
    assert files(project) == before  # nothing replaced, nothing deleted

    monkeypatch.chdir(project)
    code, err = cli(capsys, "push", weights[0], "--repo-id", ".")
    assert code == 1 and "is the current folder" in err and files(project) == before

    # A model folder of this project may be replaced; --force replaces anything.
    assert cli(capsys, "export", weights[0], "--out", tmp_path / "model")[0] == 0
    assert cli(capsys, "export", weights[1], "--out", tmp_path / "model")[0] == 0
    assert cli(capsys, "export", weights[0], "--out", project, "--force")[0] == 0
    assert sorted(files(project)) == ["README.md", "config.json", "model.safetensors"]


def test_a_destination_that_is_a_file_is_one_clear_error(weights, tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    export(weights[0], tmp_path / "model")
    for argv in (
        ["export", weights[0], "--out", afile],
        ["push", tmp_path / "model", "--repo-id", afile],
        ["pull", tmp_path / "model", "--out", afile],
    ):
        code, err = cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1 and f"{afile} is a file: expected a folder" in err, (argv, err)
    assert afile.read_text() == "x"


KILL_AFTER_FIRST_WRITE = """
import os, signal, sys
import simsiam_hub.hub.export as export_module
from simsiam_hub.cli import main
real = export_module.save_safetensors

def dying(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed just after the new weights file is written

export_module.save_safetensors = dying
sys.exit(main(sys.argv[1:]))
"""


def test_an_export_killed_mid_folder_leaves_the_old_folder_or_none(weights, tmp_path):
    model = tmp_path / "model"
    export(weights[0], model)
    old = files(model)
    for target in (model, tmp_path / "fresh"):
        proc = subprocess.run(
            [sys.executable, "-c", KILL_AFTER_FIRST_WRITE, "export", str(weights[1]), "--out", str(target)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert files(model) == old  # the old weights beside the old config and card, all of them
    seed0 = torchvision.models.resnet18()
    seed0.load_state_dict(torch.load(weights[0], weights_only=True))
    assert torch.equal(from_pretrained(model).state_dict()["conv1.weight"], seed0.state_dict()["conv1.weight"])
    assert not (tmp_path / "fresh").exists()  # nothing under the final name
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.name not in ("model",)), list(tmp_path.iterdir())


def test_push_checks_the_folder_before_it_publishes(weights, tmp_path, capsys):
    good = export(weights[0], tmp_path / "good")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name, data in files(good).items():
        (truncated / name).write_bytes(data[: len(data) // 2] if name == "model.safetensors" else data)
    code, err = cli(capsys, "push", truncated, "--repo-id", tmp_path / "hub" / "t")
    assert code == 1 and "model.safetensors is not a readable safetensors file" in err and "truncated" in err
    assert not (tmp_path / "hub").exists()

    mislabelled = tmp_path / "mislabelled"
    mislabelled.mkdir()
    for name, data in files(good).items():
        (mislabelled / name).write_bytes(data)
    config = json.loads((good / "config.json").read_text())
    config["architecture"] = config["simsiam"]["arch"] = "resnet50"
    (mislabelled / "config.json").write_text(json.dumps(config))
    code, err = cli(capsys, "push", mislabelled, "--repo-id", tmp_path / "hub" / "m")
    assert code == 1 and "holds a resnet18 backbone, but config.json says resnet50" in err
    assert not (tmp_path / "hub").exists()
    assert push_to_hub(good, str(tmp_path / "hub" / "g")) == str(tmp_path / "hub" / "g")


# --- describing folders ---------------------------------------------------------------------------


def test_the_card_and_transform_describe_the_eval_view_and_results(weights, tmp_path):
    knn = EvalResult("knn", "top1", 61.5, "fashion_mnist", "test", source="https://example.org/run")
    linear = EvalResult("linear", "top1", 83.0, "fashion_mnist", "test", source="runs/lincls")
    folder = export(weights[0], tmp_path / "fmnist", dataset="fashion_mnist", results=[knn, linear])
    section, pretrained_cfg = read_config(folder)
    assert pretrained_cfg["crop_pct"] == 1.0 and section.dataset == "fashion_mnist"
    card = (folder / "README.md").read_text()
    assert "224 px RGB; eval: resize to 224 (bilinear, the whole image)" in card and "then centre-crop" not in card

    model = from_pretrained(folder)
    resize = model.transform.transforms[0]
    assert resize.size == 224  # the whole image, as config.json says, not 256 then a crop

    # model-index: one entry per evaluation; sources kept where they are links; round trips.
    meta = metadata_load(folder / "README.md")
    entries = meta["model-index"][0]["results"]
    assert [(e["task"]["type"], e["task"]["name"]) for e in entries] == [
        ("image-feature-extraction", "k-NN classification of frozen features"),
        ("image-classification", "Linear classification on the frozen backbone"),
    ]
    assert entries[0]["source"] == {"name": "https://example.org/run", "url": "https://example.org/run"}
    parsed = ModelCard.load(folder / "README.md").data.eval_results
    assert [(r.metric_type, r.metric_value) for r in parsed] == [("accuracy", 61.5), ("accuracy", 83.0)]

    bare = export(weights[0], tmp_path / "bare")
    meta = metadata_load(bare / "README.md")
    assert "model-index" not in meta and "model_name" not in meta  # no stray name without results


def test_the_transform_comes_from_the_folders_own_pretrained_cfg(weights, tmp_path):
    """A timm-made folder (no simsiam section, bicubic, crop 0.95) loads with its own view."""
    folder = tmp_path / "timm-made"
    folder.mkdir()
    state = {k: v for k, v in torch.load(weights[0], weights_only=True).items()}
    save_safetensors(state, folder / "model.safetensors", {"format": "pt"})  # with its classifier fc.*
    config = {
        "architecture": "resnet18",
        "num_classes": 1000,
        "pretrained_cfg": {
            "input_size": [3, 160, 160],
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    model = from_pretrained(folder)
    resize, crop, _, normalize = model.transform.transforms
    assert resize.size == round(160 / 0.95) and resize.interpolation == torchvision.transforms.InterpolationMode.BICUBIC
    assert crop.size == (160, 160) and normalize.mean == (0.5, 0.5, 0.5) and normalize.std == (0.25, 0.25, 0.25)
    # the classifier a timm folder carries is not part of the backbone: loading and converting agree
    from simsiam_hub.hub.loading import load_backbone_state_dict

    assert "fc.weight" not in load_backbone_state_dict(folder, arch=None)


def test_convert_detectron2_reads_a_folder_whose_weights_carry_a_classifier(tmp_path, capsys):
    folder = tmp_path / "r50"
    folder.mkdir()
    state = torchvision.models.resnet50().state_dict()
    save_safetensors(state, folder / "model.safetensors", {"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    from_pretrained(folder)  # loads
    code, err = cli(capsys, "convert-detectron2", folder, "--out", tmp_path / "r50.pkl")
    assert code == 0, err  # and converts, the classifier left out
    import pickle

    with open(tmp_path / "r50.pkl", "rb") as f:
        model = pickle.load(f)["model"]  # our own output, written just above
    assert not [k for k in model if k.startswith("fc") or "fc." in k], sorted(model)[-4:]
    assert "stem.conv1.weight" in model and len(model) == len([k for k in state if not k.startswith("fc.")])


def test_hubconf_lists_its_entry_point_alone_and_checks_head():
    import hubconf

    public = sorted(name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_"))
    assert public == ["simsiam_resnet18", "simsiam_resnet34", "simsiam_resnet50"]  # what torch.hub.list shows
    with pytest.raises(ValueError, match="head='projector': expected one of backbone, simsiam"):
        hubconf.simsiam_resnet50(pretrained=False, head="projector")


def test_truncated_or_foreign_weights_are_not_unpickled(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "run": os.system}, evil)  # a pickled global: posix.system
    code, err = cli(capsys, "export", evil, "--out", tmp_path / "out")
    assert (
        code == 1
        and f"was refused and not loaded: it holds a pickled Python object ({os.system.__module__}.system)" in err
    )
    assert "weights_only=False" not in err and not (tmp_path / "out").exists()


def test_config_json_values_are_checked_on_read(weights, tmp_path, capsys):
    """image_size 100000 ran into a MemoryError, "big" into a TypeError in knn and card.py: every
    field is checked where config.json is read, in one line naming the field."""
    good = export(weights[0], tmp_path / "good")
    section, _ = read_config(good)
    assert section.image_size == 224 and section.arch == "resnet18"
    config = json.loads((good / "config.json").read_text())
    # The image size is stored once, where timm reads it, and read from there alone: a folder
    # written before that also has it in the simsiam section, which is ignored.
    assert "image_size" not in config["simsiam"] and config["pretrained_cfg"]["input_size"] == [3, 224, 224]
    older = tmp_path / "older"
    older.mkdir()
    for name, data in files(good).items():
        (older / name).write_bytes(data)
    changed = json.loads(json.dumps(config))
    changed["simsiam"]["image_size"] = 32
    changed["pretrained_cfg"]["input_size"] = [3, 64, 64]
    (older / "config.json").write_text(json.dumps(changed))
    assert read_config(older)[0].image_size == 64
    cases = [
        (
            ("pretrained_cfg", "input_size"),
            [3, 100000, 100000],
            "pretrained_cfg.input_size: expected [3, height, width]",
        ),
        (
            ("pretrained_cfg", "input_size"),
            [3, "big", "big"],
            "pretrained_cfg.input_size: expected [3, height, width] with sizes from 8 to 4096, found [3, 'big', 'big']",
        ),
        (
            ("pretrained_cfg", "input_size"),
            [3, True, True],
            "pretrained_cfg.input_size: expected [3, height, width] with sizes from 8 to 4096, found [3, True, True]",
        ),
        (("simsiam", "small_stem"), "no", "simsiam.small_stem: expected true or false, found 'no'"),
        (("simsiam", "epochs"), -1, "simsiam.epochs: expected an integer or a number from 0 to 1e+06 or null"),
        (("simsiam", "batch_size"), 0, "simsiam.batch_size: expected an integer from 1 to 1e+09 or null, found 0"),
        (("simsiam", "dataset"), 7, "simsiam.dataset: expected a string, found 7"),
        (("simsiam", "recipe"), [1], "simsiam.recipe: expected an object or a string or null, found [1]"),
        (("pretrained_cfg", "crop_pct"), "x", "pretrained_cfg.crop_pct: expected a number in (0, 2], found 'x'"),
        (("pretrained_cfg", "std"), [0, 1, 1], "pretrained_cfg.std: expected 3 positive numbers, found [0, 1, 1]"),
        (("pretrained_cfg", "input_size"), [3, 9999, 9999], "pretrained_cfg.input_size: expected [3, height, width]"),
    ]
    for (section_name, key), value, expected in cases:
        bad = tmp_path / f"bad_{key}_{len(list(tmp_path.iterdir()))}"
        bad.mkdir()
        for name, data in files(good).items():
            (bad / name).write_bytes(data)
        broken = json.loads(json.dumps(config))
        broken[section_name][key] = value
        (bad / "config.json").write_text(json.dumps(broken))
        code, err = cli(capsys, "push", bad, "--repo-id", tmp_path / "hub" / "x")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{bad / 'config.json'}: {expected}" in err, err
    # a timm folder's input size is checked too
    timm_only = tmp_path / "timm"
    timm_only.mkdir()
    (timm_only / "config.json").write_text(
        json.dumps({"architecture": "resnet18", "pretrained_cfg": {"input_size": [3, 224, "big"]}})
    )
    with pytest.raises(Exception, match=r"pretrained_cfg.input_size: expected \[3, height, width\]"):
        read_config(timm_only)
    assert not (tmp_path / "hub").exists()


def test_a_detectron2_pickle_or_any_pickle_is_named_and_not_unpickled(tmp_path, capsys, recwarn):
    """convert-detectron2's own output given back to it (or to knn) said "not a readable
    checkpoint" after a torch warning asking to file an issue: now each says what the file is."""
    import pickle

    from simsiam_hub.detection.convert import convert_to_detectron2, write_detectron2

    backbone = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    d2 = write_detectron2(convert_to_detectron2(backbone), tmp_path / "d2.pkl")
    ran = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(ran),))

    evil.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=4))
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"conv1.weight": [0.0]}, protocol=2))
    for command in (["convert-detectron2", "--out", tmp_path / "x.pkl"], ["knn", "--no-progress"]):
        code, err = cli(capsys, command[0], d2, *command[1:])
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{d2} is a Detectron2 pickle: it needs no conversion" in err, err
        for other in (evil, plain):
            code, err = cli(capsys, command[0], other, *command[1:])
            assert code == 1 and len(err.strip().splitlines()) == 1, err
            assert f"{other} is a Python pickle, refused for safety" in err, err
    assert not ran.exists() and not (tmp_path / "x.pkl").exists()
    assert not [w for w in recwarn if "file an issue" in str(w.message)]


def test_unwritable_destinations_are_one_line_and_leave_no_empty_folders(weights, tmp_path, capsys, monkeypatch):
    """push --repo-id DIR/sub with DIR a file was a FileExistsError traceback; a 300-character
    name an OSError traceback, and export left the empty parent folder it had made."""
    monkeypatch.chdir(tmp_path)
    good = export(weights[0], tmp_path / "good")
    (tmp_path / "afile").write_text("not a folder")
    long = "x" * 300
    for argv, expected in [
        (["push", good, "--repo-id", "./afile/sub"], "afile/sub: afile is a file, not a folder to write into"),
        (["export", weights[0], "--out", "afile/m"], "afile/m: afile is a file, not a folder to write into"),
        (["push", good, "--repo-id", f"./hub/{long}"], f"the name {long[:24]}... in hub is 300 bytes long"),
        (["export", weights[0], "--out", f"new/deeper/{long}"], f"the name {long[:24]}... in new/deeper is 300"),
        (["push", good, "--repo-id", long], "is neither an existing local folder nor a valid Hub repo id"),
    ]:
        code, err = cli(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "good"]  # no empty hub/ or new/deeper/

    # a write that fails inside a new folder tree takes the folders it made with it
    from simsiam_hub.fileio import atomic_folder, atomic_write_text

    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "a" / "b" / "model") as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError("killed")
    monkeypatch.setattr("simsiam_hub.fileio.os.replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        atomic_write_text("text", tmp_path / "c" / "d" / "file.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "good"]
