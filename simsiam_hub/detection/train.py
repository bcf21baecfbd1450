"""Detectron2 fine-tuning for the R50-C4 transfer protocol of MoCo (facebookresearch/moco
``detection/train_net.py``) that SimSiam's Table 5 follows: what ``transfer/train_net.py`` (a
thin script in the shape of Detectron2's ``tools/train_net.py``) runs. Needs Detectron2.

- :class:`Res5ROIHeadsExtraNorm`, the ROI head (an extra norm after res5) the configs name,
  and :class:`Trainer`, Detectron2's with the evaluator each dataset declares;
- :func:`register_voc` / :func:`register_coco`: a user's own dataset, every file checked
  before any model is built (:mod:`.datasets`); :func:`check_datasets`;
- :func:`resolve_weights`: ``MODEL.WEIGHTS`` as a Hub repo id, a model folder, a
  ``.safetensors`` file or any checkpoint simsiam-hub reads, converted on the fly;
- :func:`setup` (config file or shipped config name, overrides, classes from the datasets),
  :func:`fine_tune` / :func:`evaluate` (one trial), :func:`results_entries`.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
)
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import SizeMismatchError, read_image
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from ..checkpoint import CheckpointError, safe_torch_load
from ..data.datasets import EVAL_MAX_BAD_IMAGES, UNREADABLE
from ..fileio import atomic_write_text
from ..hub.results import EvalResult, write_results
from ..resources import shipped_configs
from .convert import convert_source
from .datasets import TransferError, coco_classes, voc_records

__all__ = [
    "RESULTS_FILE",
    "CONVERTED_WEIGHTS",
    "WEIGHTS_UNSET",
    "VOC_CLASSES",
    "Res5ROIHeadsExtraNorm",
    "ReadableMapper",
    "Trainer",
    "register_voc",
    "register_coco",
    "register_datasets",
    "check_datasets",
    "resolve_weights",
    "resolve_config_file",
    "load_config",
    "setup",
    "results_entries",
    "trial_seeds",
    "fine_tune",
    "evaluate",
    "write_trial_results",
]

log = logging.getLogger("detectron2.simsiam_hub")

RESULTS_FILE = "detection_results.json"
CONVERTED_WEIGHTS = "backbone_detectron2.pkl"
WEIGHTS_UNSET = "???"  # what the configs hold until MODEL.WEIGHTS is given
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# Builtin test sets and the names results go under (simsiam_hub.hub.results `dataset`, `split`).
BENCHMARKS = {
    (("voc_2007_trainval",), "voc_2007_test"): ("voc07", "test"),
    (("voc_2007_trainval", "voc_2012_trainval"), "voc_2007_test"): ("voc0712", "test"),
    (("coco_2017_train",), "coco_2017_val"): ("coco2017", "val"),
}
TASKS = {"bbox": "detection", "segm": "instance-segmentation"}


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with one more norm layer (``MODEL.RESNETS.NORM``) after res5.

    MoCo (He et al., CVPR 2020, appendix A.3) adds it because the pretrained res5 ends in a
    residual sum whose scale the newly initialised box head has never seen.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


class ReadableMapper(DatasetMapper):
    """Detectron2's mapper, with pretraining's handling of an unreadable training image: logged
    by name and replaced (Detectron2's MapDataset draws another index, seeded, when a mapper
    returns None), up to ``max_bad`` per loader worker, then the run stops in one line. Test
    images are all decoded before the model is built (:func:`check_datasets`): a replacement
    there would change the score."""

    def __init__(self, cfg, is_train: bool = True, max_bad: int = EVAL_MAX_BAD_IMAGES):
        super().__init__(cfg, is_train)
        self.max_bad, self.bad = max_bad, 0

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except SizeMismatchError:
            raise  # an annotation that disagrees with its image: not an unreadable file
        except UNREADABLE as err:
            if not self.is_train:
                raise
            self.bad += 1
            name = dataset_dict.get("file_name")
            if self.bad > self.max_bad:
                raise TransferError(f"more than {self.max_bad} unreadable training images (the last: {name})") from None
            log.warning("skipping unreadable image %s (%s: %s); another in its place", name, type(err).__name__, err)
            return None


class Trainer(DefaultTrainer):
    """Detectron2's trainer with the evaluator each dataset declares (VOC or COCO), and
    :class:`ReadableMapper` in its training loader (test images are checked up front)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=ReadableMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if kind == "coco":
            # detectron2's fast COCOeval needs its compiled _C; without it COCOEvaluator
            # falls back to pycocotools' COCOeval by itself.
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        raise TransferError(
            f"no evaluator for dataset {dataset_name!r}: expected a VOC or COCO dataset, found evaluator_type={kind!r}"
        )


# --- datasets ---------------------------------------------------------------------------


def _registered(name: str, **where) -> bool:
    """Whether ``name`` is registered already with these files (a second run in one process);
    refuses a name taken by other data."""
    if name not in DatasetCatalog.list():
        return False
    meta = MetadataCatalog.get(name)
    if all(meta.get(k) == v for k, v in where.items()):
        return True
    raise TransferError(
        f"dataset name {name!r} is taken by other data ({meta.get('dirname') or meta.get('json_file')}): choose another name"
    )


def register_voc(name: str, folder: str, split: str, classes) -> None:
    """Register a Pascal VOC layout folder (JPEGImages/, Annotations/, ImageSets/Main/SPLIT.txt),
    checked file by file before any model is built (:func:`voc_records`).

    Registered as year 2012, so that its AP is the area under the precision/recall curve
    (Detectron2 uses VOC2007's 11-point AP only for year 2007).
    """
    root = Path(folder).expanduser()
    records = voc_records(name, root, split, classes, bbox_mode=BoxMode.XYXY_ABS)
    if _registered(name, dirname=str(root), split=split, thing_classes=list(classes)):
        return
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    # The metadata Detectron2's register_pascal_voc sets, which its VOC evaluator reads.
    MetadataCatalog.get(name).set(
        thing_classes=list(classes), dirname=str(root), year=2012, split=split, evaluator_type="pascal_voc"
    )


def register_coco(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format json (boxes, and polygon or RLE masks) with its image folder,
    every image it names checked first (:func:`~simsiam_hub.detection.datasets.coco_classes`)."""
    json_path, images = Path(json_file).expanduser(), Path(image_root).expanduser()
    classes = coco_classes(name, json_path, images)
    if _registered(name, json_file=str(json_path), image_root=str(images), thing_classes=classes):
        return
    register_coco_instances(name, {}, str(json_path), str(images))
    MetadataCatalog.get(name).set(thing_classes=classes)


def register_datasets(voc=(), coco=(), classes: str | None = None) -> None:
    """``voc``: (name, folder, split) triples, with ``classes`` ("a,b,..."; default the 20 VOC
    classes); ``coco``: (name, json file, image folder) triples."""
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else list(VOC_CLASSES)
    for name, folder, split in voc:
        register_voc(name, folder, split, names)
    for name, json_file, image_root in coco:
        register_coco(name, json_file, image_root)


def check_test_images(name: str, image_format: str) -> None:
    """Every image of test set ``name`` decodes as the test loader will read it (Detectron2's
    ``read_image`` in ``INPUT.FORMAT``): one that does not is refused in one line (a test set is
    scored whole; skipping or replacing an image would change its AP). Each process of a
    multi-GPU run decodes its own share."""
    for record in DatasetCatalog.get(name)[comm.get_rank() :: comm.get_world_size()]:
        try:
            read_image(record["file_name"], format=image_format)
        except UNREADABLE as err:
            raise TransferError(
                f"test set {name!r}: unreadable image {record['file_name']} ({type(err).__name__}: {err}); "
                "a test set is scored whole: replace or remove the image"
            ) from None


def check_datasets(cfg) -> list[str] | None:
    """Every dataset the config names is registered and on disk, every test image decodes;
    returns the class names."""
    registered = set(DatasetCatalog.list())
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    classes = {}
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        if name not in registered:
            raise TransferError(
                f"dataset {name!r} is not registered: expected a Detectron2 builtin name (voc_2007_trainval, "
                f"coco_2017_train, ...) or one given with --register-voc/--register-coco"
            )
        meta = MetadataCatalog.get(name)
        for attr in ("dirname", "json_file", "image_root"):
            path = meta.get(attr)
            if path and not os.path.exists(path):
                raise TransferError(
                    f"dataset {name!r}: {path} not found (Detectron2's builtin datasets live under "
                    f"$DETECTRON2_DATASETS, now {root!r})"
                )
        classes[name] = meta.get("thing_classes")
    for name in cfg.DATASETS.TEST:
        check_test_images(name, cfg.INPUT.FORMAT)
    known = {tuple(c) for c in classes.values() if c is not None}
    if len(known) > 1:
        raise TransferError(f"the train and test datasets have different classes: {classes}")
    return list(known.pop()) if known else None


# --- weights ----------------------------------------------------------------------------


def _is_detectron2_checkpoint(path: Path) -> bool:
    """A ``.pth`` that Detectron2 wrote (``{"model": {"backbone.*": ...}, ...}``)?"""
    try:
        obj = safe_torch_load(path, mmap=True)
    except CheckpointError:
        return True  # not plain tensors (a trainer's state, say): Detectron2's own loader is the judge
    model = obj.get("model") if isinstance(obj, dict) else None
    return isinstance(model, dict) and any(k.startswith(("backbone.", "roi_heads.")) for k in model)


def resolve_weights(weights: str, output_dir: str) -> str:
    """``MODEL.WEIGHTS`` as Detectron2 can load it: converted into ``output_dir`` when needed."""
    if weights == WEIGHTS_UNSET:
        raise TransferError(
            "MODEL.WEIGHTS is not set: append `MODEL.WEIGHTS <Hub repo id | model folder | .safetensors | .pkl>` "
            "to the command (or use a *_scratch config for random initialisation)"
        )
    if not weights or "://" in weights:
        return weights  # random init, or a URL Detectron2 downloads itself
    path = Path(weights).expanduser()
    if path.suffix in (".pkl", ".pth") and not path.is_file():
        raise TransferError(f"MODEL.WEIGHTS file not found: {path}")
    if path.suffix == ".pkl" or path.suffix == ".pth" and _is_detectron2_checkpoint(path):
        return str(path)
    out = Path(output_dir) / CONVERTED_WEIGHTS
    if comm.get_local_rank() == 0:  # one conversion per machine; the write is atomic
        convert_source(str(path) if path.exists() else weights, out)
    comm.synchronize()
    return str(out)


# --- setup and runs ---------------------------------------------------------------------


def resolve_config_file(config_file: str) -> str:
    """A config file: the path given, or the shipped detection config of that name
    (``voc07_R_50_C4``; ``simsiam-hub configs --kind detection`` lists them)."""
    if not config_file:
        raise TransferError(
            "--config-file is required: a YAML file or a shipped detection config's name (simsiam-hub configs --kind detection)"
        )
    if os.path.isfile(config_file):
        return config_file
    shipped = shipped_configs("detection")
    name = Path(config_file).name.removesuffix(".yaml")
    if name in shipped and Path(config_file).parent.name in ("", ".", "detection"):
        return str(shipped[name])
    raise TransferError(f"config file not found: {config_file} (shipped detection configs: {', '.join(shipped)})")


def load_config(config_file: str, opts=()):
    """Detectron2's config: its defaults, ``config_file`` (a path or a shipped config's name, with
    ``_BASE_``) and ``KEY VALUE`` overrides."""
    config_file = resolve_config_file(config_file)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts or []))
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        raise TransferError(f"config {config_file} with overrides {list(opts or [])}: {err}") from None
    return cfg


def setup(config_file: str, opts=()):
    """The frozen config: file + overrides, datasets checked, classes from the datasets."""
    cfg = load_config(config_file, opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    classes = check_datasets(cfg)
    if classes is not None:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    cfg.freeze()
    return cfg


def _per_dataset(cfg, results) -> dict:
    # DefaultTrainer.test returns one dataset's metrics unwrapped when there is one test set.
    if len(cfg.DATASETS.TEST) == 1 and results and cfg.DATASETS.TEST[0] not in results:
        return {cfg.DATASETS.TEST[0]: results}
    return dict(results or {})


def results_entries(
    cfg, results, *, source: str, seed: int | None, trial: int | None, config_file: str
) -> list[EvalResult]:
    """AP50, AP and AP75 per test dataset and task (box, mask) as ``simsiam_hub.hub.results`` entries."""
    train = tuple(cfg.DATASETS.TRAIN)
    entries = []
    for test_name, metrics in _per_dataset(cfg, results).items():
        dataset, split = BENCHMARKS.get((train, test_name), (test_name, "test"))
        recipe = {
            "protocol": "R50-C4 (MoCo detection)",
            "config": os.path.basename(config_file),
            "train_datasets": list(train),
            "test_dataset": test_name,
            "max_iter": cfg.SOLVER.MAX_ITER,
            "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
            "base_lr": cfg.SOLVER.BASE_LR,
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "seed": seed,
            "trial": trial,
        }
        for key, task in TASKS.items():
            for metric in ("AP50", "AP", "AP75"):
                if key in metrics and metric in metrics[key]:
                    value = metrics[key][metric]
                    entries.append(
                        EvalResult(
                            task=task,
                            metric=metric,
                            value=value,
                            dataset=dataset,
                            split=split,
                            source=source,
                            recipe=recipe,
                        )
                    )
    return entries


def trial_seeds(cfg, trials: int) -> list[int]:
    """SEED, SEED+1, ... (0, 1, ... when SEED is unset)."""
    return [(cfg.SEED if cfg.SEED >= 0 else 0) + i for i in range(trials)]


def evaluate(cfg, resume: bool = False) -> dict:
    """Detectron2's evaluation of ``cfg.MODEL.WEIGHTS`` (or OUTPUT_DIR's last checkpoint with
    ``resume``) on every test dataset."""
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return Trainer.test(cfg, model)


def fine_tune(cfg, resume: bool = False) -> dict:
    """One fine-tuning of ``cfg`` (its SEED, its OUTPUT_DIR, which gets config.yaml); returns the
    final evaluation's metrics. ``resume``: from OUTPUT_DIR's last checkpoint."""
    if comm.is_main_process():
        atomic_write_text(cfg.dump(), Path(cfg.OUTPUT_DIR) / "config.yaml")
    seed_all_rng(cfg.SEED + comm.get_rank())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    # DefaultTrainer keeps the final evaluation (its EvalHook runs at the last iteration).
    return getattr(trainer, "_last_eval_results", None) or {}


def write_trial_results(cfg, results, path: Path, **fields) -> None:
    """The results file of one run (main process only)."""
    if comm.is_main_process() and results:
        log.info("results written to %s", write_results(results_entries(cfg, results, **fields), path))
