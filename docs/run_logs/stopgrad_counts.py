"""Re-derives, from the logs committed under docs/run_logs/, every figure that
docs/stopgrad_ablation.md states, and checks that the document states them.

    python docs/run_logs/stopgrad_counts.py            # each figure, as the document words it
    python docs/run_logs/stopgrad_counts.py --check    # exit 1 if the document lacks one

Each figure is returned as the exact text the document uses for it (whitespace aside), so a
figure that changes here, or in the document, no longer matches. Nothing beyond the standard
library: the records are CSV and JSON files.

Records read:
- stopgrad_gpu_13ep/sg_{true,false}/: train_log.csv (every 10 steps), epoch_log.csv (each
  epoch end, with the k-NN monitor), knn_full.json (`simsiam-hub knn` on the step-3042
  checkpoint), config.yaml;
- stopgrad_gpu_5ep/{with,without}_stopgrad/: the same logs, with `z_top_share`, and the
  command's own report stopgrad_ablation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "stopgrad_ablation.md"
BATCH = 256  # optim.batch_size of every run here
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k training images
DIM = 2048  # model.dim
LEVEL_WINDOW = 0.006  # "within 0.006 of a level"
LEVEL_FROM_STEP = 1000
WARN_SHARE = 0.95  # monitor.collapse_warn_share's default
TIGHT_SHARE = 0.998  # "nearly all of z on one line"
TIGHT_MAX_K = 8  # levels for k = 1..8 lie at least 0.03 apart, far more than the window


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def knn_full_top1(folder: Path) -> float:
    results = json.loads((folder / "knn_full.json").read_text())["results"]
    return next(r["value"] for r in results if r["metric"] == "top1")


def two_point_ratio(opposite: int, batch: int = BATCH) -> float:
    """std x sqrt(d) of an output taking two opposite values, ``opposite`` of ``batch`` on one side."""
    p = opposite / batch
    return 2 * math.sqrt(p * (1 - p))


def pct(x: float) -> str:
    return f"{x:.0f}%"


def figures(root: Path = HERE) -> dict[str, str]:
    """Every figure of the document, keyed by a short name, as the text that states it."""
    out: dict[str, str] = {}
    levels = [two_point_ratio(k) for k in range(1, 6)]
    out["healthy std"] = f"1/sqrt(d) = {1 / math.sqrt(DIM):.4f}"
    out["floor"] = f"{levels[0]:.3f} x 1/sqrt(d)"
    out["levels"] = ", ".join(f"{x:.3f}" for x in levels[:4]) + f" or {levels[4]:.3f}"

    # --- the 13-epoch GPU runs ---------------------------------------------------------
    g13 = root / "stopgrad_gpu_13ep"
    runs = {"with": g13 / "sg_true", "without": g13 / "sg_false"}
    train = {k: read_csv(v / "train_log.csv") for k, v in runs.items()}
    epochs = {k: read_csv(v / "epoch_log.csv") for k, v in runs.items()}
    last = {k: e[-1] for k, e in epochs.items()}
    assert last["with"]["step"] == last["without"]["step"] and last["with"]["epoch"] == last["without"]["epoch"]
    end, n_epochs = int(last["with"]["step"]), int(last["with"]["epoch"])
    out["13ep steps"] = f"{n_epochs} complete epochs: {end:,} steps"
    out["13ep table header"] = f"| run ({n_epochs} epochs, {end:,} steps) |"
    out["13ep logged to"] = f"to steps {int(train['with'][-1]['step']):,} and {int(train['without'][-1]['step']):,}"
    out["13ep pairs/s"] = (
        f"median {statistics.median(r['images_per_s'] for r in epochs['with']):,.0f} and "
        f"{statistics.median(r['images_per_s'] for r in epochs['without']):,.0f} image pairs/s"
    )
    upto = {k: [r for r in t if r["step"] <= end] for k, t in train.items()}
    wait = [statistics.median(r["data_wait_frac"] for r in upto[k]) for k in runs]
    same = f"{wait[0]:.2f}" == f"{wait[1]:.2f}"
    waits = f"{wait[0]:.2f} of the time in both runs" if same else f"{wait[0]:.2f} and {wait[1]:.2f} of the time"
    out["13ep data wait"] = f"the step waited for data a median {waits}"
    out["imagenet epoch"] = f"one ImageNet epoch at batch 256 is {IMAGENET_TRAIN // BATCH:,}"
    full = {k: knn_full_top1(v) for k, v in runs.items()}
    for k in runs:
        ratios = [r["z_std_ratio"] for r in upto[k]]
        e = epochs[k]
        out[f"13ep row {k}"] = (
            f"| {k} stop-gradient | {last[k]['loss']:.3f} | {last[k]['z_std_ratio']:.3f} / {min(ratios):.3f} "
            f"| {e[0]['knn_top1']:.2f} / {last[k]['knn_top1']:.2f} | {full[k]:.2f} |"
        )
    with_ratios = [r["z_std_ratio"] for r in upto["with"]]
    out["13ep with std range"] = f"{min(with_ratios):.2f}-{max(with_ratios):.2f} of 1/sqrt(d)"
    out["13ep full knn without"] = f"and {full['without']:.2f}% on the full sets"
    out["13ep knn gap"] = f"{full['with'] - full['without']:.1f} points"
    out["13ep loss end"] = f"goes to {last['without']['loss']:.2f}"
    ew = epochs["without"]
    out["13ep loss epoch 2"] = f"{ew[1]['loss']:.2f} after 2 epochs"
    out["13ep std epoch 1"] = f"{ew[0]['z_std_ratio']:.2f} of 1/sqrt(d) by the end of the first epoch"
    after1 = [r["z_std_ratio"] for r in upto["without"] if r["step"] > ew[0]["step"]]
    out["13ep std after epoch 1"] = (
        f"median of {statistics.median(after1):.2f} ({pct(100 * sum(v < 0.30 for v in after1) / len(after1))} of them under 0.30, "
        f"lowest {min(after1):.3f})"
    )
    knn_without = [r["knn_top1"] for r in ew]
    out["13ep knn monitor without"] = f"{min(knn_without):.1f}-{max(knn_without):.1f}%"
    out["13ep knn monitor with"] = f"climbs to {last['with']['knn_top1']:.1f}%"
    late = [r["z_std_ratio"] for r in upto["without"] if r["step"] >= LEVEL_FROM_STEP]
    near = [v for v in late if any(abs(v - lv) <= LEVEL_WINDOW for lv in levels)]
    lo, hi = levels[0] - LEVEL_WINDOW, levels[-1] + LEVEL_WINDOW
    span = [v for v in late if lo <= v <= hi]
    out["levels count"] = (
        f"from step {LEVEL_FROM_STEP:,} to step {end:,}, {len(near)} of the {len(late)} logged values lie within "
        f"{LEVEL_WINDOW} of"
    )
    out["levels span"] = (
        f"of the {len(span)} values between {lo:.3f} and {hi:.3f}, {pct(100 * len(near) / len(span))} lie in those windows, "
        f"which cover {pct(100 * 5 * 2 * LEVEL_WINDOW / (hi - lo))} of that span"
    )
    out["levels lowest"] = f"none is below {math.floor(min(late) * 1000) / 1000:.3f}"

    # --- the 5-epoch run of `simsiam-hub ablate-stopgrad` -----------------------------
    g5 = root / "stopgrad_gpu_5ep"
    runs5 = {"with": g5 / "with_stopgrad", "without": g5 / "without_stopgrad"}
    train5 = {k: read_csv(v / "train_log.csv") for k, v in runs5.items()}
    epochs5 = {k: read_csv(v / "epoch_log.csv") for k, v in runs5.items()}
    for k in runs5:
        t, e = train5[k][-1], epochs5[k]
        out[f"5ep row {k}"] = (
            f"| {k} stop-gradient | {t['epoch']:.2f} | {t['loss']:.4f} | {t['z_std']:.5f} | {t['z_std_ratio']:.3f} | "
            f"{t['z_top_share']:.3f} | {e[-1]['knn_top1']:.2f} | {max(r['knn_top1'] for r in e):.2f} | {knn_full_top1(runs5[k]):.2f} |"
        )
    w = train5["without"]
    first = next(r for r in w if r["z_top_share"] > 0.98)
    epoch2 = epochs5["without"][0]["step"] * 2
    shares = [r["z_top_share"] for r in w if r["step"] >= epoch2]
    out["5ep share without"] = (
        f"passes 0.98 at step {int(first['step'])}, within the first epoch, and stays at {min(shares):.3f}-{max(shares):.4f} "
        f"from step {int(epoch2)} on (mean {statistics.mean(shares):.3f})"
    )
    out["5ep share without percent"] = f"{100 * min(shares):.1f}-{100 * max(shares):.2f}% of the l2-normalised output"
    sw = [r["z_top_share"] for r in train5["with"]]
    out["5ep share with"] = f"{min(sw):.2f}-{max(sw):.2f} ({train5['with'][-1]['z_top_share']:.2f} at the end)"
    warned = {k: sum(r["z_top_share"] > WARN_SHARE for r in epochs5[k]) for k in runs5}
    out["5ep warnings"] = (
        f"above {WARN_SHARE} at {warned['without']} of {len(epochs5['without'])} epoch ends without the stop-gradient "
        f"and at {warned['with']} of {len(epochs5['with'])} with it"
    )
    out["5ep pairs/s"] = (
        f"median {statistics.median(r['images_per_s'] for r in epochs5['with']):,.0f} and "
        f"{statistics.median(r['images_per_s'] for r in epochs5['without']):,.0f} image pairs/s"
    )
    out["5ep epoch seconds"] = (
        f"{sum(r['seconds'] for r in epochs5['with']):.0f} s and {sum(r['seconds'] for r in epochs5['without']):.0f} s of epochs"
    )
    out["5ep full knn"] = f"({knn_full_top1(runs5['with']):.1f} vs {knn_full_top1(runs5['without']):.1f}%)"

    # The two-valued output: where (nearly) all of z is on one line, the std is at a level.
    tight = [r for r in w if r["z_top_share"] >= TIGHT_SHARE]
    all_levels = [two_point_ratio(k) for k in range(1, TIGHT_MAX_K + 1)]
    at_level = [r for r in tight if any(abs(r["z_std_ratio"] - lv) <= LEVEL_WINDOW for lv in all_levels)]
    out["5ep two-valued"] = (
        f"at each of the {len(tight)} logged steps where the share is {TIGHT_SHARE} or more, std x sqrt(d) lies within "
        f"{LEVEL_WINDOW} of 2 sqrt(p(1-p)) for k = 1 to {TIGHT_MAX_K}"
        if len(at_level) == len(tight)
        else f"at {len(at_level)} of the {len(tight)} logged steps where the share is {TIGHT_SHARE} or more"
    )
    ks = sorted(
        {min(range(1, TIGHT_MAX_K + 1), key=lambda k: abs(r["z_std_ratio"] - two_point_ratio(k))) for r in tight}
    )
    out["5ep two-valued ks"] = f"k = {', '.join(map(str, ks[:-1]))} and {ks[-1]}"
    return out


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def missing(doc: Path = DOC, root: Path = HERE) -> dict[str, str]:
    """The figures the document does not state as derived here."""
    text = normalised(doc.read_text())
    return {name: snippet for name, snippet in figures(root).items() if normalised(snippet) not in text}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the document does not state a figure as derived"
    )
    args = parser.parse_args(argv)
    for name, snippet in figures().items():
        print(f"{name:28s} {snippet}")
    if args.check:
        absent = missing()
        for name, snippet in absent.items():
            print(f"NOT IN {DOC.name}: {name}: {snippet}", file=sys.stderr)
        return 1 if absent else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
