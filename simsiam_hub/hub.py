"""Model repos: export, push, pull, ``from_pretrained``, ``import-official``.

A model repo is a Hub model repo or a local folder (a local folder works wherever a repo id
does: the embedded default, no account and no network). It holds:

``model.safetensors``    the backbone alone, torchvision/timm names, no ``fc``, string metadata
``config.json``          timm-compatible (``architecture``, ``num_classes: 0``, ``num_features``,
                         ``pretrained_cfg``) plus a ``simsiam`` section: arch, stem, recipe, source
``README.md``            the model card (huggingface_hub ``ModelCard``), made from config.json
                         and results.json, evaluation results as model-index
``results.json``         evaluation results (``simsiam_hub.results`` format), when there are any
``simsiam.safetensors``  optional: the whole SimSiam model, to continue pretraining

Hub I/O is huggingface_hub's: ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and the Hub
cache behave as it documents.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import SimsiamHubError
from .fileio import atomic_path, atomic_write_text
from .results import EvalResult, read_results, write_results
from .weights import (
    BACKBONE_FILE,
    SIMSIAM_FILE,
    LoadedWeights,
    WeightsError,
    check_backbone,
    read_safetensors,
    read_weights,
    save_safetensors,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
RESULTS_FILE = "results.json"
MODEL_FILES = (BACKBONE_FILE, CONFIG_FILE, CARD_FILE, RESULTS_FILE, SIMSIAM_FILE)
HEADS = ("backbone", "simsiam")

# Licence of weights we train: the data's. The official releases are CC-BY-NC-4.0.
LICENSE_BY_DATASET = {"fashion_mnist": "mit", "synthetic": "apache-2.0"}
LICENSE_BY_KIND = {"simsiam-official": "cc-by-nc-4.0", "moco": "cc-by-nc-4.0"}
# Our dataset names -> Hub dataset ids, for the card's `datasets` metadata.
HUB_DATASETS = {
    "imagenet-1k": "ILSVRC/imagenet-1k",
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "voc07": "HuggingFaceM4/pascal_voc",
    "voc0712": "HuggingFaceM4/pascal_voc",
    "coco2017": "detection-datasets/coco",
}
# Our task -> (model-index task type, task name). kNN and linear share a task type, and
# model-index groups results by task type and dataset: their metric types carry the task.
TASK_TYPES = {
    "knn": ("image-classification", "k-NN classification (frozen features)"),
    "linear": ("image-classification", "Linear classification (frozen backbone)"),
    "detection": ("object-detection", "Object detection (fine-tuned, Detectron2 R50-C4)"),
    "instance-segmentation": ("instance-segmentation", "Instance segmentation (fine-tuned, Detectron2 R50-C4)"),
}
CITATION = """@inproceedings{chen2021exploring,
  title     = {Exploring Simple Siamese Representation Learning},
  author    = {Chen, Xinlei and He, Kaiming},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {15750--15758},
  year      = {2021}
}"""


class HubError(SimsiamHubError, RuntimeError):
    """A model repo or folder that cannot be found, read or written."""


class RepoNotFoundError(HubError):
    """The Hub has no such repo (or it is private and the token does not open it)."""


class NotCachedError(HubError):
    """Offline (or the Hub unreachable) and the files were never downloaded."""


# --- locating a model repo ---------------------------------------------------------------


def is_local(ref: str | Path) -> bool:
    """A local folder rather than a Hub repo id: an existing path, or one written as a path
    (absolute, ``./``, ``../``, ``~``). Hub repo ids are ``NAME`` or ``ORG/NAME``."""
    text = str(ref)
    return Path(text).expanduser().exists() or text.startswith(("/", "./", "../", "~", "."))


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None):
    """huggingface_hub's exceptions as one-line errors that say what was expected."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    at = repo_id + (f" at revision {revision!r}" if revision else "")
    try:
        yield
    except hf.HFValidationError as err:
        raise HubError(
            f"{repo_id!r} is neither an existing local folder nor a valid Hub repo id (expected ORG/NAME): {err}"
        ) from None
    except hf.RevisionNotFoundError:
        raise HubError(f"{at}: no such revision on {_endpoint()}: expected a branch, tag or commit id of {repo_id}") from None
    except hf.RepositoryNotFoundError:
        raise RepoNotFoundError(
            f"repo {repo_id} not found on {_endpoint()} (expected an existing model repo; if it is private, "
            "set HF_TOKEN or run `hf auth login`)"
        ) from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else f"{_endpoint()} cannot be reached"
        raise NotCachedError(
            f"{at} is not in the Hub cache ({constants.HF_HUB_CACHE}) and {why}: download it once online "
            "(simsiam-hub pull), or pass a local model folder"
        ) from None
    except hf.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        detail = (getattr(err, "server_message", None) or str(err)).strip().splitlines()[0][:300]
        raise HubError(f"{at}: {_endpoint()} answered HTTP {status}: {detail}") from None
    except Exception as err:
        # Transport errors (connection refused, timeouts) are the HTTP library's own classes.
        if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "requests", "urllib3"):
            raise
        reason = str(err).splitlines()[0][:300] if str(err) else ""
        raise HubError(f"{at}: cannot reach {_endpoint()}: {type(err).__name__}: {reason}") from None


def _snapshot(repo_id: str, revision: str | None, *, allow_patterns=None, local_dir=None) -> Path:
    from huggingface_hub import snapshot_download

    with _hub_errors(repo_id, revision):
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, local_dir=local_dir))


def resolve_model_dir(ref: str | Path, revision: str | None = None, files=(BACKBONE_FILE,)) -> Path:
    """The folder holding ``config.json`` and ``files`` of a model repo: ``ref`` itself when it
    is a local folder, else the Hub cache's snapshot (downloading only those files)."""
    wanted = (CONFIG_FILE, *files)
    if is_local(ref):
        folder = Path(ref).expanduser()
        if revision:
            raise HubError(f"{ref} is a local folder: it has no revisions (revision={revision!r} given)")
        if not folder.is_dir():
            raise HubError(f"model folder not found: {folder} (expected a folder with {', '.join(wanted)})")
    else:
        folder = _snapshot(str(ref), revision, allow_patterns=list(wanted))
    missing = [f for f in wanted if not (folder / f).is_file()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())[:10]
        where = f"{ref}" + (f" at revision {revision!r}" if revision else "")
        raise HubError(f"{where} is not a complete model repo: expected {', '.join(wanted)}; missing {missing}, found {found}")
    return folder


def read_config(folder: str | Path) -> dict:
    """``config.json`` of a model folder, with the fields ``from_pretrained`` needs checked."""
    from .models import ARCHS

    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{path} is not a readable config.json: {err}") from None
    if not isinstance(config, dict):
        raise HubError(f"{path}: expected a JSON object, found {type(config).__name__}")
    section = config.get("simsiam") or {}
    arch = section.get("arch", config.get("architecture"))
    if arch not in ARCHS:
        raise HubError(f"{path}: expected an architecture among {', '.join(ARCHS)}, found {arch!r}")
    return config


# --- describing a model: config.json and the model card -----------------------------------


def _describe(
    loaded: LoadedWeights,
    path: Path,
    *,
    variant=None,
    license: str | None = None,
    dataset: str | None = None,
    source: str | None = None,
) -> dict:
    """The ``simsiam`` section of config.json: everything the card and loaders need."""
    from . import __version__

    info = loaded.info
    desc = {
        "arch": loaded.arch,
        "small_stem": loaded.small_stem,
        "image_size": 224,
        "method": loaded.method,
        "epochs": None,
        "batch_size": None,
        "dataset": None,
        "source": source or path.name,
        "license": None,
        "dim": None,
        "pred_dim": None,
        "has_simsiam": loaded.simsiam is not None,
        "variant": variant.name if variant else None,
        "recipe": None,
        "library_version": f"simsiam-hub {__version__}",
    }
    if loaded.simsiam is not None:
        desc["dim"] = int(loaded.simsiam["encoder.fc.6.weight"].shape[0])
        desc["pred_dim"] = int(loaded.simsiam["predictor.0.weight"].shape[0])
    if loaded.kind == "simsiam-hub":
        cfg = info["config"]
        desc.update(
            image_size=cfg["data"]["image_size"],
            epochs=round(float(info["epoch"]), 4),
            batch_size=cfg["optim"]["batch_size"],
            dataset=cfg["data"]["dataset"],
            recipe=dict(cfg, trained_steps=info.get("step")),
        )
        if not source:
            desc["source"] = f"{path.name} (simsiam-hub training checkpoint, step {info.get('step')})"
    elif loaded.kind == "safetensors":
        meta = info.get("metadata", {})
        desc.update(
            epochs=meta.get("epochs"),
            batch_size=meta.get("batch_size"),
            dataset=meta.get("dataset"),
            source=source or meta.get("source") or path.name,
        )
    else:
        desc["epochs"] = info.get("epoch")
        desc["recipe"] = f"imported from a {loaded.kind} checkpoint ({path.name})"
        if loaded.kind in ("simsiam-official", "moco"):
            desc["dataset"] = "imagenet-1k"  # every official SimSiam and MoCo release is
    if variant is not None:
        desc.update(epochs=variant.epochs, batch_size=variant.batch_size, dataset=variant.dataset, recipe=variant.recipe)
        desc["source"] = source or variant.source_url or variant.repo_id
    desc["dataset"] = dataset or desc["dataset"] or "unknown"
    desc["license"] = (
        license
        or (variant.license if variant else None)
        or LICENSE_BY_KIND.get(loaded.kind)
        or LICENSE_BY_DATASET.get(desc["dataset"], "other")
    )
    return desc


def timm_config(desc: dict) -> dict:
    """config.json: timm's format (what ``timm.create_model('hf-hub:...')`` reads), plus ours."""
    from .augment import IMAGENET_MEAN, IMAGENET_STD, eval_crop_pct
    from .models import feature_dim

    size = desc["image_size"]
    return {
        "architecture": desc["arch"],
        "num_classes": 0,
        "num_features": feature_dim(desc["arch"]),
        "global_pool": "avg",
        "pretrained_cfg": {
            "tag": desc["method"],
            "custom_load": False,
            "input_size": [3, size, size],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": eval_crop_pct(desc.get("dataset")),
            "crop_mode": "center",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_classes": 0,
            "pool_size": [max(1, size // 32)] * 2,
            "first_conv": "conv1",
            "classifier": "fc",
            "license": desc["license"],
            "paper_ids": "arXiv:2011.10566",
            "paper_name": "Exploring Simple Siamese Representation Learning",
        },
        "simsiam": desc,
    }


def _metadata(desc: dict) -> dict[str, str]:
    from .weights import backbone_metadata

    return backbone_metadata(
        arch=desc["arch"],
        small_stem=desc["small_stem"],
        method=desc["method"],
        epochs=desc["epochs"] if desc["epochs"] is not None else "unknown",
        batch_size=desc["batch_size"] if desc["batch_size"] is not None else "unknown",
        dataset=desc["dataset"],
        source=desc["source"],
    )


# The linear protocols a results entry can name (recipe["protocol"]): how the card shows them.
LINEAR_PROTOCOLS = {"reference": "reference recipe, LARS schedule", "logreg": "logistic-regression probe, L-BFGS to convergence"}


def _linear_protocol(r: EvalResult) -> str | None:
    """The protocol of a linear result (reference | logreg), None for other tasks and older files."""
    protocol = r.recipe.get("protocol") if r.task == "linear" else None
    return protocol if protocol in LINEAR_PROTOCOLS else None


def _hf_eval_results(results: list[EvalResult]):
    from huggingface_hub import EvalResult as HfEvalResult

    out = []
    for r in results:
        task_type, task_name = TASK_TYPES[r.task]
        metric = f"{r.task}_{r.metric}" if task_type == "image-classification" else r.metric
        protocol = _linear_protocol(r)
        metric = f"{r.task}_logreg_{r.metric}" if protocol == "logreg" else metric  # the two protocols are two metrics
        name = metric if r.std is None else f"{metric} (mean of {r.num_trials} trials, std {r.std:.2f})"
        name += f" ({LINEAR_PROTOCOLS[protocol]})" if protocol else ""
        out.append(
            HfEvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=HUB_DATASETS.get(r.dataset, r.dataset),
                dataset_name=r.dataset,
                dataset_split=r.split,
                metric_type=metric.lower(),
                metric_name=name,
                metric_value=round(r.value, 4),
                # model-index wants both or neither; a local source stays in the card's table
                source_name=r.source if r.source.startswith("http") else None,
                source_url=r.source if r.source.startswith("http") else None,
            )
        )
    return out


def _results_table(results: list[EvalResult]) -> str:
    if not results:
        return (
            "No evaluation results were attached to this export: `simsiam-hub knn`/`lincls` and the "
            "detection transfer write results files that `simsiam-hub export --results FILE` adds here."
        )
    rows = ["| task | dataset | split | metric | value | trials | source |", "|---|---|---|---|---|---|---|"]
    for r in results:
        value = f"{r.value:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
        task = f"{r.task} ({LINEAR_PROTOCOLS[_linear_protocol(r)]})" if _linear_protocol(r) else r.task
        rows.append(f"| {task} | {r.dataset} | {r.split} | {r.metric} | {value} | {r.num_trials} | {r.source or '-'} |")
    return "\n".join(rows)


def build_card(config: dict, results: list[EvalResult], *, name: str, repo_id: str | None = None):
    """The model card (a huggingface_hub ``ModelCard``) of a model folder."""
    from huggingface_hub import ModelCard, ModelCardData

    from .registry import GITHUB_REPO, OFFICIAL_CODE_URL, PAPER_URL

    d = config["simsiam"]
    timm_ok = not d["small_stem"]
    ref = repo_id or f"<org>/{name}"
    dataset_id = HUB_DATASETS.get(d["dataset"])
    data = ModelCardData(
        license=d["license"],
        library_name="timm" if timm_ok else "pytorch",
        pipeline_tag="image-feature-extraction",
        tags=["simsiam", "self-supervised-learning", "image-feature-extraction", "resnet", d["arch"], "safetensors"]
        + (["timm"] if timm_ok else []),
        datasets=[dataset_id] if dataset_id else None,
        model_name=name,
        eval_results=_hf_eval_results(results) or None,
    )
    what = {
        "simsiam": "pretrained with SimSiam (self-supervised: no labels)",
        "moco": "pretrained with MoCo (self-supervised), imported for comparison",
        "supervised": "trained with labels (supervised), imported as a baseline",
    }.get(d["method"], f"pretrained with {d['method']}")
    stem = "small-image stem (3x3/1 conv, no max-pool)" if d["small_stem"] else "standard stem (7x7/2 conv, max-pool)"
    recipe = d["recipe"]
    if isinstance(recipe, dict):
        import yaml

        recipe_text = "```yaml\n" + yaml.safe_dump(recipe, sort_keys=False).strip() + "\n```"
    else:
        recipe_text = str(recipe or "not recorded")
    size = d["image_size"]
    timm_text = (
        f'```python\nimport timm\nmodel = timm.create_model("hf-hub:{ref}", pretrained=True)  # num_classes=0: pooled features\n```'
        if timm_ok
        else "timm builds the standard stem only: load this small-stem model with `from_pretrained`."
    )
    files = [
        f"- `{BACKBONE_FILE}`: the backbone alone (torchvision/timm names, no `fc`), with its recipe as metadata",
        f"- `{CONFIG_FILE}`: timm-compatible config, plus a `simsiam` section (arch, stem, recipe, source)",
        f"- `{CARD_FILE}`: this card; `{RESULTS_FILE}`: the evaluation results, when there are any",
    ]
    if d["has_simsiam"]:
        files.append(
            f"- `{SIMSIAM_FILE}`: the whole SimSiam model (projector dim {d['dim']}, predictor dim {d['pred_dim']}), "
            f"to continue pretraining: `simsiam-hub pretrain --init-from {SIMSIAM_FILE}`"
        )
    body = f"""
# {name}

A {d['arch']} backbone {what}. SimSiam: [Chen & He, *Exploring Simple Siamese Representation
Learning*, CVPR 2021]({PAPER_URL}) ([official code]({OFFICIAL_CODE_URL})). Made with simsiam-hub.

| | |
|---|---|
| architecture | {d['arch']}, {stem}; torchvision parameter names; `fc` removed: {config['num_features']}-d pooled features |
| method | {d['method']} |
| pretraining data | {d['dataset']} |
| epochs | {d['epochs'] if d['epochs'] is not None else 'unknown'} |
| batch size | {d['batch_size'] if d['batch_size'] is not None else 'unknown'} |
| input | {size} px RGB; eval: resize to {round(size / 0.875)} then centre-crop {size}, ImageNet mean/std |
| source | {d['source']} |
| license | {d['license']} |

## Evaluation

{_results_table(results)}

## How to load

With torch.hub (downloads this repo through the simsiam-hub code):

```python
import torch
model = torch.hub.load("{GITHUB_REPO}", "simsiam_resnet50", pretrained=True, repo_id="{ref}")
```

With simsiam-hub (`pip install simsiam-hub`); a local folder works as well as a repo id:

```python
import simsiam_hub
model = simsiam_hub.from_pretrained("{ref}")  # eval mode, fc = Identity
features = model(model.transform(image).unsqueeze(0))  # (1, {config['num_features']})
```

With timm:

{timm_text}

For detection transfer: `simsiam-hub convert-detectron2 {ref} --out backbone.pkl`.

## Training recipe

{recipe_text}

## Files

{chr(10).join(files)}

## License

{d['license']}{" (the official SimSiam weights are released under CC-BY-NC 4.0: non-commercial use)" if d['license'] == 'cc-by-nc-4.0' else ""}.

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _merge_results(*groups) -> list[EvalResult]:
    """Results in order, a later entry replacing an earlier one of the same task/metric/dataset/split
    (and linear protocol)."""
    merged: dict[tuple, EvalResult] = {}
    for group in groups:
        for r in group:
            merged[(r.task, r.metric, r.dataset, r.split, _linear_protocol(r))] = r
    return list(merged.values())


def _published_results(variant) -> list[EvalResult]:
    if variant is None or variant.top1 is None:
        return []
    return [
        EvalResult(
            task="linear", metric="top1", value=variant.top1, dataset=variant.dataset, split="val",
            source="https://github.com/facebookresearch/simsiam", recipe={"published": "official README"},
        )
    ]  # fmt: skip


def write_card(folder: str | Path, results: list[EvalResult], *, repo_id: str | None = None, name: str | None = None) -> Path:
    """(Re)write a model folder's README.md and results.json from its config.json and ``results``."""
    folder = Path(folder)
    config = read_config(folder)
    if results:
        write_results(results, folder / RESULTS_FILE)
    else:
        (folder / RESULTS_FILE).unlink(missing_ok=True)
    name = name or (repo_id.split("/")[-1] if repo_id else None) or config["simsiam"].get("variant") or folder.resolve().name
    card = build_card(config, results, name=name, repo_id=repo_id)
    return atomic_write_text(str(card), folder / CARD_FILE)


def folder_results(folder: str | Path) -> list[EvalResult]:
    path = Path(folder) / RESULTS_FILE
    return read_results(path) if path.is_file() else []


# --- export and import ----------------------------------------------------------------------


def _variant(variant):
    """A registry :class:`~simsiam_hub.registry.Variant` from its name (None stays None)."""
    from .registry import get_variant

    if not isinstance(variant, str):
        return variant
    found = get_variant(variant)
    if found is None:
        raise HubError(f"unknown variant {variant!r}: expected one of the names `simsiam-hub list` prints")
    return found


def export(
    source: str | Path,
    out_dir: str | Path,
    *,
    results=(),
    license: str | None = None,
    dataset: str | None = None,
    variant=None,
    source_name: str | None = None,
    with_simsiam: bool = True,
    find_results: bool = True,
) -> Path:
    """Write a model folder from a checkpoint; returns ``out_dir``.

    ``source``: one of our training checkpoints, an official SimSiam / MoCo checkpoint, a
    torchvision state dict or a ``.safetensors`` file. ``results``: results files (or
    :class:`EvalResult` lists) for the card; for a training checkpoint, ``results*.json``
    files beside it are picked up too (``find_results``). ``variant``: a registry name whose
    recipe and published accuracy describe the weights. ``with_simsiam``: also write
    ``simsiam.safetensors`` when the source holds the whole model.
    """
    path = Path(source).expanduser()
    variant = _variant(variant)
    loaded = read_weights(path)
    desc = _describe(loaded, path, variant=variant, license=license, dataset=dataset, source=source_name)
    files = []
    if find_results and loaded.kind == "simsiam-hub":
        files = sorted(path.parent.glob("results*.json"))
        for found in files:
            log.info("adding evaluation results from %s", found)
    explicit = [r for item in results for r in (read_results(item) if isinstance(item, (str, Path)) else [item])]
    all_results = _merge_results(_published_results(variant), *(read_results(f) for f in files), explicit)

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    config = timm_config(desc)
    save_safetensors(loaded.backbone, out / BACKBONE_FILE, _metadata(desc))
    if with_simsiam and loaded.simsiam is not None:
        save_safetensors(loaded.simsiam, out / SIMSIAM_FILE, dict(_metadata(desc), content="simsiam"))
    else:
        config["simsiam"]["has_simsiam"] = False
        (out / SIMSIAM_FILE).unlink(missing_ok=True)  # a stale one from an earlier export
    atomic_write_text(json.dumps(config, indent=2) + "\n", out / CONFIG_FILE)
    write_card(out, all_results, name=variant.name if variant else None)
    return out


def import_official(checkpoint: str | Path, out_dir: str | Path | None = None, *, variant=None, progress: bool = True) -> Path:
    """A model folder from an official SimSiam (or MoCo) checkpoint: a path, a URL or a
    registry name. URLs and names are downloaded once into the cache, with a progress bar;
    a name's folder defaults to the cache's converted copy."""
    from . import registry

    ref = str(checkpoint)
    named = registry.get_variant(ref)
    variant = _variant(variant) or named
    source_name = None
    if named is not None:
        if named.source_url is None:
            raise HubError(f"{ref} has no original checkpoint to import: it lives on the Hub only ({named.repo_id}); use pull")
        path, source_name = registry.download(named.source_url, progress=progress), named.source_url
    elif ref.startswith(("http://", "https://")):
        path, source_name = registry.download(ref, progress=progress), ref
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            names = ", ".join(v.name for v in registry.VARIANTS if v.source_url)
            raise HubError(f"{ref}: expected a checkpoint file, an http(s) URL or a registry name ({names}); found none")
    if out_dir is None:
        if variant is None:
            raise HubError("an output folder is required (--out) unless CHECKPOINT is a registry name")
        out_dir = registry.converted_dir(variant)
    return export(path, out_dir, variant=variant, source_name=source_name)


# --- push and pull ----------------------------------------------------------------------------


def _staged_folder(source: Path, stack: contextlib.ExitStack) -> Path:
    """A model folder for ``source``: itself, or an export of a checkpoint into a temporary folder."""
    if source.is_dir():
        resolve_model_dir(source)
        return source
    if not source.is_file():
        raise HubError(f"{source}: expected a model folder or a checkpoint, found nothing there")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="simsiam-hub-push-")))
    return export(source, tmp / "model")


def push_to_hub(
    source: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    results=(),
    token: str | bool | None = None,
) -> str:
    """Upload a model folder (or a checkpoint, exported first) to a Hub repo in one commit.

    Creates the repo (and the ``revision`` branch) when missing; the card is rewritten for
    ``repo_id`` and ``results`` (results files) are added to it; model files the folder no
    longer has are deleted from the repo. Returns the commit id. ``repo_id`` may also be a
    local folder path (``./hub/my-model``): the files are copied there and its path returned.
    ``token``: huggingface_hub's (``HF_TOKEN``, ``hf auth login``); never printed.
    """
    with contextlib.ExitStack() as stack:
        folder = _staged_folder(Path(source).expanduser(), stack)
        extra = [r for item in results for r in (read_results(item) if isinstance(item, (str, Path)) else [item])]
        merged = _merge_results(folder_results(folder), extra)
        # README.md and results.json are rendered for this repo into a staging folder.
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="simsiam-hub-card-")))
        shutil.copyfile(folder / CONFIG_FILE, staging / CONFIG_FILE)
        local = is_local(repo_id)
        write_card(staging, merged, repo_id=None if local else repo_id, name=Path(repo_id).name if local else None)
        files = {name: (staging if name in (CARD_FILE, RESULTS_FILE) else folder) / name for name in MODEL_FILES}
        files = {name: p for name, p in files.items() if p.is_file()}
        if local:
            return _push_local(files, Path(repo_id).expanduser(), revision)
        return _push_hub(files, repo_id, revision=revision, private=private, commit_message=commit_message, token=token)


def _push_local(files: dict[str, Path], target: Path, revision: str | None) -> str:
    if revision:
        raise HubError(f"{target} is a local folder: it has no revisions (revision={revision!r} given)")
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if name in files:
            with atomic_path(target / name) as tmp:
                shutil.copyfile(files[name], tmp)
        else:
            (target / name).unlink(missing_ok=True)
    return str(target)


def _push_hub(files: dict[str, Path], repo_id: str, *, revision, private, commit_message, token) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    with _hub_errors(repo_id, revision):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        existing = set(api.list_repo_files(repo_id, revision=revision))
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(p)) for name, p in files.items()]
        operations += [CommitOperationDelete(path_in_repo=name) for name in MODEL_FILES if name in existing and name not in files]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or "Upload SimSiam model with simsiam-hub",
            revision=revision,
        )
    return info.oid


def pull(repo_id: str, revision: str | None = None, out: str | Path | None = None) -> Path:
    """Download a model repo (all its files) into ``out``, or into the Hub cache when ``out``
    is None; returns the folder. A local folder is copied to ``out`` (or returned as is)."""
    if is_local(repo_id):
        folder = resolve_model_dir(repo_id, revision)
        if out is None:
            return folder
        files = {name: folder / name for name in MODEL_FILES if (folder / name).is_file()}
        return Path(_push_local(files, Path(out).expanduser(), None))
    folder = _snapshot(repo_id, revision, local_dir=str(Path(out).expanduser()) if out else None)
    resolve_model_dir(folder)  # a repo that is not a model repo is said so here
    return folder


# --- loading ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _skip_init_on_meta():
    """``torch.nn.init`` functions become no-ops on meta tensors for the block.

    On the meta device they compute nothing but still run torch's Python decompositions,
    which cost more than reading a ResNet-50's safetensors; every tensor they would touch is
    replaced by ``load_state_dict(strict=True, assign=True)``. Real tensors (another thread
    building a model meanwhile) still go to the original functions.
    """
    from torch.nn import init

    names = ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_", "constant_", "ones_", "zeros_", "trunc_normal_")
    saved = {name: getattr(init, name) for name in names}

    def skipping(original):
        return lambda tensor, *args, **kwargs: tensor if tensor.is_meta else original(tensor, *args, **kwargs)

    try:
        for name, original in saved.items():
            setattr(init, name, skipping(original))
        yield
    finally:
        for name, original in saved.items():
            setattr(init, name, original)


def _assemble(arch: str, small_stem: bool, state: dict, head: str, where: str, dim=None, pred_dim=None):
    """Build the network on the meta device (no random initialisation) and take the tensors
    as its parameters (``assign=True``): loading costs little more than reading the file."""
    from .models import SimSiam, build_backbone

    with torch.device("meta"), _skip_init_on_meta():
        if head == "backbone":
            model = build_backbone(arch, small_stem=small_stem)
        else:
            model = SimSiam(arch, dim, pred_dim, small_stem=small_stem)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:
        if head == "backbone":
            check_backbone(state, arch, small_stem, where)  # raises with the first mismatches
        raise WeightsError(f"{where} does not fit a {arch} SimSiam model (dim {dim}, pred_dim {pred_dim})") from None
    return model.eval()


def _attach(model, desc: dict, pretrained_cfg: dict | None):
    """The eval transform (``model.transform``) and the configs, at hand on the model."""
    from .augment import eval_transform

    model.transform = eval_transform(desc.get("image_size", 224), dataset=desc.get("dataset"))
    model.pretrained_cfg = pretrained_cfg
    model.simsiam_config = desc
    return model


def from_pretrained(repo_id_or_path: str | Path, revision: str | None = None, head: str = "backbone"):
    """A pretrained model, in eval mode, with its eval transform at ``model.transform``.

    ``repo_id_or_path``: a Hub repo id (``revision``: branch, tag or commit id), a local model
    folder, or a weights file (``.safetensors``, a training checkpoint, an official SimSiam /
    MoCo checkpoint, a torchvision state dict). ``head="backbone"``: the torchvision ResNet with
    ``fc = Identity`` (pooled features); ``head="simsiam"``: the whole :class:`SimSiam` model.
    """
    if head not in HEADS:
        raise HubError(f"head={head!r}: expected one of {', '.join(HEADS)}")
    path = Path(str(repo_id_or_path)).expanduser()
    if path.is_file():
        if revision:
            raise HubError(f"{path} is a local file: it has no revisions (revision={revision!r} given)")
        loaded = read_weights(path)
        desc = _describe(loaded, path)
        if head == "simsiam" and loaded.simsiam is None:
            raise WeightsError(f"{path} holds a backbone only ({loaded.kind}): head='simsiam' needs the whole model")
        state = loaded.backbone if head == "backbone" else loaded.simsiam
        model = _assemble(loaded.arch, loaded.small_stem, state, head, str(path), desc["dim"], desc["pred_dim"])
        return _attach(model, desc, timm_config(desc)["pretrained_cfg"])
    weights_file = BACKBONE_FILE if head == "backbone" else SIMSIAM_FILE
    folder = resolve_model_dir(repo_id_or_path, revision, files=(weights_file,))
    config = read_config(folder)
    desc = config.get("simsiam") or {
        "arch": config["architecture"],
        "small_stem": False,
        "image_size": (config.get("pretrained_cfg") or {}).get("input_size", [3, 224, 224])[-1],
    }
    state, _ = read_safetensors(folder / weights_file)
    if head == "backbone":  # a timm repo with a classifier still gives its backbone
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    where = f"{repo_id_or_path}/{weights_file}"
    model = _assemble(desc["arch"], desc.get("small_stem", False), state, head, where, desc.get("dim"), desc.get("pred_dim"))
    return _attach(model, desc, config.get("pretrained_cfg"))


def load_variant(ref: str | None = None, revision: str | None = None, head: str = "backbone"):
    """``from_pretrained`` with the registry's fallback: a variant (by name or repo id) loads from
    its Hub repo when that exists, else its official checkpoint is downloaded and converted
    once into the cache (and it says so). Anything else goes to ``from_pretrained``."""
    from . import registry

    ref = ref or registry.get_variant(registry.DEFAULT_VARIANT).repo_id
    variant = registry.get_variant(ref)
    if variant is None:
        return from_pretrained(ref, revision=revision, head=head)
    try:
        return from_pretrained(variant.repo_id, revision=revision, head=head)
    except (RepoNotFoundError, NotCachedError) as err:
        if variant.source_url is None or revision is not None:
            raise
        folder = registry.converted_dir(variant)
        if not (folder / BACKBONE_FILE).is_file():
            log.warning(
                "%s; converting the official release %s instead (licence %s) into %s",
                err, variant.source_url, variant.license, folder,
            )  # fmt: skip
            import_official(variant.name, folder)
        else:
            log.warning("%s; using the converted official release in %s", err, folder)
        return from_pretrained(folder, head=head)
