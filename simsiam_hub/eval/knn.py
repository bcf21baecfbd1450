"""Frozen features and weighted k-NN: what the pretraining monitor, `simsiam-hub knn` and the
demo measure, with the baselines a backbone's features must beat (the same network at random
init, raw and standardised pixels).

k-NN: features global-pooled and l2-normalised; each query votes with its k nearest bank
features, weighted by exp(cos / T) (Wu et al. 2018, as in the SimSiam paper's monitor, k=200,
T=0.1). The bank is the train split, the queries the val split, as fixed seeded draws.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm.auto import tqdm

from ..data.augment import eval_transform
from ..data.datasets import FashionMNIST, build_dataset, count_bad_images, readable, seeded_subset
from ..errors import UsageError
from ..precision import autocast_context
from . import KNN_K, KNN_TEMPERATURE

log = logging.getLogger(__name__)


class EvaluationError(UsageError):
    """An evaluation asked for with settings that cannot work (k or temperature out of range)."""


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader,
    *,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "features",
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """l2-normalised pooled features (N, D) in fp32 and labels (N,) of every item of ``loader``.

    ``backbone`` maps images to (N, D) features (a ResNet with ``fc = Identity``); it is
    put in eval mode for the pass and restored to its previous mode after. Images are cast
    to the backbone's floating dtype (fp64 networks in exactness tests).
    ``normalize=False`` keeps the raw pooled features (what a linear classifier sees).
    """
    device = torch.device(device)
    dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
    was_training = backbone.training
    backbone.eval()
    features, labels, bad = [], [], set()
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images, targets = batch[0], batch[1]
            if len(batch) == 3:  # a readable() dataset: the unreadable images it passed over
                bad |= {int(i) for i in batch[2].flatten().tolist() if i >= 0}
            images = images.to(device, dtype=dtype, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                out = backbone(images)
            out = out.float().flatten(1)
            features.append((F.normalize(out, dim=1) if normalize else out).cpu())
            labels.append(torch.as_tensor(targets).cpu())
    finally:
        backbone.train(was_training)
    count_bad_images(getattr(loader, "dataset", None), bad, what=desc)
    return torch.cat(features), torch.cat(labels).long()


@torch.no_grad()
def knn_scores(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (Nq, C): sum over the k nearest bank items of exp(sim / T), per class.

    Features must be l2-normalised (similarity is the dot product). k larger than the bank is
    refused: the vote would silently be over the whole bank.
    """
    if not 0 < k <= bank_features.shape[0]:
        raise EvaluationError(
            f"k-NN with k={k} needs a bank of at least k items, found {bank_features.shape[0]}: lower k"
        )
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        sim = query_features[start : start + chunk_size] @ bank_features.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        scores.append(votes.cpu())
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Percent of rows whose label is among the top-k scores, for each k (capped at C)."""
    result = {}
    for k in ks:
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        result[f"top{k}"] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return result


def knn_accuracy(
    bank_features, bank_labels, query_features, query_labels, *, num_classes=None, k=KNN_K, temperature=KNN_TEMPERATURE
):
    """k-NN top-1 and top-5 accuracy (percent) of the query set against the bank."""
    if num_classes is None:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    scores = knn_scores(
        bank_features, bank_labels, query_features, num_classes=num_classes, k=k, temperature=temperature
    )
    return topk_accuracy(scores, query_labels)


def eval_loader(dataset, *, batch_size: int, num_workers: int, device: torch.device):
    """An ordered, unshuffled loader for feature extraction."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )


# The seeds of the fixed evaluation draws from each split (:func:`seeded_subset`): the k-NN
# monitor, `simsiam-hub knn`, its pixel baselines and linear evaluation all take these images.
EVAL_DRAW_SEEDS = {"train": 1, "val": 2}


def knn_datasets(data_cfg, bank_size: int | None, query_size: int | None):
    """The k-NN bank (train split) and queries (val split) through the eval view (whole images
    for datasets evaluated whole, else a centre crop: :func:`~simsiam_hub.data.augment.eval_crop_pct`),
    as fixed seeded subsets: the pretraining monitor and `simsiam-hub knn` draw the same images."""
    transform = eval_transform(data_cfg.image_size, dataset=data_cfg.dataset)
    bank = seeded_subset(
        build_dataset(data_cfg, "train", transform), bank_size, seed=EVAL_DRAW_SEEDS["train"], what="k-NN bank"
    )
    query = seeded_subset(
        build_dataset(data_cfg, "val", transform), query_size, seed=EVAL_DRAW_SEEDS["val"], what="k-NN queries"
    )
    return readable(bank), readable(query)  # unreadable images: as pretraining handles them


def network_features(
    backbone: nn.Module,
    data_cfg,
    *,
    val_subset: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = True,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((bank features, labels), (query features, labels))``: ``backbone``'s raw (not
    normalised) features of the k-NN bank (``data_cfg.train_subset`` training images, the
    monitor's seeded draw) and queries (``val_subset`` val images), through the eval view.
    ``backbone`` is any module mapping images to (N, D); it is moved to ``device``."""
    device = torch.device(device)
    bank, query = knn_datasets(data_cfg, data_cfg.train_subset, val_subset)
    backbone.to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    args = dict(device=device, amp_dtype=amp_dtype, channels_last=channels_last, progress=progress, normalize=False)
    loader_args = dict(batch_size=batch_size, num_workers=data_cfg.num_workers, device=device)
    bank_xy = extract_features(backbone, eval_loader(bank, **loader_args), desc="train features", **args)
    query_xy = extract_features(backbone, eval_loader(query, **loader_args), desc="val features", **args)
    return bank_xy, query_xy


def knn_on_features(
    bank_xy, query_xy, *, k: int = KNN_K, temperature: float = KNN_TEMPERATURE, device: torch.device | str = "cpu"
) -> dict:
    """Weighted k-NN top-1/top-5 (percent) of raw features (l2-normalised here), with the sizes
    and the number of classes."""
    if k <= 0 or temperature <= 0:
        raise EvaluationError(f"k-NN needs k > 0 and temperature > 0, found k={k}, temperature={temperature}")
    (bank_x, bank_y), (query_x, query_y) = bank_xy, query_xy
    if k > len(bank_x):
        raise EvaluationError(
            f"k-NN with k={k} needs a bank of at least k images, the bank has {len(bank_x)}: lower --k or enlarge the bank"
        )
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    device = torch.device(device)  # the similarity search is the slow part: on a GPU where there is one
    bank_x, query_x = F.normalize(bank_x.to(device), dim=1), F.normalize(query_x.to(device), dim=1)
    metrics = knn_accuracy(
        bank_x, bank_y.to(device), query_x, query_y, num_classes=num_classes, k=k, temperature=temperature
    )
    return dict(metrics, bank_size=len(bank_x), query_size=len(query_x), num_classes=num_classes)


def knn_evaluate(
    backbone: nn.Module,
    data_cfg,
    *,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    val_subset: int | None = None,
    **extract_options,
) -> dict:
    """Weighted k-NN top-1/top-5 (percent) of ``backbone``'s features on ``data_cfg``'s data
    (:func:`network_features`; ``extract_options``: batch_size, device, amp_dtype,
    channels_last, progress). Returns top1, top5, bank_size, query_size, num_classes, seconds."""
    if k <= 0 or temperature <= 0:
        raise EvaluationError(f"k-NN needs k > 0 and temperature > 0, found k={k}, temperature={temperature}")
    start = time.perf_counter()
    bank_xy, query_xy = network_features(backbone, data_cfg, val_subset=val_subset, **extract_options)
    metrics = knn_on_features(
        bank_xy, query_xy, k=k, temperature=temperature, device=extract_options.get("device", "cpu")
    )
    return dict(metrics, seconds=time.perf_counter() - start)


def pixel_features(data_cfg, split: str, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels in [0, 1], flattened, of a seeded draw of ``size`` images (None: all), the
    same draw as :func:`knn_datasets`: grayscale, at native 28 px for Fashion-MNIST (the usual
    definition of its pixel baselines), else resized and centre-cropped to the image size."""
    if data_cfg.dataset == "fashion_mnist":
        full = FashionMNIST(data_cfg.root, train=split == "train")
        drawn = seeded_subset(full, size, seed=EVAL_DRAW_SEEDS[split])
        idx = torch.as_tensor(drawn.indices) if drawn is not full else torch.arange(len(full))
        return torch.from_numpy(full.images[idx.numpy()]).flatten(1).float() / 255, full.targets[idx]
    transform = T.Compose(
        [T.Resize(data_cfg.image_size), T.CenterCrop(data_cfg.image_size), T.Grayscale(), T.ToTensor()]
    )
    drawn = readable(seeded_subset(build_dataset(data_cfg, split, transform), size, seed=EVAL_DRAW_SEEDS[split]))
    x, y, bad = zip(*[drawn[i] for i in range(len(drawn))])
    count_bad_images(drawn, {int(i) for b in bad for i in b.tolist() if i >= 0}, what=f"{split} pixels")
    return torch.stack([img.flatten() for img in x]), torch.as_tensor(y)


def baseline_features(
    backbone: nn.Module, random_init: nn.Module, data_cfg, *, val_subset: int | None = None, **extract_options
) -> dict:
    """The raw features a backbone's must beat, on the same images (the ``data_cfg.train_subset``
    bank, ``val_subset`` queries): ``{"simsiam": ..., "random_init": ..., "raw_pixels": ...}``,
    each ``((bank x, y), (query x, y))`` (:func:`network_features`, :func:`pixel_features`)."""
    features = {
        name: network_features(net, data_cfg, val_subset=val_subset, **extract_options)
        for name, net in (("simsiam", backbone), ("random_init", random_init))
    }
    features["raw_pixels"] = (
        pixel_features(data_cfg, "train", data_cfg.train_subset),
        pixel_features(data_cfg, "val", val_subset),
    )
    return features


def knn_of_baselines(features: dict, *, k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> dict[str, dict]:
    """k-NN of each of :func:`baseline_features`, and of the pixels standardised per pixel with
    the bank's mean and std. Keys: simsiam, random_init, raw_pixels, raw_pixels_standardised."""
    results = {name: knn_on_features(*xy, k=k, temperature=temperature) for name, xy in features.items()}
    (bx, by), (qx, qy) = features["raw_pixels"]
    mean, std = bx.mean(0), bx.std(0).clamp_min(1e-6)
    results["raw_pixels_standardised"] = knn_on_features(
        ((bx - mean) / std, by), ((qx - mean) / std, qy), k=k, temperature=temperature
    )
    return results


def knn_with_baselines(
    backbone: nn.Module,
    random_init: nn.Module,
    data_cfg,
    *,
    val_subset: int | None = None,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    **extract_options,
) -> dict[str, dict]:
    """k-NN of ``backbone`` beside the baselines it must beat, on the same images: ``random_init``
    (the same network untrained), raw pixels and standardised raw pixels (per-pixel mean and std
    of the bank). Keys: simsiam, random_init, raw_pixels, raw_pixels_standardised;
    ``extract_options`` go to :func:`network_features` (device, amp_dtype, channels_last, ...)."""
    start = time.perf_counter()
    results = knn_of_baselines(
        baseline_features(backbone, random_init, data_cfg, val_subset=val_subset, **extract_options),
        k=k,
        temperature=temperature,
    )
    results["simsiam"]["seconds"] = time.perf_counter() - start
    return results
