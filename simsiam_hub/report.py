"""Plots of training runs (loss, collapse std, k-NN accuracy) from their CSV logs, and the
machine a figure was measured on."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

from .fileio import atomic_path
from .monitor import read_csv, two_point_ratio


def run_curves(run_dir: str | Path) -> dict[str, list]:
    """The curves a run logged: per-step loss and z std, and k-NN top-1 where measured."""
    run_dir = Path(run_dir)
    steps = read_csv(run_dir / "train_log.csv")
    epochs = read_csv(run_dir / "epoch_log.csv") if (run_dir / "epoch_log.csv").exists() else []
    knn = [r for r in epochs if r.get("knn_top1") is not None]
    return {
        "epoch": [r["epoch"] for r in steps],
        "loss": [r["loss"] for r in steps],
        "z_std": [r["z_std"] for r in steps],
        "z_top_share": [r.get("z_top_share") for r in steps],  # None in logs from before it was logged
        "knn_epoch": [r["epoch"] for r in knn],
        "knn_top1": [r["knn_top1"] for r in knn],
    }


def plot_runs(
    runs: dict[str, str | Path],
    out_png: str | Path,
    *,
    dim: int,
    title: str = "",
    chance: float | None = None,
    batch: int | None = None,
) -> Path:
    """Three panels, one line per run: training loss, std of l2-normalised z, k-NN top-1, and a
    fourth, the share of z on one line, when the runs logged it.

    ``runs`` maps a legend label to a run folder (as written by the engine). The std
    panel marks 1/sqrt(dim), the healthy level, and, given the ``batch`` the output BatchNorm
    normalises over, the level of a collapsed output (:func:`monitor.two_point_ratio`); the k-NN
    panel marks ``chance``.
    """
    from .errors import import_extra

    matplotlib = import_extra("matplotlib", "train", "plotting the training curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {label: run_curves(folder) for label, folder in runs.items()}
    with_share = any(v is not None for c in curves.values() for v in c["z_top_share"])
    fig, axes = plt.subplots(1, 4 if with_share else 3, figsize=(17 if with_share else 13, 3.8))
    for label, c in curves.items():
        axes[0].plot(c["epoch"], c["loss"], label=label)
        axes[1].plot(c["epoch"], c["z_std"], label=label)
        axes[2].plot(c["knn_epoch"], c["knn_top1"], marker="o", label=label)
        if with_share:
            logged = [(e, v) for e, v in zip(c["epoch"], c["z_top_share"]) if v is not None]
            axes[3].plot([e for e, _ in logged], [v for _, v in logged], label=label)
    axes[0].set(title="training loss", xlabel="epoch", ylim=(-1.05, 0.1))
    axes[1].axhline(1 / math.sqrt(dim), color="grey", linestyle="--", linewidth=1, label=f"1/sqrt({dim})")
    if batch:
        floor = two_point_ratio(batch) / math.sqrt(dim)
        axes[1].axhline(
            floor, color="grey", linestyle=":", linewidth=1, label=f"collapsed under BN (1 of {batch} opposite)"
        )
    axes[1].set(title="std of l2-normalised z", xlabel="epoch", ylim=(0, None))
    if chance is not None:
        axes[2].axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    axes[2].set(title="k-NN top-1 (%)", xlabel="epoch")
    if with_share:
        axes[3].set(title="share of l2-normalised z on one line", xlabel="epoch", ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png


def summarize_run(run_dir: str | Path) -> dict[str, float | None]:
    """Last values of a run's curves (loss and z std from the last logged step)."""
    c = run_curves(run_dir)
    return {
        "epoch": c["epoch"][-1] if c["epoch"] else None,
        "loss": c["loss"][-1] if c["loss"] else None,
        "z_std": c["z_std"][-1] if c["z_std"] else None,
        "z_top_share": c["z_top_share"][-1] if c["z_top_share"] else None,
        "knn_top1": c["knn_top1"][-1] if c["knn_top1"] else None,
        "knn_top1_best": max(c["knn_top1"]) if c["knn_top1"] else None,
    }


def machine_description() -> str:
    """The CPU (model name, the vector extensions that decide its speed here), its cores, the
    GPU if any, and torch's version: what every published figure names."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve", "bf16") if f in flags]
    text = f"{model} ({platform.machine()}{', ' + ', '.join(shown) if shown else ''}), {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text + f", torch {torch.__version__}"
