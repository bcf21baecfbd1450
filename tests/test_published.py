"""What a stranger meets: the published model folder (no local paths, snippets that run, a
model-index the Hub accepts), the torch.hub entry points, and one-line Hub failures."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from fake_hub import hub_env

from simsiam_hub.cli import main
from simsiam_hub.hub.card import card_metadata
from simsiam_hub.hub.folder import SimsiamSection
from simsiam_hub.hub.registry import CODE_URL, GITHUB_REPO
from simsiam_hub.hub.results import EvalResult, write_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(training_checkpoint, tmp_path_factory):
    """`simsiam-hub export` of the training checkpoint with a results file whose source (and
    recipe) are absolute local paths, as `knn` writes them."""
    work = tmp_path_factory.mktemp("publish")
    results = work / "results_knn.json"
    write_results(
        [
            EvalResult(
                "knn",
                "top1",
                31.25,
                "synthetic",
                source=str(training_checkpoint),
                recipe={"k": 20, "data": {"root": str(work / "data")}, "features": str(work / "cache.pt")},
            )
        ],
        results,
    )
    out = work / "simsiam-r50-demo"
    assert main(["export", str(training_checkpoint), "--out", str(out), "--results", str(results)]) == 0
    return out


def _safetensors_metadata(path: Path) -> str:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.dumps(json.loads(f.read(size)).get("__metadata__", {}))


def test_published_files_carry_no_local_path(published, training_checkpoint, tmp_path_factory):
    texts = {name: (published / name).read_text() for name in ("README.md", "config.json", "results.json")}
    for name in ("model.safetensors", "simsiam.safetensors"):
        texts[name] = _safetensors_metadata(published / name)
    machine = {str(tmp_path_factory.getbasetemp()), str(training_checkpoint.parent), str(Path.home()), str(ROOT)}
    for name, text in texts.items():
        for path in machine:
            assert path not in text, f"{name} names the local path {path}"
    # Local sources are shown by file name and fingerprint; run-local keys are dropped.
    fingerprint = re.escape(training_checkpoint.name) + r" \(sha256 [0-9a-f]{12}\)"
    assert re.search(fingerprint, json.loads(texts["results.json"])["results"][0]["source"])
    assert re.search(
        re.escape(training_checkpoint.name) + r" \(simsiam-hub training checkpoint, step 1, sha256 [0-9a-f]{12}\)",
        texts["README.md"],
    )
    recipe = json.loads(texts["config.json"])["simsiam"]["recipe"]
    assert "output_dir" not in recipe["run"] and "init_from" not in recipe["run"] and "root" not in recipe["data"]
    assert recipe["optim"]["base_lr"] == 0.05 and recipe["data"]["dataset"] == "synthetic"  # the recipe stays
    assert "output_dir" not in texts["README.md"] and "cache.pt" in texts["results.json"]


def test_the_cards_snippets_run_as_written(published, monkeypatch):
    card = (published / "README.md").read_text()
    ref = f"<org>/{published.name}"
    assert f'pip install "simsiam-hub @ git+{CODE_URL}"' in card
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 3 and "timm" in blocks[0] and "from_pretrained" in blocks[1] and "torch.hub" in blocks[2]
    hub_calls = []
    real_load = torch.hub.load

    def local_hub_load(repo, *args, **kwargs):  # torch.hub from this checkout instead of GitHub
        hub_calls.append(repo)
        return real_load(str(ROOT), *args, source="local", **kwargs)

    monkeypatch.setattr(torch.hub, "load", local_hub_load)
    x = torch.rand(1, 3, 32, 32)
    outputs = []
    for block in blocks:
        code = block.replace(f"hf-hub:{ref}", f"local-dir:{published}").replace(ref, str(published))
        scope: dict = {}
        exec(compile(code, "card", "exec"), scope)
        with torch.no_grad():
            outputs.append(scope["model"](x))
    assert hub_calls == [GITHUB_REPO]
    assert outputs[0].shape == (1, 2048) and scope["model"].training is False
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


@pytest.mark.parametrize("size", [32, 224, 96])
@pytest.mark.parametrize("crop_pct", [0.875, 1.0])
def test_eval_transform_and_card_agree_with_timm(size, crop_pct):
    import timm.data
    from PIL import Image

    from simsiam_hub.data.augment import transform_from_pretrained_cfg
    from simsiam_hub.hub.card import _input_text
    from simsiam_hub.hub.folder import timm_config

    dataset = "fashion_mnist" if crop_pct == 1.0 else "imagenet-1k"
    cfg = timm_config(SimsiamSection("resnet18", image_size=size, dataset=dataset))["pretrained_cfg"]
    assert cfg["crop_pct"] == crop_pct
    theirs = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg))
    ours = transform_from_pretrained_cfg(cfg)
    resize = next(t for t in theirs.transforms if type(t).__name__ == "Resize")
    pixels = torch.randint(
        0, 256, (size + 37, size * 2 + 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(size)
    )
    image = Image.fromarray(pixels.numpy())
    torch.testing.assert_close(ours(image), theirs(image))
    text = _input_text(SimsiamSection("resnet18", image_size=size, dataset=dataset), cfg)
    if crop_pct < 1:
        assert f"resize the shorter side to {resize.size} " in text and f"centre-crop {size}" in text
    else:
        assert resize.size == size and "the whole image" in text


def test_model_index_tells_protocols_apart_with_hub_ids():
    results = [
        EvalResult("detection", "AP50", 81.0, "voc0712", "test"),
        EvalResult("detection", "AP50", 60.0, "voc07", "test"),
        EvalResult("detection", "AP", 39.0, "coco2017", "val"),
        EvalResult("linear", "top5", 88.0, "imagenet-1k"),
    ]
    section = SimsiamSection("resnet50", dataset="imagenet-1k", license="cc-by-nc-4.0")
    data = card_metadata(section, results, "m")
    assert data.license == "cc-by-nc-4.0"
    got = {(r.dataset_type, r.dataset_config, r.metric_type, r.metric_name) for r in data.eval_results}
    assert got == {
        ("HuggingFaceM4/pascal_voc", "voc2007_main+voc2012_main", "map_50", "box AP50"),
        ("HuggingFaceM4/pascal_voc", "voc2007_main", "map_50", "box AP50"),
        ("detection-datasets/coco", "2017", "map", "box AP"),
        ("ILSVRC/imagenet-1k", None, "accuracy", "top-5 accuracy"),
    }
    voc = {r.dataset_config: r.dataset_name for r in data.eval_results if "pascal" in r.dataset_type}
    assert "VOC2007+2012 trainval" in voc["voc2007_main+voc2012_main"] and "VOC2007 trainval" in voc["voc2007_main"]
    # A licence the Hub has no id for is `other`, with the name and link the Hub requires.
    other = card_metadata(SimsiamSection("resnet18", dataset="imagefolder", license="other"), [], "m").to_dict()
    assert other["license"] == "other" and other["license_name"] and other["license_link"].startswith("https://")


# --- torch.hub ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_folder(tmp_path_factory):
    work = tmp_path_factory.mktemp("r18")
    torch.save(torchvision.models.resnet18().state_dict(), work / "r18.pth")
    assert main(["export", str(work / "r18.pth"), "--out", str(work / "folder")]) == 0
    return work / "folder"


def _hub(entry, **kwargs):
    return torch.hub.load(str(ROOT), entry, source="local", **kwargs)


def test_torch_hub_takes_torchvision_weights_and_refuses_another_arch(published, resnet18_folder, monkeypatch):
    with pytest.raises(ValueError, match=r"holds a resnet18 backbone, not a resnet50; load it with simsiam_resnet18"):
        _hub("simsiam_resnet50", weights=str(resnet18_folder))
    with pytest.raises(ValueError, match="holds a resnet18"):
        _hub("simsiam_resnet50", repo_id=str(resnet18_folder))  # the older spelling is checked too
    r18 = _hub("simsiam_resnet18", weights=str(resnet18_folder))
    assert r18.simsiam_config.arch == "resnet18" and r18(torch.rand(1, 3, 32, 32)).shape == (1, 512)
    assert _hub("simsiam_resnet50", weights=None).fc.__class__.__name__ == "Identity"
    with pytest.raises(TypeError, match="not both"):
        _hub("simsiam_resnet50", weights=None, pretrained=False)
    # "DEFAULT" is the default repo ($SIMSIAM_HUB_REPO here); a registry name goes to the registry.
    monkeypatch.setenv("SIMSIAM_HUB_REPO", str(published))
    model = _hub("simsiam_resnet50", weights="DEFAULT")
    assert model.simsiam_config.arch == "resnet50" and model.pretrained_cfg["input_size"] == [3, 32, 32]
    import simsiam_hub.hub.loading as loading

    asked = []
    real = loading.load_variant
    monkeypatch.setattr(loading, "load_variant", lambda ref, **kw: asked.append(ref) or real(str(published), **kw))
    _hub("simsiam_resnet50", weights="simsiam-resnet50-100ep-bs256")
    assert asked == ["simsiam-resnet50-100ep-bs256"]


# --- the Hub unreachable --------------------------------------------------------------------


def _cli(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "simsiam_hub.cli", *args],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _assert_one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "HTTP Request" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_push_to_a_refusing_or_silent_endpoint_is_one_line(published, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    env = hub_env(f"http://127.0.0.1:{port}", tmp_path / "hf")
    proc = _cli(["push", str(published), "--repo-id", "org/model"], env)
    closed.close()
    _assert_one_line_error(proc, "connection to", "failed", "HF_ENDPOINT", "HF_HUB_OFFLINE")

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does) and never answers
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    env = dict(
        hub_env(f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path / "hf"),
        HF_HUB_ETAG_TIMEOUT="1",
        HF_HUB_DOWNLOAD_TIMEOUT="1",
    )
    try:
        proc = _cli(["push", str(published), "--repo-id", "org/model"], env)
    finally:
        silent.close()
    _assert_one_line_error(proc, "timed out", "HF_ENDPOINT")


def test_push_and_pull_log_no_requests(published, fake_hub, tmp_path):
    env = hub_env(fake_hub.url, tmp_path / "hf")
    proc = _cli(["push", str(published), "--repo-id", "org/quiet"], env)
    assert proc.returncode == 0, proc.stderr
    proc2 = _cli(["pull", "org/quiet", "--out", str(tmp_path / "pulled")], env)
    assert proc2.returncode == 0, proc2.stderr
    for p in (proc, proc2):
        assert "HTTP Request" not in p.stderr + p.stdout and "httpx" not in p.stderr
    assert (tmp_path / "pulled" / "model.safetensors").is_file()


# --- official downloads: licence, digest, pinning -------------------------------------------


def test_official_download_says_its_licence_and_digest_and_honours_a_pin(
    official_checkpoint, tmp_path, monkeypatch, caplog, capsys
):
    import dataclasses
    import hashlib
    import http.server
    import logging

    from simsiam_hub.hub import registry
    from simsiam_hub.hub.export import import_official

    data = official_checkpoint.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = "simsiam-resnet50-100ep-bs256"
    local = dataclasses.replace(
        registry.get_variant(name), source_url=f"http://127.0.0.1:{server.server_address[1]}/ckpt.pth.tar"
    )
    monkeypatch.setattr(registry, "VARIANTS", tuple(local if v.name == name else v for v in registry.VARIANTS))
    monkeypatch.setenv("SIMSIAM_HUB_CACHE", str(tmp_path / "cache"))
    pin = registry.pin_variable(local)
    assert pin == "SIMSIAM_HUB_SHA256_SIMSIAM_RESNET50_100EP_BS256"
    monkeypatch.delenv(pin, raising=False)
    try:
        # A wrong pin refuses the first download (and keeps nothing).
        monkeypatch.setenv(pin, "0" * 64)
        with pytest.raises(registry.DownloadError, match=f"the digest pinned by {pin}"):
            import_official(name, tmp_path / "refused", progress=False)
        assert not registry.download_path(local.source_url).exists()
        # Unpinned: trusted on first use, with the licence and the digest said once.
        monkeypatch.delenv(pin)
        with caplog.at_level(logging.WARNING, logger="simsiam_hub"):
            import_official(name, tmp_path / "tofu", progress=False)
        said = [r.getMessage() for r in caplog.records if "licence" in r.getMessage()]
        assert len(said) == 1 and "cc-by-nc-4.0" in said[0] and digest in said[0] and "trusted on first use" in said[0]
        assert main(["list"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name))
        assert f"trusted on first use: {digest[:16]}" in row
        # A pin that does not match the cached file is refused; the right pin is accepted and listed.
        monkeypatch.setenv(pin, "f" * 64)
        with pytest.raises(registry.DownloadError, match="refusing it"):
            import_official(name, tmp_path / "tofu", progress=False, force=True)
        monkeypatch.setenv(pin, digest.upper())
        import_official(name, tmp_path / "pinned", progress=False)
        assert main(["list"]) == 0
        assert f"pinned ({pin})" in next(r for r in capsys.readouterr().out.splitlines() if r.startswith(name))
    finally:
        server.shutdown()
        server.server_close()


# --- the core install -----------------------------------------------------------------------

# What a core install (no extras) lacks: training, logging, plotting and detection packages.
NOT_IN_CORE = ("tensorboard", "torch.utils.tensorboard", "matplotlib", "timm", "detectron2", "fvcore", "pycocotools")
CORE_ONLY = f"""
import sys
for name in {NOT_IN_CORE!r}:
    sys.modules[name] = None  # import raises ImportError, as in an environment without them
"""


@pytest.mark.slow
def test_the_core_path_needs_no_extra(published, tmp_path):
    script = (
        CORE_ONLY
        + f"""
import torch
import simsiam_hub
from simsiam_hub.cli import main

model = simsiam_hub.from_pretrained({str(published)!r})
hub = torch.hub.load({str(ROOT)!r}, "simsiam_resnet50", source="local", weights={str(published)!r})
x = torch.rand(1, 3, 32, 32)
with torch.no_grad():
    torch.testing.assert_close(model(x), hub(x))
assert main(["convert-detectron2", {str(published)!r}, "--out", {str(tmp_path / "r50.pkl")!r}]) == 0
loaded = [name for name in {NOT_IN_CORE!r} if sys.modules.get(name) is not None]
print("core ok", loaded)
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "core ok []" in proc.stdout and (tmp_path / "r50.pkl").stat().st_size > 1_000_000


# --- smaller surfaces -----------------------------------------------------------------------


def test_detection_entry_point_without_detectron2_is_one_line():
    script = (
        "import sys\nsys.modules['detectron2'] = None\n"
        "from simsiam_hub.detection.install import detection_cli\nsys.exit(detection_cli(['--help']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "detectron2 is not installed" in lines[0] and "make detectron2" in lines[0] and "pip install" in lines[0]


def test_detectron2_description_says_whether_C_loads():
    pytest.importorskip("detectron2")
    from simsiam_hub.detection.install import detectron2_description

    text = detectron2_description()
    assert text.startswith("detectron2 ") and "compiled _C extension" in text
    try:
        import detectron2._C  # noqa: F401

        assert "_C extension loaded" in text
    except ImportError:
        assert "does not load" in text and "deformable convolutions" in text


def test_a_missing_data_root_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    args = ["pretrain", "data.dataset=synthetic", f"data.root={missing}", "model.arch=resnet18"]
    assert main([*args, f"run.output_dir={tmp_path / 'run'}"]) == 2
    assert f"data.root does not exist: {missing}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain"],
        ["lincls", "SRC"],
        ["knn", "SRC"],
        ["push", "SRC", "--repo-id", "o/n"],
        ["pull", "o/n"],
        ["import-official", "NAME"],
        ["demo"],
        ["ablate-stopgrad"],
    ],
)
def test_every_long_command_takes_no_progress(argv, monkeypatch):
    from simsiam_hub.cli import _progress_off, build_parser

    args = build_parser().parse_args([*argv, "--no-progress"])
    assert args.no_progress is True and _progress_off(args)
    # Without the flag, bars are off when stderr is not a terminal (as under pytest), on when it is one.
    args = build_parser().parse_args(argv)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _progress_off(args) and ("run.progress=false" in args.overrides if hasattr(args, "overrides") else True)
    args = build_parser().parse_args(argv)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not _progress_off(args)


def test_a_missing_extra_is_named_in_one_line(monkeypatch, tmp_path):
    from simsiam_hub.errors import MissingExtraError
    from simsiam_hub.report import plot_runs

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        MissingExtraError, match=r"needs matplotlib, which is not installed: pip install 'simsiam-hub\[train\]'"
    ):
        plot_runs({}, tmp_path / "curves.png", dim=2048)
