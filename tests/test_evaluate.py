"""k-NN and linear evaluation: the classifier against a brute-force reference, LARS against a
transcription of apex's LARC (the reference's), the linear protocol on a frozen backbone (nothing
in it may change), resume, the CLI, and results that reach a model card huggingface_hub parses back."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from simsiam_hub.config import DataConfig, LinclsConfig, LinclsOptimConfig, load_config
from simsiam_hub.eval.knn import EvaluationError, knn_accuracy, knn_evaluate, knn_scores
from simsiam_hub.eval.lincls import (
    BackboneChangedError,
    LinclsCheckpointError,
    build_optimizer,
    linear_eval,
    load_lincls_checkpoint,
    new_classifier,
)
from simsiam_hub.eval.sources import LoadedSource
from simsiam_hub.hub.results import read_results
from simsiam_hub.models import build_backbone

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]  # one class each


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory) -> Path:
    """A separable ImageFolder: 4 classes told apart by colour, under noise and brightness changes."""
    root = tmp_path_factory.mktemp("colors")
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8)):
        for c, color in enumerate(COLORS):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.array(color) * rng.uniform(0.6, 1.2) + rng.normal(0, 40, (32, 32, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def lincls_config(root: Path, out: Path, *overrides: str) -> LinclsConfig:
    base = [
        "data.dataset=imagefolder",
        f"data.root={root}",
        "data.image_size=32",
        "data.num_workers=0",
        "optim.batch_size=16",
        "optim.base_lr=50",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.amp=off",
    ]
    return load_config(LinclsConfig, None, base + list(overrides))


def random_source(name: str = "random resnet18") -> LoadedSource:
    return LoadedSource(build_backbone("resnet18").eval().requires_grad_(False), name)


# --- k-NN ---------------------------------------------------------------------------------


def brute_force_knn(bank, bank_labels, queries, num_classes, k, temperature):
    scores = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    for i, q in enumerate(queries.double()):
        sims = [(float(q @ b.double()), int(label)) for b, label in zip(bank, bank_labels)]
        for sim, label in sorted(sims, reverse=True)[:k]:
            scores[i, label] += math.exp(sim / temperature)
    return scores


def test_knn_matches_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    bank_labels = torch.randint(0, 7, (300,), generator=g)
    queries = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    query_labels = torch.randint(0, 7, (50,), generator=g)
    with pytest.raises(EvaluationError, match="k=301 needs a bank of at least k items, found 300"):
        knn_scores(bank, bank_labels, queries, num_classes=7, k=301)  # never silently capped
    for k in (1, 20, 300):
        scores = knn_scores(bank, bank_labels, queries, num_classes=7, k=k, temperature=0.07, chunk_size=16)
        expected = brute_force_knn(bank, bank_labels, queries, 7, k, 0.07)
        torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)
        acc = knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=7, k=k, temperature=0.07)
        ranked = expected.argsort(dim=1, descending=True)
        assert acc["top1"] == pytest.approx(100 * (ranked[:, 0] == query_labels).double().mean().item(), abs=1e-4)
        ordered = expected.sort(dim=1, descending=True).values
        if (ordered[:, 4] > ordered[:, 5]).all():  # top-5 is well defined (no tie at its edge; k=1 has many)
            assert acc["top5"] == pytest.approx(
                100 * (ranked[:, :5] == query_labels[:, None]).any(1).double().mean().item(), abs=1e-4
            )
        else:
            assert k == 1


class GreenChannel(nn.Module):
    def forward(self, x):
        return x[:, 1].flatten(1)


def green(x):
    """The green channel of flattened (N, 3 * H * W) images, l2-normalised."""
    return F.normalize(x.view(len(x), 3, -1)[:, 1], dim=1)


def test_knn_evaluate_on_raw_pixels(color_folder):
    """The Python API takes any feature extractor: raw pixels (the demo's baseline) separate colours."""
    data = DataConfig(dataset="imagefolder", root=str(color_folder), image_size=32, num_workers=0)
    metrics = knn_evaluate(nn.Flatten(), data, k=20, progress=False)
    assert (metrics["bank_size"], metrics["query_size"], metrics["num_classes"]) == (128, 32, 4)
    assert metrics["top1"] > 90
    # the same figure computed independently: the eval view's pixels, l2-normalised, brute-force k-NN
    from torchvision.datasets import ImageFolder

    from simsiam_hub.data.augment import eval_transform

    def pixels(split):
        folder = ImageFolder(str(color_folder / split), transform=eval_transform(32, dataset="imagefolder"))
        x, y = zip(*[(img.flatten(), label) for img, label in folder])
        return F.normalize(torch.stack(x), dim=1), torch.as_tensor(y)

    (bank, bank_y), (queries, query_y) = pixels("train"), pixels("val")
    scores = brute_force_knn(bank, bank_y, queries, 4, k=20, temperature=0.1)
    expected = 100.0 * (scores.argmax(1) == query_y).double().mean().item()
    assert metrics["top1"] == pytest.approx(expected, abs=1e-9)
    # and where it is not 100%: the green channel alone, which two of the colours share
    one = knn_evaluate(GreenChannel(), data, k=20, progress=False)
    scores = brute_force_knn(green(bank), bank_y, green(queries), 4, k=20, temperature=0.1)
    expected = 100.0 * (scores.argmax(1) == query_y).double().mean().item()
    assert one["top1"] == pytest.approx(expected, abs=1e-9) and 25 < expected < 100, (one, expected)


# --- LARS ---------------------------------------------------------------------------------


def apex_larc_sgd_step(params, grads, buffers, *, lr, momentum=0.9, weight_decay=0.0, trust=0.001, eps=1e-8):
    """NVIDIA apex ``apex/parallel/LARC.py`` ``LARC.step`` with ``clip=False`` around
    ``torch.optim.SGD(lr, momentum, weight_decay)`` (the reference's ``main_lincls.py --lars``),
    written out: LARC folds the weight decay into the gradient and zeroes SGD's own; SGD's
    momentum buffer starts as the first gradient (dampening 0)."""
    new_params = []
    for i, (p, g) in enumerate(zip(params, grads)):
        param_norm, grad_norm = torch.norm(p), torch.norm(g)
        if param_norm != 0 and grad_norm != 0:
            adaptive_lr = trust * param_norm / (grad_norm + param_norm * weight_decay + eps)
            g = (g + weight_decay * p) * adaptive_lr
        buffers[i] = g.clone() if i not in buffers else momentum * buffers[i] + g
        new_params.append(p - lr * buffers[i])
    return new_params


@pytest.mark.parametrize("bias,weight_decay", [("random", 0.0), ("zero", 1e-2)])
def test_lars_is_apex_larc_around_sgd(bias, weight_decay):
    """lincls's LARS path against a transcription of apex's LARC: every parameter adapted, the
    bias included (a zero bias takes one plain SGD step first), weight decay folded in."""
    torch.manual_seed(0)
    fc = new_classifier(6, 3).double()  # float64: the comparison is about the rule, not rounding
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.5) and not fc.bias.any()
    if bias == "random":
        fc.bias.data.normal_()
    cfg = LinclsOptimConfig(batch_size=4096, base_lr=0.1, weight_decay=weight_decay)  # lr 1.6, the recipe's
    optimizer = build_optimizer(fc, cfg)
    expected, buffers = [fc.weight.detach().clone(), fc.bias.detach().clone()], {}
    for _ in range(3):
        grads = [torch.randn(3, 6, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
        fc.weight.grad, fc.bias.grad = grads[0].clone(), grads[1].clone()
        optimizer.step()
        expected = apex_larc_sgd_step(expected, grads, buffers, lr=1.6, weight_decay=weight_decay)
        torch.testing.assert_close(fc.weight.detach(), expected[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(fc.bias.detach(), expected[1], rtol=0, atol=1e-6)
    assert optimizer.param_groups[0]["weight_decay"] == weight_decay  # LARC hands it back after the step
    # the weight's first step is lr * trust * |w| long, whatever the gradient's size
    fc2 = new_classifier(6, 3).double()
    w0 = fc2.weight.detach().clone()
    fc2.weight.grad, fc2.bias.grad = 1e3 * torch.randn(3, 6, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    build_optimizer(fc2, LinclsOptimConfig(batch_size=512, base_lr=0.1)).step()
    assert (fc2.weight.detach() - w0).norm().item() == pytest.approx(0.2 * 0.001 * w0.norm().item(), rel=1e-6)


# --- linear evaluation -------------------------------------------------------------------------


def test_linear_eval_reference_path_keeps_backbone_and_learns(color_folder, tmp_path):
    """Augmented crops through the frozen backbone every step (the reference protocol)."""
    torch.manual_seed(0)
    source = random_source()
    before = copy.deepcopy(source.backbone.state_dict())
    # 80 LARS steps: a high lr makes up for the reference's thousands (94-97% over 5 seeds; with
    # base_lr 100, 56-72%: LARC scales each tensor's step to lr * 0.001 of its norm before momentum, the bias too).
    cfg = lincls_config(
        color_folder, tmp_path / "run", "optim.epochs=10", "optim.base_lr=300", "run.eval_every_epochs=5"
    )
    result = linear_eval(cfg, source, resume=None)
    after = source.backbone.state_dict()
    assert before.keys() == after.keys()
    for key in before:  # weights and BatchNorm running statistics alike
        assert torch.equal(before[key], after[key].cpu()), key
    assert not source.backbone.training
    assert result.epoch == 10 and result.top1 >= 60, result  # chance is 25
    assert result.best_top1 >= result.top1
    results = {(r.task, r.metric): r for r in read_results(result.results_file)}
    assert set(results) == {("linear", m) for m in ("top1", "top5", "top1_best", "top5_best")}
    top1 = results[("linear", "top1")]
    assert (top1.value, top1.dataset, top1.split, top1.source) == (
        result.top1,
        color_folder.name,
        "val",
        "random resnet18",
    )
    assert top1.recipe["train_features"].startswith("online") and top1.recipe["optimizer"] == "lars"


class SneakyBackbone(nn.Module):
    """Puts its BatchNorm back in training mode on every call: a protocol bug to catch."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)

    def forward(self, x):
        self.bn.train()
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def test_a_changed_backbone_fails_loudly(color_folder, tmp_path):
    cfg = lincls_config(color_folder, tmp_path / "run", "optim.epochs=1", "data.cache_features=true")
    with pytest.raises(BackboneChangedError, match="bn.running_mean"):
        linear_eval(cfg, LoadedSource(SneakyBackbone(), "sneaky"), resume=None)


def test_resume_continues_exactly_and_refuses_another_run(color_folder, tmp_path):
    weights = build_backbone("resnet18").state_dict()

    def source(name="random resnet18"):
        backbone = build_backbone("resnet18")
        backbone.load_state_dict(weights)
        return LoadedSource(backbone.eval().requires_grad_(False), name)

    cached = ("optim.epochs=4", "data.cache_features=true")
    whole = linear_eval(lincls_config(color_folder, tmp_path / "whole", *cached), source(), resume=None)
    part = linear_eval(
        lincls_config(color_folder, tmp_path / "part", *cached, "run.stop_after_epochs=2"), source(), resume=None
    )
    assert part.epoch == 2 and part.results_file is None  # results only once every epoch is done
    torch.manual_seed(123)  # a resumed run does not depend on the global RNG
    resumed = linear_eval(lincls_config(color_folder, tmp_path / "part", *cached), source(), resume="auto")
    assert resumed.epoch == 4
    a, b = load_lincls_checkpoint(whole.checkpoint), load_lincls_checkpoint(resumed.checkpoint)
    for key in a["fc"]:
        assert torch.equal(a["fc"][key], b["fc"][key]), key
    assert (resumed.top1, resumed.best_top1) == (whole.top1, whole.best_top1)
    assert read_results(resumed.results_file) == read_results(whole.results_file)

    other = source("other")
    with torch.no_grad():
        other.backbone.conv1.weight.add_(1.0)
    with pytest.raises(LinclsCheckpointError, match="another backbone"):
        linear_eval(lincls_config(color_folder, tmp_path / "part", *cached), other, resume="auto")
    with pytest.raises(LinclsCheckpointError, match="other settings"):
        linear_eval(
            lincls_config(color_folder, tmp_path / "part", *cached, "optim.batch_size=32"), source(), resume="auto"
        )


def test_shipped_lincls_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs" / "lincls"
    # main_lincls.py (a7bc177): --epochs 90 (l.44), -b 4096 (l.48), --lr 0.1 (l.53), --momentum 0.9 (l.55),
    # --wd 0 (l.57), LARC(trust_coefficient=.001, clip=False) (l.232), the lr set per epoch (l.299), fp32.
    reference = load_config(LinclsConfig, root / "imagenet_resnet50.yaml")
    assert (reference.optim.optimizer, reference.optim.batch_size, reference.optim.base_lr, reference.optim.epochs) == (
        "lars",
        4096,
        0.1,
        90,
    )
    assert (reference.optim.trust_coefficient, reference.optim.weight_decay, reference.data.min_scale) == (
        0.001,
        0.0,
        0.08,
    )
    assert (reference.optim.momentum, reference.optim.warmup_epochs, reference.run.amp) == (0.9, 0.0, "off")
    assert not reference.data.cache_features and reference.data.image_size == 224
    cpu = load_config(LinclsConfig, root / "fashion_mnist_cpu.yaml")
    assert cpu.data.cache_features and cpu.data.dataset == "fashion_mnist" and cpu.run.amp == "off"
    assert (cpu.optim.optimizer, cpu.optim.batch_size, cpu.optim.epochs) == ("lars", 4096, 90)
    # ImageNet keeps the reference recipe; the small-data config defaults to the converged probe
    assert (reference.protocol, cpu.protocol) == ("reference", "logreg")


# --- the command line and the model card -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(color_folder, tmp_path_factory) -> Path:
    """A real training checkpoint (one SimSiam step on the colour images)."""
    from simsiam_hub.config import PretrainConfig
    from simsiam_hub.engine import pretrain

    out = tmp_path_factory.mktemp("pretrain")
    cfg = load_config(
        PretrainConfig,
        None,
        [
            "model.arch=resnet18",
            "model.dim=64",
            "model.pred_dim=16",
            "data.dataset=imagefolder",
            f"data.root={color_folder}",
            "data.image_size=32",
            "data.num_workers=0",
            "optim.batch_size=32",
            "run.max_steps=1",
            "monitor.knn_every_epochs=0",
            f"run.output_dir={out}",
            "run.tensorboard=false",
            "run.progress=false",
        ],
    )
    return pretrain(cfg, resume=None).checkpoint


def test_cli_results_reach_a_model_card(tiny_checkpoint, color_folder, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from simsiam_hub.cli import main
    from simsiam_hub.hub.export import export

    # knn: the data options come from the checkpoint; results land beside it, where export looks.
    assert main(["knn", str(tiny_checkpoint), "--workers", "0", "--no-progress", "--k", "20"]) == 0
    assert "knn top1" in capsys.readouterr().out
    knn = {r.metric: r for r in read_results(tiny_checkpoint.parent / "results_knn.json")}
    assert knn["top1"].task == "knn" and knn["top1"].dataset == color_folder.name and knn["top1"].recipe["k"] == 20
    assert 0 <= knn["top5"].value <= 100 and knn["top1"].value <= knn["top5"].value

    # lincls: options between SOURCE and the key=value overrides, as the README writes it.
    run = tmp_path / "lincls"
    argv = [
        "lincls",
        str(tiny_checkpoint),
        "--data",
        str(color_folder),
        "--resume",
        "none",
        "data.dataset=imagefolder",
        "data.image_size=32",
        "data.cache_features=true",
        "data.num_workers=0",
        "optim.epochs=20",
        "optim.batch_size=16",
        "optim.base_lr=50",
        f"run.output_dir={run}",
        "run.progress=false",
        "run.amp=off",
    ]
    assert main(argv) == 0
    linear = {r.metric: r for r in read_results(run / "results_lincls.json")}
    assert linear["top1"].value > 50, linear["top1"]  # chance is 25

    card_dir = export(tiny_checkpoint, tmp_path / "model", results=[run / "results_lincls.json"])
    card = ModelCard.load(card_dir / "README.md")  # huggingface_hub parses the metadata back
    entries = [e for e in card.data.eval_results if e.dataset_name == color_folder.name]

    # One task entry per evaluation, each with the standard metric type and a name saying what it is.
    def parsed(task_type: str, metric_type: str, metric_name: str) -> float:
        hits = [
            e.metric_value
            for e in entries
            if (e.task_type, e.metric_type, e.metric_name) == (task_type, metric_type, metric_name)
        ]
        assert len(hits) == 1, (task_type, metric_name, [(e.task_type, e.metric_type, e.metric_name) for e in entries])
        return hits[0]

    assert parsed("image-feature-extraction", "accuracy", "top-1 accuracy") == pytest.approx(
        knn["top1"].value, abs=1e-3
    )
    reference = " (reference recipe, LARS schedule)"  # the linear protocol, named
    assert parsed("image-classification", "accuracy", "top-1 accuracy" + reference) == pytest.approx(
        linear["top1"].value, abs=1e-3
    )
    assert parsed("image-classification", "accuracy", "top-1 accuracy, best epoch" + reference) == pytest.approx(
        linear["top1_best"].value, abs=1e-3
    )
    assert parsed("image-classification", "accuracy", "top-5 accuracy" + reference) == pytest.approx(
        linear["top5"].value, abs=1e-3
    )
    assert {e.dataset_split for e in entries} == {"val"}
    assert {e.task_name for e in entries} == {
        "k-NN classification of frozen features",
        "Linear classification on the frozen backbone",
    }


def test_knn_baselines_score_the_runs_own_initialisation(tiny_checkpoint, color_folder, tmp_path, capsys):
    from simsiam_hub.checkpoint import load_checkpoint
    from simsiam_hub.cli import main
    from simsiam_hub.config import PretrainConfig, from_dict
    from simsiam_hub.engine import Trainer
    from simsiam_hub.models import initial_backbone

    # "random init" is the very network the run started from: the engine's model before step 1.
    cfg = from_dict(PretrainConfig, load_checkpoint(tiny_checkpoint)["config"])
    cfg.run.output_dir = str(tmp_path / "fresh")
    start = Trainer(cfg, resume=None).model.encoder.state_dict()
    initial = initial_backbone(
        cfg.model.arch,
        small_stem=cfg.model.small_stem,
        dim=cfg.model.dim,
        pred_dim=cfg.model.pred_dim,
        seed=cfg.run.seed,
    )
    for name, tensor in initial.resnet.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, start[name]), name

    # A harder set than the colour folder (tints of grey under noise), on which random features
    # score far from 100% and different initialisations score differently (45-56% over seeds 0-3).
    data = tmp_path / "tints"
    rng = np.random.default_rng(0)
    tints = [(148, 128, 128), (128, 148, 128), (128, 128, 148), (128, 128, 128)]
    for split, n in (("train", 32), ("val", 16)):
        for c, tint in enumerate(tints):
            (data / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = np.array(tint) * rng.uniform(0.7, 1.3) + rng.normal(0, 50, (32, 32, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(data / split / f"class{c}" / f"{i}.png")

    out = tmp_path / "knn" / "results_knn.json"
    # --amp off: fp32 features on every CPU (auto would pick bf16 on one with AMX)
    argv = [
        "knn",
        str(tiny_checkpoint),
        "--data",
        str(data),
        "--workers",
        "0",
        "--no-progress",
        "--k",
        "20",
        "--amp",
        "off",
        "--baselines",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((out.parent / "knn_baselines.json").read_text())
    assert set(comparison) >= {"simsiam", "random_init", "raw_pixels", "raw_pixels_standardised"}
    assert comparison["simsiam"]["top1"] == pytest.approx(
        next(r.value for r in read_results(out) if r.metric == "top1")
    )
    assert comparison["random_init"]["bank_size"] == comparison["simsiam"]["bank_size"] == 4 * 32
    assert comparison["random_init"]["query_size"] == 4 * 16
    for name in ("random_init", "raw_pixels_standardised"):
        assert f"{name}: top1 {comparison[name]['top1']:6.2f}%" in printed

    # The random_init number itself, recomputed without the project's k-NN path: torchvision's
    # ResNet-18 with the engine's initial weights, torchvision's ImageFolder through the eval view
    # of an ImageFolder dataset (resize to floor(size / 0.875), centre crop, ImageNet normalisation), and
    # the brute-force weighted vote above in float64.
    import torchvision
    from torchvision import transforms as T

    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    resnet.load_state_dict({k: v for k, v in start.items() if not k.startswith("fc.")})
    resnet.eval()
    view = T.Compose(
        [
            T.Resize(int(32 / 0.875)),  # floor, as timm's create_transform
            T.CenterCrop(32),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    def features(split):
        images, labels = zip(*torchvision.datasets.ImageFolder(data / split, transform=view))
        with torch.no_grad():
            return F.normalize(resnet(torch.stack(images)).double(), dim=1), torch.tensor(labels)

    (bank, bank_y), (query, query_y) = features("train"), features("val")
    scores = brute_force_knn(bank, bank_y, query, 4, 20, 0.1)
    top2 = scores.topk(2, dim=1).values
    sims = (query @ bank.T).sort(dim=1, descending=True).values
    # a vote another CPU's float rounding could change: the two best classes' scores within 1e-4
    # of each other, or the 20th and 21st neighbours' similarities within 1e-5 (none here)
    fragile = int((((top2[:, 0] - top2[:, 1]) <= 1e-4 * top2[:, 0]) | ((sims[:, 19] - sims[:, 20]) <= 1e-5)).sum())
    assert fragile <= 2, f"{fragile} of 64 votes too close to call: the check would be weak"
    expected = 100 * (scores.argmax(dim=1) == query_y).double().mean().item()
    assert 25 < expected < 75  # the data are as hard as intended: neither chance nor solved
    assert abs(comparison["random_init"]["top1"] - expected) <= 100 * fragile / 64 + 1e-6, (
        comparison["random_init"],
        expected,
    )


def test_cli_bad_input_is_one_line(tiny_checkpoint, tmp_path, capsys):
    from simsiam_hub.cli import main

    assert main(["knn", str(tiny_checkpoint), "--dataset", "imagenet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.dataset='imagenet'" in err and "expected one of" in err and "Traceback" not in err
    assert main(["lincls", str(tmp_path / "missing.pt"), f"run.output_dir={tmp_path}"]) == 1
    assert "missing.pt" in capsys.readouterr().err
    assert main(["lincls", str(tiny_checkpoint), "optim.optimizer=adam", f"run.output_dir={tmp_path}"]) == 2
    assert "optim.optimizer='adam'" in capsys.readouterr().err


def test_ddp_two_processes_match_one_process(tiny_checkpoint, color_folder, tmp_path):
    """torchrun with 2 ranks x 8 images == 1 process x 16 images: the same classifier and accuracy.

    The frozen backbone sees the same augmented pixels per image in both (seeded per image), each
    global batch holds the same images, and DDP averages the classifier's gradients.
    """
    import os
    import subprocess
    import sys

    overrides = [
        "data.dataset=imagefolder",
        f"data.root={color_folder}",
        "data.image_size=32",
        "data.num_workers=0",
        "optim.epochs=2",
        "optim.batch_size=16",
        "optim.base_lr=100",
        "run.progress=false",
        "run.amp=off",
        "run.channels_last=false",
    ]
    linear_eval(
        load_config(LinclsConfig, None, [*overrides, f"run.output_dir={tmp_path / 'one'}"]),
        str(tiny_checkpoint),
        resume=None,
    )
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "simsiam_hub.cli",
        "lincls",
        str(tiny_checkpoint),
        *overrides,
        f"run.output_dir={tmp_path / 'two'}",
    ]
    proc = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two = (
        load_lincls_checkpoint(tmp_path / "one" / "checkpoint.pt"),
        load_lincls_checkpoint(tmp_path / "two" / "checkpoint.pt"),
    )
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["step"] == two["step"] == 16
    torch.manual_seed(0)  # the run's seed: the classifier's initialisation
    init = new_classifier(512, 4).state_dict()
    for key in one["fc"]:
        update = (one["fc"][key] - init[key]).norm()
        assert update > 0, key
        # fp32 sums in another order: the runs may differ by a tiny fraction of what training moved
        assert (one["fc"][key] - two["fc"][key]).norm() <= 1e-3 * update + 1e-6, key
    assert one["last"]["top1"] == pytest.approx(two["last"]["top1"])


# --- the two linear protocols: the converged probe, and the reference recipe's convergence check ---


def test_reference_recipe_warns_when_its_loss_is_still_falling(color_folder, tmp_path, caplog):
    """A learning rate far too small for the epochs: the loss still falls at the end, and the
    run says so (log, results file); the reference numerics themselves are untouched."""
    cfg = lincls_config(
        color_folder,
        tmp_path / "run",
        "data.cache_features=true",
        "optim.optimizer=sgd",
        "optim.base_lr=0.01",
        "optim.epochs=10",
    )
    with caplog.at_level("WARNING", logger="simsiam_hub.eval.lincls"):
        result = linear_eval(cfg, random_source(), resume=None)
    assert result.converged is False and "has not converged" in caplog.text
    recipe = next(r.recipe for r in read_results(result.results_file) if r.metric == "top1")
    assert recipe["protocol"] == "reference" and recipe["still_falling"] is True
    with open(tmp_path / "run" / "lincls_log.csv") as f:
        losses = [float(row.split(",")[3]) for row in f.read().splitlines()[1:]]
    assert len(losses) == 10 and recipe["train_loss"] == result.train_loss == pytest.approx(losses[-1], rel=1e-5)
    assert recipe["loss_fall_per_lr_last"] > 0.1 * recipe["loss_fall_per_lr_first"] > 0


def test_cli_logreg_protocol_results_and_card(tiny_checkpoint, color_folder, tmp_path, capsys):
    """`lincls --protocol logreg` end to end: the frozen backbone's features once, the probe,
    a results file that records the protocol, the chosen weight decay and the final training
    loss, and a model card that tells the two protocols apart."""
    from huggingface_hub import ModelCard

    from simsiam_hub.cli import main
    from simsiam_hub.hub.export import export

    common = [
        "--data",
        str(color_folder),
        "--resume",
        "none",
        "data.dataset=imagefolder",
        "data.image_size=32",
        "data.cache_features=true",
        "data.num_workers=0",
        "run.progress=false",
        "run.amp=off",
    ]
    assert (
        main(["lincls", str(tiny_checkpoint), "--protocol", "logreg", *common, f"run.output_dir={tmp_path / 'logreg'}"])
        == 0
    )
    printed = capsys.readouterr().out
    probe = {r.metric: r for r in read_results(tmp_path / "logreg" / "results_lincls.json")}
    assert set(probe) == {"top1", "top5"}
    recipe = probe["top1"].recipe
    assert recipe["protocol"] == "logreg" and recipe["converged"] is True
    assert recipe["weight_decay"] in recipe["weight_decays_tried"]
    assert recipe["val_top1"][recipe["weight_decays_tried"].index(recipe["weight_decay"])] == max(recipe["val_top1"])
    assert 0 <= recipe["train_loss"] < math.log(4)  # below a classifier that knows nothing (4 classes)
    assert (recipe["train_size"], recipe["test_size"], recipe["train_features"][:6]) == (128, 32, "cached")
    assert probe["top1"].value > 50 and probe["top1"].split == "val"  # chance is 25
    assert f"linear (logreg probe) top1 {probe['top1'].value:.2f}%" in printed and "converged" in printed

    # the reference recipe beside it, then one card with both
    assert (
        main(
            [
                "lincls",
                str(tiny_checkpoint),
                *common,
                "optim.epochs=5",
                "optim.batch_size=16",
                "optim.base_lr=50",
                f"run.output_dir={tmp_path / 'reference'}",
            ]
        )
        == 0
    )
    assert "linear (reference recipe) top1" in capsys.readouterr().out
    reference = {r.metric: r for r in read_results(tmp_path / "reference" / "results_lincls.json")}
    assert reference["top1"].recipe["protocol"] == "reference" and reference["top1"].recipe["train_loss"] > 0
    files = [tmp_path / "reference" / "results_lincls.json", tmp_path / "logreg" / "results_lincls.json"]
    card_dir = export(tiny_checkpoint, tmp_path / "model", results=files)
    text = (card_dir / "README.md").read_text()
    assert "| linear | logistic-regression probe, L-BFGS to convergence |" in text
    assert "| linear | reference recipe, LARS schedule |" in text
    entries = {
        e.metric_name: e.metric_value
        for e in ModelCard.load(card_dir / "README.md").data.eval_results
        if e.dataset_name == color_folder.name
    }
    assert entries["top-1 accuracy (logistic-regression probe, L-BFGS to convergence)"] == pytest.approx(
        probe["top1"].value, abs=1e-3
    )
    assert entries["top-1 accuracy (reference recipe, LARS schedule)"] == pytest.approx(
        reference["top1"].value, abs=1e-3
    )


@contextlib.contextmanager
def lock_held_by_another_process(folder: Path):
    """Another process holding ``folder``'s run lock (as a running pretraining or lincls does); yields its pid."""
    code = "import sys, time; from simsiam_hub.fileio import folder_lock\nwith folder_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_lincls_knn_and_demo_refuse_a_run_folder_in_use(tiny_checkpoint, color_folder, tmp_path, capsys):
    """Two lincls runs in one run.output_dir both 'succeeded' with one run's files: a second
    one (and knn writing into a run folder, and the demo) is refused naming the holder."""
    from simsiam_hub.cli import main

    run = tmp_path / "run"
    lincls = [
        "lincls",
        str(tiny_checkpoint),
        "--data",
        str(color_folder),
        "data.dataset=imagefolder",
        "data.image_size=32",
        "data.num_workers=0",
        "optim.batch_size=16",
        "optim.epochs=1",
        f"run.output_dir={run}",
        "run.progress=false",
    ]
    with lock_held_by_another_process(run) as pid:
        for argv, option in [
            (lincls, "run.output_dir"),
            (["knn", str(tiny_checkpoint), "--output", str(run / "results_knn.json"), "--no-progress"], "--output"),
            (["demo", "--out", str(run), "--minutes", "1"], "--out"),
        ]:
            assert main(argv) == 1, argv
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert f"is in use by another process (pid {pid} on " in err and f"set another {option}" in err, err
        assert sorted(p.name for p in run.iterdir()) == [".lock", ".lock.owner"]  # nothing written


def test_unreadable_images_in_evaluation_are_handled_as_in_pretraining(color_folder, tmp_path, caplog, monkeypatch):
    """A truncated image in the k-NN bank or queries, the pixel baselines or linear evaluation's
    cached features: logged by name and replaced by a seeded draw (the same result twice), and
    too many stop the run in one line, as pretraining does."""
    import logging
    import shutil

    from simsiam_hub.data.datasets import DatasetError
    from simsiam_hub.eval.knn import knn_with_baselines

    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 3)):
        for c in ("class0", "class1"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                shutil.copy(color_folder / split / c / f"{i}.png", root / split / c / f"{i}.png")
    for split in ("train", "val"):
        good = (root / split / "class0" / "0.png").read_bytes()
        (root / split / "class0" / "broken.png").write_bytes(good[: len(good) // 3])
    data = DataConfig(dataset="imagefolder", root=str(root), image_size=16, num_workers=0)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())  # the data path is under test, not the network
    with caplog.at_level(logging.WARNING):
        first = knn_with_baselines(net, net, data, k=5, progress=False)
        second = knn_with_baselines(net, net, data, k=5, progress=False)
    assert {k: {m: v for m, v in r.items() if m != "seconds"} for k, r in first.items()} == {
        k: {m: v for m, v in r.items() if m != "seconds"} for k, r in second.items()
    }
    assert first["simsiam"]["bank_size"] == 13 and first["simsiam"]["query_size"] == 7  # replaced, not dropped
    named = [r.message for r in caplog.records if "skipping unreadable image" in r.message]
    for split in ("train", "val"):
        assert any(str(root / split / "class0" / "broken.png") in m for m in named), named
    assert any("unreadable images replaced by seeded draws" in r.message for r in caplog.records)

    cfg = lincls_config(root, tmp_path / "lincls", "data.cache_features=true", "protocol=logreg", "data.image_size=16")
    result = linear_eval(cfg, random_source(), resume=None)
    assert result.top1 is not None and math.isfinite(result.top1)

    # past the bound: one line naming the files
    monkeypatch.setattr("simsiam_hub.data.datasets.EVAL_MAX_BAD_IMAGES", 0)
    with pytest.raises(
        DatasetError, match=r"1 images could not be read in the train features, more than 0 \(first: .*broken"
    ):
        knn_with_baselines(net, net, data, k=5, progress=False)
