"""Model folders from checkpoints: ``simsiam-hub export`` (our training checkpoints, official
SimSiam / MoCo checkpoints, torchvision state dicts, safetensors files) and ``import-official``.

A folder is written whole (:func:`~simsiam_hub.fileio.atomic_folder`): built beside its
destination and swapped in, so a reader never finds new weights beside an old config, and a
killed export leaves the old folder as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..data.datasets import dataset_info
from ..fileio import atomic_folder
from ..hub import registry
from .card import folder_results, merge_results, write_card
from .folder import (
    BACKBONE_FILE,
    SIMSIAM_FILE,
    FolderError,
    SimsiamSection,
    check_destination,
    fingerprint,
    public_recipe,
    public_source,
    write_config,
)
from .results import EvalResult, read_results
from .weights import LoadedWeights, backbone_metadata, read_weights, save_safetensors

__all__ = ["describe", "export", "rewrite_card", "import_official"]

log = logging.getLogger(__name__)

# Licences of imported weights; weights we train take their data's (data.DATASETS).
LICENSE_BY_KIND = {"simsiam-official": "cc-by-nc-4.0", "moco": "cc-by-nc-4.0"}


def _number(value, kind=float):
    """A metadata string ("100", "unknown") as a number, or None."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def describe(
    loaded: LoadedWeights,
    path: Path,
    *,
    variant: registry.Variant | None = None,
    license: str | None = None,
    dataset: str | None = None,
    source: str | None = None,
    publish: bool = False,
) -> SimsiamSection:
    """The ``simsiam`` section for weights read from ``path``: what the file says about itself,
    then what the registry ``variant`` says, then the explicit ``license``/``dataset``/``source``.
    ``publish``: for a model folder, whose files never name this machine's paths (local sources
    by file name and SHA-256 fingerprint, no run-local recipe keys); else the recipe as recorded
    (the evaluation commands read its data.root)."""
    info = loaded.info
    section = SimsiamSection(
        arch=loaded.arch, small_stem=loaded.small_stem, method=loaded.method, source=source or path.name
    )
    if loaded.simsiam is not None:
        section.has_simsiam = True
        section.dim = int(loaded.simsiam["predictor.3.weight"].shape[0])  # the predictor's output: z's width
        section.pred_dim = int(loaded.simsiam["predictor.0.weight"].shape[0])
    if loaded.kind == "simsiam-hub":
        cfg = info["config"]
        section.image_size = cfg["data"]["image_size"]
        section.epochs = round(float(info["epoch"]), 4)
        section.batch_size = cfg["optim"]["batch_size"]
        section.dataset = cfg["data"]["dataset"]
        section.recipe = dict(cfg, trained_steps=info.get("step"))
        if info.get("data_source"):  # the new sources (data/sources.py): say what, never where
            section.dataset = source_text(info["data_source"])
            section.recipe["data"] = dict(
                cfg["data"], root=None if "hub_id" not in info["data_source"] else cfg["data"]["root"]
            )
        if not source:
            digest = f", sha256 {fingerprint(path)}" if publish else ""
            section.source = f"{path.name} (simsiam-hub training checkpoint, step {info.get('step')}{digest})"
    elif loaded.kind == "safetensors":
        meta = info.get("metadata", {})
        section.epochs = _number(meta.get("epochs"))
        section.batch_size = _number(meta.get("batch_size"), int)
        section.dataset = meta.get("dataset") or section.dataset
        section.source = source or meta.get("source") or path.name
    else:
        section.epochs = _number(info.get("epoch"))
        section.recipe = f"imported from a {loaded.kind} checkpoint ({path.name})"
        if loaded.kind in ("simsiam-official", "moco"):
            section.dataset = "imagenet-1k"  # every official SimSiam and MoCo release is
    if variant is not None:
        section.variant = variant.name
        section.epochs, section.batch_size, section.dataset, section.recipe = (
            variant.epochs,
            variant.batch_size,
            variant.dataset,
            variant.recipe,
        )
        section.source = source or variant.source_url or variant.repo_id
    section.dataset = dataset or section.dataset
    data_cfg = info.get("config", {}).get("data", {}) if loaded.kind == "simsiam-hub" else {}
    section.license = (
        license
        or (variant.license if variant else None)
        or LICENSE_BY_KIND.get(loaded.kind)
        or data_cfg.get("license")
        or dataset_info(section.dataset).license
        or ("unknown" if info.get("data_source") else "other")
    )
    if publish:
        section.source, section.recipe = public_source(section.source), public_recipe(section.recipe)
    return section


def source_text(source: dict) -> str:
    """A pretraining source as the card names it: a Hub dataset's id (``@revision``), else the kind,
    image count and a fingerprint of the ordered names, never a local path."""
    if source.get("hub_id"):
        return source["hub_id"] + (f"@{source['revision']}" if source.get("revision") else "")
    return f"{source['kind']}: {source['images']} images, fingerprint {source['fingerprint']}"


def weights_metadata(section: SimsiamSection) -> dict[str, str]:
    """The string metadata of ``model.safetensors``."""
    return backbone_metadata(
        arch=section.arch,
        small_stem=section.small_stem,
        method=section.method,
        epochs=section.epochs if section.epochs is not None else "unknown",
        batch_size=section.batch_size if section.batch_size is not None else "unknown",
        dataset=section.dataset,
        source=section.source,
    )


def published_results(variant: registry.Variant | None) -> list[EvalResult]:
    """The accuracy a registry variant's publisher reports, as a result for the card."""
    if variant is None or variant.top1 is None:
        return []
    return [
        EvalResult(
            task="linear",
            metric="top1",
            value=variant.top1,
            dataset=variant.dataset,
            split="val",
            source=registry.OFFICIAL_CODE_URL,
            recipe={"published": "official README"},
        )
    ]


def as_results(items) -> list[EvalResult]:
    """Results files (paths) and :class:`EvalResult` entries, as one list."""
    return [r for item in items for r in (read_results(item) if isinstance(item, (str, Path)) else [item])]


def _variant(variant) -> registry.Variant | None:
    """A registry :class:`~simsiam_hub.hub.registry.Variant` from its name (None stays None)."""
    if not isinstance(variant, str):
        return variant
    found = registry.get_variant(variant)
    if found is None:
        raise FolderError(f"unknown variant {variant!r}: expected one of the names `simsiam-hub list` prints")
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
    force: bool = False,
    code_url: str | None = None,
) -> Path:
    """Write a model folder from a checkpoint; returns ``out_dir``.

    ``source``: one of our training checkpoints, an official SimSiam / MoCo checkpoint, a
    torchvision state dict or a ``.safetensors`` file. ``results``: results files (or
    :class:`EvalResult` lists) for the card; for a training checkpoint, ``results*.json``
    files beside it are picked up too (``find_results``). ``variant``: a registry name whose
    recipe and published accuracy describe the weights. ``with_simsiam``: also write
    ``simsiam.safetensors`` when the source holds the whole model. ``code_url``: where the card
    says the simsiam-hub code lives (default ``registry.CODE_URL``). ``out_dir`` must be new,
    empty or a model folder (it is then replaced whole); ``force`` replaces any folder.
    """
    path = Path(source).expanduser()
    out = check_destination(out_dir, force=force)
    if out.resolve() == path.resolve().parent and not force:
        raise FolderError(f"--out {out} is the folder the checkpoint {path.name} is in: choose another folder")
    variant = _variant(variant)
    loaded = read_weights(path)
    section = describe(
        loaded, path, variant=variant, license=license, dataset=dataset, source=source_name, publish=True
    )
    section.code_url = code_url
    found = []
    if find_results and loaded.kind == "simsiam-hub":
        found = sorted(path.parent.glob("results*.json"))
        for f in found:
            log.info("adding evaluation results from %s", f)
    all_results = merge_results(published_results(variant), *(read_results(f) for f in found), as_results(results))
    include_whole = with_simsiam and loaded.simsiam is not None
    section.has_simsiam = include_whole
    with atomic_folder(out) as tmp:
        save_safetensors(loaded.backbone, tmp / BACKBONE_FILE, weights_metadata(section))
        if include_whole:
            save_safetensors(loaded.simsiam, tmp / SIMSIAM_FILE, dict(weights_metadata(section), content="simsiam"))
        write_config(tmp, section)
        write_card(tmp, all_results, name=variant.name if variant else out.name)
    return out


def rewrite_card(
    folder: str | Path, out: str | Path, *, results=(), repo_id: str | None = None, name: str | None = None
) -> Path:
    """Copy a model folder's weights and config into ``out`` (a staging folder) with its card
    and results rewritten for ``repo_id`` and the extra ``results``."""
    folder, out = Path(folder), Path(out)
    for child in folder.iterdir():
        if child.name in (BACKBONE_FILE, SIMSIAM_FILE, "config.json"):
            shutil.copyfile(child, out / child.name)
    write_card(out, merge_results(folder_results(folder), as_results(results)), repo_id=repo_id, name=name)
    return out


def import_official(
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    *,
    variant=None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """A model folder from an official SimSiam (or MoCo) checkpoint: a path, a URL or a
    registry name. URLs and names are downloaded once into the cache, with a progress bar and
    a SHA-256 check; a name's folder defaults to the cache's converted copy."""
    ref = str(checkpoint)
    named = registry.get_variant(ref)
    variant = _variant(variant) or named
    source_name = None
    if named is not None:
        if named.source_url is None:
            raise FolderError(
                f"{ref} has no original checkpoint to import: it lives on the Hub only ({named.repo_id}); use pull"
            )
        path, source_name = (
            registry.download(
                named.source_url,
                sha256=registry.pinned_sha256(named),
                progress=progress,
                license=named.license,
                pinned_by=registry.pin_variable(named) if os.environ.get(registry.pin_variable(named)) else None,
            ),
            named.source_url,
        )
    elif ref.startswith(("http://", "https://")):
        path, source_name = registry.download(ref, progress=progress), ref
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            names = ", ".join(v.name for v in registry.VARIANTS if v.source_url)
            raise FolderError(
                f"{ref}: expected a checkpoint file, an http(s) URL or a registry name ({names}); found none"
            )
    if out_dir is None:
        if variant is None:
            raise FolderError("an output folder is required (--out) unless CHECKPOINT is a registry name")
        out_dir = registry.converted_dir(variant)
    return export(path, out_dir, variant=variant, source_name=source_name, force=force)
