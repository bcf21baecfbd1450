"""A user's detection dataset (Pascal VOC layout or COCO json) read and checked file by file
before any model is built, without Detectron2: ``transfer/train_net.py`` registers what these
functions return, and a broken annotation is refused in one line naming the file and object
instead of failing deep inside a data loader or, worse, changing the AP silently.

Tolerated, as VOC's own files need: boxes touching the image border, and one pixel beyond it
(VOC's coordinates are 1-based and inclusive, so ``xmin = 0`` or ``xmax = width + 1`` are
rounding, not errors). Refused: a box further outside the image, an inverted or empty box
(``xmax < xmin`` or ``ymax < ymin``; ``xmin == xmax`` is one pixel wide in VOC's convention),
a coordinate that is not a finite number.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import UsageError

# Image files a VOC folder's JPEGImages/ may hold, found by id (Detectron2's loader assumes .jpg).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".JPG", ".JPEG", ".PNG", ".TIF", ".TIFF", ".BMP")
OBJECT_TAGS = ("name", "pose", "truncated", "difficult", "bndbox")  # what Detectron2's VOC evaluator reads
VOC_SLACK = 1.0  # pixels a VOC box may pass the border by (1-based, inclusive coordinates)
XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS (an IntEnum): absolute x0, y0, x1, y1


class TransferError(UsageError):
    """A fine-tuning run that cannot start as asked: a config, dataset or weights problem."""


def check_voc_box(box: list[float], width: int, height: int) -> str | None:
    """Why a VOC ``[xmin, ymin, xmax, ymax]`` box (1-based, inclusive) cannot be used in an image
    of this size, or None when it can."""
    if not all(math.isfinite(v) for v in box):
        return "a coordinate that is not a finite number"
    xmin, ymin, xmax, ymax = box
    if xmax < xmin or ymax < ymin:
        return "an inverted or empty box (xmax < xmin or ymax < ymin)"
    if xmin < 1 - VOC_SLACK or ymin < 1 - VOC_SLACK or xmax > width + VOC_SLACK or ymax > height + VOC_SLACK:
        return f"a box outside the {width}x{height} image"
    return None


def _find_image(folder: Path, image_id: str) -> Path | None:
    return next((folder / f"{image_id}{s}" for s in IMAGE_SUFFIXES if (folder / f"{image_id}{s}").is_file()), None)


def voc_records(name: str, root: Path, split: str, classes, bbox_mode=XYXY_ABS) -> list[dict]:
    """A Pascal VOC folder's split as Detectron2 dataset dicts, every file checked first.

    Detectron2's own ``load_voc_instances`` reads the same XML the same way (1-based inclusive
    boxes become ``xmin - 1, ymin - 1``), but assumes ``.jpg`` images, reads the split file with
    ``np.loadtxt`` (which fails on a split of one image) and takes any box as it is.
    """
    root = Path(root)
    ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
    for needed in (root / "JPEGImages", root / "Annotations", ids_file):
        if not needed.exists():
            raise TransferError(
                f"--register-voc {name}: {needed} not found; expected a Pascal VOC layout "
                f"(JPEGImages/, Annotations/, ImageSets/Main/{split}.txt) under {root}"
            )
    ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise TransferError(f"--register-voc {name}: {ids_file} lists no images")
    classes = list(classes)
    records = []
    for image_id in ids:
        image = _find_image(root / "JPEGImages", image_id)
        if image is None:
            raise TransferError(
                f"--register-voc {name}: no image for {image_id!r} in {root / 'JPEGImages'} (expected {image_id}.jpg, .png, .tif or .bmp)"
            )
        xml = root / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(xml).getroot()
            height, width = int(tree.findtext("size/height")), int(tree.findtext("size/width"))
        except (OSError, ET.ParseError) as err:
            raise TransferError(f"--register-voc {name}: cannot read annotation {xml}: {err}") from None
        except (TypeError, ValueError):
            raise TransferError(f"--register-voc {name}: {xml} has no integer <size><width> and <height>") from None
        if width <= 0 or height <= 0:
            raise TransferError(f"--register-voc {name}: {xml} gives the image size {width}x{height}")
        instances = []
        for k, obj in enumerate(tree.iter("object")):
            absent = [tag for tag in OBJECT_TAGS if obj.find(tag) is None]
            if absent:
                raise TransferError(
                    f"--register-voc {name}: {xml} has an <object> without {', '.join(f'<{t}>' for t in absent)}"
                )
            label = obj.findtext("name")
            if label not in classes:
                raise TransferError(
                    f"--register-voc {name}: {xml} names the class {label!r}, not in the class list {classes} (set --classes)"
                )
            try:
                box = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise TransferError(
                    f"--register-voc {name}: {xml} has a <bndbox> without numeric xmin, ymin, xmax, ymax"
                ) from None
            problem = check_voc_box(box, width, height)
            if problem:
                raise TransferError(
                    f"--register-voc {name}: {xml}, object {k + 1} ({label!r}, xmin {box[0]:g} ymin {box[1]:g} "
                    f"xmax {box[2]:g} ymax {box[3]:g}): {problem}"
                )
            box[0] -= 1.0
            box[1] -= 1.0
            instances.append({"category_id": classes.index(label), "bbox": box, "bbox_mode": bbox_mode})
        records.append(
            {"file_name": str(image), "image_id": image_id, "height": height, "width": width, "annotations": instances}
        )
    return records


def coco_classes(name: str, json_path: Path, image_root: Path) -> list[str]:
    """A COCO-format json's class names (its categories in id order, as Detectron2's loader maps
    them), once every image it names is found under ``image_root``."""
    json_path, image_root = Path(json_path), Path(image_root)
    if not image_root.is_dir():
        raise TransferError(f"--register-coco {name}: image folder {image_root} not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        classes = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
        files = [image["file_name"] for image in data["images"]]
    except FileNotFoundError:
        raise TransferError(f"--register-coco {name}: {json_path} not found") from None
    except (ValueError, KeyError, TypeError) as err:
        raise TransferError(
            f"--register-coco {name}: {json_path} is not COCO-format json with categories and images: {err!r}"
        ) from None
    for file_name in files:
        if not isinstance(file_name, str) or not (image_root / file_name).is_file():
            raise TransferError(
                f"--register-coco {name}: {json_path} names the image {file_name!r}, not found in {image_root}"
            )
    return classes
