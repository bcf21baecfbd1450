"""Detection transfer with Detectron2: train_net.py (fine-tuning) and summarize.py (the paper's table)."""
