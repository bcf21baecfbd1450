"""How far fp32 evaluation itself goes when the features share a large common component.

tests/test_precision.py's setup (a ResNet-18, small stem, seed 0, with COMMON_OFFSET added to the
last BatchNorm's bias, so that its pooled features are a common vector plus small differences
between images; 4 classes of nearby colours, 64 bank and 32 query images at 24 px; k=10), at
growing offsets: the features' and the cosine similarities' error against float64, relative to
how much they vary between images, and k-NN top-1 in float64, fp32 and bf16.

    PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 19 python docs/run_logs/fp32_common_offset/run.py > docs/run_logs/fp32_common_offset/output.txt
"""

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

import test_precision as t  # noqa: E402

from simsiam_hub.eval.knn import extract_features, knn_accuracy  # noqa: E402
from simsiam_hub.models import build_backbone  # noqa: E402
from simsiam_hub.report import machine_description  # noqa: E402


def main(root: Path) -> None:
    print(f"machine: {machine_description()}; torch threads {torch.get_num_threads()}")
    print(
        "offset | feature error / spread (fp32, bf16) | similarity error / spread (fp32, bf16) | top-1 float64, fp32, bf16"
    )
    for offset in (2.0, 8.0, 32.0, 128.0):
        torch.manual_seed(0)
        net = build_backbone("resnet18", small_stem=True).eval()
        with torch.no_grad():
            net.layer4[-1].bn2.bias += offset
        (ref_bx, _), (ref_qx, _), ref_top1 = t.float64_reference(net, root)
        spread = (ref_bx - ref_bx.mean(0)).norm(dim=1).mean().item()
        row = {}
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            bank_loader, query_loader = t.loaders(root)
            bx, by = extract_features(copy.deepcopy(net), bank_loader, amp_dtype=dtype)
            qx, qy = extract_features(copy.deepcopy(net), query_loader, amp_dtype=dtype)
            row[name] = (
                (bx.double() - ref_bx).norm(dim=1).max().item() / spread,
                t.similarity_error(bx, qx, ref_bx, ref_qx),
                knn_accuracy(bx, by, qx, qy, k=t.K)["top1"],
            )
        f, b = row["fp32"], row["bf16"]
        print(
            f"{offset:6.0f} | {f[0]:.2e}, {b[0]:.2e} | {f[1]:.3f}, {b[1]:.3f} | {ref_top1:.2f}, {f[2]:.2f}, {b[2]:.2f}"
        )


if __name__ == "__main__":
    import argparse
    import tempfile

    argparse.ArgumentParser(description="fp32 and bf16 k-NN against float64 at growing common offsets.").parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # the test's own images, made by its fixture's code
        root = Path(tmp)
        t.near_colours.__wrapped__(type("F", (), {"mktemp": lambda self, name: root / name})())
        main(root / "near_colours")
