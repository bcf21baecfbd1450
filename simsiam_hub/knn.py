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

from .augment import eval_transform
from .data import FashionMNIST, build_dataset, seeded_subset
from .errors import UsageError
from .precision import autocast_context

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
    features, labels = [], []
    try:
        for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False):
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
    return torch.cat(features), torch.cat(labels).long()


@torch.no_grad()
def knn_scores(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (Nq, C): sum over the k nearest bank items of exp(sim / T), per class.

    Features must be l2-normalised (similarity is the dot product). k larger than the bank is
    refused: the vote would silently be over the whole bank.
    """
    if not 0 < k <= bank_features.shape[0]:
        raise EvaluationError(f"k-NN with k={k} needs a bank of at least k items, found {bank_features.shape[0]}: lower k")
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


def knn_accuracy(bank_features, bank_labels, query_features, query_labels, *, num_classes=None, k=200, temperature=0.1):
    """k-NN top-1 and top-5 accuracy (percent) of the query set against the bank."""
    if num_classes is None:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    scores = knn_scores(bank_features, bank_labels, query_features, num_classes=num_classes, k=k, temperature=temperature)
    return topk_accuracy(scores, query_labels)


def eval_loader(dataset, *, batch_size: int, num_workers: int, device: torch.device):
    """An ordered, unshuffled loader for feature extraction."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=False,
    )  # fmt: skip


# The seeds of the fixed evaluation draws from each split (:func:`seeded_subset`): the k-NN
# monitor, `simsiam-hub knn`, its pixel baselines and linear evaluation all take these images.
EVAL_DRAW_SEEDS = {"train": 1, "val": 2}


def knn_datasets(data_cfg, bank_size: int | None, query_size: int | None):
    """The k-NN bank (train split) and queries (val split) through the eval view (whole images
    for datasets evaluated whole, else a centre crop: :func:`~simsiam_hub.augment.eval_crop_pct`),
    as fixed seeded subsets: the pretraining monitor and `simsiam-hub knn` draw the same images."""
    transform = eval_transform(data_cfg.image_size, dataset=data_cfg.dataset)
    bank = seeded_subset(build_dataset(data_cfg, "train", transform), bank_size, seed=EVAL_DRAW_SEEDS["train"], what="k-NN bank")
    query = seeded_subset(build_dataset(data_cfg, "val", transform), query_size, seed=EVAL_DRAW_SEEDS["val"], what="k-NN queries")
    return bank, query


def knn_evaluate(
    backbone: nn.Module,
    data_cfg,
    *,
    k: int = 200,
    temperature: float = 0.1,
    val_subset: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = True,
) -> dict:
    """Weighted k-NN top-1/top-5 (percent) of ``backbone``'s features on ``data_cfg``'s data.

    The bank is the train split (``data_cfg.train_subset`` items, the monitor's seeded draw),
    the queries the val split (``val_subset`` items); both through the eval transform at
    ``data_cfg.image_size``. ``backbone`` is any module mapping images to (N, D) (a ResNet
    with ``fc = Identity``, or ``nn.Flatten()`` for raw pixels); it is moved to ``device``.
    Returns top1, top5, bank_size, query_size, num_classes and seconds.
    """
    if k <= 0 or temperature <= 0:
        raise EvaluationError(f"k-NN needs k > 0 and temperature > 0, found k={k}, temperature={temperature}")
    start = time.perf_counter()
    device = torch.device(device)
    bank, query = knn_datasets(data_cfg, data_cfg.train_subset, val_subset)
    if k > len(bank):
        raise EvaluationError(f"k-NN with k={k} needs a bank of at least k images, the bank has {len(bank)}: lower --k or enlarge the bank")
    backbone.to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    args = dict(device=device, amp_dtype=amp_dtype, channels_last=channels_last, progress=progress)
    loader_args = dict(batch_size=batch_size, num_workers=data_cfg.num_workers, device=device)
    bank_x, bank_y = extract_features(backbone, eval_loader(bank, **loader_args), desc="train features", **args)
    query_x, query_y = extract_features(backbone, eval_loader(query, **loader_args), desc="val features", **args)
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    if device.type == "cuda":  # the similarity search is the slow part: do it on the GPU
        bank_x, bank_y, query_x = bank_x.to(device), bank_y.to(device), query_x.to(device)
    metrics = knn_accuracy(bank_x, bank_y, query_x, query_y, num_classes=num_classes, k=k, temperature=temperature)
    return dict(
        metrics, bank_size=len(bank), query_size=len(query), num_classes=num_classes, seconds=time.perf_counter() - start
    )


def pixel_features(data_cfg, split: str, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels in [0, 1], flattened, of a seeded draw of ``size`` images (None: all), the
    same draw as :func:`knn_datasets`: grayscale, at native 28 px for Fashion-MNIST (the usual
    definition of its pixel baselines), else resized and centre-cropped to the image size."""
    if data_cfg.dataset == "fashion_mnist":
        full = FashionMNIST(data_cfg.root, train=split == "train")
        drawn = seeded_subset(full, size, seed=EVAL_DRAW_SEEDS[split])
        idx = torch.as_tensor(drawn.indices) if drawn is not full else torch.arange(len(full))
        return torch.from_numpy(full.images[idx.numpy()]).flatten(1).float() / 255, full.targets[idx]
    transform = T.Compose([T.Resize(data_cfg.image_size), T.CenterCrop(data_cfg.image_size), T.Grayscale(), T.ToTensor()])
    drawn = seeded_subset(build_dataset(data_cfg, split, transform), size, seed=EVAL_DRAW_SEEDS[split])
    x, y = zip(*[(img.flatten(), label) for img, label in drawn])
    return torch.stack(x), torch.as_tensor(y)


def knn_with_baselines(
    backbone: nn.Module, random_init: nn.Module, data_cfg, *, val_subset: int | None = None, k: int = 200,
    temperature: float = 0.1, **extract_options,
) -> dict[str, dict]:
    """k-NN of ``backbone`` beside the baselines it must beat, on the same images (the
    ``data_cfg.train_subset`` bank, ``val_subset`` queries): ``random_init`` (the same
    network untrained), raw pixels and standardised raw pixels (per-pixel mean and std of
    the bank). Keys: simsiam, random_init, raw_pixels, raw_pixels_standardised;
    ``extract_options`` go to :func:`knn_evaluate` (device, amp_dtype, channels_last, ...)."""
    args = dict(k=k, temperature=temperature, val_subset=val_subset, **extract_options)
    results = {name: knn_evaluate(net, data_cfg, **args) for name, net in (("simsiam", backbone), ("random_init", random_init))}
    bx, by = pixel_features(data_cfg, "train", data_cfg.train_subset)
    qx, qy = pixel_features(data_cfg, "val", val_subset)
    mean, std = bx.mean(0), bx.std(0).clamp_min(1e-6)
    for name, (b, q) in (("raw_pixels", (bx, qx)), ("raw_pixels_standardised", ((bx - mean) / std, (qx - mean) / std))):
        results[name] = knn_accuracy(F.normalize(b, dim=1), by, F.normalize(q, dim=1), qy, k=k, temperature=temperature)
    return results


