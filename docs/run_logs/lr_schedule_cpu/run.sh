#!/bin/bash
# The two lr schedules on the short CPU recipe: fashion_mnist_resnet18_cpu.yaml on a 7,680-image
# subset (3 epochs of 30 steps of batch 256), one process, one loader worker, one thread, seed 0;
# k-NN top-1 on the monitor's 10,000-image bank and 2,000 test images after each epoch.
# Run on 2 cores of an AMD EPYC (Zen 3, AVX2) shared with other jobs, 2026-12-01, with the
# lr_schedule option as merged; output.txt is what it printed, step/ and epoch/ the runs' logs.
export OMP_NUM_THREADS=1
for s in step epoch; do
  python -m simsiam_hub.cli pretrain --config fashion_mnist_resnet18_cpu --resume none \
     data.train_subset=7680 data.num_workers=1 optim.lr_schedule=$s run.output_dir=runs/lr_schedule_$s \
     run.progress=false run.checkpoint_every_steps=0 run.tensorboard=false
  cat runs/lr_schedule_$s/epoch_log.csv
done
