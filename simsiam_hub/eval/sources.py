"""Evaluating a pretrained backbone from wherever it lives: the sources `knn` and `lincls` read,
the data they evaluate on, and the results files they write. The k-NN itself and feature
extraction: :mod:`.knn`; linear evaluation: :mod:`.lincls`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import DataConfig
from ..data import DEFAULT_IMAGE_SIZE
from ..data.datasets import DATASETS, dataset_info
from ..fileio import LOCK_NAME, atomic_write_text, folder_lock
from ..hub.folder import SimsiamSection
from ..hub.loading import from_pretrained
from ..hub.repo import is_local, resolve_model_dir
from ..hub.results import EvalResult, write_results
from ..models import initial_backbone
from ..precision import precision_name
from . import KNN_K, KNN_TEMPERATURE
from .knn import knn_evaluate, knn_with_baselines

log = logging.getLogger(__name__)


@dataclass
class LoadedSource:
    """A frozen backbone to evaluate and what is known of it.

    ``backbone``: a ResNet with ``fc = Identity`` in eval mode, no parameter requiring grad
    (or any module mapping images to features, e.g. ``nn.Flatten()`` for raw pixels).
    ``name``: the source as given; ``revision``: the Hub commit id it resolved to (None for
    local files and folders). ``section``: the ``simsiam`` section of its config.json (arch,
    stem, image size, dataset, recipe, ...), None for a module made by hand.
    """

    backbone: nn.Module
    name: str
    revision: str | None = None
    section: SimsiamSection | None = None


def load_source(source: str | Path, revision: str | None = None) -> LoadedSource:
    """Whatever ``simsiam_hub.from_pretrained`` accepts (a Hub repo id, a model folder, a
    ``.safetensors`` file, a training/official/MoCo/torchvision checkpoint) as a frozen backbone."""
    model = from_pretrained(source, revision=revision)
    resolved = None
    if not Path(str(source)).expanduser().is_file() and not is_local(source):
        # A Hub repo: its cache snapshot folder is named by the commit id (huggingface_hub's layout).
        resolved = resolve_model_dir(source, revision).name
    model.requires_grad_(False)
    return LoadedSource(model.eval(), str(source), resolved, model.simsiam_config)


def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over every tensor of ``backbone`` (names, dtypes, shapes, values): which weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_name(data_cfg, name: str | None = None) -> str:
    """The dataset's name in results files: ``name``, else the ImageFolder root's folder name
    (imagefolder), else the dataset option (fashion_mnist, ...)."""
    if name:
        return name
    if data_cfg.dataset == "imagefolder" and data_cfg.root:
        return Path(data_cfg.root).expanduser().resolve().name
    return data_cfg.dataset


def split_name(data_cfg) -> str:
    """What the ``val`` split of ``build_dataset`` is called in results (``test`` where a
    dataset has no val split)."""
    return dataset_info(data_cfg.dataset).eval_split


def knn_results(
    metrics: dict,
    *,
    data_cfg,
    source: LoadedSource | str,
    k: int,
    temperature: float,
    name: str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> list:
    """``metrics`` of :func:`~simsiam_hub.eval.knn.knn_evaluate` as results-file entries (top1, top5);
    ``amp_dtype`` is the features' precision (None: fp32)."""
    recipe = {
        "protocol": "weighted k-NN on frozen global-pooled l2-normalised features",
        "k": k,
        "temperature": temperature,
        "precision": precision_name(amp_dtype),
        "image_size": data_cfg.image_size,
        "bank_size": metrics["bank_size"],
        "query_size": metrics["query_size"],
    }
    src, rev = (source.name, source.revision) if isinstance(source, LoadedSource) else (str(source), None)
    common = dict(
        task="knn",
        dataset=dataset_name(data_cfg, name),
        split=split_name(data_cfg),
        source=src,
        source_revision=rev,
        recipe=recipe,
    )
    return [EvalResult(metric=m, value=metrics[m], **common) for m in ("top1", "top5")]


def data_config_for(source: LoadedSource, **options) -> DataConfig:
    """The :class:`~simsiam_hub.config.DataConfig` to evaluate ``source`` on.

    Starts from the source's training image size and its pretraining data when it records it
    (dataset, root), else ImageFolder at 224 px; then
    ``options`` that are not None (``dataset``, ``root``, ``image_size``, ``train_subset``,
    ``synthetic_size``, ``num_workers``) override. A dataset other than the recorded one
    does not inherit the recorded root.
    """
    section = source.section
    recipe = section.recipe if section is not None else None
    recorded = recipe.get("data", {}) if isinstance(recipe, dict) else {}
    values = {"dataset": "imagefolder", "image_size": section.image_size if section else DEFAULT_IMAGE_SIZE}
    if recorded.get("dataset") in DATASETS:
        values.update({k: recorded[k] for k in ("dataset", "root", "synthetic_size") if recorded.get(k) is not None})
    elif section is not None and section.dataset in DATASETS:
        values["dataset"] = section.dataset
    chosen = {k: v for k, v in options.items() if v is not None}
    if chosen.get("dataset", values["dataset"]) != values["dataset"]:
        values.pop("root", None)
    values.update(chosen)
    return DataConfig(**values)


def random_init_of(source: LoadedSource, seed: int | None = None) -> nn.Module:
    """The same architecture at random initialisation: for a training run's weights, the run's
    own initialisation (its seed and head widths, which draw from the same generator), else seed 0."""
    section = source.section
    if section is None:
        raise ValueError(f"{source.name}: a hand-made source has no architecture to re-initialise")
    recipe = section.recipe if isinstance(section.recipe, dict) else {}
    model = recipe.get("model", {})
    run_seed = recipe.get("run", {}).get("seed", 0)
    return initial_backbone(
        section.arch,
        small_stem=section.small_stem,
        dim=model.get("dim", 2048),
        pred_dim=model.get("pred_dim", 512),
        proj_layers=model.get("proj_layers", 3),
        seed=run_seed if seed is None else seed,
    )


def knn_with_baselines_file(source: LoadedSource, data_cfg, output: Path, **options) -> dict[str, dict]:
    """:func:`~simsiam_hub.eval.knn.knn_with_baselines` for ``source`` beside its random init and the
    pixels, written to ``knn_baselines.json`` beside ``output``; returns the comparison."""
    comparison = knn_with_baselines(source.backbone, random_init_of(source), data_cfg, **options)
    path = output.with_name("knn_baselines.json")
    atomic_write_text(
        json.dumps({"source": source.name, "image_size": data_cfg.image_size, **comparison}, indent=2) + "\n", path
    )
    return comparison


def run_knn(
    source: LoadedSource,
    data_cfg,
    output: Path,
    *,
    baselines: bool = False,
    dataset_label: str | None = None,
    **options,
) -> dict:
    """`simsiam-hub knn`: k-NN of ``source`` (and with ``baselines`` the baselines, written beside
    ``output``), written to the results file ``output``; returns the metrics (and
    ``comparison`` with baselines). Into a run folder (one another command holds or held the lock of),
    it takes that lock for the run."""
    locked = (output.parent / LOCK_NAME).exists()
    with folder_lock(output.parent, "--output") if locked else contextlib.nullcontext():
        return _run_knn(source, data_cfg, output, baselines=baselines, dataset_label=dataset_label, **options)


def _run_knn(source, data_cfg, output: Path, *, baselines: bool, dataset_label: str | None, **options) -> dict:
    if baselines:
        comparison = knn_with_baselines_file(source, data_cfg, output, **options)
        metrics = dict(comparison["simsiam"], comparison=comparison)
    else:
        metrics = knn_evaluate(source.backbone, data_cfg, **options)
    k, temperature = options.get("k", KNN_K), options.get("temperature", KNN_TEMPERATURE)
    results = knn_results(
        metrics,
        data_cfg=data_cfg,
        source=source,
        k=k,
        temperature=temperature,
        name=dataset_label,
        amp_dtype=options.get("amp_dtype"),
    )
    write_results(results, output)
    return metrics
