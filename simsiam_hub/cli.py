"""The ``simsiam-hub`` command line. ``simsiam-hub COMMAND --help`` shows each command's options.

Each command parses its arguments, calls one function of the library and prints what it got;
the library is imported only when a command runs, so that ``--help`` answers at once. Errors
are one line: exit code 2 for usage errors, 1 for anything that failed while running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .data import DEFAULT_IMAGE_SIZE
from .errors import UsageError, exit_process, run_command
from .eval import KNN_K, KNN_TEMPERATURE

DEFAULT_DEMO_CONFIG = "fashion_mnist_resnet50_cpu"
DEFAULT_ABLATION_CONFIG = "fashion_mnist_resnet18_cpu"
SOURCE_HELP = (
    "a Hub repo id, a model folder, a .safetensors file, or a training, official SimSiam/MoCo or torchvision checkpoint"
)


def _parser(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def _overrides(p) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _quiet_http_logs() -> None:
    """One INFO line per HTTP request from the Hub client's HTTP library is noise here."""
    for name in ("httpx2", "httpx", "httpcore"):  # huggingface_hub >= 2 sends through httpx2
        logging.getLogger(name).setLevel(logging.WARNING)


# --- pretraining -------------------------------------------------------------------------------


def _add_pretrain(sub) -> None:
    p = _parser(
        sub,
        "pretrain",
        "pretrain SimSiam (one process, or under torchrun)",
        "Pretrain SimSiam from a YAML config; key=value arguments override it (e.g. optim.epochs=10 "
        "data.root=/data/imagenet). Under `torchrun --nproc_per_node N` it trains with DDP and SyncBN; "
        "optim.batch_size is the global batch. `simsiam-hub configs` lists the shipped configs.",
    )
    p.add_argument(
        "--config",
        help="a YAML file or a shipped config's name (e.g. imagenet_resnet50_100ep); without it, the defaults (ImageNet ResNet-50)",
    )
    p.add_argument(
        "--resume",
        default="auto",
        help="'auto': the newest valid checkpoint in run.output_dir; a checkpoint path; or 'none'",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even if the settings differ from the checkpoint's (they are recorded)",
    )
    p.add_argument(
        "--init-from", help="start from a simsiam.safetensors, model folder or training checkpoint (sets run.init_from)"
    )
    _overrides(p)
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args) -> int:
    from .config import PretrainConfig, load_config
    from .engine import pretrain

    overrides = list(args.overrides) + ([f"run.init_from={args.init_from}"] if args.init_from else [])
    cfg = load_config(PretrainConfig, args.config, overrides)
    result = pretrain(
        cfg, resume=None if args.resume == "none" else args.resume, allow_config_change=args.allow_config_change
    )
    print(f"done: step {result.step} (epoch {result.epoch:.2f}), checkpoint {result.checkpoint}")
    return 0


def _add_configs(sub) -> None:
    p = _parser(
        sub,
        "configs",
        "list the shipped configs",
        "List the configs simsiam-hub ships (pretrain, lincls, detection), by the name --config takes, with the "
        "first line of each file's description; --show NAME prints one.",
    )
    p.add_argument("--kind", choices=("pretrain", "lincls", "detection"), help="only this kind")
    p.add_argument("--show", metavar="NAME", help="print this config's file")
    p.set_defaults(func=_run_configs)


def _run_configs(args) -> int:
    from .config import ConfigError
    from .resources import CONFIG_KINDS, shipped_configs

    kinds = [args.kind] if args.kind else list(CONFIG_KINDS)
    if args.show:
        for kind in kinds:
            found = shipped_configs(kind).get(args.show.removesuffix(".yaml"))
            if found:
                print(f"# {found}\n{found.read_text()}", end="")
                return 0
        raise ConfigError(f"no shipped config named {args.show!r}: `simsiam-hub configs` lists them")
    for kind in kinds:
        print(f"{kind}:")
        for name, path in shipped_configs(kind).items():
            first = next(
                (line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), ""
            )
            print(f"  {name:34s} {first[:100]}")
    return 0


def _add_demo(sub) -> None:
    p = _parser(
        sub,
        "demo",
        "the whole pipeline on Fashion-MNIST and a local folder hub, within a time budget, with a report",
        "Pretrain SimSiam for as many steps as --minutes allows on this machine (measured in its first steps), "
        "compare its k-NN accuracy with the same network at random init and with raw pixels, export the model "
        "folder with its card, push it to a local folder hub (or --repo-id on the Hub), reload it through "
        "torch.hub, convert it to Detectron2 and fine-tune briefly, then write OUT/report.md and "
        "OUT/training.png. A second run reuses what it can.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="wall-clock budget for the whole demo; the pretraining is sized to fit",
    )
    p.add_argument(
        "--config", default=DEFAULT_DEMO_CONFIG, help="pretraining config (a file or a shipped config's name)"
    )
    p.add_argument(
        "--data", help="your data: a folder of Fashion-MNIST idx files, or an ImageFolder root with train/ and val/"
    )
    p.add_argument("--hub", help="local folder hub to push to (default OUT/hub)")
    p.add_argument("--repo-id", help="push to this Hugging Face Hub repo instead (needs a token)")
    p.add_argument("--knn-bank", type=int, help="training images in the k-NN bank (default: sized to the budget)")
    p.add_argument("--knn-queries", type=int, help="held-out images classified (default: sized to the budget)")
    p.add_argument("--no-detection", action="store_true", help="skip the Detectron2 step")
    _overrides(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from pathlib import Path

    from .demo import DemoOptions, run_demo

    if args.minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes}")
    run_demo(
        DemoOptions(
            out=Path(args.out),
            minutes=args.minutes,
            config=args.config,
            data=args.data,
            hub=Path(args.hub) if args.hub else None,
            repo_id=args.repo_id,
            knn_bank=args.knn_bank,
            knn_queries=args.knn_queries,
            detection=not args.no_detection,
            overrides=list(args.overrides),
        )
    )
    return 0


def _add_ablate_stopgrad(sub) -> None:
    p = _parser(
        sub,
        "ablate-stopgrad",
        "the paper's Fig. 2: train with and without the stop-gradient, plot both",
        "Train the same recipe twice, with and without the stop-gradient, then draw the paper's three panels "
        "(loss, std of the l2-normalised output, kNN top-1) and a fourth, the share of the output on one line, "
        "and write a Markdown report with the figures. Each run resumes if its folder holds checkpoints.",
    )
    p.add_argument(
        "--config", default=DEFAULT_ABLATION_CONFIG, help="the shared recipe (a file or a shipped config's name)"
    )
    p.add_argument("--out", default="runs/ablation_stopgrad", help="folder for both runs, the PNG and the report")
    _overrides(p)
    p.set_defaults(func=_run_ablate_stopgrad)


def _run_ablate_stopgrad(args) -> int:
    import shlex

    from .ablation import ablate_stopgrad

    command = "simsiam-hub ablate-stopgrad " + shlex.join(["--config", args.config, "--out", args.out, *args.overrides])
    print(f"report: {ablate_stopgrad(args.config, args.out, args.overrides, command=command)}")
    return 0


# --- model folders and the Hub -----------------------------------------------------------------


def _add_export(sub) -> None:
    p = _parser(
        sub,
        "export",
        "write a model folder (model.safetensors, config.json, model card) from a checkpoint",
        "Write a model folder from a checkpoint: model.safetensors (the backbone, torchvision/timm names, no fc), "
        "timm-compatible config.json, README.md (the model card, with evaluation results as model-index), "
        "results.json, and simsiam.safetensors (the whole model) when the checkpoint has it. The folder is "
        "written whole: a reader never sees a mix of old and new files. CHECKPOINT: a training checkpoint "
        "(results*.json files in its folder are added to the card), an official SimSiam or MoCo checkpoint, a "
        "torchvision state dict or a .safetensors file.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the checkpoint to export")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the model folder to write: new, empty, or a model folder to replace",
    )
    p.add_argument(
        "--results",
        action="append",
        default=[],
        metavar="FILE",
        help="a results file (simsiam_hub.hub.results format) for the card; repeatable",
    )
    p.add_argument(
        "--license", help="licence id for the card; None: the data's (CC-BY-NC-4.0 for the official weights)"
    )
    p.add_argument("--dataset", help="name of the pretraining data for the card; None: as the checkpoint says")
    p.add_argument("--no-simsiam", action="store_true", help="leave out simsiam.safetensors (the whole model)")
    p.add_argument(
        "--code-url",
        metavar="URL",
        help="where the card says the simsiam-hub code lives (its pip install and torch.hub lines); "
        "default: simsiam_hub.hub.registry.CODE_URL",
    )
    p.add_argument("--force", action="store_true", help="replace --out even if it holds other files (they are deleted)")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from .hub.export import export

    out = export(
        args.checkpoint,
        args.out,
        results=args.results,
        license=args.license,
        dataset=args.dataset,
        with_simsiam=not args.no_simsiam,
        force=args.force,
        code_url=args.code_url,
    )
    print(f"wrote model folder {out}: {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}")
    return 0


def _add_push(sub) -> None:
    p = _parser(
        sub,
        "push",
        "upload a model folder (or a checkpoint) to a Hub repo",
        "Check a model folder (complete weights of the architecture its config.json names), then upload it to a "
        "Hugging Face Hub model repo in one commit (creating the repo and branch when missing) and print the "
        "commit id. A checkpoint is exported first. The token is huggingface_hub's (HF_TOKEN or `hf auth "
        "login`); HF_ENDPOINT selects the Hub. --repo-id may also be a local folder path (./hub/NAME): the "
        "folder is then written whole.",
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_DIR", help="a model folder or a checkpoint")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub model repo (or a local folder path)")
    p.add_argument(
        "--revision",
        metavar="BRANCH",
        help="the branch to commit to, created from main when missing (None: main itself)",
    )
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--commit-message", help="the commit message")
    p.add_argument(
        "--results",
        action="append",
        default=[],
        metavar="FILE",
        help="a results file to add to the model card; repeatable",
    )
    p.add_argument("--force", action="store_true", help="a local --repo-id: replace it even if it holds other files")
    p.set_defaults(func=_run_push)


def _run_push(args) -> int:
    from .hub.repo import push_to_hub

    _quiet_http_logs()
    commit = push_to_hub(
        args.source,
        args.repo_id,
        revision=args.revision,
        private=args.private or None,
        commit_message=args.commit_message,
        results=args.results,
        force=args.force,
    )
    print(commit)
    return 0


def _add_pull(sub) -> None:
    p = _parser(
        sub,
        "pull",
        "download a model repo",
        "Download a model repo from the Hub (or copy a local model folder), check it, and print the folder. "
        "Without --out the files stay in the Hub cache, where from_pretrained finds them, offline too.",
    )
    p.add_argument("repo_id", metavar="ORG/NAME", help="the Hub model repo (or a local model folder)")
    p.add_argument("--revision", help="branch, tag or commit id (None: main)")
    p.add_argument("--out", metavar="DIR", help="copy the model folder here (new, empty, or a model folder to replace)")
    p.add_argument("--force", action="store_true", help="replace --out even if it holds other files")
    p.set_defaults(func=_run_pull)


def _run_pull(args) -> int:
    from .hub.repo import pull

    _quiet_http_logs()
    print(pull(args.repo_id, args.revision, args.out, force=args.force, progress=not args.no_progress))
    return 0


def _add_list(sub) -> None:
    p = _parser(
        sub,
        "list",
        "list the named model variants and what is cached",
        "List the registry of named variants (the official SimSiam releases and ours): Hub repo, recipe, "
        "published linear top-1, licence, how an official checkpoint's download is checked, and what is already "
        "in the caches. The releases publish no SHA-256: the first download's is recorded and checked at every "
        "later use (trusted on first use); SIMSIAM_HUB_SHA256_<NAME> (the name upper-cased, - as _) pins a digest "
        "you trust, and a download that does not match it is refused.",
    )
    p.set_defaults(func=_run_list)


def _run_list(args) -> int:
    from .hub.registry import DEFAULT_VARIANT, VARIANTS, cache_dir, trust_status, variant_status

    rows = [("name", "repo id", "arch", "epochs", "batch", "top-1", "licence", "download check", "cached")]
    for v in VARIANTS:
        default = " (default)" if v.name == DEFAULT_VARIANT else ""
        top1 = f"{v.top1:.1f}" if v.top1 is not None else "-"
        rows.append(
            (
                v.name + default,
                v.repo_id,
                v.arch,
                str(v.epochs or "-"),
                str(v.batch_size or "-"),
                top1,
                v.license,
                trust_status(v),
                variant_status(v),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"cache: {cache_dir()}")
    return 0


def _add_import_official(sub) -> None:
    p = _parser(
        sub,
        "import-official",
        "turn an official SimSiam (or MoCo) checkpoint into a model folder",
        "Convert an official SimSiam checkpoint_XXXX.pth.tar (module.encoder.*, module.predictor.*), a MoCo "
        "checkpoint (module.encoder_q.*) or a torchvision state dict into a model folder. CHECKPOINT: a path, an "
        "http(s) URL or a registry name (`simsiam-hub list`); URLs and names are downloaded once into the cache "
        "with a progress bar and a SHA-256 check. Nothing is unpickled beyond tensors (weights_only).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint path, URL or registry name")
    p.add_argument("--out", metavar="DIR", help="the model folder to write; None: the cache folder of a registry name")
    p.add_argument("--variant", help="registry name whose recipe, accuracy and licence describe a local file")
    p.add_argument("--force", action="store_true", help="replace --out even if it holds other files")
    p.set_defaults(func=_run_import_official)


def _run_import_official(args) -> int:
    from .hub.export import import_official

    out = import_official(
        args.checkpoint, args.out, variant=args.variant, force=args.force, progress=not args.no_progress
    )
    print(f"wrote model folder {out}")
    return 0


def _add_convert_detectron2(sub) -> None:
    p = _parser(
        sub,
        "convert-detectron2",
        "convert a ResNet-50 backbone into Detectron2 R50-C4 weights (.pkl)",
        "Convert a ResNet-50 backbone into the .pkl that Detectron2 loads as MODEL.WEIGHTS for the R50-C4 "
        f"detection transfer (`simsiam-hub configs --kind detection`, simsiam-hub-detection). SOURCE: {SOURCE_HELP}.",
    )
    p.add_argument("source", metavar="SOURCE", help="Hub repo id, model folder, .safetensors or checkpoint")
    p.add_argument("--out", required=True, metavar="FILE.pkl", help="the Detectron2 weights file to write")
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo")
    p.set_defaults(func=_run_convert_detectron2)


def _run_convert_detectron2(args) -> int:
    from .detection.convert import convert_source

    print(f"wrote {convert_source(args.source, args.out, args.revision)}")
    return 0


# --- evaluation --------------------------------------------------------------------------------


def _add_knn(sub) -> None:
    p = _parser(
        sub,
        "knn",
        "k-NN top-1/top-5 of a backbone's frozen features",
        "Weighted k-NN classification of a frozen backbone's global-pooled, l2-normalised features (the SimSiam "
        f"paper's monitor: k={KNN_K}, temperature {KNN_TEMPERATURE}): the train split is the bank, the val split (Fashion-MNIST: the "
        f"test set) the queries. SOURCE: {SOURCE_HELP}. The data options default to the pretraining data of a "
        "training checkpoint, else to an ImageFolder at --data. Writes a results file that `export --results` "
        "(or `export` of a checkpoint beside it) puts into the model card.",
    )
    p.add_argument("source", metavar="SOURCE", help="Hub repo id, model folder, .safetensors or checkpoint")
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo")
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="dataset folder (imagefolder: ROOT/{train,val}/CLASS/*; fashion_mnist: the idx files)",
    )
    p.add_argument(
        "--dataset",
        help="imagefolder, fashion_mnist, cifar10, synthetic; when unset, the source's pretraining data, else imagefolder",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help=f"eval crop size; when unset, the source's training size, else {DEFAULT_IMAGE_SIZE}",
    )
    p.add_argument(
        "--train-subset", type=int, metavar="N", help="bank of N training images (a seeded draw); when unset, all"
    )
    p.add_argument("--val-subset", type=int, metavar="N", help="classify N val images (a seeded draw); when unset, all")
    p.add_argument("--synthetic-size", type=int, metavar="N", help="images in the synthetic train set")
    p.add_argument("--k", type=int, default=KNN_K, help="neighbours that vote (at most the bank's size)")
    p.add_argument("--temperature", type=float, default=KNN_TEMPERATURE, help="vote weight exp(cos / T)")
    p.add_argument("--batch-size", type=int, default=256, help="feature extraction batch")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loader processes")
    p.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        help="autocast dtype of the backbone's forward; when unset, off (fp32): bf16 can lose the small differences "
        "between images that k-NN ranks. The results record the precision used",
    )
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    p.add_argument(
        "--dataset-name", help="dataset name in the results; when unset, the dataset, or the ImageFolder's folder name"
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="results file; when unset, results_knn.json beside a SOURCE file, else in the current folder",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also score, on the same images, the same architecture at random init (the training run's own "
        "initialisation when SOURCE records its recipe, else seed 0) and raw and standardised pixels; "
        "written to knn_baselines.json beside the results file",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_knn)


def _run_knn(args) -> int:
    from pathlib import Path

    import torch

    from .eval.sources import data_config_for, load_source, run_knn
    from .precision import EVAL_AMP, resolve_amp

    source = load_source(args.source, args.revision)
    data_cfg = data_config_for(
        source,
        dataset=args.dataset,
        root=args.data,
        image_size=args.image_size,
        train_subset=args.train_subset,
        synthetic_size=args.synthetic_size,
        num_workers=args.workers,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source_path = Path(args.source).expanduser()
    output = (
        Path(args.output)
        if args.output
        else (source_path.parent if source_path.is_file() else Path(".")) / "results_knn.json"
    )
    metrics = run_knn(
        source,
        data_cfg,
        output,
        baselines=args.baselines,
        dataset_label=args.dataset_name,
        k=args.k,
        temperature=args.temperature,
        val_subset=args.val_subset,
        batch_size=args.batch_size,
        device=device,
        amp_dtype=resolve_amp(args.amp or EVAL_AMP, device),
        channels_last=not args.no_channels_last,
        progress=not args.no_progress,
    )
    for name, values in metrics.get("comparison", {}).items():
        print(f"{name:>24}: top1 {values['top1']:6.2f}%  top5 {values['top5']:6.2f}%")
    print(
        f"knn top1 {metrics['top1']:.2f}% top5 {metrics['top5']:.2f}% on {data_cfg.dataset} "
        f"({metrics['bank_size']} bank, {metrics['query_size']} queries, k={args.k}, T={args.temperature}, "
        f"{data_cfg.image_size} px) in {metrics['seconds']:.1f} s; results: {output}"
        + (f"; baselines: {output.with_name('knn_baselines.json')}" if args.baselines else "")
    )
    return 0


def _add_lincls(sub) -> None:
    p = _parser(
        sub,
        "lincls",
        "linear evaluation: a linear classifier on the frozen backbone",
        "Train a linear classifier on a frozen backbone kept in eval mode and report val top-1/top-5. Two "
        "protocols: `reference`, facebookresearch/simsiam main_lincls.py (new fc normal(0, 0.01), LARS trust 0.001, "
        "batch 4096, lr 0.1*batch/256, cosine, 90 epochs; train RandomResizedCrop+flip, val Resize+CenterCrop; last "
        "and best), and `logreg`, a multinomial logistic regression fitted to convergence (L-BFGS) on features "
        "computed once, its weight decay chosen on a held-out 10% of the training set: the linear protocol for "
        "small datasets, where the reference recipe, tuned for ImageNet, stops under-fitted. Defaults: ImageNet "
        "with ResNet-50 and the reference (imagenet_resnet50); fashion_mnist_cpu uses logreg and runs in minutes "
        "on a CPU. key=value arguments override the config (e.g. optim.epochs=10). Under `torchrun "
        "--nproc_per_node N` the reference trains with DDP; optim.batch_size is the global batch. Writes "
        "RUN/checkpoint.pt every epoch, RUN/lincls_log.csv and, at the end, RUN/results_lincls.json (for "
        f"`export --results`). SOURCE: {SOURCE_HELP}.",
    )
    p.add_argument("source", metavar="SOURCE", help="Hub repo id, model folder, .safetensors or checkpoint")
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo")
    p.add_argument("--data", metavar="ROOT", help="dataset folder (sets data.root)")
    p.add_argument(
        "--config",
        help="a YAML file or a shipped lincls config's name; without it, the defaults (ImageNet, the reference recipe)",
    )
    p.add_argument(
        "--resume",
        default="auto",
        help="'auto': continue from run.output_dir/checkpoint.pt if there is one; a checkpoint path; or 'none'",
    )
    p.add_argument(
        "--protocol",
        choices=("reference", "logreg"),
        help="reference: main_lincls's recipe (LARS, 90 epochs); logreg: the converged probe (needs data.cache_features=true); "
        "when unset, the config's (reference without a config)",
    )
    _overrides(p)
    p.set_defaults(func=_run_lincls)


def _run_lincls(args) -> int:
    from .config import LinclsConfig, load_config
    from .eval.lincls import linear_eval

    extra = ([f"data.root={args.data}"] if args.data else []) + ([f"protocol={args.protocol}"] if args.protocol else [])
    cfg = load_config(LinclsConfig, args.config, args.overrides + extra)
    result = linear_eval(
        cfg, args.source, revision=args.revision, resume=None if args.resume == "none" else args.resume
    )
    if os.environ.get("RANK", "0") != "0":
        return 0
    timings = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    if result.protocol == "logreg":
        probe = result.probe
        print(
            f"linear (logreg probe) top1 {result.top1:.2f}% top5 {result.top5:.2f}%; weight decay {probe.weight_decay:g} "
            f"chosen on {probe.sweep.val_size} held-out training images; training loss {probe.train_loss:.4f}, "
            f"{'converged' if probe.converged else 'NOT converged'} in {probe.iterations} iterations; {result.seconds:.1f} s "
            f"({timings}); results: {result.results_file}"
        )
    elif result.top1 is None:
        print(f"stopped after epoch {result.epoch} before any evaluation; checkpoint {result.checkpoint}")
    else:
        print(
            f"linear (reference recipe) top1 {result.top1:.2f}% top5 {result.top5:.2f}% after epoch {result.epoch}; best top1 "
            f"{result.best_top1:.2f}% (epoch {result.best_epoch}); "
            + (f"training loss {result.train_loss:.4f}; " if result.train_loss is not None else "")
            + ("still falling, NOT converged; " if result.converged is False else "")
            + f"{result.seconds:.1f} s ({timings}); checkpoint {result.checkpoint}"
            + (
                f"; results: {result.results_file}"
                if result.results_file
                else " (results are written when all epochs are done)"
            )
        )
    return 0


# --- make-shards --------------------------------------------------------------------------------


def _add_make_shards(sub) -> None:
    p = _parser(
        sub,
        "make-shards",
        "write WebDataset tar shards from a folder of images or a file list",
        "Write the images of SRC (a folder, read at any depth in sorted order, or a file list: one path a "
        "line) into OUT/PREFIX-000000.tar, ... as WebDataset samples (NNNNNNNNN.jpg beside NNNNNNNNN.txt, its "
        "relative path), for data.dataset=webdataset. Image bytes are copied, not re-encoded.",
    )
    p.add_argument("src", metavar="SRC", help="a folder of images or a file list")
    p.add_argument("out", metavar="OUT", help="the folder the shards are written to")
    p.add_argument("--max-count", type=int, default=10_000, help="images per shard at most")
    p.add_argument("--max-size", default="1G", help="bytes per shard at most (K, M, G suffixes)")
    p.add_argument("--prefix", default="shard", help="shard file names: PREFIX-000000.tar")
    p.set_defaults(func=_run_make_shards)


def _run_make_shards(args) -> int:
    from .data.sources import make_shards

    shards = make_shards(args.src, args.out, max_count=args.max_count, max_size=args.max_size, prefix=args.prefix)
    last = len(shards) - 1
    print(
        f"wrote {len(shards)} shards to {args.out}: train with data.dataset=webdataset "
        f"data.root='{Path(args.out) / args.prefix}-{{000000..{last:06d}}}.tar'"
    )
    return 0


# --- the parser ---------------------------------------------------------------------------------

# One entry per command; each registers its parser and sets `func`.
COMMANDS = [
    _add_pretrain,
    _add_demo,
    _add_ablate_stopgrad,
    _add_configs,
    _add_export,
    _add_push,
    _add_pull,
    _add_list,
    _add_import_official,
    _add_convert_detectron2,
    _add_knn,
    _add_lincls,
    _add_make_shards,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsiam-hub",
        description="SimSiam pretraining, a model hub for its backbones (Hugging Face Hub or local folders) and "
        "transfer to detection. `simsiam-hub COMMAND --help` shows each command's options and defaults.",
    )
    parser.add_argument("--version", action="version", version=f"simsiam-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    for name in PROGRESS_COMMANDS:  # every long command takes --no-progress
        if "--no-progress" not in sub.choices[name]._option_string_actions:
            sub.choices[name].add_argument(
                "--no-progress", action="store_true", help="no progress bars (also off when stderr is not a terminal)"
            )
    return parser


# Commands that show progress bars; off with --no-progress, or when stderr is not a terminal.
PROGRESS_COMMANDS = ("pretrain", "lincls", "knn", "push", "pull", "import-official", "demo", "ablate-stopgrad")


def _progress_off(args) -> bool:
    """--no-progress, or stderr not a terminal (tqdm users expect no bars in logs); the
    commands whose config has run.progress get it as an override."""
    if args.command not in PROGRESS_COMMANDS:
        return False
    off = args.no_progress or not sys.stderr.isatty()
    args.no_progress = off
    if off and args.command in ("pretrain", "lincls", "demo", "ablate-stopgrad"):
        args.overrides.append("run.progress=false")  # the pretraining (or linear) config's
    return off


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse leaves over key=value overrides that follow an option (`lincls SOURCE --config F a=b`).
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides.extend(extra)
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return run_command(f"simsiam-hub {args.command}", _run, args)


def _run(args) -> int:
    if _progress_off(args):
        from .hub.repo import progress_bars

        with progress_bars(False):
            return args.func(args)
    return args.func(args)


def console() -> None:
    """The ``simsiam-hub`` executable: :func:`main`, then the process's exit."""
    exit_process(main())


if __name__ == "__main__":
    console()
