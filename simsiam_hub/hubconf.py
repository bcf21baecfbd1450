"""torch.hub entry points of simsiam-hub (the checkout's top-level ``hubconf.py`` re-exports them,
and an installed package carries this file for ``torch.hub.load(dir, ..., source="local")``).

    model = torch.hub.load("simsiam-hub/simsiam-hub", "simsiam_resnet50", pretrained=True)
    model = torch.hub.load("/path/to/checkout", "simsiam_resnet50", source="local", repo_id="ORG/NAME")
"""

import os as _os

from simsiam_hub.hub.registry import DEFAULT_VARIANT as _DEFAULT_VARIANT
from simsiam_hub.hub.registry import get_variant as _get_variant

dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]

# The Hub repo `simsiam_resnet50` loads by default: the official 100-epoch, batch-512 release.
# Overridden by the `repo_id` argument, or by the SIMSIAM_HUB_REPO environment variable.
DEFAULT_REPO_ID = _get_variant(_DEFAULT_VARIANT).repo_id
_HEADS = ("backbone", "simsiam")


def simsiam_resnet50(
    pretrained=True,
    repo_id=None,
    revision=None,
    head="backbone",
    *,
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
        pretrained (bool): load pretrained weights; False gives the architecture alone,
            randomly initialised (``kwargs`` then go to the builder, e.g. ``small_stem=True``).
        repo_id (str): a Hub model repo id, a local model folder, or a registry name
            (``simsiam-hub list``). Default: ``$SIMSIAM_HUB_REPO``, else DEFAULT_REPO_ID, the
            official 100-epoch release (ImageNet linear top-1 68.1%, CC-BY-NC-4.0). If a
            registry variant's Hub repo does not exist, its official checkpoint is downloaded
            and converted once into the cache.
        revision (str): branch, tag or commit id of the Hub repo.
        head (str): "backbone", or "simsiam" for the whole SimSiam model (encoder with its
            projector, and predictor), to continue pretraining.
        progress (bool): show download progress bars (torchvision's keyword).
        cache_dir, token, local_files_only, force_download: huggingface_hub's download keywords.
    """
    if head not in _HEADS:
        raise ValueError(f"head={head!r}: expected one of {', '.join(_HEADS)}")
    from simsiam_hub.data import DEFAULT_IMAGE_SIZE
    from simsiam_hub.data.augment import eval_transform
    from simsiam_hub.models import SimSiam, build_backbone

    if not pretrained:
        model = build_backbone("resnet50", **kwargs) if head == "backbone" else SimSiam("resnet50", **kwargs)
        model.transform = eval_transform(DEFAULT_IMAGE_SIZE)
        return model.eval()
    if kwargs:
        raise TypeError(f"simsiam_resnet50(pretrained=True) takes no further arguments, got {sorted(kwargs)}")
    from simsiam_hub.hub.loading import load_variant

    return load_variant(
        repo_id or _os.environ.get("SIMSIAM_HUB_REPO") or DEFAULT_REPO_ID,
        revision=revision,
        head=head,
        progress=progress,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        force_download=force_download,
    )
