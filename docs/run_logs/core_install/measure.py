"""Installed size of simsiam-hub's core dependencies and of what the extras add, measured from
the files each distribution installed in this venv (importlib.metadata), following requirements
transitively (markers evaluated for this interpreter; extras not followed)."""

import importlib.metadata as md
import os
import sys

from packaging.requirements import Requirement


def closure(names):
    seen = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def size(dist):
    total = 0
    for f in dist.files or []:
        p = dist.locate_file(f)
        if os.path.isfile(p):
            total += os.path.getsize(p)
    return total


core = [
    "torch",
    "torchvision",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "pillow",
    "pyyaml",
    "omegaconf",
    "tqdm",
    "filelock",
]
train = ["tensorboard", "matplotlib"]
c = closure(core)
t = {k: v for k, v in closure(core + train).items() if k not in c}
tm = {k: v for k, v in closure(core + ["timm"]).items() if k not in c}
mb = lambda ds: sum(size(d) for d in ds.values()) / 2**20  # noqa: E731
print(f"python {sys.version.split()[0]}")
print(f"core: {len(c)} distributions, {mb(c):.0f} MiB installed")
for name, d in sorted(c.items(), key=lambda kv: -size(kv[1]))[:8]:
    print(f"  {name} {d.version}: {size(d) / 2**20:.0f} MiB")
print(f"[train] adds {len(t)} distributions, {mb(t):.0f} MiB: {', '.join(sorted(t))}")
print(f"timm ([dev]) adds {len(tm)} distributions, {mb(tm):.0f} MiB: {', '.join(sorted(tm))}")
rest = {k: v for k, v in c.items() if not (k.startswith(("torch", "nvidia", "triton", "cuda")))}
print(f"core besides torch, torchvision and their CUDA/triton wheels: {len(rest)} distributions, {mb(rest):.0f} MiB")
