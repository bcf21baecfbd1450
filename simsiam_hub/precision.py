"""Numeric precision: which autocast dtype ``amp=auto`` means on this machine, and the context.

Training may autocast (``run.amp``); evaluation does not unless asked (``EVAL_AMP``). Early in
training, and in many backbones, the pooled features are a large common vector plus small
differences between images; bf16 keeps 8 bits of mantissa (about 0.4% of each value), the size
of those differences, so the cosine ranking that k-NN and linear probes rely on is lost. On a
CPU with native bf16 a demo checkpoint's k-NN top-1 read 50.95% with bf16 features and 62.45%
in fp32 (docs/evaluation.md).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["EVAL_AMP", "precision_name", "resolve_amp", "autocast_context"]

EVAL_AMP = "off"  # the default precision of every evaluation's forward pass: fp32


def precision_name(dtype: torch.dtype | None) -> str:
    """How results files and reports name an autocast dtype: fp32 (None), bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting: ``off`` None (fp32), ``bf16``, ``fp16``, or
    ``auto``: bf16 on GPUs that support it (else fp16), and on CPUs with native bf16
    (AVX512-BF16 or AMX); None on other CPUs, where oneDNN only emulates bf16 (a ResNet-50
    step ran 2.5x slower than fp32 that way on an AVX-512 CPU without AVX512-BF16).

    ``auto`` is for training (``run.amp``); evaluation passes ``EVAL_AMP`` (fp32) unless asked.
    bf16 training kept its accuracy where we measured it: on the demo's recipe (ResNet-50,
    Fashion-MNIST at 32 px), 10 steps of batch 16 per run, paired by seed and every checkpoint's
    k-NN computed in fp32, bf16 and fp32 training were level within seed noise
    (docs/run_logs/bf16_training/summary.md; docs/evaluation.md), so ``auto`` keeps bf16 for
    training where the hardware has it. The loss's cosine similarity and norms are fp32 on every
    device whatever the autocast (models.simsiam_loss), as CUDA's autocast would keep them."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp != "auto":
        raise ValueError(f"amp={amp!r}: expected auto, bf16, fp16 or off")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return torch.bfloat16 if any(getattr(torch.cpu, name, lambda: False)() for name in native) else None


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
