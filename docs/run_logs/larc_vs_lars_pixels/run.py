"""apex's LARC (every parameter adapted, the reference's) against the weight-only LARS this project
used before, on Fashion-MNIST's raw pixels through `lincls` with configs/lincls/fashion_mnist_cpu.yaml
and the reference recipe (batch 4096, 90 epochs on cached features; the eval view at 28 px, 2,352
values), all 60,000 / 10,000 images, one thread.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/larc_vs_lars_pixels/run.py larc
    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/larc_vs_lars_pixels/run.py lars_weight_only

output.txt is what the two printed (2 cores of an AMD EPYC shared with other jobs, 2026-12-01),
larc/ and lars_weight_only/ their logs and results. They ran before linear evaluation had a
`protocol` key, when the reference recipe was the config's only one; the script now sets it.
"""

import sys
import time

import torch

from simsiam_hub import lincls
from simsiam_hub.config import LinclsConfig, load_config
from simsiam_hub.eval.sources import LoadedSource

which = sys.argv[1]
if which == "lars_weight_only":
    from timm.optim import Lars

    def weight_only_lars(fc, cfg):
        groups = [
            {"params": [fc.weight], "always_adapt": True, "weight_decay": cfg.weight_decay},
            {"params": [fc.bias], "always_adapt": False, "weight_decay": 0.0},  # the bias: plain SGD
        ]
        return Lars(
            groups, lr=cfg.base_lr * cfg.batch_size / 256, momentum=cfg.momentum, trust_coeff=cfg.trust_coefficient
        )

    lincls.build_optimizer = weight_only_lars
overrides = [
    "protocol=reference",
    "data.image_size=28",
    f"run.output_dir=runs/larc_vs_lars_{which}",
    "run.progress=false",
]
cfg = load_config(LinclsConfig, "configs/lincls/fashion_mnist_cpu.yaml", overrides)
start = time.time()
r = lincls.linear_eval(cfg, LoadedSource(torch.nn.Flatten().eval(), "raw pixels"), resume=None)
print(
    f"RESULT {which}: top1 last {r.top1:.2f} best {r.best_top1:.2f} (epoch {r.best_epoch}) top5 {r.top5:.2f} in {time.time() - start:.0f} s",
    flush=True,
)
