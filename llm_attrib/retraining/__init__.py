"""Retraining on subsets of the training data: the counterfactual ground truth attributors learn from and the
evaluation suite scores against.

`counterfactual` (the ``retrain``/``measure`` protocols and cached, resumable trials), `lds` (random α-subsets
and their measured outcomes), `measure` (the default measurement, the causal-LM adapter's), `retrain` (the default
retrainer) and `runs` (a benchmark's training runs: checkpoints, other seeds, subset models). Nothing here imports
`llm_attrib.evaluation`.
"""
