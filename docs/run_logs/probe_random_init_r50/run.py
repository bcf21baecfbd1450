"""Both linear protocols on the 2048-d features of a ResNet-50 at its random initialisation
(SimSiam('resnet50') after torch.manual_seed(0), standard stem: docs/fashion_mnist_results.md's
"random init" network), Fashion-MNIST at 32 px through the eval view (the whole image), all
60,000 training and 10,000 test images, through `lincls` with configs/lincls/fashion_mnist_cpu.yaml:
protocol logreg (the config's) and protocol reference. Writes results_{protocol}.json (and the
reference's lincls_log_reference.csv) beside this file; its printed output is output.txt.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_random_init_r50/run.py 2>&1 | tee docs/run_logs/probe_random_init_r50/output.txt
"""

import json
import logging
import platform
import shutil
from pathlib import Path

import torch

from simsiam_hub.config import LinclsConfig, load_config
from simsiam_hub.eval.lincls import linear_eval
from simsiam_hub.models import SimSiam

here = Path(__file__).resolve().parent
with open("/proc/cpuinfo") as f:
    cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
print(f"CPU: {cpu}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)

checkpoint = Path("runs/random_init_r50.pth")
checkpoint.parent.mkdir(exist_ok=True)
torch.manual_seed(0)
model = SimSiam("resnet50")
torch.save({k: v for k, v in model.encoder.state_dict().items() if not k.startswith("fc.")}, checkpoint)

for protocol in ("logreg", "reference"):
    overrides = [f"protocol={protocol}", f"run.output_dir=runs/random_init_r50_{protocol}", "run.progress=false"]
    result = linear_eval(
        load_config(LinclsConfig, "configs/lincls/fashion_mnist_cpu.yaml", overrides), str(checkpoint), resume=None
    )
    recipe = next(r for r in json.loads(Path(result.results_file).read_text())["results"] if r["metric"] == "top1")[
        "recipe"
    ]
    shutil.copy(result.results_file, here / f"results_{protocol}.json")
    if protocol == "logreg":
        probe = result.probe
        print(
            f"protocol logreg: TEST top-1 {result.top1:.2f}% top-5 {result.top5:.2f}%; weight decay {probe.weight_decay:g} "
            f"(held-out top-1 {dict(zip(probe.sweep.weight_decays, (round(a, 2) for a in probe.sweep.val_top1)))}); "
            f"final training loss {probe.train_loss:.4f}, converged {probe.converged} ({probe.iterations} iterations); "
            f"{result.seconds:.0f} s ({result.timings})",
            flush=True,
        )
    else:
        shutil.copy(result.output_dir / "lincls_log.csv", here / "lincls_log_reference.csv")
        print(
            f"protocol reference: TEST top-1 {result.top1:.2f}% (best {result.best_top1:.2f}% at epoch {result.best_epoch}) "
            f"top-5 {result.top5:.2f}%; final training loss {result.train_loss:.4f}; loss fall per unit of lr: first epochs "
            f"{recipe['loss_fall_per_lr_first']:.4g}, last epochs {recipe['loss_fall_per_lr_last']:.4g}; still falling "
            f"{recipe['still_falling']}; {result.seconds:.0f} s ({result.timings})",
            flush=True,
        )
