"""Evaluation of frozen backbones: features and weighted k-NN (``knn``), the converged
logistic-regression probe (``probe``), the reference's linear evaluation (``lincls``), and the
sources they evaluate: Hub repos, model folders, checkpoints (``sources``).
"""
