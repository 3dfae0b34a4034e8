"""The estimator comparison (issue 9, item 2): EK-FAC against CG-refined and averaged estimators on the grid.

``python -m eval.estimators`` evaluates every candidate of `eval.estimators.candidates.CANDIDATES` on the cells of
`eval.grid` whose LDS ground truth is already built (it never builds ground truth), at every damping of
`eval.grid.variants.DAMPINGS`, and writes ``eval/estimators/results.json`` and ``README.md``. Positive score = the
training example raises the query's log Pr(completion | prompt).
"""
