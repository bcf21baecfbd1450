"""Pretraining sources (simsiam_hub/data/sources.py): an unlabelled folder, a file list, tar shards
written by make-shards and a saved Hugging Face dataset, on 12 generated images of five modes.

The same images through every source give bit-identical seeded views; each source pretrains
from the CLI; bad input is one line (exit 2) before any step; unreadable images are skipped by name.
"""

import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_engine import ddp_gap, sigkill_then_resume

from simsiam_hub import cli
from simsiam_hub.checkpoint import list_checkpoints, load_checkpoint
from simsiam_hub.config import PretrainConfig, load_config
from simsiam_hub.data.sources import expand_braces, scan_folder
from simsiam_hub.engine import pretrain_views

MODES = ("L", "RGBA", "P", "CMYK", "I;16", "RGB")
SUFFIX = {"L": ".png", "RGBA": ".PNG", "P": ".png", "CMYK": ".JPG", "I;16": ".tif", "RGB": ".jpeg"}


def make_images(root: Path, n: int = 12) -> list[str]:
    """``n`` small images of several modes at three depths; their sorted relative paths."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        mode = MODES[i % len(MODES)]
        arr = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 200) if mode == "I;16" else Image.fromarray(arr)
        if mode != "I;16":
            img = img.convert(mode)
        sub = "" if i < 6 else "sub/" if i < 10 else "sub/deeper/"
        name = f"{sub}img{i:02d}{SUFFIX[mode]}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / name)
        names.append(name)
    (root / "notes.txt").write_text("not an image")
    return sorted(names)


def tiny(out, *extra):
    return [
        "data.image_size=16",
        "data.num_workers=0",
        "model.arch=resnet18",
        "model.small_stem=true",
        "model.dim=32",
        "model.pred_dim=8",
        "optim.batch_size=4",
        "optim.epochs=1",
        "run.max_steps=2",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.tensorboard=false",
        "run.deterministic=true",
        "run.amp=off",
        *extra,
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, make_images(root)


@pytest.fixture(scope="module")
def four_ways(images, tmp_path_factory):
    """The same images as a folder, a file list, shards (make-shards) and a saved HF dataset."""
    root, names = images
    where = tmp_path_factory.mktemp("four")
    listing = where / "list.txt"
    listing.write_text("# the images, relative to this file\n" + "".join(f"{root / n}\n" for n in names))
    assert cli.main(["make-shards", str(root), str(where / "shards"), "--max-count", "5"]) == 0
    sources = {
        "folder": ["data.dataset=folder", f"data.root={root}"],
        "filelist": ["data.dataset=filelist", f"data.root={listing}"],
        "webdataset": ["data.dataset=webdataset", f"data.root={where}/shards/shard-{{000000..000002}}.tar"],
    }
    try:
        import datasets
    except ImportError:
        return sources
    table = datasets.Dataset.from_dict(
        {"image": [str(root / n) for n in names], "caption": names},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}),
    )
    table.save_to_disk(str(where / "hf"))
    sources["hf"] = ["data.dataset=hf", f"data.root={where / 'hf'}"]
    return sources


def views_of(tmp_path, source_args):
    cfg = load_config(PretrainConfig, None, tiny(tmp_path / "views", *source_args))
    views = pretrain_views(cfg)
    views.epoch = 1
    return [views[i] for i in range(len(views))]


def test_four_sources_give_bit_identical_views(four_ways, tmp_path):
    assert set(four_ways) == {"folder", "filelist", "webdataset", "hf"}, "the `datasets` package is not installed"
    reference = views_of(tmp_path, four_ways["folder"])
    assert len(reference) == 12
    for name, args in four_ways.items():
        got = views_of(tmp_path, args)
        assert len(got) == len(reference), name
        for i, ((a1, a2), label, bad), ((b1, b2), _, _) in zip(range(12), reference, got):
            assert label == -1 and (bad < 0).all(), (name, i)
            assert torch.equal(a1, b1) and torch.equal(a2, b2), (name, i)
    # different items do get different views (the comparison above can fail)
    assert not torch.equal(reference[0][0][0], reference[1][0][0])


def test_make_shards_writes_samples_in_order_within_the_count(four_ways, images, tmp_path):
    root, names = images
    shards = sorted(Path(four_ways["webdataset"][1].split("=", 1)[1]).parent.glob("*.tar"))
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        members = tar.getnames()
        assert members[:2] == ["000000000.png", "000000000.txt"]
        assert tar.extractfile("000000000.txt").read().decode() == names[0]
        assert tar.extractfile("000000000.png").read() == (root / names[0]).read_bytes()
    counts = [len([m for m in tarfile.open(s).getnames() if not m.endswith(".txt")]) for s in shards]
    assert counts == [5, 5, 2]
    code = cli.main(["make-shards", str(root), str(tmp_path / "big"), "--max-size", "1K"])  # one image a shard
    assert code == 0 and len(list((tmp_path / "big").glob("*.tar"))) == 12


@pytest.mark.parametrize("source", ["folder", "filelist", "webdataset", "hf"])
def test_pretrain_from_the_cli_on_each_source(four_ways, tmp_path, caplog, source):
    if source not in four_ways:
        pytest.skip("the `datasets` package is not installed")
    caplog.set_level(logging.INFO)
    assert cli.main(["pretrain", *tiny(tmp_path, *four_ways[source], "run.max_steps=1")]) == 0
    ckpt = load_checkpoint(list_checkpoints(tmp_path)[0])
    assert ckpt["step"] == 1
    assert ckpt["data_source"]["images"] == 12
    assert str(tmp_path.parent) not in str(ckpt["data_source"])  # no local path
    assert caplog.text.count("k-NN monitor off") == 1


def test_folder_listing_is_cached_and_rebuilt_when_the_folder_changes(tmp_path, caplog):
    root = tmp_path / "imgs"
    names = make_images(root, 8)  # two in sub/
    caplog.set_level(logging.INFO)
    assert scan_folder(root, tmp_path / "run") == names
    assert "scanned" in caplog.text
    caplog.clear()
    assert scan_folder(root, tmp_path / "run") == names
    assert "listing from" in caplog.text
    Image.new("RGB", (8, 8)).save(root / "sub" / "new.webp")  # sub's mtime changes
    caplog.clear()
    assert scan_folder(root, tmp_path / "run") == sorted([*names, "sub/new.webp"])
    assert "scanned" in caplog.text
    caplog.clear()
    scan_folder(root, tmp_path / "run", rescan=True)
    assert "scanned" in caplog.text


def test_expand_braces():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/x-{8..10}") == ["a/x-8", "a/x-9", "a/x-10", "b/x-8", "b/x-9", "b/x-10"]


def test_unreadable_images_are_skipped_by_name(images, tmp_path, caplog, monkeypatch):
    root, names = images
    folder = tmp_path / "imgs"
    make_images(folder)
    (folder / "truncated.jpg").write_bytes((folder / names[5]).read_bytes()[:40])
    Image.new("L", (64, 64)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2x: a DecompressionBombError
    caplog.set_level(logging.WARNING)
    args = ("data.dataset=folder", f"data.root={folder}", "optim.epochs=1", "run.max_steps=3")
    assert cli.main(["pretrain", *tiny(tmp_path / "run", *args)]) == 0
    assert "skipping unreadable image" in caplog.text
    bad = set(load_checkpoint(list_checkpoints(tmp_path / "run")[0])["bad_images"])
    assert bad and bad <= {0, 13}  # bomb.png and truncated.jpg, the ones these 3 steps drew
    # each of them, asked for directly, is replaced and reported by name and index
    views = pretrain_views(load_config(PretrainConfig, None, tiny(tmp_path / "run", *args)))
    for index, name, error in ((0, "bomb.png", "DecompressionBombError"), (13, "truncated.jpg", "OSError")):
        caplog.clear()
        _, _, bad_items = views[index]
        assert int(bad_items[0]) == index and f"{folder / name} ({error}" in caplog.text, (name, caplog.text)

    # an empty member in a hand-made tar (images of 24x20 pass the lowered pixel limit)
    shard = tmp_path / "hand.tar"
    with tarfile.open(shard, "w") as tar:
        for i, name in enumerate(names[:8]):
            tar.add(root / name, arcname=f"sample{i}.{Path(name).suffix.lstrip('.').lower()}")
        empty = tarfile.TarInfo("sample8.jpg")
        tar.addfile(empty)
    caplog.clear()
    args = ("data.dataset=webdataset", f"data.root={shard}", "run.max_steps=2")
    assert cli.main(["pretrain", *tiny(tmp_path / "run2", *args)]) == 0
    assert f"{shard}:sample8.jpg" in caplog.text


def bad_input_cases(tmp_path, images):
    root, names = images
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "readme.txt").write_text("x")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"missing{i}.jpg\n" for i in range(7)) + f"{root / names[0]}\n")
    not_tar = tmp_path / "s-000.tar"
    not_tar.write_bytes(b"this is not a tar" * 100)
    return {
        "folder-empty": (["data.dataset=folder", f"data.root={empty}"], "looked for .jpg .jpeg"),
        "list-missing": (["data.dataset=filelist", f"data.root={listing}"], "7 of 8 listed files are missing"),
        "no-shard": (["data.dataset=webdataset", f"data.root={tmp_path}/x-{{0..3}}.tar"], "matches no shard"),
        "not-a-tar": (["data.dataset=webdataset", f"data.root={not_tar}"], "not an uncompressed tar"),
        "labels": (
            [
                "data.dataset=folder",
                f"data.root={root}",
                "monitor.knn_every_epochs=1",
                "monitor.knn_data.dataset=folder",
            ],
            "has no labels",
        ),
    }


@pytest.mark.parametrize("case", ["folder-empty", "list-missing", "no-shard", "not-a-tar", "labels"])
def test_bad_input_is_one_line_before_any_step(images, tmp_path, capsys, case):
    args, expected = bad_input_cases(tmp_path, images)[case]
    assert cli.main(["pretrain", *tiny(tmp_path / "run", *args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not list_checkpoints(tmp_path / "run") if (tmp_path / "run").exists() else True
    if case == "list-missing":
        assert err[0].count("missing") == 6  # "are missing" and the first five named, not the 6th and 7th


def test_export_names_the_data_without_its_path(four_ways, tmp_path, caplog):
    from simsiam_hub.hub.card import hub_dataset_id
    from simsiam_hub.hub.export import source_text

    assert cli.main(["pretrain", *tiny(tmp_path / "run", *four_ways["folder"], "run.max_steps=1")]) == 0
    out = tmp_path / "model"
    assert cli.main(["export", str(list_checkpoints(tmp_path / "run")[0]), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    root = four_ways["folder"][1].split("=", 1)[1]
    assert root not in card and root not in (out / "config.json").read_text()
    assert "| pretraining data | folder: 12 images, fingerprint " in card
    assert "license: other" in card and "license_name: unknown" in card  # the Hub's form for a licence it has no id for
    with caplog.at_level(logging.WARNING):
        assert cli.main(["push", str(out), "--repo-id", str(tmp_path / "hub" / "model")]) == 0
    assert "the weights' licence is unknown" in caplog.text  # push says so
    hub = {"kind": "hf", "images": 5, "hub_id": "ILSVRC/imagenet-1k", "revision": "abc", "split": "train"}
    assert source_text(hub) == "ILSVRC/imagenet-1k@abc" and hub_dataset_id(source_text(hub)) == "ILSVRC/imagenet-1k"


@pytest.fixture(scope="module")
def labelled_hf(images, tmp_path_factory):
    """A saved DatasetDict (train, validation) with a ClassLabel column, as ImageNet-1k on the Hub."""
    datasets = pytest.importorskip("datasets")
    root, names = images
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    split = lambda part: datasets.Dataset.from_dict(  # noqa: E731
        {"image": [str(root / n) for n in part], "label": [i % 3 for i in range(len(part))]}, features=features
    )
    where = tmp_path_factory.mktemp("hf_labelled") / "ds"
    datasets.DatasetDict(train=split(names[:8]), validation=split(names[8:])).save_to_disk(str(where))
    return where


def test_knn_monitor_runs_on_knn_data_for_unlabelled_training_data(four_ways, labelled_hf, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    knn = ["monitor.knn_every_epochs=1", "monitor.knn_k=3", "monitor.knn_data.dataset=hf"]
    args = tiny(tmp_path, *four_ways["folder"], *knn, f"monitor.knn_data.root={labelled_hf}", "run.max_steps=3")
    assert cli.main(["pretrain", *args]) == 0
    assert "k-NN monitor off" not in caplog.text
    rows = (tmp_path / "epoch_log.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert 0 <= float(row[header.index("knn_top1")]) <= 100


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.split=test", "has no split 'test': its splits are train, validation"),
        ("data.image_column=photo", "has no column 'photo': its columns are image, label"),
    ],
)
def test_hf_errors_name_what_exists(labelled_hf, tmp_path, capsys, override, expected):
    args = tiny(tmp_path / "run", "data.dataset=hf", f"data.root={labelled_hf}", override)
    assert cli.main(["pretrain", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


@pytest.mark.slow  # 8 steps and 4 model builds: 74 s on 2 busy cores
def test_folder_run_resumes_to_the_same_weights_and_refuses_a_changed_folder(tmp_path, capsys):
    folder = tmp_path / "imgs"
    make_images(folder)
    args = ("data.dataset=folder", f"data.root={folder}", "optim.epochs=2", "run.checkpoint_every_steps=2")
    # 3 steps an epoch: 4 steps cross an epoch end (the sampler's reshuffle, the views' new seeds)
    assert cli.main(["pretrain", *tiny(tmp_path / "straight", *args, "run.max_steps=4")]) == 0
    assert cli.main(["pretrain", *tiny(tmp_path / "cut", *args, "run.max_steps=2")]) == 0
    assert cli.main(["pretrain", *tiny(tmp_path / "cut", *args, "run.max_steps=4"), "--resume", "auto"]) == 0
    straight, resumed = (load_checkpoint(list_checkpoints(tmp_path / d)[0]) for d in ("straight", "cut"))
    assert resumed["step"] == straight["step"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    # one more image renumbers the rest: resuming would train on other images under the same indices
    Image.new("RGB", (8, 8)).save(folder / "a_new_one.png")
    capsys.readouterr()
    assert cli.main(["pretrain", *tiny(tmp_path / "cut", *args, "run.max_steps=5")]) == 1
    err = capsys.readouterr().err
    assert "data (images, fingerprint) (12, " in err and "-> (13, " in err, err


def test_without_the_datasets_package_only_hf_asks_for_it(images, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    root, _ = images
    views = views_of(tmp_path, ["data.dataset=folder", f"data.root={root}"])
    assert len(views) == 12
    assert cli.main(["pretrain", *tiny(tmp_path / "run", "data.dataset=hf", f"data.root={root}")]) == 2
    assert "pip install 'simsiam-hub[data]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sixty_four(tmp_path_factory):
    """64 images (the engine tests' set size: 4 steps of 16 an epoch) as a folder and as shards."""
    root = tmp_path_factory.mktemp("sixty_four")
    make_images(root / "images", n=64)
    assert cli.main(["make-shards", str(root / "images"), str(root / "shards"), "--max-count", "20"]) == 0
    return {
        "folder": ("data.dataset=folder", f"data.root={root / 'images'}"),
        "webdataset": ("data.dataset=webdataset", f"data.root={root}/shards/shard-{{000000..000003}}.tar"),
    }


@pytest.mark.slow  # two runs, one under torchrun, per source
@pytest.mark.parametrize("source", ["folder", "webdataset"])
def test_two_processes_match_one_process_on_folder_and_shards(sixty_four, tmp_path, source):
    """test_engine's DDP check (float64, 1 rank x 16 == 2 ranks x 8) on the new sources."""
    gap, moved = ddp_gap(tmp_path, data=sixty_four[source])
    assert moved > 50  # the runs did train
    assert gap < 1e-8, gap


@pytest.mark.slow  # three runs
def test_sigkill_then_resume_gives_the_same_weights_on_shards(sixty_four, tmp_path):
    sigkill_then_resume(tmp_path, data=sixty_four["webdataset"])
