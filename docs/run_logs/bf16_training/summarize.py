"""summary.md of the bf16-vs-fp32 training record: `python summarize.py FOLDER BATCH > FOLDER/summary.md`.

Reads FOLDER's train_log_<amp>_seed<S>.csv, results_knn_<amp>_seed<S>.json, pretrain_<amp>_seed<S>.txt
(wall_seconds) and cpu.txt, all written by run.sh.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

LABEL = {"off": "fp32", "bf16": "bf16"}


def runs(folder: Path) -> list[dict]:
    out = []
    for log in sorted(folder.glob("train_log_*_seed*.csv")):
        amp, seed = re.match(r"train_log_(\w+?)_seed(\d+)\.csv", log.name).groups()
        rows = list(csv.DictReader(log.open()))
        results = json.loads((folder / f"results_knn_{amp}_seed{seed}.json").read_text())["results"]
        knn = {r["metric"]: r for r in results if r["task"] == "knn"}
        text = (folder / f"pretrain_{amp}_seed{seed}.txt").read_text()
        wall = re.search(r"wall_seconds (\d+)", text)
        seconds = [float(r["images_per_s"]) for r in rows[1:]]  # step 1 pays for oneDNN's first plans
        out.append(
            {
                "amp": LABEL[amp],
                "seed": int(seed),
                "losses": [float(r["loss"]) for r in rows],
                "images_per_s": statistics.median(seconds) if seconds else float("nan"),
                "top1": knn["top1"]["value"],
                "top5": knn["top5"]["value"],
                "precision": knn["top1"]["recipe"].get("precision", "?"),
                "queries": knn["top1"]["recipe"].get("query_size"),
                "bank": knn["top1"]["recipe"].get("bank_size"),
                "wall": int(wall.group(1)) if wall else None,
            }
        )
    return sorted(out, key=lambda r: (r["seed"], r["amp"] != "fp32"))


def main(folder: str) -> int:
    folder = Path(folder)
    rs = runs(folder)
    cpu = (folder / "cpu.txt").read_text().strip().splitlines()
    print("# bf16 vs fp32 SimSiam training, evaluated in fp32\n")
    print(f"Machine: {cpu[0]}; {cpu[1] if len(cpu) > 1 else ''} (bf16 emulated by oneDNN, same rounding as native).")
    print("Commands: `run.sh` in this folder; every figure below is read from this folder's files by `summarize.py`.\n")
    n = rs[0]["queries"]
    print(
        f"k-NN (k=200, T=0.1) of each final checkpoint, fp32 features (`precision` in the results files: "
        f"{', '.join(sorted({r['precision'] for r in rs}))}), the same {rs[0]['bank']} bank images and {n} queries for "
        "every run.\n"
    )
    print(
        "| run | precision | seed | steps | loss at step 1 | loss at the end | mean loss, last 3 steps "
        "| images/s (median, steps 2-) | s/step | wall s | k-NN top-1 (%) | k-NN top-5 (%) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rs:
        print(
            f"| {r['amp']}_seed{r['seed']} | {r['amp']} | {r['seed']} | {len(r['losses'])} | {r['losses'][0]:.4f} "
            f"| {r['losses'][-1]:.4f} | {statistics.mean(r['losses'][-3:]):.4f} | {r['images_per_s']:.2f} "
            f"| {BATCH / r['images_per_s']:.1f} | {r['wall']} | {r['top1']:.2f} | {r['top5']:.2f} |"
        )
    print(
        "\nSeconds per step are each run's own, on 2 cores shared with other jobs whose load changed "
        "between runs (load average about 9 during the first run, 5-7 during the later ones): they do not compare "
        "the precisions; bench/precision.py does, interleaved in one process."
    )
    print("\n| precision | runs | mean k-NN top-1 (%) | mean final loss |")
    print("|---|---|---|---|")
    for p in ("fp32", "bf16"):
        sub = [r for r in rs if r["amp"] == p]
        if sub:
            print(
                f"| {p} | {len(sub)} | {statistics.mean(r['top1'] for r in sub):.2f} "
                f"| {statistics.mean(r['losses'][-1] for r in sub):.4f} |"
            )
    print("\nPaired by seed (the same initial weights and augmentation draws), bf16 minus fp32:\n")
    print("| seed | k-NN top-1 difference (points) | final loss difference | largest per-step loss difference |")
    print("|---|---|---|---|")
    for seed in sorted({r["seed"] for r in rs}):
        pair = {r["amp"]: r for r in rs if r["seed"] == seed}
        if len(pair) == 2:
            a, b = pair["fp32"], pair["bf16"]
            step = max(abs(x - y) for x, y in zip(a["losses"], b["losses"]))
            print(f"| {seed} | {b['top1'] - a['top1']:+.2f} | {b['losses'][-1] - a['losses'][-1]:+.4f} | {step:.4f} |")
    fp32 = [r["top1"] for r in rs if r["amp"] == "fp32"]
    if len(fp32) >= 2:
        print(f"\nSeed-to-seed spread of fp32 k-NN top-1: {max(fp32) - min(fp32):.2f} points.")
    p = statistics.mean(r["top1"] for r in rs) / 100
    print(
        f"Sampling standard deviation of a top-1 near {100 * p:.1f}% on {n} queries: "
        f"{100 * math.sqrt(p * (1 - p) / n):.2f} points.\n"
    )
    print("Loss at every step:\n")
    print("| step | " + " | ".join(f"{r['amp']}_seed{r['seed']}" for r in rs) + " |")
    print("|---" * (len(rs) + 1) + "|")
    for i in range(max(len(r["losses"]) for r in rs)):
        cells = [f"{r['losses'][i]:.4f}" if i < len(r["losses"]) else "" for r in rs]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The bf16-vs-fp32 training record's summary.md, from its folder.")
    parser.add_argument("folder", help="this record's folder (run.sh's output)")
    parser.add_argument("batch", nargs="?", type=int, default=16, help="the runs' batch size")
    args = parser.parse_args()
    BATCH = args.batch
    sys.exit(main(args.folder))
