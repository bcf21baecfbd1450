"""Raw pixels through `lincls` with configs/lincls/fashion_mnist_cpu.yaml (protocol: logreg, its
default), as docs/fashion_mnist_results.md's raw-pixel row of the reference recipe was measured:
the eval view at 28 px (the whole image, ImageNet-normalised RGB: 2,352 values) of all 60,000
training and 10,000 test images, a Flatten as the "backbone". Writes results_lincls.json beside
this file; its printed output is output.txt.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_pixels_lincls/run.py 2>&1 | tee docs/run_logs/probe_pixels_lincls/output.txt
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
cfg = load_config(
    LinclsConfig,
    "configs/lincls/fashion_mnist_cpu.yaml",
    ["data.image_size=28", "run.output_dir=runs/lincls_pixels_logreg", "run.progress=false"],
)
result = linear_eval(cfg, LoadedSource(torch.nn.Flatten().eval(), "raw pixels"))
probe = result.probe
print(
    f"protocol {result.protocol}: {probe.num_features}-d, train {probe.train_size}, test {probe.test_size}; "
    f"held-out top-1 per weight decay {dict(zip(probe.sweep.weight_decays, (round(a, 2) for a in probe.sweep.val_top1)))}; "
    f"chosen {probe.weight_decay:g}; training loss {probe.train_loss:.4f}, converged {probe.converged} ({probe.iterations} iterations); "
    f"TEST top-1 {result.top1:.2f}% top-5 {result.top5:.2f}%; {result.seconds:.0f} s ({result.timings})"
)
shutil.copy(result.results_file, here / "results_lincls.json")
