#!/bin/bash
# The commands of docs/pretraining.md "Pretrain on your own images", run on 12 generated images
# (five image modes, three folder depths) with tiny settings appended ($TINY), in a scratch folder.
# Usage: PYTHONPATH=$REPO bash docs/run_logs/own_data/run.sh > docs/run_logs/own_data/output.txt 2>&1
set -euo pipefail
PY=${PY:-python}
CLI="$PY -m simsiam_hub.cli"
TINY="data.image_size=16 data.num_workers=0 model.arch=resnet18 model.small_stem=true model.dim=32 model.pred_dim=8
optim.batch_size=4 optim.epochs=1 run.max_steps=2 run.progress=false run.tensorboard=false run.amp=off"
cd "$(mktemp -d)"
$PY - <<'PY'
import numpy as np
from pathlib import Path
from PIL import Image
rng = np.random.default_rng(0)
for i, mode in enumerate(["L", "RGBA", "P", "CMYK", "RGB", "RGB"] * 2):
    img = Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).convert(mode)
    path = Path("photos") / ("" if i < 6 else "2026/march") / f"img{i:02d}.{'jpg' if mode in ('CMYK', 'RGB') else 'png'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    for split in ("train", "val"):  # a small labelled set for the checks afterwards
        (Path("labelled") / split / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(Path("labelled") / split / f"class{i % 2}" / f"img{i:02d}.png")
PY
set -x
$CLI pretrain --config imagenet_resnet50_100ep data.dataset=folder data.root=photos run.output_dir=runs/photos $TINY
find photos -name '*.jpg' | sort > subset.txt
$CLI pretrain --config imagenet_resnet50_100ep data.dataset=filelist data.root=subset.txt run.output_dir=runs/subset $TINY
$CLI make-shards photos shards --max-count 5
$CLI pretrain --config imagenet_resnet50_100ep data.dataset=webdataset 'data.root=shards/shard-{000000..000002}.tar' run.output_dir=runs/shards $TINY
$PY -c "import datasets, glob; datasets.Dataset.from_dict({'image': sorted(glob.glob('photos/**/*.*g', recursive=True))}, features=datasets.Features({'image': datasets.Image()})).save_to_disk('photos_hf')"
$CLI pretrain --config imagenet_resnet50_100ep data.dataset=hf data.root=photos_hf run.output_dir=runs/hf $TINY
$CLI pretrain --config imagenet_resnet50_100ep data.dataset=folder data.root=photos run.output_dir=runs/photos_knn monitor.knn_every_epochs=1 monitor.knn_data.dataset=imagefolder monitor.knn_data.root=labelled monitor.knn_k=3 $TINY run.max_steps=3
$CLI knn runs/photos/checkpoint_step00000002.pt --dataset imagefolder --data labelled --k 3
$CLI export runs/photos/checkpoint_step00000002.pt --out models/photos
grep -E '^license|pretraining data' models/photos/README.md
$CLI pretrain data.dataset=folder data.root=empty_folder run.output_dir=runs/x $TINY || echo "exit $?"
