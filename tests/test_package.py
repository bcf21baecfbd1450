"""The package itself: its layering (no import cycle, every module importable alone), the old
import paths of moved modules, a command line that imports nothing heavy to parse, the wheel's
contents, and the shipped configs found by name."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from simsiam_hub.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_one_above_it():
    """The imports between simsiam_hub's modules, in every sub-package and wherever they stand
    (inside functions too), form no cycle: every module can be imported alone, in any order."""
    import graphlib

    package = ROOT / "simsiam_hub"
    modules = {".".join(p.relative_to(package).with_suffix("").parts) for p in package.rglob("*.py")}
    modules = {m.removesuffix(".__init__") for m in modules if m != "__init__"}

    def target(name: str) -> str | None:  # the module an import names, or the package it names
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        here = name.split(".")[:-1] if not path.name == "__init__.py" else name.split(".")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                prefix = ".".join([*base, *([node.module] if node.module else [])])
                names = [prefix] if node.module else [f"{prefix}.{a.name}".strip(".") for a in node.names]
                deps.update(t for t in map(target, names) if t)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simsiam_hub."):
                deps.update(t for t in [target(node.module.removeprefix("simsiam_hub."))] if t)
        graph[name] = deps - {name, "__init__", ""}
    graph.pop("__init__", None)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert {"data.datasets", "eval.knn", "hub.loading", "detection.convert", "engine"} <= set(order)
    code = f"import importlib\nfor m in {order[::-1]!r}: importlib.import_module('simsiam_hub.' + m)"
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # the top first: each pulls in what it needs


def test_cli_help_does_not_import_torch():
    code = "import sys; from simsiam_hub.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_the_wheel_ships_configs_transfer_and_hubconf(tmp_path):
    """A non-editable install has what the commands read: every config (found by name), the
    transfer scripts as simsiam_hub.transfer, and the torch.hub entry points."""
    import zipfile

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    shipped = {f"simsiam_hub/configs/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)[:5]
    assert {"simsiam_hub/transfer/train_net.py", "simsiam_hub/transfer/summarize.py", "simsiam_hub/hubconf.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()
    assert (
        "simsiam-hub = simsiam_hub.cli:console" in text
        and "simsiam-hub-detection = simsiam_hub.detection.install:detection_cli" in text
    )


def test_configs_are_found_by_name_and_listed(capsys, tmp_path, monkeypatch):
    from simsiam_hub.config import ConfigError, LinclsConfig, PretrainConfig, load_config

    by_name = load_config(PretrainConfig, "imagenet_resnet50_100ep")
    assert by_name == load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "imagenet_resnet50_100ep.yaml")
    assert load_config(LinclsConfig, "fashion_mnist_cpu.yaml").data.dataset == "fashion_mnist"
    monkeypatch.chdir(tmp_path)  # the checkout-relative path works from anywhere too
    assert load_config(PretrainConfig, "configs/pretrain/imagenet_resnet50_100ep.yaml") == by_name
    with pytest.raises(
        ConfigError,
        match="config 'imagenet_resnet50_1000ep' not found: expected a YAML file or the name of a shipped pretrain config",
    ):
        load_config(PretrainConfig, "imagenet_resnet50_1000ep")
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    for kind, folder in (("pretrain", "pretrain"), ("lincls", "lincls"), ("detection", "detection")):
        assert f"{kind}:" in listing
        for path in (ROOT / "configs" / folder).glob("*.yaml"):
            assert f"  {path.stem} " in listing


def test_old_import_paths_of_moved_modules_still_work_with_a_warning():
    import importlib

    from simsiam_hub import _moved

    for old, new in _moved.MOVED.items():
        if old == "data":
            continue  # now the package; its old names are checked below
        with pytest.warns(DeprecationWarning, match=f"simsiam_hub.{old} moved to simsiam_hub.{new}"):
            sys.modules.pop(f"simsiam_hub.{old}", None)
            module = importlib.import_module(f"simsiam_hub.{old}")
        assert module is importlib.import_module(f"simsiam_hub.{new}")
    from simsiam_hub.eval.probe import linear_probe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from simsiam_hub.probe import linear_probe as old_linear_probe
    assert old_linear_probe is linear_probe
    with pytest.warns(DeprecationWarning, match="simsiam_hub.data.build_dataset moved to simsiam_hub.data.datasets"):
        from simsiam_hub.data import build_dataset
    from simsiam_hub.data.datasets import build_dataset as new_build_dataset

    assert build_dataset is new_build_dataset


def test_public_names_are_declared_and_each_exists():
    """Every module of simsiam_hub/hub/ declares its public names in ``__all__``, and every name
    in any module's ``__all__`` is there to import."""
    import importlib

    package = ROOT / "simsiam_hub"

    def declares(path: Path) -> bool:
        targets = (t for n in ast.parse(path.read_text()).body if isinstance(n, ast.Assign) for t in n.targets)
        return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)

    declaring = sorted(p for p in package.rglob("*.py") if declares(p))
    hub = sorted(p for p in (package / "hub").glob("*.py") if p.name != "__init__.py")
    assert hub and not set(hub) - set(declaring), [p.name for p in hub if p not in declaring]
    for path in declaring:
        name = ".".join(["simsiam_hub", *path.relative_to(package).with_suffix("").parts]).removesuffix(".__init__")
        module = importlib.import_module(name)
        assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ repeats a name"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names what it does not define: {missing}"
