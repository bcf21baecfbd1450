"""What the converged probe costs at the demo's k-NN sizes (10,000 seeded training images,
2,000 seeded test images of Fashion-MNIST): on raw pixels (784-d, [0, 1]) and on the pooled
features (2048-d, not l2-normalised) of a ResNet-50 at its random initialisation (seed 0,
standard stem, 32 px, the demo's eval view). Its printed output is output.txt beside this file.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_demo_size/run.py | tee docs/run_logs/probe_demo_size/output.txt

and with the tighter convergence setting the probe used before (1e-6), into output_rtol1e-6.txt:

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_demo_size/run.py --objective-rtol 1e-6 | tee docs/run_logs/probe_demo_size/output_rtol1e-6.txt
"""

import argparse
import platform
import time

import torch

from simsiam_hub.config import DataConfig
from simsiam_hub.eval.knn import eval_loader, extract_features, knn_accuracy, knn_datasets, pixel_features
from simsiam_hub.eval.probe import OBJECTIVE_RTOL, linear_probe
from simsiam_hub.models import initial_backbone

BANK, QUERIES = 10_000, 2_000
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--objective-rtol", type=float, default=OBJECTIVE_RTOL, help="the probe's convergence setting")
args = parser.parse_args()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


print(
    f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); objective_rtol {args.objective_rtol:g}",
    flush=True,
)
data = DataConfig(dataset="fashion_mnist", image_size=32, train_subset=BANK, num_workers=0)


def report(name, train_x, train_y, test_x, test_y):
    knn = knn_accuracy(
        torch.nn.functional.normalize(train_x, dim=1), train_y, torch.nn.functional.normalize(test_x, dim=1), test_y
    )
    result = linear_probe(train_x, train_y, test_x, test_y, seed=0, objective_rtol=args.objective_rtol)
    print(
        f"{name}: {tuple(train_x.shape)} / {tuple(test_x.shape)}; k-NN top-1 {knn['top1']:.2f}%; probe top-1 {result.top1:.2f}% "
        f"(weight decay {result.weight_decay:g}, tried {result.sweep.weight_decays}, training loss {result.train_loss:.4f}, "
        f"converged {result.converged}, {result.iterations} iterations) in {result.seconds:.1f} s",
        flush=True,
    )


report("raw pixels", *pixel_features(data, "train", BANK), *pixel_features(data, "val", QUERIES))

backbone = initial_backbone("resnet50", small_stem=False, dim=2048, pred_dim=512, seed=0)
bank, queries = knn_datasets(data, BANK, QUERIES)
start = time.perf_counter()
feats = [
    extract_features(backbone, eval_loader(d, batch_size=256, num_workers=0, device="cpu"), normalize=False)
    for d in (bank, queries)
]
print(f"random-init ResNet-50 features extracted in {time.perf_counter() - start:.0f} s", flush=True)
report("random-init ResNet-50", *feats[0], *feats[1])
