"""Model folders and the Hub: export, push, pull, from_pretrained, torch.hub, revisions, offline
mode and errors, with the real huggingface_hub client against the small Hub of
tests/fake_hub.py on 127.0.0.1.

The client side runs in a spawned worker process (or a subprocess) whose environment points
huggingface_hub at that Hub before it is imported; this process is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch
import torchvision
from fake_hub import TOKEN, client_pool, hub_env
from torch import nn

from simsiam_hub.cli import main
from simsiam_hub.hub.loading import from_pretrained
from simsiam_hub.hub.repo import NotCachedError, RepoNotFoundError, pull, push_to_hub
from simsiam_hub.hub.results import EvalResult, write_results
from simsiam_hub.hub.weights import read_safetensors, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
REPO = "test-org/simsiam-resnet50"


# --- run in the client worker (a fresh interpreter that talks to the test Hub) -------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``simsiam-hub ARGV``: exit status, stdout, and stderr with every log record."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        logging.getLogger().removeHandler(handler)
    return rc, out.getvalue(), err.getvalue()


def load_state(ref: str, revision: str | None = None) -> dict:
    return from_pretrained(ref, revision=revision).state_dict()


def call(name: str, *args, **kwargs):
    """``simsiam_hub.hub.repo.<name>(*args, **kwargs)``."""
    import simsiam_hub.hub.repo

    return getattr(simsiam_hub.hub.repo, name)(*args, **kwargs)


def call_loading(name: str, *args, **kwargs) -> dict:
    """``simsiam_hub.hub.loading.<name>(*args, **kwargs).state_dict()``."""
    import simsiam_hub.hub.loading

    return getattr(simsiam_hub.hub.loading, name)(*args, **kwargs).state_dict()


def timm_state(name: str) -> dict:
    import timm

    return timm.create_model(name, pretrained=True).state_dict()


def torch_hub_load(env: dict | None = None, **kwargs) -> tuple[dict, list, list[str]]:
    """torch.hub.load of this checkout (with ``env`` set); returns the state, facts about the
    model, and the warnings simsiam_hub logged."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("simsiam_hub").addHandler(handler)
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        model = torch.hub.load(str(ROOT), "simsiam_resnet50", source="local", **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        logging.getLogger("simsiam_hub").removeHandler(handler)
    facts = [type(model).__name__, type(model.fc).__name__, model.training, callable(model.transform)]
    return model.state_dict() if kwargs.get("pretrained") else None, facts, messages


# --- fixtures --------------------------------------------------------------------------------


def images(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.fixture(scope="module")
def trained(training_checkpoint):
    """The trained backbone, rebuilt independently of simsiam_hub: a torchvision ResNet-50."""
    state = torch.load(training_checkpoint, map_location="cpu", weights_only=True)["model"]
    resnet = torchvision.models.resnet50()
    resnet.fc = nn.Identity()
    resnet.load_state_dict(
        {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.") and ".fc." not in k[7:]}
    )
    return resnet.eval(), state


@pytest.fixture(scope="module")
def exported(training_checkpoint, tmp_path_factory):
    """`simsiam-hub export` of the training checkpoint, with a results file beside it (found)
    and one given with --results."""
    write_results(
        [EvalResult("knn", "top1", 31.25, "synthetic", recipe={"k": 200})],
        training_checkpoint.parent / "results_knn.json",
    )
    det = tmp_path_factory.mktemp("results") / "detection.json"
    write_results([EvalResult("detection", "AP50", 41.5, "voc07", "test", std=0.4, num_trials=5)], det)
    out = tmp_path_factory.mktemp("export") / "simsiam-r50"
    assert main(["export", str(training_checkpoint), "--out", str(out), "--results", str(det)]) == 0
    return out


@pytest.fixture(scope="module")
def client(fake_hub, tmp_path_factory):
    """The worker process, online, with its own Hub cache and simsiam-hub cache."""
    home = tmp_path_factory.mktemp("client")
    env = hub_env(fake_hub.url, home / "hf", token=True)
    env["SIMSIAM_HUB_CACHE"] = str(home / "simsiam")
    with client_pool(env) as pool:
        yield pool


@pytest.fixture(scope="module")
def offline_client(client):
    """A second worker on the same caches, with HF_HUB_OFFLINE=1."""
    with client_pool(dict(client.env, HF_HUB_OFFLINE="1")) as pool:
        yield pool


@pytest.fixture(scope="module")
def pushed(exported, fake_hub, client):
    """`simsiam-hub push` of the exported folder; returns the commit id."""
    rc, out, err = client.submit(run_cli, ["push", str(exported), "--repo-id", REPO]).result()
    assert rc == 0, err
    assert TOKEN not in out + err  # the token is never printed, nor logged
    commit = out.strip()
    assert len(commit) == 40 and fake_hub.repos[REPO].branches["main"] == commit
    return commit


# --- tests ----------------------------------------------------------------------------------


def test_export_writes_a_timm_compatible_folder_and_model_card(exported, trained):
    from huggingface_hub import ModelCard

    resnet, state = trained
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "results.json", "simsiam.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["num_features"]) == ("resnet50", 0, 2048)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    recipe = config["simsiam"]
    assert (recipe["arch"], recipe["small_stem"], recipe["batch_size"], recipe["dim"]) == ("resnet50", False, 4, 2048)
    assert recipe["recipe"]["optim"]["base_lr"] == 0.05 and recipe["recipe"]["trained_steps"] == 1
    _, metadata = read_safetensors(exported / "model.safetensors")
    assert {"format", "arch", "method", "epochs", "batch_size", "dataset", "source", "library_version"} <= set(metadata)
    assert (metadata["format"], metadata["method"], metadata["batch_size"], metadata["dataset"]) == (
        "pt",
        "simsiam",
        "4",
        "synthetic",
    )

    # The card parses back with both results files as model-index entries.
    card = ModelCard.load(exported / "README.md")
    assert card.data.license == "apache-2.0" and "simsiam" in card.data.tags
    found = {(r.task_type, r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert found == {
        ("image-feature-extraction", "synthetic", "accuracy", 31.25),
        ("object-detection", "PASCAL VOC 2007 test, fine-tuned on VOC2007 trainval", "map_50", 41.5),
    }
    for text in (
        "torch.hub.load(",
        "simsiam_hub.from_pretrained(",
        "timm.create_model(",
        "@inproceedings{chen2021exploring",
        "base_lr: 0.05",
        "41.50 ± 0.40",
    ):
        assert text in card.text

    # Loaded by us (bit for bit) and by timm (strictly) from the folder.
    x = images()
    model = from_pretrained(exported)
    assert isinstance(model.fc, nn.Identity) and not model.training
    with torch.no_grad():
        expected = resnet(x)
        assert torch.equal(model(x), expected)
    image = torchvision.transforms.functional.to_pil_image(x[0].clamp(0, 1)).resize((50, 40))
    assert model.transform(image).shape == (3, 32, 32)  # the eval transform at the trained size
    import timm

    with torch.no_grad():
        torch.testing.assert_close(timm.create_model(f"local-dir:{exported}", pretrained=True).eval()(x), expected)

    # The whole model, which `pretrain --init-from` takes.
    from simsiam_hub.engine import load_init_weights

    whole = from_pretrained(exported, head="simsiam")
    assert_same_tensors(whole.state_dict(), state)
    load_init_weights(whole, str(exported / "simsiam.safetensors"))


def test_push_pull_round_trip_is_bit_exact(exported, pushed, trained, client, offline_client, tmp_path):
    rc, out, err = client.submit(run_cli, ["pull", REPO, "--out", str(tmp_path / "pulled")]).result()
    assert rc == 0, err
    pulled = Path(out.strip())
    for name in ("model.safetensors", "simsiam.safetensors", "config.json", "results.json"):
        assert (pulled / name).read_bytes() == (exported / name).read_bytes(), name
    assert f'from_pretrained("{REPO}")' in (pulled / "README.md").read_text()  # the card names its repo
    x = images()
    with torch.no_grad():
        assert torch.equal(from_pretrained(pulled)(x), trained[0](x))


def test_torch_hub_load_returns_that_model(exported, pushed, client):
    state, facts, _ = client.submit(torch_hub_load, pretrained=True, repo_id=REPO, revision=pushed).result()
    assert facts == ["ResNet", "Identity", False, True]
    assert_same_tensors(state, from_pretrained(exported).state_dict())
    state, _, _ = client.submit(
        torch_hub_load, env={"SIMSIAM_HUB_REPO": REPO}, pretrained=True, revision=pushed
    ).result()
    assert_same_tensors(state, from_pretrained(exported).state_dict())  # the default repo, from the environment
    _, facts, _ = client.submit(torch_hub_load, pretrained=False).result()  # the architecture alone
    assert facts == ["ResNet", "Identity", False, True]


def test_timm_loads_the_hub_repo_strictly(exported, pushed, client):
    state = client.submit(timm_state, f"hf-hub:{REPO}@{pushed}").result()
    assert_same_tensors(state, from_pretrained(exported).state_dict())


def test_second_push_makes_a_new_revision(exported, pushed, fake_hub, client, tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    config = json.loads((exported / "config.json").read_text())
    config["simsiam"]["has_simsiam"] = False  # a folder of the backbone alone
    (v2 / "config.json").write_text(json.dumps(config))
    state, metadata = read_safetensors(exported / "model.safetensors")
    save_safetensors(dict(state, **{"conv1.weight": state["conv1.weight"] * 2}), v2 / "model.safetensors", metadata)
    second = client.submit(call, "push_to_hub", v2, REPO, commit_message="v2").result()
    assert len(second) == 40 and second != pushed

    main_files = client.submit(call, "pull", REPO, out=str(tmp_path / "main")).result()
    assert (main_files / "model.safetensors").read_bytes() == (v2 / "model.safetensors").read_bytes()
    assert not (main_files / "simsiam.safetensors").exists()  # the folder has none: deleted in the repo
    # The first revision, pinned by its commit id, still holds the first weights.
    assert_same_tensors(client.submit(load_state, REPO, pushed).result(), from_pretrained(exported).state_dict())

    # A branch: created on first push, and pinned by name.
    third = client.submit(call, "push_to_hub", exported, REPO, revision="experiment").result()
    assert fake_hub.repos[REPO].branches == {"main": second, "experiment": third}
    assert_same_tensors(client.submit(load_state, REPO, "experiment").result(), from_pretrained(exported).state_dict())


def test_offline_mode_serves_the_cache_and_fails_clearly(exported, pushed, fake_hub, client, offline_client, tmp_path):
    online = client.submit(load_state, REPO, pushed).result()  # into the Hub cache
    seen = len(fake_hub.requests)
    assert_same_tensors(offline_client.submit(load_state, REPO, pushed).result(), online)
    with pytest.raises(NotCachedError, match="not in the Hub cache .* and HF_HUB_OFFLINE=1"):
        offline_client.submit(load_state, "test-org/never-downloaded").result()
    rc, out, err = offline_client.submit(run_cli, ["pull", "test-org/never-downloaded"]).result()
    assert rc == 1 and err.startswith("simsiam-hub pull: error: test-org/never-downloaded is not in the Hub cache")
    rc, out, err = offline_client.submit(run_cli, ["push", str(exported), "--repo-id", "test-org/offline"]).result()
    assert rc == 1 and "HF_HUB_OFFLINE=1: pushing to test-org/offline" in err and "needs the network" in err
    assert len(fake_hub.requests) == seen  # offline: not one request
    # huggingface_hub's own keywords pass through: the cached revision with local_files_only,
    # and a cache_dir of one's own.
    assert_same_tensors(
        client.submit(call_loading, "from_pretrained", REPO, pushed, local_files_only=True).result(), online
    )
    assert len(fake_hub.requests) == seen
    own = tmp_path / "own-cache"
    assert_same_tensors(
        client.submit(call_loading, "from_pretrained", REPO, pushed, cache_dir=str(own)).result(), online
    )
    assert list(own.rglob("model.safetensors"))


def test_missing_repo_revision_or_token_is_a_clear_error(exported, pushed, client):
    with pytest.raises(RepoNotFoundError, match="repo test-org/does-not-exist not found on http://127.0.0.1"):
        client.submit(load_state, "test-org/does-not-exist").result()
    rc, _, err = client.submit(run_cli, ["pull", "test-org/does-not-exist"]).result()
    assert rc == 1 and err.count("\n") == 1 and "not found" in err
    rc, _, err = client.submit(run_cli, ["pull", REPO, "--revision", "no-such-branch"]).result()
    assert rc == 1 and "no such revision" in err
    rc, _, err = client.submit(run_cli, ["pull", "not a repo id"]).result()
    assert rc == 2 and "neither an existing local folder nor a valid Hub repo id" in err  # a usage error
    with pytest.raises(Exception, match="HTTP 401") as no_token:
        client.submit(call, "push_to_hub", exported, "test-org/other", token=False).result()
    assert TOKEN not in str(no_token.value) and "set HF_TOKEN or run `hf auth login`" in str(no_token.value)


def test_a_broken_folder_is_refused_before_any_request(exported, fake_hub, client, tmp_path):
    """A truncated model.safetensors is found by push's check, not by a later load: nothing is
    sent to the Hub."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for child in exported.iterdir():
        data = child.read_bytes()
        (broken / child.name).write_bytes(data[: len(data) // 2] if child.name == "model.safetensors" else data)
    seen = len(fake_hub.requests)
    rc, _, err = client.submit(run_cli, ["push", str(broken), "--repo-id", "test-org/broken"]).result()
    assert rc == 1 and "model.safetensors is not a readable safetensors file" in err
    assert len(fake_hub.requests) == seen and "test-org/broken" not in fake_hub.repos


def test_local_folder_works_wherever_a_repo_id_does(exported, tmp_path):
    from huggingface_hub import ModelCard

    linear = tmp_path / "linear.json"
    write_results([EvalResult("linear", "top1", 55.0, "synthetic")], linear)
    target = tmp_path / "local-hub" / "simsiam-r50"
    card_before = (exported / "README.md").read_text()
    assert push_to_hub(exported, str(target), results=[linear]) == str(target)
    assert_same_tensors(from_pretrained(target).state_dict(), from_pretrained(exported).state_dict())
    results = ModelCard.load(target / "README.md").data.eval_results
    found = sorted((r.task_type, r.task_name, r.metric_type, r.metric_value) for r in results)
    assert found == [
        ("image-classification", "Linear classification on the frozen backbone", "accuracy", 55.0),
        ("image-feature-extraction", "k-NN classification of frozen features", "accuracy", 31.25),
        ("object-detection", "Object detection (fine-tuned, Detectron2 R50-C4)", "map_50", 41.5),
    ]
    assert (exported / "README.md").read_text() == card_before  # the source folder is left as it was
    copy = pull(str(target), out=tmp_path / "copy")
    assert (copy / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()
    with pytest.raises(Exception, match="local folder: it has no revisions"):
        from_pretrained(target, revision="main")


def test_import_official_url_and_torch_hub_fallback(
    official_checkpoint, fake_hub, client, offline_client, tmp_path, monkeypatch
):
    from simsiam_hub.hub.registry import DEFAULT_VARIANT, download_path, get_variant

    fake_hub.static["simsiam/checkpoint_0099.pth.tar"] = official_checkpoint.path.read_bytes()
    url = f"{fake_hub.url}/static/simsiam/checkpoint_0099.pth.tar"
    for _ in range(2):  # downloaded once into the cache, then reused
        rc, out, err = client.submit(run_cli, ["import-official", url, "--out", str(tmp_path / "imported")]).result()
        assert rc == 0, err
    assert [r for r in fake_hub.requests if r[1].startswith("/static/")] == [
        ("GET", "/static/simsiam/checkpoint_0099.pth.tar")
    ]
    assert_same_tensors(from_pretrained(tmp_path / "imported").state_dict(), official_checkpoint.backbone)
    # The download's SHA-256 was recorded; a cached file that changed since is refused, not used.
    monkeypatch.setenv("SIMSIAM_HUB_CACHE", client.env["SIMSIAM_HUB_CACHE"])
    cached_url = download_path(url)
    assert (
        cached_url.with_name(cached_url.name + ".sha256").read_text().split()[0]
        == hashlib.sha256(cached_url.read_bytes()).hexdigest()
    )
    good = cached_url.read_bytes()
    cached_url.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    rc, out, err = client.submit(run_cli, ["import-official", url, "--out", str(tmp_path / "again")]).result()
    assert rc == 1 and "has SHA-256" in err and "the file is corrupt or was replaced" in err
    cached_url.write_bytes(good)

    # Offline, the fallback to the official release downloads nothing.
    variant = get_variant(DEFAULT_VARIANT)
    seen = len(fake_hub.requests)
    with pytest.raises(Exception, match=r"HF_HUB_OFFLINE=1: .*checkpoint_0099.pth.tar is not in the cache"):
        offline_client.submit(torch_hub_load, pretrained=True).result()
    assert len(fake_hub.requests) == seen

    # torch.hub's default: the Hub repo of the default variant does not exist (here), so the
    # official release is converted from the (pre-filled) download cache, and it says so.
    cached = download_path(variant.source_url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    os.link(official_checkpoint.path, cached)
    state, facts, messages = client.submit(torch_hub_load, pretrained=True).result()
    assert facts == ["ResNet", "Identity", False, True]
    assert_same_tensors(state, official_checkpoint.backbone)
    assert any(f"repo {variant.repo_id} not found" in m and "converting the official release" in m for m in messages)
    rc, out, _ = client.submit(run_cli, ["list"]).result()
    assert rc == 0 and any(line.startswith(DEFAULT_VARIANT) and line.endswith("converted") for line in out.splitlines())


def test_a_hub_listing_a_path_outside_the_repo_is_one_line(exported, pushed, fake_hub, client, tmp_path):
    """A hostile or broken Hub lists ``../../x`` in a revision: one line, nothing written outside
    the cache (huggingface_hub refuses the path; we say what it was)."""
    repo = fake_hub.repos[REPO]
    files = dict(repo.commits[pushed])
    files["../../escaped.txt"] = files["config.json"]
    fake_hub.commit(repo, "hostile", files, "a path outside the repo")
    rc, out, err = client.submit(
        run_cli, ["pull", REPO, "--revision", "hostile", "--out", str(tmp_path / "p")]
    ).result()
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"simsiam-hub pull: error: {REPO} at revision 'hostile': http://127.0.0.1")
    assert "lists a file that cannot be downloaded safely: Invalid filename '../../escaped.txt'" in err
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_ctrl_c_during_a_download_exits_at_once_with_130(exported, pushed, fake_hub, tmp_path):
    """huggingface_hub's download pool waits for the downloads under way before it lets Ctrl-C
    through: `pull` still exits at once (while the Hub holds the download), one line, 130, and
    leaves nothing under --out."""
    import signal
    import subprocess
    import sys
    import threading

    env = hub_env(fake_hub.url, tmp_path / "hf")
    fake_hub.hold, fake_hub.downloading = threading.Event(), threading.Event()
    out = tmp_path / "pulled"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simsiam_hub.cli", "pull", REPO, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake_hub.downloading.wait(120), "the download never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # the Hub still holds the download: exit without it
        held = not fake_hub.hold.is_set()
    finally:
        fake_hub.hold.set()
        fake_hub.hold = None
        if proc.poll() is None:
            proc.kill()
    assert held and proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "simsiam-hub pull: interrupted (Ctrl-C); no partial file is left under a final name"
    ]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
