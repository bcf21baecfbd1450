"""The converged linear probe (simsiam_hub.eval.probe) on Fashion-MNIST raw pixels, all 60,000
training / 10,000 test images; its printed output is output.txt beside this file.

Pixels exactly as the k-NN pixel baselines take them (simsiam_hub.eval.sources.pixel_features):
the 28x28 grayscale images in [0, 1], flattened to 784 values; the probe standardises them
with the training set's per-pixel mean and std. Then, as a check of the convergence claim,
the chosen weight decay is refitted from zero with a 10x tighter L-BFGS tolerance and scored
the same way: the two objectives should agree to the estimated gap.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/run_logs/probe_pixels/run.py | tee docs/run_logs/probe_pixels/output.txt

It fits to an objective within 1e-6 of its minimum, the setting output.txt was made with (the
probe's default is now 1e-4, OBJECTIVE_RTOL).
"""

import logging
import platform
import time

import torch

from simsiam_hub.config import DataConfig
from simsiam_hub.eval.knn import pixel_features
from simsiam_hub.eval.probe import GRAD_TOLERANCE, fit_logistic, linear_probe

RTOL = 1e-6


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
data = DataConfig(dataset="fashion_mnist", num_workers=0)
train_x, train_y = pixel_features(data, "train", None)
test_x, test_y = pixel_features(data, "val", None)
print(
    f"train {tuple(train_x.shape)}, test {tuple(test_x.shape)}, values in [{train_x.min():.0f}, {train_x.max():.0f}]",
    flush=True,
)

result = linear_probe(train_x, train_y, test_x, test_y, seed=0, objective_rtol=RTOL)
print("\nweight decay sweep (fit on 54,000 training images, held-out 6,000 training images):")
for weight_decay, top1, loss, ok in zip(
    result.sweep.weight_decays, result.sweep.val_top1, result.sweep.val_loss, result.sweep.converged
):
    print(f"  {weight_decay:8.0e}  held-out top-1 {top1:6.2f}%  held-out loss {loss:.4f}  converged {ok}")
print(
    f"\nchosen weight decay {result.weight_decay:g}; refit on all {result.train_size} training images: "
    f"training loss {result.train_loss:.4f}, {result.iterations} iterations, max |grad| {result.grad_max:.2g}, "
    f"estimated {result.objective_gap:.1e} of the objective above its minimum (converged at <= {RTOL:g}): "
    f"converged {result.converged}"
)
print(f"TEST top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  ({result.test_size} test images, scored once)")
print(f"probe wall time {result.seconds:.0f} s")

start = time.perf_counter()
tight = fit_logistic(train_x, train_y, result.weight_decay, tolerance=GRAD_TOLERANCE / 10, objective_rtol=RTOL)
top1 = 100.0 * (tight.scores(test_x).argmax(1) == test_y).float().mean().item()
print(
    f"\nconvergence check: refit from zero at weight decay {result.weight_decay:g}, L-BFGS to max |grad| <= "
    f"{GRAD_TOLERANCE / 10:g}: converged {tight.converged} after {tight.iterations} iterations, training loss "
    f"{tight.train_loss:.5f} (objective {tight.objective:.8f} vs {result.fit.objective:.8f}, relative difference "
    f"{(result.fit.objective - tight.objective) / tight.objective:+.1e}), test top-1 {top1:.2f}% "
    f"({top1 - result.top1:+.2f} points), {time.perf_counter() - start:.0f} s"
)
