"""The reference recipe on the same input as run.py beside it, for a like-for-like comparison:
raw pixels through `lincls` with configs/lincls/fashion_mnist_cpu.yaml and --protocol reference
(LARS, batch 4096, 90 epochs on the cached features), the eval view at 28 px (the whole image,
ImageNet-normalised RGB: 2,352 values), all 60,000 training and 10,000 test images. Writes
results_lincls_reference.json and lincls_log_reference.csv beside this file; its printed output
is output_reference.txt. That output was printed with the weight-only LARS this project used
before apex's LARC (its figures equal those of ../larc_vs_lars_pixels' lars_weight_only run); with
LARC the same input gives 84.38% (../larc_vs_lars_pixels/output.txt).

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_pixels_lincls/run_reference.py 2>&1 | tee docs/run_logs/probe_pixels_lincls/output_reference.txt
"""

import logging
import platform
import shutil
from pathlib import Path

import torch

from simsiam_hub.config import LinclsConfig, load_config
from simsiam_hub.eval.lincls import linear_eval
from simsiam_hub.eval.sources import LoadedSource

here = Path(__file__).resolve().parent
with open("/proc/cpuinfo") as f:
    cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
print(f"CPU: {cpu}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
overrides = [
    "protocol=reference",
    "data.image_size=28",
    "run.output_dir=runs/lincls_pixels_reference",
    "run.progress=false",
]
cfg = load_config(LinclsConfig, "configs/lincls/fashion_mnist_cpu.yaml", overrides)
result = linear_eval(cfg, LoadedSource(torch.nn.Flatten().eval(), "raw pixels"), resume=None)
recipe = next(r for r in __import__("json").load(open(result.results_file))["results"] if r["metric"] == "top1")[
    "recipe"
]
print(
    f"protocol {result.protocol}: TEST top-1 {result.top1:.2f}% (best {result.best_top1:.2f}% at epoch {result.best_epoch}) "
    f"top-5 {result.top5:.2f}%; final training loss {result.train_loss:.4f}; loss fall per unit of lr: first epochs "
    f"{recipe['loss_fall_per_lr_first']:.4g}, last epochs {recipe['loss_fall_per_lr_last']:.4g}; still falling "
    f"{recipe['still_falling']}; {result.seconds:.0f} s ({result.timings})"
)
shutil.copy(result.results_file, here / "results_lincls_reference.json")
shutil.copy(result.output_dir / "lincls_log.csv", here / "lincls_log_reference.csv")
