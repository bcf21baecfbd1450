"""What a training-style command (pretraining, the reference linear evaluation) sets up once per
process and then uses everywhere: the process group and device, the autocast precision, each
process's share of the batch, the memory format, and how a module is placed and wrapped."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigError
from .distributed import DistInfo, setup_distributed
from .precision import autocast_context, resolve_amp

__all__ = ["RunContext"]


@dataclass(frozen=True)
class RunContext:
    info: DistInfo  # rank, world size, device
    amp_dtype: torch.dtype | None  # the autocast dtype (None: fp32)
    local_batch: int  # this process's share of the global batch
    channels_last: bool

    @classmethod
    def start(cls, *, batch_size: int, amp: str, channels_last: bool, seed: int) -> RunContext:
        """Join the process group (under torchrun), split ``batch_size`` over the processes,
        resolve ``amp`` for the device and seed torch's generator."""
        info = setup_distributed()
        if batch_size % info.world_size:
            raise ConfigError(f"optim.batch_size={batch_size} does not divide over {info.world_size} processes")
        torch.manual_seed(seed)
        return cls(info, resolve_amp(amp, info.device), batch_size // info.world_size, channels_last)

    @property
    def device(self) -> torch.device:
        return self.info.device

    def place(self, module: nn.Module) -> nn.Module:
        """``module`` on the device, in the run's memory format."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the run's memory format."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as the training step calls it: under DistributedDataParallel when there
        are several processes (gradients averaged across them), else itself."""
        if not self.info.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def autocast(self):
        """The forward pass's autocast context (a no-op in fp32)."""
        return autocast_context(self.device, self.amp_dtype)
