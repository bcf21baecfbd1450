"""The model card: a model folder's ``README.md``, made with huggingface_hub's ``ModelCard`` from
its ``config.json`` and evaluation results, which also become the card's model-index.

model-index groups results by task type and dataset, so each evaluation protocol has a task
type of its own: k-NN of frozen features is ``image-feature-extraction``, a linear classifier
``image-classification``, the fine-tuned detector ``object-detection`` and its masks
``image-segmentation``. Metric types are the standard ones (``accuracy``, and torchmetrics'
``map``, ``map_50``, ``map_75`` for COCO-style AP); their names say what was measured.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from huggingface_hub import EvalResult as HfEvalResult
from huggingface_hub import ModelCard, ModelCardData, constants

from ..data.augment import eval_resize
from ..data.datasets import dataset_info
from ..fileio import atomic_write_text
from ..models import feature_dim
from .folder import (
    BACKBONE_FILE,
    CARD_FILE,
    CONFIG_FILE,
    RESULTS_FILE,
    SIMSIAM_FILE,
    SimsiamSection,
    public_recipe,
    public_source,
    read_config,
)
from .registry import CODE_URL, OFFICIAL_CODE_URL, PAPER_URL, torch_hub_repo
from .results import EvalResult, read_results, write_results

__all__ = ["card_metadata", "merge_results", "folder_results", "write_card"]

# Benchmarks named in results beyond the datasets we build (data.DATASETS), for the card's `datasets`.
HUB_DATASETS = {
    "imagenet-1k": "ILSVRC/imagenet-1k",
    "voc07": "HuggingFaceM4/pascal_voc",
    "voc0712": "HuggingFaceM4/pascal_voc",
    "coco2017": "detection-datasets/coco",
}
# Our benchmark name -> (model-index dataset config, dataset name). Both VOC protocols test on
# VOC2007 test; the config tells the detector's training data apart (VOC07 vs VOC07+12 trainval).
DATASET_CONFIGS = {
    "voc07": ("voc2007_main", "PASCAL VOC 2007 test, fine-tuned on VOC2007 trainval"),
    "voc0712": ("voc2007_main+voc2012_main", "PASCAL VOC 2007 test, fine-tuned on VOC2007+2012 trainval"),
    "coco2017": ("2017", "COCO 2017"),
    "imagenet-1k": (None, "ImageNet-1k"),
}
# Licence ids the Hub knows (its licence list); any other licence is `other` with a name and link.
HUB_LICENSES = frozenset(
    {"apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc0-1.0"}
)
# Our task -> (model-index task type, task name).
TASK_TYPES = {
    "knn": ("image-feature-extraction", "k-NN classification of frozen features"),
    "linear": ("image-classification", "Linear classification on the frozen backbone"),
    "detection": ("object-detection", "Object detection (fine-tuned, Detectron2 R50-C4)"),
    "instance-segmentation": ("image-segmentation", "Instance segmentation (fine-tuned, Detectron2 R50-C4)"),
}
# Our metric -> (standard metric type, descriptive name).
METRICS = {
    "top1": ("accuracy", "top-1 accuracy"),
    "top5": ("accuracy", "top-5 accuracy"),
    "top1_best": ("accuracy", "top-1 accuracy, best epoch"),
    "top5_best": ("accuracy", "top-5 accuracy, best epoch"),
    "AP": ("map", "AP"),
    "AP50": ("map_50", "AP50"),
    "AP75": ("map_75", "AP75"),
}
# The linear protocols a results entry can name (recipe["protocol"]), as the card shows them.
LINEAR_PROTOCOLS = {
    "reference": "reference recipe, LARS schedule",
    "logreg": "logistic-regression probe, L-BFGS to convergence",
}
CITATION = """@inproceedings{chen2021exploring,
  title     = {Exploring Simple Siamese Representation Learning},
  author    = {Chen, Xinlei and He, Kaiming},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {15750--15758},
  year      = {2021}
}"""


def hub_dataset_id(name: str) -> str | None:
    if "/" in name and " " not in name:  # a Hub dataset id we trained on (data.dataset=hf): ORG/NAME[@revision]
        return name.split("@")[0]
    return dataset_info(name).hub_id or HUB_DATASETS.get(name)


def _source_url(r: EvalResult) -> str | None:
    """A link to what was evaluated: an http source as is, a Hub repo at the commit evaluated."""
    if r.source.startswith(("http://", "https://")):
        return r.source
    if r.source_revision:
        return f"{constants.ENDPOINT}/{r.source}/tree/{r.source_revision}"
    return None


def linear_protocol(r: EvalResult) -> str | None:
    """The protocol of a linear result (reference | logreg), None for other tasks and older files."""
    protocol = r.recipe.get("protocol") if r.task == "linear" and isinstance(r.recipe, dict) else None
    return protocol if protocol in LINEAR_PROTOCOLS else None


def _metric_name(r: EvalResult) -> str:
    name = METRICS.get(r.metric, (None, r.metric))[1]
    if r.task == "instance-segmentation":
        name = f"mask {name}"
    elif r.task == "detection":
        name = f"box {name}"
    if linear_protocol(r):
        name += f" ({LINEAR_PROTOCOLS[linear_protocol(r)]})"
    if r.std is not None:
        name += f", mean of {r.num_trials} trials, std {r.std:.2f}"
    return name


def model_index_results(results: list[EvalResult]) -> list[HfEvalResult]:
    """``results`` as huggingface_hub ``EvalResult`` entries for the card's model-index."""
    out = []
    for r in results:
        task_type, task_name = TASK_TYPES[r.task]
        url = _source_url(r)
        out.append(
            HfEvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=hub_dataset_id(r.dataset) or r.dataset,
                dataset_name=DATASET_CONFIGS.get(r.dataset, (None, r.dataset))[1],
                dataset_config=DATASET_CONFIGS.get(r.dataset, (None, None))[0],
                dataset_split=r.split,
                metric_type=METRICS.get(
                    r.metric, ("accuracy" if "top" in r.metric.lower() else r.metric.lower(), None)
                )[0],
                metric_name=_metric_name(r),
                metric_value=round(r.value, 4),
                source_name=r.source if url else None,  # model-index wants both or neither
                source_url=url,
            )
        )
    return out


def _results_table(results: list[EvalResult]) -> str:
    if not results:
        return (
            "No evaluation results were attached to this export: `simsiam-hub knn`/`lincls` and the "
            "detection transfer write results files that `simsiam-hub export --results FILE` adds here."
        )
    rows = [
        "| task | protocol | dataset | split | metric | value | trials | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        value = f"{r.value:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
        protocol = LINEAR_PROTOCOLS.get(linear_protocol(r), "-")
        rows.append(
            f"| {r.task} | {protocol} | {r.dataset} | {r.split} | {r.metric} | {value} | {r.num_trials} | {r.source or '-'} |"
        )
    return "\n".join(rows)


def _input_text(section: SimsiamSection, pretrained_cfg: dict) -> str:
    size = section.image_size
    crop_pct = pretrained_cfg.get("crop_pct", 0.875)
    interpolation = pretrained_cfg.get("interpolation", "bilinear")
    if crop_pct >= 1:
        view = f"eval: resize to {size} ({interpolation}, the whole image)"
    else:
        view = (
            f"eval: resize the shorter side to {eval_resize(size, crop_pct)} ({interpolation}) then centre-crop {size}"
        )
    return f"{size} px RGB; {view}; mean {pretrained_cfg.get('mean')}, std {pretrained_cfg.get('std')}"


def card_license(section: SimsiamSection, code_url: str) -> dict:
    """The card's licence fields: a Hub licence id, or ``other`` with the ``license_name`` and
    ``license_link`` the Hub requires for it."""
    if section.license in HUB_LICENSES:
        return {"license": section.license}
    dataset_id = hub_dataset_id(section.dataset)
    name = section.license if section.license not in (None, "", "other") else "unspecified"
    link = f"{constants.ENDPOINT}/datasets/{dataset_id}" if dataset_id else code_url
    return {"license": "other", "license_name": name, "license_link": link}


def code_url_of(section: SimsiamSection) -> str:
    return section.code_url or CODE_URL


def card_metadata(section: SimsiamSection, results: list[EvalResult], name: str) -> ModelCardData:
    """The card's YAML header: licence, library, tags, datasets and the model-index."""
    timm_ok = not section.small_stem
    dataset_id = hub_dataset_id(section.dataset)
    eval_results = model_index_results(results)
    return ModelCardData(
        **card_license(section, code_url_of(section)),
        library_name="timm" if timm_ok else "pytorch",
        pipeline_tag="image-feature-extraction",
        tags=["simsiam", "self-supervised-learning", "image-feature-extraction", "resnet", section.arch, "safetensors"]
        + (["timm"] if timm_ok else []),
        datasets=[dataset_id] if dataset_id else None,
        model_name=name if eval_results else None,  # model-index needs it; a card without results has none
        eval_results=eval_results or None,
    )


def _overview(section: SimsiamSection, pretrained_cfg: dict, name: str) -> str:
    what = {
        "simsiam": "pretrained with SimSiam (self-supervised: no labels)",
        "moco": "pretrained with MoCo (self-supervised), imported for comparison",
        "supervised": "trained with labels (supervised), imported as a baseline",
    }.get(section.method, f"pretrained with {section.method}")
    stem = (
        "small-image stem (3x3/1 conv, no max-pool)" if section.small_stem else "standard stem (7x7/2 conv, max-pool)"
    )
    known = lambda value: "unknown" if value is None else value  # noqa: E731
    return f"""# {name}

A {section.arch} backbone {what}. SimSiam: [Chen & He, *Exploring Simple Siamese Representation
Learning*, CVPR 2021]({PAPER_URL}) ([official code]({OFFICIAL_CODE_URL})). Made with simsiam-hub.

| | |
|---|---|
| architecture | {section.arch}, {stem}; torchvision parameter names; `fc` removed: {feature_dim(section.arch)}-d pooled features |
| method | {section.method} |
| pretraining data | {section.dataset} |
| epochs | {known(section.epochs)} |
| batch size | {known(section.batch_size)} |
| input | {_input_text(section, pretrained_cfg)} |
| source | {section.source} |
| license | {section.license} |"""


def _how_to_load(section: SimsiamSection, ref: str) -> str:
    """The card's loading snippets, each runnable as written by someone who has only this repo:
    timm (no other package), then simsiam-hub installed from its repository, then torch.hub."""
    code_url = code_url_of(section)
    entry = f"simsiam_{section.arch}"
    dim = feature_dim(section.arch)
    timm_text = (
        "With timm (nothing else to install):\n\n"
        f'```python\nimport timm\n\nmodel = timm.create_model("hf-hub:{ref}", pretrained=True).eval()  # pooled {dim}-d features\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**config)\n```"
        if not section.small_stem
        else "timm builds the standard stem only: load this small-stem model with simsiam-hub (below)."
    )
    hub_repo = torch_hub_repo(code_url)
    if hub_repo:
        hub_text = f"""With torch.hub (it fetches the simsiam-hub code from GitHub, `{hub_repo}`):

```python
import torch

model = torch.hub.load("{hub_repo}", "{entry}", weights="{ref}")
```"""
    else:
        hub_text = f"""With torch.hub, from a clone of the code (`git clone {code_url} simsiam-hub`):

```python
import torch

model = torch.hub.load("simsiam-hub", "{entry}", source="local", weights="{ref}")
```"""
    return f"""## How to load

{timm_text}

With simsiam-hub, whose code lives at {code_url} (it is not on PyPI):

```bash
pip install "simsiam-hub @ git+{code_url}"
```

```python
import torch
from PIL import Image

import simsiam_hub

model = simsiam_hub.from_pretrained("{ref}")  # eval mode, fc = Identity; a local folder works too
image = Image.new("RGB", (320, 240))  # your image: Image.open("photo.jpg").convert("RGB")
with torch.no_grad():
    features = model(model.transform(image).unsqueeze(0))  # (1, {dim})
```

{hub_text}

For detection transfer: `simsiam-hub convert-detectron2 {ref} --out backbone.pkl`."""


def _recipe_and_files(section: SimsiamSection) -> str:
    if isinstance(section.recipe, dict):
        recipe_text = "```yaml\n" + yaml.safe_dump(section.recipe, sort_keys=False).strip() + "\n```"
    else:
        recipe_text = str(section.recipe or "not recorded")
    files = [
        f"- `{BACKBONE_FILE}`: the backbone alone (torchvision/timm names, no `fc`), with its recipe as metadata",
        f"- `{CONFIG_FILE}`: timm-compatible config, plus a `simsiam` section (arch, stem, recipe, source)",
        f"- `{CARD_FILE}`: this card; `{RESULTS_FILE}`: the evaluation results, when there are any",
    ]
    if section.has_simsiam:
        files.append(
            f"- `{SIMSIAM_FILE}`: the whole SimSiam model (projector dim {section.dim}, predictor dim {section.pred_dim}), "
            f"to continue pretraining: `simsiam-hub pretrain --init-from {SIMSIAM_FILE}`"
        )
    non_commercial = " (the official SimSiam weights are released under CC-BY-NC 4.0: non-commercial use)"
    return f"""## Training recipe

{recipe_text}

## Files

{chr(10).join(files)}

## License

{section.license}{non_commercial if section.license == "cc-by-nc-4.0" else ""}."""


def build_card(
    section: SimsiamSection, pretrained_cfg: dict, results: list[EvalResult], *, name: str, repo_id: str | None = None
) -> ModelCard:
    """The model card (a huggingface_hub ``ModelCard``) of a model folder: its metadata, an
    overview, the evaluation results, how to load it, the recipe, the files, licence, citation."""
    body = "\n\n".join(
        [
            _overview(section, pretrained_cfg, name),
            f"## Evaluation\n\n{_results_table(results)}",
            _how_to_load(section, repo_id or f"<org>/{name}"),
            _recipe_and_files(section),
            f"## Citation\n\n```bibtex\n{CITATION}\n```",
        ]
    )
    return ModelCard(f"---\n{card_metadata(section, results, name).to_yaml()}\n---\n\n{body}\n")


def merge_results(*groups) -> list[EvalResult]:
    """Results in order, a later entry replacing an earlier one of the same evaluation (task,
    linear protocol, metric, dataset, split)."""
    merged: dict[tuple, EvalResult] = {}
    for group in groups:
        for r in group:
            merged[(r.task, linear_protocol(r), r.metric, r.dataset, r.split)] = r
    return list(merged.values())


def public_result(r: EvalResult) -> EvalResult:
    """``r`` as published: its source and recipe without the evaluating machine's paths."""
    return dataclasses.replace(r, source=public_source(r.source), recipe=public_recipe(r.recipe))


def folder_results(folder: str | Path) -> list[EvalResult]:
    path = Path(folder) / RESULTS_FILE
    return read_results(path) if path.is_file() else []


def write_card(
    folder: str | Path, results: list[EvalResult], *, repo_id: str | None = None, name: str | None = None
) -> Path:
    """(Re)write a model folder's README.md and results.json from its config.json and ``results``."""
    folder = Path(folder)
    section, pretrained_cfg = read_config(folder)
    results = [public_result(r) for r in results]
    if results:
        write_results(results, folder / RESULTS_FILE)
    else:
        (folder / RESULTS_FILE).unlink(missing_ok=True)
    name = name or (repo_id.split("/")[-1] if repo_id else None) or section.variant or folder.resolve().name
    card = build_card(section, pretrained_cfg, results, name=name, repo_id=repo_id)
    return atomic_write_text(str(card), folder / CARD_FILE)
