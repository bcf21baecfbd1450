"""`simsiam-hub demo`: the whole pipeline on the embedded defaults, within a wall-clock budget,
ending in a report.

pretrain -> k-NN and the linear probe against the baselines -> export + push (a local folder hub by default)
-> reload through torch.hub -> Detectron2 C4 conversion and a short fine-tune -> report.md
with plots. The budget (``--minutes``) is spent where it buys the most: the demo measures this
machine's training step and feature-extraction rate first, reserves time for the fixed stages,
and sizes the pretraining (and the k-NN bank) to fit. Every stage reuses what an earlier demo
left in the output folder, the plan included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import list_checkpoints
from .config import PretrainConfig, load_config
from .data.augment import eval_transform
from .data.datasets import build_dataset, dataset_info
from .detection.convert import convert_source
from .detection.synthetic import make_voc
from .engine import pretrain, pretrain_views, views_to_device
from .errors import SimsiamHubError
from .eval.knn import baseline_features, knn_of_baselines
from .eval.probe import PROTOCOL_DESCRIPTION, linear_probe, pass_seconds_per_million
from .fileio import atomic_write_text, folder_lock
from .hub.export import export
from .hub.loading import from_pretrained, load_backbone_state_dict
from .hub.repo import push_to_hub
from .hub.results import EvalResult, read_results, write_results
from .models import PooledFeatures, SimSiam, build_backbone, feature_dim, initial_backbone, simsiam_loss
from .optim import build_pretrain_optimizer
from .precision import autocast_context, precision_name, resolve_amp
from .report import machine_description, plot_runs, summarize_run
from .resources import configs_dir, hubconf_dir

DEFAULT_CONFIG = "fashion_mnist_resnet50_cpu"
DEMO_REPO_NAME = "simsiam-resnet50-fashion-mnist-demo"
PLAN_FILE = "plan.json"
# Seconds reserved for the stages whose cost is not measured before they run: export + push +
# reload, the report, and the Detectron2 fine-tune in this machine's training steps (19 s in a
# demo on 2 cores of an AMD EPYC where a step took 2.3 s: 10 steps' time covers it). Measured in
# demos on 2 cores of AMD EPYCs: the linear probes cost 2,700 and 3,700 passes of their objective
# over their features in two runs (the iterations a fit takes vary with the images drawn; 784 +
# 2 x 2,048 values per image, banks of 10,000 and 8,000); the training step, bf16 on one CPU and
# fp32 on another without native bf16, was 1.7 and 2.3 times apart from the probes' cost, so it
# cannot stand in for it; extracting features through the data pipeline ran at 1/1.6 of the
# backbone's measured rate; the pretraining stage ran up to 15% over its steps' measured time
# (checkpoint writes, the loader's start).
EXPORT_SECONDS, REPORT_SECONDS, DETECTION_STEPS = 15.0, 10.0, 10
PROBE_PASSES, EXTRACTION_OVERHEAD, STEP_OVERHEAD = 4_000, 1.6, 1.15
MONITOR_BANK, MONITOR_QUERIES, MONITOR_CHECKS = 2000, 500, 4
EVAL_SHARE = 0.35  # of the time left for pretraining and evaluation, at most, for the final k-NN and probes
MIN_STEPS = 5


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    minutes: float = 10.0  # wall-clock budget of the whole demo
    config: str | Path = DEFAULT_CONFIG
    data: str | None = None  # a Fashion-MNIST idx folder or an ImageFolder root (train/, val/)
    hub: Path | None = None  # local folder hub (default OUT/hub)
    repo_id: str | None = None  # a real Hub repo instead of the local folder
    knn_bank: int | None = None  # None: sized to the budget
    knn_queries: int | None = None
    detection: bool = True
    overrides: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """How the budget is spent: what was measured, and what was chosen from it."""

    budget_s: float
    step_s: float  # one training step, data loading included
    features_per_s: float  # backbone forward, images per second
    steps: int  # pretraining steps
    overrides: list[str]  # the pretraining config's overrides that give those steps
    knn_bank: int
    knn_queries: int
    reserved_s: dict[str, float]  # estimated seconds per stage
    probe_pass_s: float = 0.0  # the probe's objective and gradient, seconds per million values (0: not measured)


def _data_overrides(data: str | None) -> list[str]:
    if data is None:
        return []
    root = Path(data).expanduser()
    if not root.is_dir():
        raise SimsiamHubError(
            f"--data {root}: not a folder (expected Fashion-MNIST idx files or an ImageFolder with train/ and val/)"
        )
    if any(root.glob("train-images-idx3-ubyte*")):
        return ["data.dataset=fashion_mnist", f"data.root={root}"]
    return ["data.dataset=imagefolder", f"data.root={root}"]


def _probe_rate(plan: Plan) -> str:
    return f", a probe pass at {plan.probe_pass_s * 1e3:.2f} ms per million values" if plan.probe_pass_s else ""


def _stage(name: str, timings: dict):
    print(f"\n=== {name}", flush=True)
    timings[name] = time.perf_counter()


def detection_available(cfg: PretrainConfig, opts: DemoOptions) -> str | None:
    """Why the Detectron2 stage is skipped, or None when it runs."""
    if not opts.detection:
        return "--no-detection was given"
    if importlib.util.find_spec("detectron2") is None:
        return "detectron2 is not installed (`make detectron2`)"
    if cfg.model.arch != "resnet50":
        return f"the C4 detector needs a ResNet-50 backbone, this run trained {cfg.model.arch}"
    return None


# --- the plan ------------------------------------------------------------------------------------


def measure_rates(cfg: PretrainConfig, steps: int = 2) -> tuple[float, float, float]:
    """``(seconds per training step, backbone images per second, seconds per million feature
    values of a probe pass)`` on this machine: a few real steps of the config's model, data
    loading and precision (after one warm-up step), one batch of feature extraction, and
    :func:`~simsiam_hub.eval.probe.pass_seconds_per_million`. The model is a throwaway; the run
    starts from its own seed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = resolve_amp(cfg.run.amp, device)
    m = cfg.model
    model = SimSiam(m.arch, m.dim, m.pred_dim, small_stem=m.small_stem, proj_layers=m.proj_layers).to(device)
    memory = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    optimizer = build_pretrain_optimizer(model, cfg.optim)
    views = pretrain_views(cfg)
    loader = iter(
        DataLoader(
            views, batch_size=cfg.optim.batch_size, shuffle=True, num_workers=cfg.data.num_workers, drop_last=True
        )
    )
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        (x1, x2), _, _ = next(loader)
        x1, x2 = (x.contiguous(memory_format=memory) for x in views_to_device(views, x1, x2, device))
        with autocast_context(device, amp):
            p1, p2, z1, z2 = model(x1, x2)
        loss = simsiam_loss(p1, p2, z1, z2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    features = PooledFeatures(model.encoder).eval()
    with torch.no_grad(), autocast_context(device, resolve_amp(cfg.monitor.amp, device)):
        features(x1[:32])  # warm-up
        start = time.perf_counter()
        features(x1)
    features_per_s = x1.shape[0] / (time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], features_per_s, pass_seconds_per_million()


def plan_budget(
    budget_s: float,
    spent_s: float,
    step_s: float,
    features_per_s: float,
    probe_pass_s: float,
    *,
    detection: bool,
    train_size: int,
    bank_limit: int,
    val_size: int,
    batch_size: int,
    config_steps: int,
    feature_width: int = 2048,
    pixel_width: int = 784,
    knn_bank: int | None = None,
    knn_queries: int | None = None,
) -> Plan:
    """How many pretraining steps and evaluation images fit ``budget_s`` after ``spent_s``, given
    the measured step time, feature-extraction rate and probe pass: the fixed stages are
    reserved first (export, the detection fine-tune at :data:`DETECTION_STEPS` steps' time, the
    report, 5% margin); the final evaluation (features of two networks at the measured rate over
    :data:`EXTRACTION_OVERHEAD`, k-NN, and linear probes of :data:`PROBE_PASSES` passes over their
    ``feature_width`` and the pixels' ``pixel_width`` features) takes at most :data:`EVAL_SHARE`
    of the rest; pretraining the remainder, at :data:`STEP_OVERHEAD` times the measured step
    (never more than ``config_steps``, never fewer than :data:`MIN_STEPS`). ``train_size``: the
    images pretraining draws from; ``bank_limit`` and ``val_size``: the train and val splits'
    sizes, which bound the bank and queries (4:1)."""
    reserved = {
        "setup and measurement": spent_s,
        "export, push, reload": EXPORT_SECONDS,
        "detection": DETECTION_STEPS * step_s if detection else 0.0,
        "report": REPORT_SECONDS,
        "margin": 0.05 * budget_s,
    }
    left = budget_s - sum(reserved.values())
    image_s = EXTRACTION_OVERHEAD / features_per_s  # one image through one network, data pipeline included
    # Per bank image: two networks through it and a fifth of a query each, and the probes' share.
    probe_s_per_image = PROBE_PASSES * probe_pass_s * (2 * feature_width + pixel_width) / 1e6
    per_image = 2 * 1.2 * image_s + probe_s_per_image
    fit = max(0.0, EVAL_SHARE * left) / per_image
    bank = min(bank_limit, knn_bank or int(min(10_000, max(1_000, fit)) // 100 * 100))
    queries = min(val_size, knn_queries or max(200, min(2_000, bank // 5)))
    reserved["k-NN"] = 2 * (bank + queries) * image_s
    reserved["linear probes"] = bank * probe_s_per_image
    monitor_s = MONITOR_CHECKS * (min(MONITOR_BANK, bank_limit) + min(MONITOR_QUERIES, val_size)) * image_s
    train_s = budget_s - sum(reserved.values()) - monitor_s
    steps = max(MIN_STEPS, min(config_steps, int(train_s / (STEP_OVERHEAD * step_s))))
    steps_per_epoch = train_size // batch_size
    overrides = [f"monitor.knn_bank_size={MONITOR_BANK}", f"monitor.knn_query_size={MONITOR_QUERIES}"]
    if steps < config_steps:
        if steps <= steps_per_epoch:  # one pass over a seeded subset of exactly that many batches
            overrides += [f"data.train_subset={steps * batch_size}", "optim.epochs=1"]
        else:  # whole epochs over the set
            steps = steps // steps_per_epoch * steps_per_epoch
            overrides += [f"optim.epochs={steps // steps_per_epoch}"]
    every = max(1, steps // MONITOR_CHECKS)
    overrides += [f"monitor.knn_every_steps={every}", f"run.checkpoint_every_steps={every}"]
    reserved["pretraining"] = steps * STEP_OVERHEAD * step_s + monitor_s
    return Plan(
        budget_s=budget_s,
        step_s=step_s,
        features_per_s=features_per_s,
        steps=steps,
        overrides=overrides,
        knn_bank=bank,
        knn_queries=queries,
        reserved_s=reserved,
        probe_pass_s=probe_pass_s,
    )


def make_plan(cfg: PretrainConfig, opts: DemoOptions, start: float, detection: bool) -> Plan:
    """Measure this machine and plan the demo begun at ``start`` (``time.perf_counter``) to fit
    ``opts.minutes``."""
    step_s, features_per_s, probe_pass_s = measure_rates(cfg)
    train_size = len(pretrain_views(cfg))
    pixel_width = 28 * 28 if cfg.data.dataset == "fashion_mnist" else cfg.data.image_size**2  # knn.pixel_features
    return plan_budget(
        opts.minutes * 60,
        time.perf_counter() - start,
        step_s,
        features_per_s,
        probe_pass_s,
        detection=detection,
        train_size=train_size,
        bank_limit=len(build_dataset(cfg.data, "train")),
        val_size=len(build_dataset(cfg.data, "val")),
        batch_size=cfg.optim.batch_size,
        config_steps=cfg.optim.epochs * (train_size // cfg.optim.batch_size),
        feature_width=feature_dim(cfg.model.arch),
        pixel_width=pixel_width,
        knn_bank=opts.knn_bank,
        knn_queries=opts.knn_queries,
    )


def load_or_make_plan(
    cfg: PretrainConfig, opts: DemoOptions, out: Path, start: float, detection: bool
) -> tuple[Plan, bool]:
    """The plan of an earlier demo in ``out`` when its pretraining is there (so that it resumes or
    is reused as it was), else a new one; ``(plan, reused)``."""
    path = out / PLAN_FILE
    if path.is_file() and list_checkpoints(out / "pretrain"):
        return Plan(**json.loads(path.read_text())), True
    plan = make_plan(cfg, opts, start, detection)
    atomic_write_text(json.dumps(dataclasses.asdict(plan), indent=2) + "\n", path)
    return plan, False


# --- the stages ----------------------------------------------------------------------------------


def evaluate_against_baselines(
    cfg: PretrainConfig, backbone: torch.nn.Module, *, bank: int, queries: int
) -> tuple[dict, dict]:
    """``(k-NN, linear probe)`` of the trained backbone, of the same network at its random
    initialisation (the run's seed) and of raw pixels (k-NN also of standardised pixels), all on
    the same images: each network's features are extracted once and serve both."""
    data_cfg = dataclasses.replace(cfg.data, train_subset=bank)
    m = cfg.model
    initial = initial_backbone(
        m.arch, small_stem=m.small_stem, dim=m.dim, pred_dim=m.pred_dim, proj_layers=m.proj_layers, seed=cfg.run.seed
    )
    features = baseline_features(
        backbone,
        initial,
        data_cfg,
        val_subset=queries,
        amp_dtype=resolve_amp(cfg.monitor.amp, torch.device("cpu")),
        channels_last=cfg.run.channels_last,
    )
    knn = knn_of_baselines(features, k=min(cfg.monitor.knn_k, bank), temperature=cfg.monitor.knn_temperature)
    probes = {
        name: linear_probe(*bank_xy, *query_xy, seed=cfg.run.seed) for name, (bank_xy, query_xy) in features.items()
    }
    return knn, probes


def run_detection(model_dir: Path, out: Path) -> dict:
    """Convert to a Detectron2 C4 pickle and fine-tune the smoke config on generated VOC data."""
    pkl = convert_source(model_dir, out / "model_detectron2.pkl")
    digest = hashlib.sha256(pkl.read_bytes()).hexdigest()
    done = out / "finetune" / "backbone.sha256"
    data_root = out / "datasets"
    if not (data_root / "VOC2007").is_dir():
        make_voc(data_root / "VOC2007", {"trainval": 8, "test": 4}, seed=0)
    command = [
        sys.executable,
        "-m",
        "simsiam_hub.transfer.train_net",
        "--config-file",
        str(configs_dir() / "detection" / "voc07_R_50_C4_smoke.yaml"),
        "MODEL.WEIGHTS",
        str(pkl),
        "OUTPUT_DIR",
        str(out / "finetune"),
    ]
    env = {**os.environ, "DETECTRON2_DATASETS": str(data_root)}
    log_path = out / "finetune.log"
    reused = done.is_file() and done.read_text() == digest
    if reused:
        print("  reusing the fine-tune of an earlier demo (same backbone)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
        if proc.returncode != 0:
            tail = log_path.read_text().splitlines()[-15:]
            raise SimsiamHubError("the Detectron2 fine-tune failed; the end of its log:\n" + "\n".join(tail))
        atomic_write_text(digest, done)
    found = sorted((out / "finetune").rglob("*results.json"))
    metrics = {r.metric: r.value for f in found for r in read_results(f)}
    return {
        "pickle": str(pkl),
        "metrics": metrics,
        "log": str(log_path),
        "command": " ".join(command),
        "reused": reused,
    }


def reload_check(cfg: PretrainConfig, backbone: torch.nn.Module, target: str) -> tuple[str, float]:
    """Load the pushed model back (through torch.hub for the hub's architecture) and compare its
    features with the trained backbone's on 16 images; ``(how, max abs difference)``."""
    if cfg.model.arch == "resnet50" and not cfg.model.small_stem:
        where = hubconf_dir()
        loaded = torch.hub.load(str(where), "simsiam_resnet50", source="local", pretrained=True, repo_id=target)
        how = f"torch.hub.load({str(where)!r}, 'simsiam_resnet50', source='local', pretrained=True, repo_id={target!r})"
    else:
        loaded = from_pretrained(target)
        how = f"simsiam_hub.from_pretrained({target!r})"
    backbone.to(memory_format=torch.contiguous_format)  # as loaded; k-NN may have made it channels_last
    view = eval_transform(cfg.data.image_size, dataset=cfg.data.dataset)
    probe = next(iter(DataLoader(build_dataset(cfg.data, "val", view), batch_size=16)))[0]
    with torch.no_grad():
        return how, (loaded(probe) - backbone(probe)).abs().max().item()


def run_demo(opts: DemoOptions) -> Path:
    """Run every stage, holding OUT's lock (one demo per folder); returns the report's path
    (``OUT/report.md``)."""
    with folder_lock(Path(opts.out).resolve(), "--out"):
        return _run_demo(opts)


def _run_demo(opts: DemoOptions) -> Path:
    start = time.perf_counter()
    out = Path(opts.out).resolve()  # absolute: the hub target must read as a path
    timings: dict[str, float] = {}
    overrides = [*_data_overrides(opts.data), *opts.overrides, f"run.output_dir={out / 'pretrain'}"]
    cfg = load_config(PretrainConfig, opts.config, overrides)
    skip_detection = detection_available(cfg, opts)

    _stage("0/5 measuring this machine and planning the budget", timings)
    print(f"  {machine_description()}")
    plan, reused_plan = load_or_make_plan(cfg, opts, out, start, skip_detection is None)
    cfg = load_config(PretrainConfig, opts.config, [*plan.overrides, *overrides])  # what the user set wins
    print(
        f"  {'reusing the plan of an earlier demo: ' if reused_plan else ''}{plan.step_s:.2f} s per training step, "
        f"{plan.features_per_s:.0f} images/s through the backbone{_probe_rate(plan)}: {plan.steps} steps of batch "
        f"{cfg.optim.batch_size} and a k-NN bank of {plan.knn_bank} / {plan.knn_queries} queries fit {opts.minutes:g} minutes"
    )

    _stage("1/5 pretraining SimSiam", timings)
    result = pretrain(cfg)
    backbone = build_backbone(cfg.model.arch, small_stem=cfg.model.small_stem)
    backbone.load_state_dict(load_backbone_state_dict(result.checkpoint, arch=None))
    backbone.eval()

    _stage("2/5 k-NN and linear probe: SimSiam vs random init vs raw pixels", timings)
    knn, probes = evaluate_against_baselines(cfg, backbone, bank=plan.knn_bank, queries=plan.knn_queries)
    for name, acc in knn.items():
        probe = f"  linear probe top-1 {probes[name].top1:.2f}%" if name in probes else ""
        print(f"  {name:25s} k-NN top-1 {acc['top1']:.2f}%  top-5 {acc['top5']:.2f}%{probe}")
    dataset = cfg.data.dataset
    recipe = {
        "k": min(cfg.monitor.knn_k, plan.knn_bank),
        "temperature": cfg.monitor.knn_temperature,
        "bank_size": plan.knn_bank,
        "query_size": plan.knn_queries,
        "image_size": cfg.data.image_size,
        "pretrain_steps": result.step,
        "precision": precisions(cfg)["evaluation"],
    }
    split = dataset_info(dataset).eval_split
    probe = probes["simsiam"]
    results_file = write_results(
        [
            EvalResult("knn", m, knn["simsiam"][m], dataset, split=split, source=str(result.checkpoint), recipe=recipe)
            for m in ("top1", "top5")
        ]
        + [
            EvalResult(
                "linear",
                m,
                getattr(probe, m),
                dataset,
                split=split,
                source=str(result.checkpoint),
                recipe=dict(probe.recipe(), precision=recipe["precision"]),
            )
            for m in ("top1", "top5")
        ],
        out / "results_demo.json",
    )

    _stage("3/5 export and push", timings)
    model_dir = export(result.checkpoint, out / "model", results=[results_file], dataset=dataset)
    target = opts.repo_id or str(((opts.hub or out / "hub") / DEMO_REPO_NAME).resolve())
    pushed = push_to_hub(model_dir, target, results=[results_file])
    print(f"  pushed to {target}" + ("" if pushed == target else f": commit {pushed}"))

    _stage("4/5 reload through torch.hub", timings)
    how, max_diff = reload_check(cfg, backbone, target)
    print(f"  {how}\n  max |features(reloaded) - features(trained)| = {max_diff:.3g} on 16 images")
    if max_diff != 0:
        raise SimsiamHubError(f"the reloaded model's features differ from the trained one's by up to {max_diff:.3g}")

    _stage("5/5 Detectron2 C4 transfer", timings)
    if skip_detection:
        detection = {"skipped": skip_detection}
    else:
        detection = run_detection(model_dir, out / "detection")
        print(f"  fine-tuned: {detection['metrics']}")
    timings["end"] = time.perf_counter()

    png = plot_runs(
        {"SimSiam": out / "pretrain"},
        out / "training.png",
        dim=cfg.model.dim,
        chance=_chance(dataset),
        batch=cfg.optim.batch_size,
        title=f"simsiam-hub demo: {cfg.model.arch} on {dataset}",
    )
    names = list(timings)
    durations = {
        "setup": timings[names[0]] - start,
        **{n: timings[names[i + 1]] - timings[n] for i, n in enumerate(names[:-1])},
    }
    outcome = Outcome(
        out=out,
        cfg=cfg,
        opts=opts,
        plan=plan,
        reused_plan=reused_plan,
        result=result,
        knn=knn,
        probes=probes,
        target=target,
        pushed=pushed,
        how=how,
        max_diff=max_diff,
        detection=detection,
        durations=durations,
        total=timings["end"] - start,
        png=png,
    )
    report = _write_report(outcome)
    print(f"\nreport: {report}\nplots:  {png}")
    return report


def precisions(cfg: PretrainConfig) -> dict[str, str]:
    """The precision the demo trains in (``run.amp`` on this machine) and evaluates in (``monitor.amp``)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "training": precision_name(resolve_amp(cfg.run.amp, device)),
        "evaluation": precision_name(resolve_amp(cfg.monitor.amp, device)),
    }


def _chance(dataset: str) -> float | None:
    n = dataset_info(dataset).num_classes
    return 100.0 / n if n else None


@dataclass
class Outcome:
    """What every stage of one demo gave: the report's material."""

    out: Path
    cfg: PretrainConfig
    opts: DemoOptions
    plan: Plan
    reused_plan: bool
    result: object  # engine.PretrainResult
    knn: dict
    probes: dict
    target: str
    pushed: str
    how: str
    max_diff: float
    detection: dict
    durations: dict
    total: float
    png: Path

    @property
    def images_seen(self) -> int:
        return self.result.step * self.cfg.optim.batch_size


def _budget_section(o: Outcome) -> str:
    plan = o.plan
    stage_rows = "\n".join(f"| {name} | {seconds:.0f} |" for name, seconds in o.durations.items())
    planned = ", ".join(f"{k} {v:.0f} s" for k, v in plan.reserved_s.items())
    return f"""Machine: {machine_description()}.
Budget {o.opts.minutes:g} min; total {o.total / 60:.1f} min{" (over budget: see the stages)" if o.total > plan.budget_s else ""}.
The plan{" (reused from an earlier demo in this folder)" if o.reused_plan else ""}: a training step measured at
{plan.step_s:.2f} s, feature extraction at {plan.features_per_s:.0f} images/s{_probe_rate(plan)} here gave {plan.steps} pretraining
steps and a bank of {plan.knn_bank} images with {plan.knn_queries} queries (estimates: {planned}).

| stage | seconds |
|---|---|
{stage_rows}"""


def _pretraining_section(o: Outcome) -> str:
    cfg, run = o.cfg, summarize_run(o.out / "pretrain")
    share = (
        ""
        if run.get("z_top_share") is None
        else (
            f"; {run['z_top_share']:.2f} of it lies on one line (near 1 for a collapsed output, whose std the output "
            "BatchNorm keeps off 0)"
        )
    )
    return f"""## 1. Pretraining

Config `{o.opts.config}` ({cfg.model.arch}, {cfg.data.dataset} at {cfg.data.image_size} px, batch {cfg.optim.batch_size},
{_precision_phrase(cfg)}): {o.result.step} steps, {o.images_seen:,} image pairs seen. Final loss {run["loss"]:.4f}; std of the l2-normalised z
{run["z_std"]:.4f}, that is {run["z_std"] * math.sqrt(cfg.model.dim):.2f} x 1/sqrt({cfg.model.dim}) (1 is healthy){share}.
Checkpoint: `{o.result.checkpoint}`.

![loss, collapse std, k-NN accuracy and the share of z on one line over training]({o.png.name})"""


def _precision_phrase(cfg: PretrainConfig) -> str:
    p = precisions(cfg)
    training = "fp32" if p["training"] == "fp32" else f"{p['training']} autocast"
    return (
        f"trained in {training} (run.amp={cfg.run.amp}), evaluated in {p['evaluation']} (monitor.amp={cfg.monitor.amp})"
    )


def _evaluation_section(o: Outcome) -> str:
    cfg, plan, knn, probes = o.cfg, o.plan, o.knn, o.probes
    ours = knn["simsiam"]["top1"]
    others = (
        ("random init", "random_init"),
        ("raw pixels", "raw_pixels"),
        ("standardised pixels", "raw_pixels_standardised"),
    )
    # A difference counts when it exceeds about two standard errors of the difference of two accuracies.
    margin = 100 * 1.96 * math.sqrt(2 * 0.25 / plan.knn_queries)
    beats = [name for name, key in others if ours - knn[key]["top1"] > margin]
    verdict = (f"SimSiam's k-NN beats {', '.join(beats)}" if beats else "SimSiam's k-NN does not beat any baseline") + (
        f" by more than the {margin:.1f}-point sampling margin of {plan.knn_queries} queries, after {o.result.step} steps "
        f"({o.images_seen:,} image pairs)."
    )
    labels = (
        ("simsiam", "SimSiam (this run)"),
        ("random_init", f"same {cfg.model.arch}, random init"),
        ("raw_pixels", "raw pixels"),
        ("raw_pixels_standardised", "standardised raw pixels"),
    )
    rows = "\n".join(
        f"| {label} | {knn[key]['top1']:.2f} | {knn[key]['top5']:.2f} | {f'{probes[key].top1:.2f}' if key in probes else '(the probe standardises)'} |"
        for key, label in labels
    )
    probe = probes["simsiam"]
    return f"""## 2. k-NN and the linear probe

Bank: {plan.knn_bank} training images; queries: {plan.knn_queries} held-out images (seeded subsets), the
same for every row; every network's features in {precisions(cfg)["evaluation"]}. k-NN: k={min(cfg.monitor.knn_k, plan.knn_bank)}, T={cfg.monitor.knn_temperature}, on l2-normalised features. Linear
probe: {PROTOCOL_DESCRIPTION} (`simsiam-hub lincls --protocol logreg`), fitted on the bank and
scored on the queries; the trained network's probe chose weight decay {probe.weight_decay:g} and
{"converged" if probe.converged else "did NOT converge"} (training loss {probe.train_loss:.3f}).

| features | k-NN top-1 (%) | k-NN top-5 (%) | linear probe top-1 (%) |
|---|---|---|---|
{rows}

{verdict} A few CPU minutes are far too few for SimSiam to overtake the pixel baselines;
docs/fashion_mnist_results.md has longer runs, and the figures these baselines reach on the full
60,000 / 10,000 images."""


def _publishing_sections(o: Outcome) -> str:
    if "skipped" in o.detection:
        detection = f"Skipped: {o.detection['skipped']}."
    else:
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in sorted(o.detection["metrics"].items())) or "no metrics found"
        detection = (
            f"Converted to `{o.detection['pickle']}` and fine-tuned Faster R-CNN R50-C4 for the smoke schedule on a "
            f"generated VOC-format set (not a benchmark: it checks the wiring). Test metrics: {metrics}.\n\n"
            f"```\n{o.detection['command']}\n```"
        )
    model = o.out / "model"
    return f"""## 3. Export and push

Model folder `{model}` (model.safetensors, config.json, README.md model card with the k-NN and probe
results) pushed to `{o.target}`{"" if o.pushed == o.target else f" (commit `{o.pushed}`)"}.

## 4. Reload

`{o.how}` gives features equal to the trained backbone's: max abs difference {o.max_diff:.3g}.

## 5. Detection transfer

{detection}

## Go further

```
simsiam-hub demo --minutes 30                                           # a longer pretraining
simsiam-hub pretrain --config fashion_mnist_resnet18_hour                # ResNet-18 at 48 px, 5 epochs
simsiam-hub knn {model} --baselines
simsiam-hub lincls {model} --config fashion_mnist_cpu
simsiam-hub push {model} --repo-id YOUR_NAME/{DEMO_REPO_NAME}
simsiam-hub ablate-stopgrad --config fashion_mnist_resnet18_cpu
simsiam-hub-detection --num-gpus 8 --config-file voc0712_R_50_C4_24k MODEL.WEIGHTS {o.target}
```"""


def _write_report(o: Outcome) -> Path:
    """``OUT/report.md`` (every figure, the commands to go further) and ``OUT/report.json``."""
    sections = [_budget_section(o), _pretraining_section(o), _evaluation_section(o), _publishing_sections(o)]
    text = "# simsiam-hub demo report\n\n" + "\n\n".join(sections) + "\n"
    probes = {k: {"top1": v.top1, "top5": v.top5, **v.recipe(), "seconds": v.seconds} for k, v in o.probes.items()}
    json_summary = {
        "machine": machine_description(),
        "precision": precisions(o.cfg),
        "budget_s": o.plan.budget_s,
        "plan": dataclasses.asdict(o.plan),
        "plan_reused": o.reused_plan,
        "knn": o.knn,
        "linear_probe": probes,
        "steps": o.result.step,
        "images_seen": o.images_seen,
        "pushed": o.pushed,
        "reload_max_diff": o.max_diff,
        "detection": o.detection,
        "seconds": {n: round(d, 1) for n, d in o.durations.items()},
        "total_seconds": round(o.total, 1),
    }
    atomic_write_text(json.dumps(json_summary, indent=2) + "\n", o.out / "report.json")
    return atomic_write_text(text, o.out / "report.md")
