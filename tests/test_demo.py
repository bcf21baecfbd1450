"""The main job end to end (`simsiam-hub demo`) at a small size, and the stop-gradient ablation."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from huggingface_hub import metadata_load

from simsiam_hub.demo import MIN_STEPS, plan_budget
from simsiam_hub.hub.loading import from_pretrained

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")  # `make data` installs it (Debian's dataset-fashion-mnist)
# The demo's own config and data (Fashion-MNIST, ResNet-50 at 32 px) at a small size.
SMALL = [
    "data.train_subset=96",
    "data.num_workers=0",
    "optim.batch_size=16",
    "monitor.knn_every_steps=3",
    "monitor.knn_bank_size=64",
    "monitor.knn_query_size=24",
    "monitor.knn_k=20",
    "run.checkpoint_every_steps=3",
    "run.log_every_steps=2",
    "run.progress=false",
]


def demo(out, *extra):
    # --out relative to the working directory, as `make demo` passes it (runs/demo)
    cmd = [
        sys.executable,
        "-m",
        "simsiam_hub.cli",
        "demo",
        "--out",
        out.name,
        "--knn-bank",
        "96",
        "--knn-queries",
        "24",
        *extra,
        *SMALL,
    ]
    proc = subprocess.run(cmd, cwd=out.parent, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two demos (2.5 min together on a quiet 2-core AMD EPYC); room for slow or busy CI machines
@pytest.mark.skipif(
    not (FMNIST / "train-labels-idx1-ubyte.gz").is_file(), reason="Fashion-MNIST is installed by `make data`"
)
def test_demo_end_to_end_and_again(tmp_path):
    out = tmp_path / "demo"
    # A budget that the config's 6 steps fit on any CPU, however slow or loaded: the plan's
    # arithmetic for tight budgets is test_the_plan_fits_the_budget's.
    demo(out, "--minutes", "60")
    report = json.loads((out / "report.json").read_text())
    assert set(report["knn"]) == {"simsiam", "random_init", "raw_pixels", "raw_pixels_standardised"}
    for acc in report["knn"].values():
        assert 0 <= acc["top1"] <= acc["top5"] <= 100
    # 10 classes: chance is 10%; raw pixels are far above it even on 96 bank images
    assert report["knn"]["raw_pixels"]["top1"] > 40, report["knn"]
    assert (
        report["steps"] == 6 and report["images_seen"] == 96
    )  # the whole config fits the budget: 96 images / batch 16
    assert (report["plan"]["knn_bank"], report["plan"]["knn_queries"]) == (96, 24)
    probes = report["linear_probe"]
    assert set(probes) == {"simsiam", "random_init", "raw_pixels"} and all(
        p["protocol"] == "logreg" for p in probes.values()
    )
    assert probes["raw_pixels"]["top1"] > 40 and all(0 <= p["top1"] <= p["top5"] <= 100 for p in probes.values())
    assert report["plan"]["steps"] == 6 and report["budget_s"] == 3600 and "cores" in report["machine"]
    assert report["reload_max_diff"] == 0.0

    # The pushed folder, loaded back here, gives the trained backbone's features (rebuilt from the
    # checkpoint independently: a torchvision ResNet-50 and the encoder's tensors).
    hub_copy = out / "hub" / "simsiam-resnet50-fashion-mnist-demo"
    checkpoint = sorted((out / "pretrain").glob("checkpoint_step*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    trained = torchvision.models.resnet50()
    trained.fc = torch.nn.Identity()
    trained.load_state_dict(
        {
            k[len("encoder.") :]: v
            for k, v in state.items()
            if k.startswith("encoder.") and not k.startswith("encoder.fc.")
        }
    )
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(from_pretrained(hub_copy)(x), trained.eval()(x))
    # The card's k-NN result is the report's.
    card = metadata_load(hub_copy / "README.md")["model-index"][0]["results"]
    knn_entry = next(r for r in card if r["task"]["type"] == "image-feature-extraction")
    top1 = next(m["value"] for m in knn_entry["metrics"] if m["name"] == "top-1 accuracy")
    assert top1 == round(report["knn"]["simsiam"]["top1"], 4)
    text = (out / "report.md").read_text()
    assert "| SimSiam (this run) |" in text and "standardised raw pixels" in text
    assert "docs/fashion_mnist_results.md" in text  # the pixel baselines' full-set figures: the project's own docs
    assert "multinomial logistic regression" in text  # the report names the probe's protocol
    assert "Machine: " in text and "Budget 60 min" in text
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if importlib.util.find_spec("detectron2"):
        assert "AP50" in report["detection"]["metrics"], report["detection"]
        assert (out / "detection" / "model_detectron2.pkl").is_file()
    else:
        assert "skipped" in report["detection"]

    # A second demo reuses the finished run and the fine-tune, and still completes.
    log = demo(out, "--minutes", "60")
    assert "reusing the plan of an earlier demo" in log
    again = json.loads((out / "report.json").read_text())
    assert again["steps"] == 6 and again["reload_max_diff"] == 0.0 and again["plan_reused"] is True
    assert again["knn"]["simsiam"]["top1"] == report["knn"]["simsiam"]["top1"]  # the same trained weights
    if importlib.util.find_spec("detectron2"):
        assert again["detection"]["reused"] is True


def test_the_plan_fits_the_budget():
    """The demo's plan from measured rates: everything it reserves fits the budget, and the
    pretraining takes what is left, as one pass over a subset or as whole epochs."""
    common = dict(detection=True, bank_limit=60_000, val_size=10_000, batch_size=128)
    # A slow CPU's rates for the default config: 3.7 s per step, 300 images/s through the backbone,
    # 1.2 ms per million values of a probe pass.
    plan = plan_budget(600, 25, 3.7, 300, 1.2e-3, train_size=60_000, config_steps=200, **common)
    assert sum(plan.reserved_s.values()) <= 600
    assert (
        50 < plan.steps < 200
        and f"data.train_subset={plan.steps * 128}" in plan.overrides
        and "optim.epochs=1" in plan.overrides
    )
    assert (plan.knn_bank, plan.knn_queries) == (4_600, 920)  # features and probes in a third of the 483 s left
    twice_as_fast = plan_budget(600, 25, 1.85, 600, 0.6e-3, train_size=60_000, config_steps=200, **common)
    assert twice_as_fast.steps > 2 * plan.steps and twice_as_fast.knn_bank == 9_600
    # Probes twice as slow (a CPU whose bf16 steps outrun its fp32 arithmetic): a smaller bank.
    slow_probes = plan_budget(600, 25, 3.7, 300, 2.4e-3, train_size=60_000, config_steps=200, **common)
    assert slow_probes.knn_bank == 2_800 and sum(slow_probes.reserved_s.values()) <= 600
    slow = plan_budget(600, 25, 3.7, 60, 1.2e-3, train_size=60_000, config_steps=200, **common)  # 5x slower features
    assert (slow.knn_bank, slow.knn_queries) == (1_900, 380) and sum(slow.reserved_s.values()) <= 600
    # More steps than one pass over a small set: whole epochs, within the budget.
    small = plan_budget(
        3600, 10, 0.5, 500, 1e-3, train_size=256 * 16, config_steps=100_000, **dict(common, batch_size=256)
    )
    assert small.steps % 16 == 0 and f"optim.epochs={small.steps // 16}" in small.overrides
    assert sum(small.reserved_s.values()) <= 3600
    # A budget too small for anything still trains a few steps (and the report says it ran over).
    assert plan_budget(30, 25, 3.7, 300, 1.2e-3, train_size=60_000, config_steps=200, **common).steps == MIN_STEPS


@pytest.mark.slow
def test_stopgrad_ablation_without_it_heads_for_collapse(tmp_path):
    """The paper's Fig. 2 at a tiny size (32 steps): without the stop-gradient the loss falls
    much faster towards -1, the std of the l2-normalised output drops below the run with it,
    which stays at 1/sqrt(d), and more of the output lies on one line. (docs/stopgrad_ablation.md has the full-size run.)"""
    out = tmp_path / "ablation"
    cmd = [
        sys.executable,
        "-m",
        "simsiam_hub.cli",
        "ablate-stopgrad",
        "--out",
        str(out),
        "data.dataset=synthetic",
        "data.synthetic_size=128",
        "data.image_size=16",
        "data.num_workers=0",
        "model.arch=resnet18",
        "model.small_stem=true",
        "model.dim=128",
        "model.pred_dim=32",
        "optim.batch_size=32",
        "optim.epochs=8",
        "optim.base_lr=0.4",
        "run.log_every_steps=2",
        "monitor.knn_every_epochs=0",
        "run.progress=false",
        "run.tensorboard=false",
        "run.deterministic=true",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from simsiam_hub.report import summarize_run

    with_sg, without_sg = summarize_run(out / "with_stopgrad"), summarize_run(out / "without_stopgrad")
    ratio = {name: run["z_std"] * math.sqrt(128) for name, run in (("with", with_sg), ("without", without_sg))}
    # measured here: loss -0.09 with, -0.42 without; std ratio 1.01 with, 0.92 without;
    # share of z on one line 0.22 with, 0.49 without
    assert without_sg["loss"] < with_sg["loss"] - 0.2
    assert ratio["with"] > 0.95
    assert ratio["without"] < ratio["with"] - 0.03
    assert without_sg["z_top_share"] > with_sg["z_top_share"] + 0.15
    assert (out / "stopgrad_ablation.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "stopgrad_ablation.md").read_text()
    assert "| without stop-gradient | 8.00 |" in report and "| share of z on one line |" in report
