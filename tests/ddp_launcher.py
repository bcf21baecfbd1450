"""`simsiam-hub` with float64 as torch's default dtype, optionally with one DDP bug planted, for
tests/test_engine.py's DDP equivalence check (run as a script, under torchrun too).

``SIMSIAM_TEST_PLANT`` names the bug, so that the test can show that its check fails for it:
``summed_gradients`` (DDP sums gradients over ranks instead of averaging them),
``unsynced_batchnorm`` (each rank normalises with its own batch statistics),
``same_images`` (every rank reads rank 0's share of the data).
"""

import os
import sys

import torch
import torch.distributed as dist

torch.set_default_dtype(torch.float64)

from simsiam_hub import engine  # noqa: E402
from simsiam_hub.cli import main  # noqa: E402


class SummingDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

        def allreduce_sum(state, bucket):
            return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])

        self.register_comm_hook(None, allreduce_sum)


class RankZeroSampler(engine.ResumableSampler):
    def __init__(self, dataset, *, num_replicas, rank, seed):
        super().__init__(dataset, num_replicas=num_replicas, rank=0, seed=seed)


PLANTS = {
    "summed_gradients": lambda: setattr(torch.nn.parallel, "DistributedDataParallel", SummingDDP),
    "unsynced_batchnorm": lambda: setattr(engine, "convert_sync_batchnorm", lambda module, device: module),
    "same_images": lambda: setattr(engine, "ResumableSampler", RankZeroSampler),
}

if __name__ == "__main__":
    plant = os.environ.get("SIMSIAM_TEST_PLANT")
    if plant:
        PLANTS[plant]()
    sys.exit(main(sys.argv[1:]))
