"""Loading pretrained weights: ``from_pretrained`` (a Hub repo id, a model folder or a weights
file -> a ready model with its eval transform), the backbone tensors alone, and the registry's
named variants with their fallback to the official checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from ..data.augment import transform_from_pretrained_cfg
from ..hub import registry
from ..models import SimSiam, build_backbone, projector_layers
from .export import describe, import_official
from .folder import BACKBONE_FILE, SIMSIAM_FILE, SimsiamSection, read_backbone, read_config, timm_config
from .repo import HubError, NotCachedError, RepoNotFoundError, resolve_model_dir
from .weights import WeightsError, check_backbone, read_safetensors, read_weights

__all__ = ["from_pretrained", "load_backbone_state_dict", "load_variant"]

log = logging.getLogger(__name__)

HEADS = ("backbone", "simsiam")


@contextlib.contextmanager
def _skip_init_on_meta():
    """``torch.nn.init`` functions become no-ops on meta tensors for the block.

    On the meta device they compute nothing but still run torch's Python decompositions,
    which cost more than reading a ResNet-50's safetensors; every tensor they would touch is
    replaced by ``load_state_dict(strict=True, assign=True)``. Real tensors (another thread
    building a model meanwhile) still go to the original functions.
    """
    from torch.nn import init

    names = (
        "kaiming_normal_",
        "kaiming_uniform_",
        "normal_",
        "uniform_",
        "constant_",
        "ones_",
        "zeros_",
        "trunc_normal_",
    )
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


def _assemble(section: SimsiamSection, state: dict, head: str, where: str):
    """Build the network on the meta device (no random initialisation) and take the tensors
    as its parameters (``assign=True``): loading costs little more than reading the file."""
    with torch.device("meta"), _skip_init_on_meta():
        if head == "backbone":
            model = build_backbone(section.arch, small_stem=section.small_stem)
        else:
            model = SimSiam(
                section.arch,
                section.dim,
                section.pred_dim,
                small_stem=section.small_stem,
                proj_layers=projector_layers(state),
            )
    # safetensors' tensors sit at their offsets in the file, and oneDNN chooses kernels by the
    # weights' alignment: on unaligned weights a model rounds differently from the same weights
    # in torch's own (64-byte aligned) memory. Copied, the loaded model's features are the
    # trained model's bit for bit, with any number of threads.
    state = {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:
        if head == "backbone":
            check_backbone(state, section.arch, section.small_stem, where)  # raises with the first mismatches
        raise WeightsError(
            f"{where} does not fit a {section.arch} SimSiam model (dim {section.dim}, pred_dim {section.pred_dim})"
        ) from None
    return model.eval()


def from_pretrained(
    repo_id_or_path: str | Path,
    revision: str | None = None,
    head: str = "backbone",
    *,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    progress: bool = True,
):
    """A pretrained model, in eval mode, with its eval transform at ``model.transform``.

    ``repo_id_or_path``: a Hub repo id (``revision``: branch, tag or commit id), a local model
    folder, or a weights file (``.safetensors``, a training checkpoint, an official SimSiam /
    MoCo checkpoint, a torchvision state dict). ``head="backbone"``: the torchvision ResNet with
    ``fc = Identity`` (pooled features); ``head="simsiam"``: the whole :class:`SimSiam` model.
    ``cache_dir``, ``token``, ``local_files_only``, ``force_download`` are huggingface_hub's
    (``snapshot_download``); ``progress`` shows its download bars.

    The model also carries ``model.pretrained_cfg`` (timm's, from config.json: the transform is
    built from it) and ``model.simsiam_config`` (the :class:`~simsiam_hub.hub.folder.SimsiamSection`).
    """
    if head not in HEADS:
        raise HubError(f"head={head!r}: expected one of {', '.join(HEADS)}")
    path = Path(str(repo_id_or_path)).expanduser()
    if path.is_file():
        if revision:
            raise HubError(f"{path} is a local file: it has no revisions (revision={revision!r} given)")
        loaded = read_weights(path)
        section = describe(loaded, path)
        if head == "simsiam" and loaded.simsiam is None:
            raise WeightsError(f"{path} holds a backbone only ({loaded.kind}): head='simsiam' needs the whole model")
        state = loaded.backbone if head == "backbone" else loaded.simsiam
        pretrained_cfg, where = timm_config(section)["pretrained_cfg"], str(path)
    else:
        weights_file = BACKBONE_FILE if head == "backbone" else SIMSIAM_FILE
        folder = resolve_model_dir(
            repo_id_or_path,
            revision,
            files=(weights_file,),
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
            progress=progress,
        )
        section, pretrained_cfg = read_config(folder)
        where = f"{repo_id_or_path}/{weights_file}"
        if head == "backbone":
            state, _ = read_backbone(folder, where)
        else:
            state, _ = read_safetensors(folder / SIMSIAM_FILE)
    model = _assemble(section, state, head, where)
    model.transform = transform_from_pretrained_cfg(pretrained_cfg)
    model.pretrained_cfg = pretrained_cfg
    model.simsiam_config = section
    return model


def load_backbone_state_dict(
    source: str | Path, revision: str | None = None, *, arch: str | None = "resnet50"
) -> dict[str, torch.Tensor]:
    """Backbone tensors under torchvision names, without ``fc``, from any source.

    ``source``: a Hub repo id (``revision`` pins a branch, tag or commit), a model folder,
    a ``.safetensors`` file, one of our training checkpoints, an official SimSiam or MoCo
    checkpoint, or a torchvision state dict. ``arch`` (default ResNet-50) is checked key by
    key and shape by shape; ``arch=None`` accepts any ResNet this library builds.
    """
    path = Path(source).expanduser()
    if path.is_file():
        loaded = read_weights(path)
        backbone, found_arch, small_stem, where = loaded.backbone, loaded.arch, loaded.small_stem, str(path)
    else:
        folder = resolve_model_dir(source, revision, files=(BACKBONE_FILE,))
        where = f"{source}/{BACKBONE_FILE}"
        backbone, section = read_backbone(folder, where)
        found_arch, small_stem = section.arch, section.small_stem
    if arch is not None and (arch != found_arch or small_stem):
        # Another network than asked for (a small stem included): the same check against the
        # requested arch refuses it with the first mismatched keys and shapes.
        check_backbone(backbone, arch, False, where)
    return backbone


def load_variant(ref: str | None = None, revision: str | None = None, head: str = "backbone", **hub_options):
    """``from_pretrained`` with the registry's fallback: a variant (by name or repo id) loads from
    its Hub repo when that exists, else its official checkpoint is downloaded and converted
    once into the cache (and it says so; with ``HF_HUB_OFFLINE=1`` only from a file downloaded
    before). Anything else goes to
    ``from_pretrained``. ``hub_options``: ``from_pretrained``'s keywords."""
    ref = ref or registry.get_variant(registry.DEFAULT_VARIANT).repo_id
    variant = registry.get_variant(ref)
    if variant is None:
        return from_pretrained(ref, revision=revision, head=head, **hub_options)
    try:
        return from_pretrained(variant.repo_id, revision=revision, head=head, **hub_options)
    except (RepoNotFoundError, NotCachedError) as err:
        folder = registry.converted_dir(variant)
        if (folder / BACKBONE_FILE).is_file():
            log.warning("%s; using the converted official release in %s", err, folder)
            return from_pretrained(folder, head=head)
        if variant.source_url is None or revision is not None:
            raise  # nothing to fall back on (offline, the download cache may still serve it)
        log.warning(
            "%s; converting the official release %s instead (licence %s) into %s",
            err,
            variant.source_url,
            variant.license,
            folder,
        )
        import_official(variant.name, folder, progress=hub_options.get("progress", True))
        return from_pretrained(folder, head=head)
