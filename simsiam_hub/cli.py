"""The ``simsiam-hub`` command line. ``simsiam-hub COMMAND --help`` shows each command's options."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__


def _add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain SimSiam (one process, or under torchrun)",
        description="Pretrain SimSiam from a YAML config; key=value arguments override it "
        "(e.g. optim.epochs=10 data.root=/data/imagenet). Under `torchrun --nproc_per_node N` "
        "it trains with DDP and SyncBN; optim.batch_size is the global batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (see configs/pretrain/); without it, the defaults (ImageNet ResNet-50)")
    p.add_argument("--resume", default="auto", help="'auto': the newest valid checkpoint in run.output_dir; a checkpoint path; or 'none'")
    p.add_argument("--init-from", help="start from a simsiam.safetensors or training checkpoint (sets run.init_from)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args) -> int:
    from .config import PretrainConfig, load_config
    from .engine import pretrain

    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"run.init_from={args.init_from}")
    cfg = load_config(PretrainConfig, args.config, overrides)
    result = pretrain(cfg, resume=None if args.resume == "none" else args.resume)
    print(f"done: step {result.step} (epoch {result.epoch:.2f}), checkpoint {result.checkpoint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsiam-hub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simsiam-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


# One entry per command; each registers its parser and sets `func`.
COMMANDS = [_add_pretrain]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .errors import SimsiamHubError

    try:
        return args.func(args)
    except SimsiamHubError as err:
        print(f"simsiam-hub {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
