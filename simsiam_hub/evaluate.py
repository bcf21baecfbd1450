"""Evaluation of frozen backbones: weighted k-NN (the training monitor uses the same code).

k-NN: features global-pooled and l2-normalised; each query votes with its k nearest
training features, weighted by exp(cos / T) (Wu et al. 2018, as in the SimSiam paper's
monitor, k=200, T=0.1).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """l2-normalised pooled features (N, D) in fp32 and labels (N,) of every item of ``loader``.

    ``backbone`` maps images to (N, D) features (a ResNet with ``fc = Identity``); it is
    put in eval mode for the pass and restored to its previous mode after.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                out = backbone(images)
            features.append(F.normalize(out.float().flatten(1), dim=1).cpu())
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

    Features must be l2-normalised (similarity is the dot product). k is capped at the
    bank size.
    """
    k = min(k, bank_features.shape[0])
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        sim = query_features[start : start + chunk_size] @ bank_features.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        scores.append(votes)
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
