"""Detection transfer: the Detectron2 C4 converter, the configs, and real (tiny) fine-tunings on CPU.

Costs measured here (R50-C4, batch 2, 128x192 images, one thread of a shared 2-core machine):
a training iteration 2.5-5 s with 16 regions per image (8 s and more with 64), 0.5-0.7 s per
test image with 20 proposals. The data are generated (simsiam_hub/detection/synthetic.py) and the backbones
randomly initialised (no weights can be downloaded), so the APs of those runs are near zero: what
they check is the conversion, the loading, the wiring, the losses, the files and the numbers'
bookkeeping. The AP values themselves are checked on known predictions: the ground truth fed
through the evaluators train_net builds scores 100, the same boxes moved off their objects 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from simsiam_hub.cli import main as cli_main
from simsiam_hub.detection.convert import convert_to_detectron2, detectron2_name
from simsiam_hub.detection.datasets import TransferError, coco_classes, voc_records
from simsiam_hub.detection.synthetic import make_coco, make_voc
from simsiam_hub.hub.results import read_results
from simsiam_hub.hub.weights import WeightsError
from simsiam_hub.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "detection"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `transfer` is a folder of scripts, not an installed package

try:
    import detectron2.modeling  # noqa: F401

    HAVE_D2 = True
except ImportError:
    HAVE_D2 = False
needs_detectron2 = pytest.mark.skipif(
    not HAVE_D2, reason="detectron2 is not importable (`make detectron2` installs it)"
)


def random_backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    """A freshly initialised ResNet-50 backbone whose BatchNorm tensors are made random too
    (fresh, they are all 0s and 1s: a swap of two of them would go unnoticed)."""
    torch.manual_seed(seed)
    state = build_backbone("resnet50").state_dict()
    for key, t in state.items():
        if key.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            t.uniform_(0.5, 1.5)
        elif key.endswith(("running_mean", ".bias")):
            t.normal_(0, 0.1)
    return state


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("backbone") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in random_backbone().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def converted(backbone_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "backbone.pkl"
    assert cli_main(["convert-detectron2", str(backbone_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A freshly initialised ResNet-50 exported as a model folder (what fine-tuning starts from
    here: no pretrained weights can be downloaded)."""
    from simsiam_hub.hub.export import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fresh") / "fresh.safetensors"
    save_file({k: v.contiguous() for k, v in build_backbone("resnet50").state_dict().items()}, str(path))
    return export(path, path.parent / "model")


@pytest.fixture(scope="module")
def converted_fresh(model_folder) -> Path:
    out = model_folder.parent / "fresh.pkl"
    assert cli_main(["convert-detectron2", str(model_folder), "--out", str(out)]) == 0
    return out


# --- the converter (no detectron2 needed) ------------------------------------------------


def test_converted_tensors_equal_the_source_under_the_renames(converted, backbone_file):
    from safetensors.torch import load_file

    source = load_file(str(backbone_file))
    with open(converted, "rb") as f:  # our own file, just written
        obj = pickle.load(f)
    assert obj["__author__"] == "simsiam-hub" and obj["matching_heuristics"] is True
    model = obj["model"]
    assert len(model) == len(source) == 318
    for name, tensor in source.items():
        assert torch.equal(torch.from_numpy(model[detectron2_name(name)]), tensor), name
    # MoCo's renames, spelled out on each kind of tensor
    for torchvision_name, d2_name in {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv3.weight": "res2.0.conv3.weight",
        "layer3.5.bn2.bias": "res4.5.conv2.norm.bias",
        "layer4.0.downsample.0.weight": "res5.0.shortcut.weight",
        "layer4.0.downsample.1.running_mean": "res5.0.shortcut.norm.running_mean",
    }.items():
        assert torch.equal(torch.from_numpy(model[d2_name]), source[torchvision_name])


def test_converter_refuses_what_is_not_a_resnet50_backbone(capsys, tmp_path):
    state = random_backbone()
    for key in ("layer2.1.conv2.weight", "layer4.2.bn3.running_mean"):
        del state[key]
    with pytest.raises(WeightsError, match=r"missing 2 keys.*layer2\.1\.conv2\.weight.*layer4\.2\.bn3\.running_mean"):
        convert_to_detectron2(state)

    # a ResNet-18 through the CLI: one line, exit status 2, no file written
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in build_backbone("resnet18").state_dict().items()}, str(path))
    assert cli_main(["convert-detectron2", str(path), "--out", str(tmp_path / "r18.pkl")]) == 1
    err = capsys.readouterr().err
    assert "does not fit a resnet50 backbone" in err and "missing" in err and "Traceback" not in err
    assert not (tmp_path / "r18.pkl").exists()
    assert cli_main(["convert-detectron2", str(path), "--out", str(tmp_path / "r18.pth")]) == 2
    assert "must end in .pkl" in capsys.readouterr().err


# --- Detectron2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_net():
    if not HAVE_D2:
        pytest.skip("detectron2 is not importable (`make detectron2` installs it)")
    from transfer import train_net

    return train_net


@pytest.fixture(scope="module")
def d2(train_net):
    """simsiam_hub.detection.train: what the script runs."""
    from simsiam_hub.detection import train

    return train


@pytest.fixture(autouse=True)
def fresh_detectron2_loggers():
    """Detectron2's ``setup_logger`` binds a handler to the ``sys.stdout`` of the moment (in a
    test, pytest's capture, closed when the test ends) and caches it: drop those after each test."""
    yield
    if HAVE_D2:
        from detectron2.utils.logger import setup_logger

        for name in ("detectron2", "fvcore", "simsiam_hub"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
        setup_logger.cache_clear()


@needs_detectron2
def test_every_config_loads_and_builds_its_model(d2):
    from detectron2.modeling import build_model

    files = sorted(CONFIGS.glob("*.yaml"))
    names = {f.stem for f in files}
    for bench in ("voc07_R_50_C4", "voc0712_R_50_C4_24k", "coco_R_50_C4_1x", "coco_R_50_C4_2x"):
        assert {bench, f"{bench}_scratch", f"{bench}_imagenet", f"{bench}_msra", f"{bench}_smoke"} <= names
    schedules = {
        "voc07": (12500, (9500,)),
        "voc0712": (24000, (18000, 22000)),
        "coco_R_50_C4_1x": (90000, (60000, 80000)),
        "coco_R_50_C4_2x": (180000, (120000, 160000)),
    }
    for path in files:
        cfg = d2.load_config(str(path))
        # the protocol, in every config, the smoke runs included (MoCo 7397dfe Base-RCNN-C4-BN.yaml)
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm", path.name
        assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN" and cfg.TEST.PRECISE_BN.ENABLED, path.name
        assert cfg.MODEL.BACKBONE.FREEZE_AT == 0, path.name
        if path.stem.endswith("_msra"):  # MoCo's supervised configs: Detectron2's defaults for MSRA's R-50.pkl
            assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)) == (
                "BGR",
                [103.530, 116.280, 123.675],
                [1.0] * 3,
            )
            assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True, path.name
        else:  # MoCo's *_moco configs: torchvision-style weights
            assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_STD)) == ("RGB", [58.395, 57.120, 57.375]), path.name
            assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False, path.name
        if path.stem.endswith("_smoke"):
            assert (
                cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RPN.POST_NMS_TOPK_TEST <= 50 and cfg.INPUT.MIN_SIZE_TEST <= 256
            )
        elif path.stem != "Base-RCNN-C4-BN":
            assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02), path.name
            key = next(k for k in schedules if path.stem == k or path.stem.startswith(k + "_"))
            assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedules[key], path.name
            assert cfg.MODEL.MASK_ON == path.stem.startswith("coco"), path.name
            weights = {
                "scratch": "",
                "imagenet": "~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth",
                "msra": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
            }
            assert cfg.MODEL.WEIGHTS == weights.get(path.stem.rsplit("_", 1)[1], d2.WEIGHTS_UNSET), path.name
        # builds (names and shapes only, on the meta device: the CUDA configs too)
        cfg.MODEL.DEVICE = "meta"
        with torch.device("meta"):
            model = build_model(cfg)
        assert type(model.roi_heads).__name__ == "Res5ROIHeadsExtraNorm"
        assert model.roi_heads.res5.norm.num_features == 2048
        assert (
            type(model.roi_heads.res5.norm).__name__
            == type(model.backbone.stem.conv1.norm).__name__
            == "NaiveSyncBatchNorm"
        )
        assert model.roi_heads.box_predictor.cls_score.out_features == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1


@needs_detectron2
def test_converted_backbone_loads_into_r50_c4_with_nothing_missing(converted, backbone_file, caplog, d2):
    from detectron2.checkpoint import DetectionCheckpointer
    from safetensors.torch import load_file

    cfg = d2.load_config(str(CONFIGS / "voc07_R_50_C4_smoke.yaml"))
    model = d2.Trainer.build_model(cfg)
    # Detectron2's logger setup (in other tests) stops "fvcore" propagating: listen to it directly.
    fvcore_log = logging.getLogger("fvcore")
    fvcore_log.addHandler(caplog.handler)
    try:
        DetectionCheckpointer(model).load(str(converted))
    finally:
        fvcore_log.removeHandler(caplog.handler)
    source = load_file(str(backbone_file))
    loaded = model.state_dict()
    # every backbone tensor of the model (stem, res2-res4; res5 lives in the ROI head) came from the file
    backbone_keys = [
        k
        for k in loaded
        if k.startswith("backbone.") or k.startswith("roi_heads.res5.") and not k.startswith("roi_heads.res5.norm.")
    ]
    assert len(backbone_keys) == len(source)
    by_d2_name = {detectron2_name(k): v for k, v in source.items()}
    for key in backbone_keys:
        d2_name = key.removeprefix("backbone.").removeprefix("roi_heads.")
        assert torch.equal(loaded[key], by_d2_name[d2_name]), key
    # what Detectron2 reports missing is the new heads only
    missing = "\n".join(r.getMessage() for r in caplog.records if "not found in the checkpoint" in r.getMessage())
    assert "roi_heads.box_predictor" in missing and "roi_heads.res5.norm" in missing
    assert "backbone." not in missing and "res5.0" not in missing and "res5.2" not in missing


def _voc_args(data: Path, out: Path, weights: str, *extra: str) -> list[str]:
    return [
        "--config-file",
        str(CONFIGS / "voc07_R_50_C4_smoke.yaml"),
        "--register-voc",
        "overfit_train",
        str(data),
        "train",
        "--classes",
        "bird,cat,dog",
        *extra,
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        str(out),
        "DATASETS.TRAIN",
        "('overfit_train',)",
        "DATASETS.TEST",
        "('overfit_train',)",
    ]


def _ground_truth_predictions(dataset_name: str, *, masks: bool, shift: float = 0.0):
    """(inputs, outputs) pairs, one per image of a registered dataset, whose predictions are its
    ground truth: every annotated box (moved right by ``shift`` x its width), class and score 1,
    and with ``masks`` the annotated polygons rasterised as the predicted masks."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, BoxMode, Instances
    from detectron2.structures.masks import polygons_to_bitmask

    pairs = []
    for d in DatasetCatalog.get(dataset_name):
        h, w, anns = d["height"], d["width"], d["annotations"]
        boxes = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], dtype=torch.float32
        )
        boxes[:, 0::2] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        instances = Instances(
            (h, w),
            pred_boxes=Boxes(boxes),
            scores=torch.ones(len(anns)),
            pred_classes=torch.tensor([a["category_id"] for a in anns]),
        )
        if masks:
            polygons = [[np.asarray(p, dtype=np.float64) for p in a["segmentation"]] for a in anns]
            instances.pred_masks = torch.stack([torch.from_numpy(polygons_to_bitmask(p, h, w)) for p in polygons])
        inputs = {k: d[k] for k in ("file_name", "image_id", "height", "width")}
        pairs.append(([inputs], [{"instances": instances}]))
    return pairs


def _evaluate(d2, cfg, name: str, pairs) -> dict:
    """What a fine-tuning's last evaluation does with the predictions: the evaluator
    d2.Trainer builds for the dataset, then its results as results-file entries."""
    evaluator = d2.Trainer.build_evaluator(cfg, name)
    evaluator.reset()
    for inputs, outputs in pairs:
        evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    entries = d2.results_entries(cfg, results, source="ground truth", seed=None, trial=None, config_file="gt.yaml")
    return {(e.task, e.metric): e.value for e in entries}


@needs_detectron2
def test_ground_truth_as_predictions_scores_ap_100_on_voc(train_net, tmp_path, d2):
    """The VOC evaluation path (a --register-voc dataset, PascalVOCDetectionEvaluator, the results
    entries) gives AP50 = AP = AP75 = 100 to predictions that are the ground truth, and 0 to the
    same boxes moved right by half their width (IoU 1/3)."""
    name = f"gt_voc_{tmp_path.name}"
    data = make_voc(tmp_path / "voc", {"test": 4}, objects=3, seed=5)
    args = train_net.build_parser().parse_args(
        [
            "--config-file",
            str(CONFIGS / "voc07_R_50_C4_smoke.yaml"),
            "--register-voc",
            name,
            str(data),
            "test",
            "--classes",
            "bird,cat,dog",
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    d2.register_datasets(args.register_voc, args.register_coco, args.classes)
    cfg = d2.setup(args.config_file, args.opts)
    exact = _evaluate(d2, cfg, name, _ground_truth_predictions(name, masks=False))
    assert exact == {("detection", m): pytest.approx(100.0) for m in ("AP50", "AP", "AP75")}
    moved = _evaluate(d2, cfg, name, _ground_truth_predictions(name, masks=False, shift=0.5))
    assert moved == {("detection", m): pytest.approx(0.0) for m in ("AP50", "AP", "AP75")}


@needs_detectron2
def test_ground_truth_as_predictions_scores_ap_100_on_coco(train_net, tmp_path, d2):
    """The COCO evaluation path (a --register-coco dataset with polygon masks and category ids
    1, 3, 5, COCOEvaluator, the results entries) gives box and mask AP50 = AP = AP75 = 100 to
    predictions that are the ground truth; boxes moved by half their width score 0."""
    name = f"gt_coco_{tmp_path.name}"
    data = make_coco(tmp_path / "coco", {"val": 4}, objects=3, seed=6)
    args = train_net.build_parser().parse_args(
        [
            "--config-file",
            str(CONFIGS / "coco_R_50_C4_1x_smoke.yaml"),
            "--register-coco",
            name,
            str(data / "val.json"),
            str(data / "images"),
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    d2.register_datasets(args.register_voc, args.register_coco, args.classes)
    cfg = d2.setup(args.config_file, args.opts)
    exact = _evaluate(d2, cfg, name, _ground_truth_predictions(name, masks=True))
    expected = {
        (t, m): pytest.approx(100.0) for t in ("detection", "instance-segmentation") for m in ("AP50", "AP", "AP75")
    }
    assert exact == expected
    moved = _evaluate(d2, cfg, name, _ground_truth_predictions(name, masks=False, shift=0.5))
    assert moved == {("detection", m): pytest.approx(0.0) for m in ("AP50", "AP", "AP75")}


@pytest.mark.slow
@needs_detectron2
def test_overfitting_two_images_the_loss_falls(train_net, converted_fresh, tmp_path, d2):
    """Faster R-CNN C4 on a user's VOC-layout dataset of two images: 24 iterations at the smoke
    config's lr (the protocol's, scaled to batch 2), no flips, 8 regions per image.

    (At 4x that lr the box regression diverged after about 20 iterations from random weights.)
    """
    data = make_voc(tmp_path / "voc", {"train": 2}, objects=2, seed=3)
    overrides = [
        "SOLVER.MAX_ITER",
        "24",
        "SOLVER.STEPS",
        "()",
        "INPUT.RANDOM_FLIP",
        "none",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "8",
    ]
    args = train_net.build_parser().parse_args(_voc_args(data, tmp_path / "run", str(converted_fresh), *overrides))
    d2.register_datasets(args.register_voc, args.register_coco, args.classes)
    cfg = d2.setup(args.config_file, args.opts)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3  # from --classes, not the config's 20
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(0)
    trainer = d2.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    def history(name):
        return [v for v, _ in trainer.storage.history(name).values()]

    total, rpn_cls, cls = history("total_loss"), history("loss_rpn_cls"), history("loss_cls")
    assert len(total) == 24 and all(math.isfinite(v) for v in total)
    first, last = statistics.fmean(total[:5]), statistics.fmean(total[-5:])
    print(
        f"\noverfit: total_loss {first:.3f} (mean of the first 5 iterations) -> {last:.3f} (last 5); "
        f"loss_rpn_cls {rpn_cls[0]:.3f} -> {rpn_cls[-1]:.3f}; loss_cls {statistics.fmean(cls[:5]):.3f} -> {statistics.fmean(cls[-5:]):.3f}"
    )
    # measured with seeds 0, 1, 2 (last 5 over first 5): total x0.28-0.37, classification x0.07-0.09;
    # objectness (last over first) x0.44-0.46
    assert last < 0.6 * first
    assert rpn_cls[-1] < 0.7 * rpn_cls[0]
    assert statistics.fmean(cls[-5:]) < 0.4 * statistics.fmean(cls[:5])
    assert set(trainer._last_eval_results["bbox"]) >= {"AP", "AP50", "AP75"}


@needs_detectron2
def test_voc07_fine_tune_trials_and_summary_from_the_command_line(model_folder, tmp_path):
    """The user's path: builtin VOC names found through DETECTRON2_DATASETS, a model folder
    converted on the fly, two trials, then the summary table and its JSON."""
    datasets = tmp_path / "datasets"
    make_voc(datasets / "VOC2007", {"trainval": 4, "test": 2}, seed=1)
    out = tmp_path / "voc07"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        str(ROOT / "transfer" / "train_net.py"),
        "--config-file",
        str(CONFIGS / "voc07_R_50_C4_smoke.yaml"),
        "--trials",
        "2",
        "MODEL.WEIGHTS",
        str(model_folder),
        "OUTPUT_DIR",
        str(out),
        "SOLVER.MAX_ITER",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "backbone_detectron2.pkl").is_file()
    trials = [read_results(out / f"trial{i}" / "detection_results.json") for i in range(2)]
    for i, results in enumerate(trials):
        assert [(r.task, r.dataset, r.split, r.metric) for r in results] == [
            ("detection", "voc07", "test", m) for m in ("AP50", "AP", "AP75")
        ]
        assert all(0 <= r.value <= 100 and r.recipe["seed"] == i and r.source == str(model_folder) for r in results)

    from transfer import summarize

    summary_file = tmp_path / "summary.json"
    assert summarize.main([str(out), "--json", str(summary_file), "--markdown", str(tmp_path / "table.md")]) == 0
    summary = {r.metric: r for r in read_results(summary_file)}
    for metric, r in summary.items():
        values = [next(x.value for x in t if x.metric == metric) for t in trials]
        assert (r.task, r.dataset, r.num_trials, r.recipe["seeds"]) == ("detection", "voc07", 2, [0, 1])
        assert r.value == pytest.approx(statistics.fmean(values), abs=1e-3)
        assert r.std == pytest.approx(statistics.stdev(values), abs=1e-3)
    table = (tmp_path / "table.md").read_text()
    paper, ours = table.splitlines()[2:4]
    assert paper.startswith("| SimSiam, paper") and "| 75.5 | 47.0 | 50.2 | 82.0 |" in paper
    ap50 = summary["AP50"]
    assert ours.startswith(f"| {model_folder} (2 trials) | {ap50.value:.1f}±{ap50.std:.1f} |")


@needs_detectron2
def test_a_voc_folder_with_png_images_and_a_one_image_split_fine_tunes(model_folder, tmp_path):
    """A user's VOC folder as it often comes: PNG images in JPEGImages/ and a test split of one
    image, through the installed module and a config given by name. A broken annotation is
    refused before any model is built, in one line naming the file."""
    # seed 4: the one test image holds all three classes (VOC's AP is NaN for a class without any)
    data = make_voc(tmp_path / "mine", {"trainval": 2, "test": 1}, seed=4, objects=3, image_format="png")
    assert not list((data / "JPEGImages").glob("*.jpg"))
    assert (data / "ImageSets" / "Main" / "test.txt").read_text().split() == ["test_0000"]
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "simsiam_hub.transfer.train_net",
        "--config-file",
        "voc07_R_50_C4_smoke",
        "--register-voc",
        "mine_train",
        str(data),
        "trainval",
        "--register-voc",
        "mine_test",
        str(data),
        "test",
        "--classes",
        "bird,cat,dog",
        "MODEL.WEIGHTS",
        str(model_folder),
        "OUTPUT_DIR",
        str(out),
        "SOLVER.MAX_ITER",
        "2",
        "DATASETS.TRAIN",
        "('mine_train',)",
        "DATASETS.TEST",
        "('mine_test',)",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = read_results(out / "detection_results.json")
    assert [(r.dataset, r.metric) for r in results] == [("mine_test", m) for m in ("AP50", "AP", "AP75")]
    assert all(math.isfinite(r.value) for r in results)

    xml = data / "Annotations" / "test_0000.xml"
    xml.write_text(re.sub(r"<xmin>\d+</xmin>", "<xmin>left</xmin>", xml.read_text(), count=1))
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (
        last
        == f"train_net.py: error: --register-voc mine_test: {xml} has a <bndbox> without numeric xmin, ymin, xmax, ymax"
    )


@needs_detectron2
def test_coco_mask_rcnn_fine_tune_eval_only_and_resume(train_net, converted_fresh, tmp_path):
    """Mask R-CNN C4 on a user's COCO json (polygon masks, 3 categories with ids 1, 3, 5)."""
    data = make_coco(tmp_path / "coco", {"train": 4, "val": 2}, seed=2)
    reg = [
        "--register-coco",
        "tiny_train",
        str(data / "train.json"),
        str(data / "images"),
        "--register-coco",
        "tiny_val",
        str(data / "val.json"),
        str(data / "images"),
    ]
    common = ["--config-file", str(CONFIGS / "coco_R_50_C4_1x_smoke.yaml"), *reg]
    # every detection kept (score > 0), so that the predictions compared below are never empty
    data_opts = [
        "DATASETS.TRAIN",
        "('tiny_train',)",
        "DATASETS.TEST",
        "('tiny_val',)",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    ]
    run = tmp_path / "run"
    assert (
        train_net.cli(
            [*common, *data_opts, "MODEL.WEIGHTS", str(converted_fresh), "OUTPUT_DIR", str(run), "SOLVER.MAX_ITER", "3"]
        )
        == 0
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 3
    results = read_results(run / "detection_results.json")
    tasks = {(r.task, r.metric): r.value for r in results}
    assert set(tasks) == {(t, m) for t in ("detection", "instance-segmentation") for m in ("AP50", "AP", "AP75")}
    assert all(r.dataset == "tiny_val" and r.source == str(converted_fresh) for r in results)
    # COCOEvaluator writes NaN where it found nothing to score; with predictions kept and ground truth
    # in every image, each AP is a number (test_ground_truth_as_predictions_scores_ap_100_on_coco
    # checks their values on known predictions)
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in tasks.values()), tasks

    # --eval-only on the final checkpoint (a Detectron2 .pth, passed through) predicts the same
    # boxes, masks and scores as the evaluation at the end of training, and the same APs
    again = tmp_path / "eval"
    assert (
        train_net.cli(
            [
                *common,
                "--eval-only",
                *data_opts,
                "MODEL.WEIGHTS",
                str(run / "model_final.pth"),
                "OUTPUT_DIR",
                str(again),
            ]
        )
        == 0
    )
    assert not (again / "backbone_detectron2.pkl").exists()
    predictions = [
        json.loads((d / "inference" / "tiny_val" / "coco_instances_results.json").read_text()) for d in (run, again)
    ]
    assert len(predictions[0]) > 0 and {p["category_id"] for p in predictions[0]} <= {1, 3, 5}
    assert predictions[1] == predictions[0]  # image, category, box, score and RLE mask, bit for bit
    evaluated = {(r.task, r.metric): r.value for r in read_results(again / "detection_results.json")}
    assert evaluated == pytest.approx(tasks)

    # --resume after the end: the finished trial is not run again
    before = (run / "detection_results.json").read_bytes(), (run / "model_final.pth").stat().st_mtime_ns
    assert (
        train_net.cli(
            [
                *common,
                "--resume",
                *data_opts,
                "MODEL.WEIGHTS",
                str(converted_fresh),
                "OUTPUT_DIR",
                str(run),
                "SOLVER.MAX_ITER",
                "3",
            ]
        )
        == 0
    )
    assert ((run / "detection_results.json").read_bytes(), (run / "model_final.pth").stat().st_mtime_ns) == before


@needs_detectron2
def test_train_net_refuses_clearly(train_net, tmp_path, capsys):
    data = make_voc(tmp_path / "voc", {"train": 1}, seed=4)
    no_pose = make_voc(tmp_path / "no_pose", {"train": 1}, seed=4)
    xml = no_pose / "Annotations" / "train_0000.xml"
    xml.write_text(xml.read_text().replace("<pose>Unspecified</pose>", ""))
    base = ["--config-file", str(CONFIGS / "voc07_R_50_C4.yaml"), "OUTPUT_DIR", str(tmp_path / "out")]
    # a usable dataset registered for training and testing: what is left to refuse is the weights
    registered = ["--register-voc", "mine3", str(data), "train", "--classes", "bird,cat,dog", *base]
    registered += ["DATASETS.TRAIN", "('mine3',)", "DATASETS.TEST", "('mine3',)"]
    cases = {
        # a dataset that is not there: builtin names under $DETECTRON2_DATASETS
        "not found (Detectron2's builtin datasets live under $DETECTRON2_DATASETS": base,
        "--register-voc mine: ": ["--register-voc", "mine", str(tmp_path / "nowhere"), "train", *base],
        "has an <object> without <pose>": [
            "--register-voc",
            "no_pose",
            str(no_pose),
            "train",
            "--classes",
            "bird,cat,dog",
            *base,
        ],
        "names the class 'bird', not in the class list ['horse'] (set --classes)": [
            "--register-voc",
            "mine2",
            str(data),
            "train",
            "--classes",
            "horse",
            *base,
        ],
        "MODEL.WEIGHTS is not set": registered,
        "MODEL.WEIGHTS file not found": [*registered, "MODEL.WEIGHTS", str(tmp_path / "typo.pkl")],
        "Non-existent key: MODEL.NO_SUCH_KEY": [*base, "MODEL.NO_SUCH_KEY", "1"],
    }
    for expected, argv in cases.items():
        assert train_net.cli(argv) == 2, expected
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("train_net.py: error: "), err
        assert expected in err, err


def _set_box(xml: Path, obj: int, box: tuple) -> None:
    """Rewrite the ``obj``-th (0-based) <bndbox> of a VOC annotation."""
    parts = xml.read_text().split("<bndbox>")
    head, tail = parts[obj + 1].split("</bndbox>", 1)
    parts[obj + 1] = (
        "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box)) + "</bndbox>" + tail
    )
    xml.write_text("<bndbox>".join(parts))


def test_voc_check_refuses_impossible_boxes_and_keeps_border_ones(tmp_path):
    """Detectron2's VOC loader takes any box: one off the image changes AP, an inverted one is
    swapped later. The check (no Detectron2 needed) refuses them in one line naming the file and
    object, and keeps boxes on the border and VOC's one pixel of 1-based rounding."""
    data = make_voc(tmp_path / "voc", {"test": 1}, size=(64, 48), objects=2, seed=4)
    xml = data / "Annotations" / "test_0000.xml"
    original = xml.read_text()
    classes = ["bird", "cat", "dog"]
    for fine in [(1, 1, 64, 48), (0, 0, 65, 49), (10, 10, 10, 10)]:  # border, rounding, a one-pixel box
        xml.write_text(original)
        _set_box(xml, 1, fine)
        (record,) = voc_records("mine", data, "test", classes)
        assert record["annotations"][1]["bbox"] == [fine[0] - 1, fine[1] - 1, fine[2], fine[3]]
        assert (record["width"], record["height"]) == (64, 48)
    label = re.findall(r"<name>(\w+)</name>", original)[1]
    for bad, why in [
        ((500, 10, 600, 20), "a box outside the 64x48 image"),
        ((10, 10, 66, 20), "a box outside the 64x48 image"),
        ((-1, 10, 20, 20), "a box outside the 64x48 image"),
        ((10, 10, 20, 50), "a box outside the 64x48 image"),
        ((30, 10, 20, 20), "an inverted or empty box (xmax < xmin or ymax < ymin)"),
        ((10, 30, 20, 29), "an inverted or empty box (xmax < xmin or ymax < ymin)"),
        ((10, 10, "nan", 20), "a coordinate that is not a finite number"),
    ]:
        xml.write_text(original)
        _set_box(xml, 1, bad)
        with pytest.raises(TransferError) as err:
            voc_records("mine", data, "test", classes)
        coords = " ".join(f"{k} {float(v):g}" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), bad))
        assert str(err.value) == f"--register-voc mine: {xml}, object 2 ({label!r}, {coords}): {why}", bad


def test_coco_check_refuses_a_json_naming_a_missing_image(tmp_path):
    data = make_coco(tmp_path / "coco", {"val": 3}, seed=6)
    assert coco_classes("mine", data / "val.json", data / "images") == ["bird", "cat", "dog"]
    (data / "images" / "val_0001.jpg").unlink()
    with pytest.raises(TransferError) as err:
        coco_classes("mine", data / "val.json", data / "images")
    assert str(err.value) == (
        f"--register-coco mine: {data / 'val.json'} names the image 'val_0001.jpg', not found in {data / 'images'}"
    )


@needs_detectron2
def test_train_net_refuses_a_bad_box_and_a_missing_coco_image_before_building(train_net, tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", {"train": 1}, size=(64, 48), seed=4)
    xml = voc / "Annotations" / "train_0000.xml"
    _set_box(xml, 0, (500, 10, 600, 20))
    coco = make_coco(tmp_path / "coco", {"val": 2}, seed=6)
    (coco / "images" / "val_0000.jpg").unlink()
    base = ["--config-file", str(CONFIGS / "voc07_R_50_C4.yaml"), "OUTPUT_DIR", str(tmp_path / "out")]
    for argv, expected in [
        (["--register-voc", "badbox", str(voc), "train", "--classes", "bird,cat,dog", *base], f"{xml}, object 1 "),
        (
            ["--register-coco", "nofile", str(coco / "val.json"), str(coco / "images"), *base],
            "names the image 'val_0000.jpg', not found in",
        ),
    ]:
        assert train_net.cli(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("train_net.py: error: ") and expected in err, err


@needs_detectron2
def test_an_unreadable_training_image_is_replaced_by_name_and_a_test_image_refused(
    train_net, d2, tmp_path, capsys, caplog
):
    """As in pretraining: an unreadable training image is logged by name and another drawn in its
    place (up to a bound); a test set is scored whole, so an unreadable test image is refused in
    one line before any model is built."""
    from detectron2.data import DatasetCatalog

    voc = make_voc(tmp_path / "voc", {"train": 3}, size=(64, 48), seed=4)
    broken = voc / "JPEGImages" / "train_0001.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated JPEG: its header reads, its pixels do not
    base = ["--config-file", str(CONFIGS / "voc07_R_50_C4_smoke.yaml"), "OUTPUT_DIR", str(tmp_path / "out")]
    name = f"unreadable_{tmp_path.name}"
    argv = ["--register-voc", name, str(voc), "train", "--classes", "bird,cat,dog", *base]
    assert train_net.cli([*argv, "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"test set '{name}': unreadable image {broken}" in err, err

    cfg = d2.setup(str(CONFIGS / "voc07_R_50_C4_smoke.yaml"), ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()"])
    records = {Path(r["file_name"]).name: r for r in DatasetCatalog.get(name)}
    mapper = d2.ReadableMapper(cfg, is_train=True, max_bad=1)
    readable = mapper(dict(records["train_0000.jpg"]))
    assert readable["image"].shape[0] == 3 and len(readable["instances"]) > 0
    with caplog.at_level(logging.WARNING, logger="detectron2.simsiam_hub"):
        assert mapper(dict(records["train_0001.jpg"])) is None  # Detectron2 draws another index
    assert f"skipping unreadable image {broken}" in caplog.text
    with pytest.raises(TransferError, match="more than 1 unreadable training images"):
        mapper(dict(records["train_0001.jpg"]))
    with pytest.raises(OSError):  # the test loader's mapper never replaces
        d2.ReadableMapper(cfg, is_train=False)(dict(records["train_0001.jpg"]))


@needs_detectron2
def test_train_net_refuses_an_output_dir_in_use(train_net, tmp_path, capsys):
    from simsiam_hub.fileio import folder_lock

    data = make_voc(tmp_path / "voc", {"train": 1}, seed=4)
    run = tmp_path / "out"
    argv = ["--register-voc", "inuse", str(data), "train", "--classes", "bird,cat,dog"]
    argv += ["--config-file", str(CONFIGS / "voc07_R_50_C4.yaml"), "OUTPUT_DIR", str(run)]
    argv += ["DATASETS.TRAIN", "('inuse',)", "DATASETS.TEST", "('inuse',)"]
    with folder_lock(run):  # flock: a second open is another holder, even in this process
        assert train_net.cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_net.py: error: ") and len(err.splitlines()) == 1, err
    assert f"is in use by another process (pid {os.getpid()} on " in err and "set another OUTPUT_DIR" in err, err
    assert train_net.cli(argv) == 2  # free again: on to the next check (MODEL.WEIGHTS is not set)
    assert "MODEL.WEIGHTS is not set" in capsys.readouterr().err
