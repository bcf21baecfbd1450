#!/usr/bin/env python
"""Fine-tune a ResNet-50 backbone for detection with Detectron2: the R50-C4 transfer protocol of
MoCo (facebookresearch/moco ``detection/train_net.py``) that SimSiam's Table 5 follows.

The script in the shape of Detectron2's ``tools/train_net.py``, over
``simsiam_hub.detection.train`` (Detectron2's ``DefaultTrainer`` plus what the protocol and
simsiam-hub need):

- the ``Res5ROIHeadsExtraNorm`` ROI head (an extra norm after res5) the configs name;
- ``MODEL.WEIGHTS`` may be a Hub repo id, a model folder, a ``.safetensors`` file or any
  checkpoint ``simsiam_hub.hub.weights`` reads: it is converted on the fly into
  ``OUTPUT_DIR/backbone_detectron2.pkl``; a ``.pkl``, a Detectron2 ``.pth`` checkpoint, a URL
  or ``""`` (random init) go to Detectron2 as they are;
- a user's own dataset, Pascal VOC layout or COCO json, registered from the command line
  (``--register-voc``/``--register-coco``); the number of classes follows the dataset;
- ``--trials N``: N fine-tunings with seeds SEED, SEED+1, ... (0, 1, ... when SEED is unset),
  each in ``OUTPUT_DIR/trialK`` with its own ``detection_results.json`` (the
  ``simsiam_hub.hub.results`` format) for ``transfer/summarize.py``.

Builtin datasets (``voc_2007_trainval``, ``voc_2012_trainval``, ``voc_2007_test``,
``coco_2017_train``, ``coco_2017_val``, ...) are found under ``$DETECTRON2_DATASETS``
(default ``./datasets``), as Detectron2 expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from simsiam_hub.detection.install import detectron2_description
from simsiam_hub.detection.train import (
    RESULTS_FILE,
    evaluate,
    fine_tune,
    register_datasets,
    resolve_config_file,
    resolve_weights,
    setup,
    trial_seeds,
    write_trial_results,
)
from simsiam_hub.errors import exit_process, run_command
from simsiam_hub.fileio import folder_lock

log = logging.getLogger("detectron2.simsiam_hub")


def main(args) -> dict:
    """Train (or evaluate) every trial, holding OUTPUT_DIR's lock (one run per folder, as
    pretraining); returns ``{output_dir: results}``."""
    register_datasets(args.register_voc, args.register_coco, args.classes)
    cfg = setup(args.config_file, args.opts)
    with folder_lock(cfg.OUTPUT_DIR, "OUTPUT_DIR") if comm.is_main_process() else contextlib.nullcontext():
        default_setup(cfg, args)  # logger, environment, config.yaml in OUTPUT_DIR
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="simsiam_hub")
        log.info("%s", detectron2_description())
        log.info("device %s; %d classes (from the datasets)", cfg.MODEL.DEVICE, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        source = cfg.MODEL.WEIGHTS or "scratch (random init)"
        weights = resolve_weights(cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
        cfg.defrost()
        cfg.MODEL.WEIGHTS = weights
        cfg.freeze()
        fields = dict(source=source, config_file=args.config_file)

        if args.eval_only:
            results = evaluate(cfg, resume=args.resume)
            write_trial_results(cfg, results, Path(cfg.OUTPUT_DIR) / RESULTS_FILE, seed=None, trial=None, **fields)
            return {cfg.OUTPUT_DIR: results}

        out = {}
        for trial, seed in enumerate(trial_seeds(cfg, args.trials)):
            tcfg = cfg.clone()
            tcfg.defrost()
            tcfg.SEED = seed
            if args.trials > 1:
                tcfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, f"trial{trial}")
            tcfg.freeze()
            results_path = Path(tcfg.OUTPUT_DIR) / RESULTS_FILE
            if args.resume and results_path.is_file():
                log.info("trial %d (seed %d): finished already, results in %s", trial, seed, results_path)
                continue
            log.info("trial %d of %d: seed %d, output %s", trial + 1, args.trials, seed, tcfg.OUTPUT_DIR)
            results = fine_tune(tcfg, resume=args.resume)
            write_trial_results(tcfg, results, results_path, seed=seed, trial=trial, **fields)
            out[tcfg.OUTPUT_DIR] = results
        return out


def build_parser():
    parser = default_argument_parser(
        epilog="""
Examples:
  VOC07+12 on 8 GPUs, 5 trials, from a Hub repo:
    python transfer/train_net.py --num-gpus 8 --trials 5 \\
      --config-file configs/detection/voc0712_R_50_C4_24k.yaml \\
      MODEL.WEIGHTS your-name/simsiam-resnet50 OUTPUT_DIR runs/voc0712
  Your own VOC-layout dataset:
    python transfer/train_net.py --config-file configs/detection/voc07_R_50_C4.yaml \\
      --register-voc mine_train /data/mine trainval --register-voc mine_test /data/mine test \\
      --classes cat,dog MODEL.WEIGHTS ./model DATASETS.TRAIN '("mine_train",)' DATASETS.TEST '("mine_test",)'
  Then: python transfer/summarize.py runs/voc0712
Options go before the config overrides (KEY VALUE pairs, always last).
"""
    )
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--trials", type=int, default=1, help="fine-tunings with seeds SEED, SEED+1, ... (default 1)")
    parser.add_argument(
        "--register-voc",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "FOLDER", "SPLIT"),
        help="register a Pascal VOC layout dataset (FOLDER/JPEGImages, Annotations, ImageSets/Main/SPLIT.txt); repeatable",
    )
    parser.add_argument(
        "--classes",
        metavar="A,B,...",
        help="comma-separated class names of the --register-voc datasets (default: the 20 VOC classes)",
    )
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset (boxes, polygon or RLE masks); classes from its categories; repeatable",
    )
    return parser


def cli(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    if args.eval_only and args.trials != 1:
        parser.error("--eval-only evaluates one model: --trials does not apply")
    return run_command("train_net.py", _launch, args)


def _launch(args) -> int:
    args.config_file = resolve_config_file(args.config_file)  # a shipped config's name works too
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    exit_process(cli())
