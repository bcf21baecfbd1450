#!/usr/bin/env python
"""The detection transfer table: AP50, AP and AP75 as mean ± std over trials, beside the paper's row.

Reads the ``detection_results.json`` files that ``transfer/train_net.py`` writes (one per trial;
the ``simsiam_hub.hub.results`` format), groups the trials of one experiment (same weights, task,
benchmark and recipe; only the seed differs), and prints a Markdown table with the columns of
SimSiam's Table 5 (VOC 07, VOC 07+12, COCO box, COCO mask) and the paper's "SimSiam, base" row
above ours. Table 5 has two SimSiam rows, both from 200-epoch ImageNet pretraining: "base", the
baseline recipe (lr 0.05, wd 1e-4: configs/pretrain/imagenet_resnet50_200ep.yaml), and
"optimal", another recipe (lr 0.5, wd 1e-5) that transferred better (VOC 07 77.3/48.5/52.5).
The comparison is with "base", the recipe this project's config reproduces. ``--json`` writes
the aggregate in the same results format, with ``std`` and ``num_trials``, which ``simsiam-hub
export`` puts into the model card.

    python transfer/summarize.py runs/voc0712 runs/coco_1x --json runs/detection_summary.json

No detectron2 import: it runs anywhere simsiam-hub is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from simsiam_hub.errors import UsageError, exit_process, run_command
from simsiam_hub.hub.results import EvalResult, read_results, write_results

RESULTS_FILE = "detection_results.json"  # what train_net.py writes per trial
METRICS = ("AP50", "AP", "AP75")
# The columns of SimSiam's Table 5: (task, dataset) -> header.
COLUMNS = {
    ("detection", "voc07"): "VOC 07",
    ("detection", "voc0712"): "VOC 07+12",
    ("detection", "coco2017"): "COCO box",
    ("instance-segmentation", "coco2017"): "COCO mask",
}
# Chen & He, CVPR 2021, Table 5, row "SimSiam, base" (200-epoch ImageNet pretraining with the
# baseline recipe: lr 0.05, wd 1e-4), AP50/AP/AP75. Not the "SimSiam, optimal" row (lr 0.5, wd 1e-5).
PAPER_ROW = {
    ("detection", "voc07"): (75.5, 47.0, 50.2),
    ("detection", "voc0712"): (82.0, 56.4, 62.8),
    ("detection", "coco2017"): (57.5, 37.9, 40.9),
    ("instance-segmentation", "coco2017"): (54.2, 33.2, 35.2),
}
PAPER_LABEL = "SimSiam, paper (Table 5 'SimSiam, base': 200 ep, lr 0.05, wd 1e-4)"
_PER_TRIAL = ("seed", "trial")  # recipe entries that differ between trials of one experiment


class SummaryError(UsageError):
    """No per-trial results where they were expected, or trials that do not belong together."""


def find_results(paths) -> list[Path]:
    """Results files: the files given, and every ``detection_results.json`` under the folders given."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(p.rglob(RESULTS_FILE)))
        elif p.is_file():
            found.append(p)
        else:
            raise SummaryError(f"{p} not found: expected a run folder or a {RESULTS_FILE}")
    if not found:
        raise SummaryError(f"no {RESULTS_FILE} under {', '.join(map(str, paths))}: run transfer/train_net.py first")
    return found


def _group_key(r: EvalResult) -> tuple:
    recipe = {k: v for k, v in r.recipe.items() if k not in _PER_TRIAL}
    return (r.source, r.task, r.dataset, r.split, r.metric, json.dumps(recipe, sort_keys=True))


def aggregate(results: list[EvalResult]) -> list[EvalResult]:
    """One entry per experiment and metric: the mean over its trials, ``std`` the sample standard
    deviation (None for one trial), ``num_trials``; the recipe lists the seeds."""
    groups: dict[tuple, list[EvalResult]] = {}
    for r in results:
        if r.task in ("detection", "instance-segmentation"):
            groups.setdefault(_group_key(r), []).append(r)
    out = []
    for trials in groups.values():
        values = [t.value for t in trials]
        first = trials[0]
        recipe = {k: v for k, v in first.recipe.items() if k not in _PER_TRIAL}
        recipe["seeds"] = [t.recipe.get("seed") for t in trials]
        out.append(
            EvalResult(
                task=first.task,
                metric=first.metric,
                value=round(statistics.fmean(values), 3),
                dataset=first.dataset,
                split=first.split,
                std=round(statistics.stdev(values), 3) if len(values) > 1 else None,
                num_trials=len(values),
                source=first.source,
                source_revision=first.source_revision,
                recipe=recipe,
            )
        )
    return out


def _cell(r: EvalResult | None) -> str:
    if r is None:
        return "–"
    if math.isnan(r.value):
        return "nan"
    return f"{r.value:.1f}" if r.std is None else f"{r.value:.1f}±{r.std:.1f}"


def markdown(summary: list[EvalResult]) -> str:
    """Table 5's columns with the paper's row and one row per weights source; results on other
    datasets (your own) in a second table."""
    by = {}
    for r in summary:
        key = (r.source, r.task, r.dataset, r.metric)
        if key in by:
            raise SummaryError(
                f"two experiments with weights {r.source!r} on {r.dataset} {r.task} (recipes {by[key].recipe} and "
                f"{r.recipe}): summarise their run folders separately"
            )
        by[key] = r
    sources = list(dict.fromkeys(r.source for r in summary))
    header = ["weights"] + [f"{name} {m}" for name in COLUMNS.values() for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| " + " | ".join([PAPER_LABEL] + [f"{v:.1f}" for key in COLUMNS for v in PAPER_ROW[key]]) + " |")
    for source in sources:
        row = [by.get((source, task, dataset, m)) for task, dataset in COLUMNS for m in METRICS]
        if not any(row):
            continue
        trials = "/".join(str(n) for n in sorted({r.num_trials for r in row if r}))
        lines.append("| " + " | ".join([f"{source} ({trials} trials)"] + [_cell(r) for r in row]) + " |")
    other = list(dict.fromkeys((r.source, r.task, r.dataset) for r in summary if (r.task, r.dataset) not in COLUMNS))
    if other:
        lines += ["", "| weights | dataset | task | AP50 | AP | AP75 | trials |", "|---|---|---|---|---|---|---|"]
        for source, task, dataset in other:
            row = [by.get((source, task, dataset, m)) for m in METRICS]
            n = next(r.num_trials for r in row if r)
            lines.append(f"| {source} | {dataset} | {task} | " + " | ".join(map(_cell, row)) + f" | {n} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Summarise detection fine-tuning trials (train_net.py --trials N) as the paper's table row.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help=f"run folders (searched for {RESULTS_FILE}) or results files"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write the summary as a simsiam-hub results file (for export's model card)"
    )
    parser.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    args = parser.parse_args(argv)
    return run_command("summarize.py", _summarize, args)


def _summarize(args) -> int:
    summary = aggregate([r for f in find_results(args.paths) for r in read_results(f)])
    if not summary:
        raise SummaryError(f"the results files under {', '.join(args.paths)} hold no detection results")
    table = markdown(summary)
    print(table, end="")
    if args.markdown:
        from simsiam_hub.fileio import atomic_write_text

        atomic_write_text(table, args.markdown)
    if args.json:
        write_results(summary, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    exit_process(main())
