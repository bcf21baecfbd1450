"""Tiny generated detection datasets: a Pascal VOC tree and a COCO-format set with polygon masks.

Each image is a noisy grey background with a few filled shapes, one colour and shape per class
(the first class red squares, the second green triangles, the third blue discs), so that a
detector can learn them in a few iterations. The class names default to three of VOC's, so
that a generated tree can stand in for VOC2007/VOC2012 under ``$DETECTRON2_DATASETS``. By hand:
``python -m simsiam_hub.detection.synthetic OUT_DIR`` writes OUT_DIR/VOC2007, OUT_DIR/VOC2012, OUT_DIR/coco.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["make_voc", "make_coco"]

CLASSES = ("bird", "cat", "dog")
SHAPES = (("square", (220, 40, 40)), ("triangle", (40, 200, 60)), ("disc", (50, 80, 230)))


def _polygon(shape: str, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]


def make_image(rng: random.Random, size: tuple[int, int], n_objects: int, classes=CLASSES):
    """An RGB image and its objects: ``[(class, (x0, y0, x1, y1), polygon)]`` in pixels."""
    w, h = size
    noise = np.random.default_rng(rng.randrange(2**32)).normal(128, 20, (h, w, 3))
    img = Image.fromarray(noise.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objects = []
    for _ in range(n_objects):
        k = rng.randrange(len(classes))
        cls, (shape, colour) = classes[k], SHAPES[k % len(SHAPES)]
        s = rng.randint(min(w, h) // 5, min(w, h) // 2)
        x0, y0 = rng.randint(0, w - s - 1), rng.randint(0, h - s - 1)
        box = (x0, y0, x0 + s, y0 + s)
        poly = _polygon(shape, *box)
        draw.polygon(poly, fill=colour)
        objects.append((cls, box, poly))
    return img, objects


def make_voc(
    root: str | Path,
    splits: dict[str, int],
    *,
    size=(192, 128),
    objects=2,
    seed=0,
    classes=CLASSES,
    image_format: str = "jpg",
) -> Path:
    """A Pascal VOC tree: JPEGImages/ (``image_format``: jpg, or png as user folders often
    have), Annotations/ (with <pose>, which Detectron2's evaluator reads), ImageSets/Main/{split}.txt
    for each ``split: number of images``."""
    root = Path(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in splits.items():
        ids = []
        for i in range(n):
            image_id = f"{split}_{i:04d}"
            img, objs = make_image(rng, size, objects, classes)
            img.save(
                root / "JPEGImages" / f"{image_id}.{image_format}", **({"quality": 95} if image_format == "jpg" else {})
            )
            xml_objects = "".join(
                f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
                # VOC boxes are 1-based inclusive pixel indices
                f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                for cls, (x0, y0, x1, y1), _ in objs
            )
            (root / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><folder>VOC</folder><filename>{image_id}.{image_format}</filename>"
                f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
                f"<segmented>0</segmented>{xml_objects}</annotation>"
            )
            ids.append(image_id)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def make_coco(root: str | Path, splits: dict[str, int], *, size=(192, 128), objects=2, seed=0, classes=CLASSES) -> Path:
    """A COCO-format set: images/ and {split}.json for each ``split: number of images``, with
    polygon masks and non-contiguous category ids (1, 3, 5, ...), as real COCO has."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cat_id = {cls: 2 * i + 1 for i, cls in enumerate(classes)}
    ann_id = 1
    for split, n in splits.items():
        images, annotations = [], []
        for i in range(n):
            image_id = len(images) + 1
            file_name = f"{split}_{i:04d}.jpg"
            img, objs = make_image(rng, size, objects, classes)
            img.save(root / "images" / file_name, quality=95)
            images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
            for cls, (x0, y0, x1, y1), poly in objs:
                flat = [round(float(v), 2) for xy in poly for v in xy]
                xs, ys = flat[0::2], flat[1::2]
                area = 0.5 * abs(sum(xs[k] * ys[k - 1] - xs[k - 1] * ys[k] for k in range(len(xs))))
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat_id[cls],
                        "segmentation": [flat],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": area,
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
        categories = [{"id": cat_id[c], "name": c, "supercategory": "shape"} for c in classes]
        (root / f"{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return root


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m simsiam_hub.detection.synthetic",
        description="Write tiny generated detection datasets: OUT/VOC2007, OUT/VOC2012 (Pascal VOC layout) and "
        "OUT/coco (COCO json + images/), e.g. to stand in for VOC under $DETECTRON2_DATASETS.",
    )
    parser.add_argument("out", nargs="?", default="detection_data", metavar="OUT", help="output folder")
    out = Path(parser.parse_args(argv).out)
    make_voc(out / "VOC2007", {"trainval": 8, "test": 4}, seed=0)
    make_voc(out / "VOC2012", {"trainval": 8}, seed=1)
    make_coco(out / "coco", {"train": 8, "val": 4}, seed=2)
    print(f"wrote {out}/VOC2007, {out}/VOC2012 (Pascal VOC layout) and {out}/coco (COCO json + images/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
