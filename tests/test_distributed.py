"""SyncBN on gloo: 2 ranks with half batches reproduce 1 process with the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simsiam_hub.distributed import AllReduceBatchNorm, convert_sync_batchnorm
from simsiam_hub.models import SimSiam, simsiam_loss


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_sgd_step(model, x1, x2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        p1, p2, z1, z2 = model(x1, x2)
        loss = simsiam_loss(p1, p2, z1, z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.detach()


def _worker(rank, port, x1, x2, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = SimSiam("resnet18", 32, 8, small_stem=True).double()
        n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        model = convert_sync_batchnorm(model, torch.device("cpu"))
        assert sum(isinstance(m, AllReduceBatchNorm) for m in model.modules()) == n_bn == 24
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = slice(rank * 4, rank * 4 + 4)
        _one_sgd_step(ddp, x1[half], x2[half])
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_in_float64(tmp_path):
    torch.manual_seed(1)
    x1, x2 = torch.randn(8, 3, 16, 16, dtype=torch.float64), torch.randn(8, 3, 16, 16, dtype=torch.float64)
    mp.start_processes(
        _worker, args=(_free_port(), x1, x2, tmp_path / "ddp.pt"), nprocs=2, join=True, start_method="fork"
    )
    torch.manual_seed(0)
    single = SimSiam("resnet18", 32, 8, small_stem=True).double()
    init = {k: v.clone() for k, v in single.state_dict().items()}
    _one_sgd_step(single, x1, x2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-9, atol=1e-11, msg=key)
    assert sum(not torch.equal(init[k], v) for k, v in single.state_dict().items()) > 60
