"""The evaluation suite: metrics (LDS, LOO correlation, AUROC, precision/recall@k, MRR), counterfactual
ground truth (retraining on subsets, cached and resumable), and the benchmark harnesses (LDS, LOO, mislabel
detection, fact tracing, provenance). Scores follow the library's sign: positive = the training example raises
the query's log-probability."""
