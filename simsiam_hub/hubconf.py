"""torch.hub entry points of simsiam-hub (the checkout's top-level ``hubconf.py`` re-exports them,
and an installed package carries this file for ``torch.hub.load(dir, ..., source="local")``).

    model = torch.hub.load("OWNER/NAME", "simsiam_resnet50", weights="DEFAULT")
    model = torch.hub.load("/path/to/checkout", "simsiam_resnet50", source="local", weights="ORG/NAME")

One entry point per architecture: ``simsiam_resnet50`` never returns another network.
"""

import os as _os

from simsiam_hub.hub.registry import DEFAULT_VARIANT as _DEFAULT_VARIANT
from simsiam_hub.hub.registry import get_variant as _get_variant

dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]

# The Hub repo `simsiam_resnet50` loads by default: the official 100-epoch, batch-512 release.
# Overridden by `weights=`/`repo_id=`, or by the SIMSIAM_HUB_REPO environment variable.
DEFAULT_REPO_ID = _get_variant(_DEFAULT_VARIANT).repo_id
_HEADS = ("backbone", "simsiam")
_UNSET = object()


def _weights_ref(arch, weights, pretrained, repo_id):
    """torchvision's ``weights=`` (None, "DEFAULT", a name) and the older ``pretrained=`` as the
    reference to load (None: random initialisation)."""
    if weights is _UNSET:
        pretrained = True if pretrained is None else pretrained
        return (repo_id or "DEFAULT") if pretrained else None
    if pretrained is not None:
        raise TypeError("pass weights= (torchvision's keyword) or pretrained= (the older one), not both")
    if weights is None:
        return None
    if not isinstance(weights, str):
        raise TypeError(
            f"weights={weights!r}: expected None, 'DEFAULT', a registry name (simsiam-hub list), a Hub repo id or a model folder"
        )
    if repo_id and weights != "DEFAULT":
        raise TypeError(f"weights={weights!r} and repo_id={repo_id!r} both name the weights: pass one")
    return repo_id or weights


def _load(arch, *, weights, pretrained, repo_id, revision, head, progress, hub_options, kwargs):
    if head not in _HEADS:
        raise ValueError(f"head={head!r}: expected one of {', '.join(_HEADS)}")
    ref = _weights_ref(arch, weights, pretrained, repo_id)
    from simsiam_hub.data import DEFAULT_IMAGE_SIZE
    from simsiam_hub.data.augment import eval_transform
    from simsiam_hub.models import SimSiam, build_backbone

    if ref is None:
        model = build_backbone(arch, **kwargs) if head == "backbone" else SimSiam(arch, **kwargs)
        model.transform = eval_transform(DEFAULT_IMAGE_SIZE)
        return model.eval()
    if kwargs:
        raise TypeError(f"simsiam_{arch} with pretrained weights takes no further arguments, got {sorted(kwargs)}")
    if ref == "DEFAULT":
        if arch != "resnet50":
            raise ValueError(
                f"simsiam_{arch} has no default weights: pass weights= a Hub repo id, a model folder or a registry name"
            )
        ref = _os.environ.get("SIMSIAM_HUB_REPO") or DEFAULT_REPO_ID
    from simsiam_hub.hub.loading import load_variant

    model = load_variant(ref, revision=revision, head=head, progress=progress, **hub_options)
    found = model.simsiam_config
    if found.arch != arch:
        stem = " (small stem)" if found.small_stem else ""
        raise ValueError(
            f"simsiam_{arch}: {ref} holds a {found.arch}{stem} backbone, not a {arch}; load it with simsiam_{found.arch}"
        )
    return model


def simsiam_resnet50(
    pretrained=None,
    repo_id=None,
    revision=None,
    head="backbone",
    *,
    weights=_UNSET,
    progress=True,
    cache_dir=None,
    token=None,
    local_files_only=False,
    force_download=False,
    **kwargs,
):
    """SimSiam ResNet-50: a torchvision ResNet-50 with ``fc = Identity`` (2048-d pooled
    features), in eval mode, its eval transform at ``model.transform``.

    Args:
        weights (str or None): torchvision's keyword. ``"DEFAULT"``: ``$SIMSIAM_HUB_REPO``, else
            DEFAULT_REPO_ID, the official 100-epoch release (ImageNet linear top-1 68.1%,
            CC-BY-NC-4.0); a registry name (``simsiam-hub list``), a Hub repo id or a local model
            folder; ``None``: the architecture alone, randomly initialised (``kwargs`` then go to
            the builder, e.g. ``small_stem=True``). If a registry variant's Hub repo does not
            exist, its official checkpoint is downloaded and converted once into the cache.
        pretrained (bool): the older spelling: True is ``weights="DEFAULT"`` (or ``repo_id``),
            False ``weights=None``. Default True when ``weights`` is not given.
        repo_id (str): the weights to load, as for ``weights``.
        revision (str): branch, tag or commit id of the Hub repo.
        head (str): "backbone", or "simsiam" for the whole SimSiam model (encoder with its
            projector, and predictor), to continue pretraining.
        progress (bool): show download progress bars (torchvision's keyword).
        cache_dir, token, local_files_only, force_download: huggingface_hub's download keywords.

    Weights of another architecture are refused (``simsiam_resnet18``/``simsiam_resnet34`` load those).
    """
    return _load(
        "resnet50",
        weights=weights,
        pretrained=pretrained,
        repo_id=repo_id,
        revision=revision,
        head=head,
        progress=progress,
        hub_options=dict(
            cache_dir=cache_dir, token=token, local_files_only=local_files_only, force_download=force_download
        ),
        kwargs=kwargs,
    )


def simsiam_resnet18(weights=None, revision=None, head="backbone", *, progress=True, **kwargs):
    """SimSiam ResNet-18 (512-d features), as ``simsiam_resnet50``; ``weights``: a Hub repo id, a
    model folder or a registry name (no default), None for random initialisation."""
    return _load_named("resnet18", weights, revision, head, progress, kwargs)


def simsiam_resnet34(weights=None, revision=None, head="backbone", *, progress=True, **kwargs):
    """SimSiam ResNet-34 (512-d features), as ``simsiam_resnet18``."""
    return _load_named("resnet34", weights, revision, head, progress, kwargs)


def _load_named(arch, weights, revision, head, progress, kwargs):
    """The entry points without a default release: huggingface_hub's keywords come in ``kwargs``."""
    hub_keys = ("cache_dir", "token", "local_files_only", "force_download")
    return _load(
        arch,
        weights=weights,
        pretrained=None,
        repo_id=None,
        revision=revision,
        head=head,
        progress=progress,
        hub_options={k: kwargs.pop(k) for k in hub_keys if k in kwargs},
        kwargs=kwargs,
    )
