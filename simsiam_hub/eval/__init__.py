"""Evaluation of frozen backbones: features and weighted k-NN (``knn``), the converged
logistic-regression probe (``probe``), the reference's linear evaluation (``lincls``), and the
sources they evaluate: Hub repos, model folders, checkpoints (``sources``).
"""

# The SimSiam paper's k-NN monitor (after Wu et al. 2018): 200 neighbours vote with weight exp(cos / T).
KNN_K = 200
KNN_TEMPERATURE = 0.1
