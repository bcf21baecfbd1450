#!/bin/bash
# fashion_mnist_resnet18_hour.yaml, then its k-NN against the baselines on the full sets and the
# linear probe (protocol logreg). Run on 2 cores of an AMD EPYC (Zen 3, AVX2, no AVX-512), 2026-12-01.
# output_pretrain.txt is what pretraining printed: the run was interrupted after epoch 2 (the
# machine restarted; the first part's wall time was not recorded) and resumed from its
# checkpoint at step 936 by the same command; during epoch 3 it was paused for 19.9 minutes
# (16:38:12-16:58:09 UTC) and shared the CPU with a test suite, which is why that epoch's
# `seconds` and images/s in epoch_log.csv differ from the others'.
simsiam-hub pretrain --config fashion_mnist_resnet18_hour run.output_dir=runs/fashion_mnist_resnet18_hour run.progress=false
CK=runs/fashion_mnist_resnet18_hour/checkpoint_step00002340.pt
simsiam-hub knn $CK --baselines --no-progress --output runs/hour_eval/results_knn.json     # -> output_knn.txt
simsiam-hub lincls $CK --config fashion_mnist_cpu data.image_size=48 run.output_dir=runs/hour_probe run.progress=false   # -> output_lincls_logreg.txt
