"""Audit copyright provenance: did protected works in the training data shape a model's output?

``audit(attributor, train, works, outputs)`` scores every training record against each output's measurement
``log Pr(completion | prompt)`` (trace's machinery: the completion is generated when none is given; EK-FAC by
default; optionally only a TF-IDF/BM25 prefilter's candidates). **Positive score = the record raises the output's
log-probability.** Per protected work (``works[i]``: the work of training record ``i``, ``None`` = unprotected):

* the group score, the sum of its records' scores (`llm_attrib.significance.group_scores`);
* a one-sided permutation p-value: how often a random group of as many *unprotected* records scores at least as
  much (seeded draws, add-one correction), adjusted for multiple testing over every (output, work) pair of the
  audit (Holm by default); the work is flagged for the output when it is below alpha (`permutation_test`);
* evidence: its top records (id, score, excerpt, their tokens carrying the score), the positions of the output
  whose activations carry the work's summed influence (flagged works), and the longest run of words the output's
  completion shares verbatim with one of its records (`evidence`).

`findings` joins them into the `AuditReport`; `rendering` writes its console table and Markdown report, which state
the method, damping, fingerprints, library version, sign, test, alpha and correction, so a third party can check and
re-run the audit; `cli` is ``llm-attrib audit``.
"""

from llm_attrib.apps.audit.cli import add_parser, output_pairs, run
from llm_attrib.apps.audit.evidence import EXCERPT_CHARS, OutputToken
from llm_attrib.apps.audit.findings import SIGN, AuditReport, WorkFinding, audit, work_labels
from llm_attrib.apps.audit.permutation_test import DEFAULT_ALPHA, DEFAULT_CORRECTION, DEFAULT_DRAWS
from llm_attrib.apps.audit.rendering import audit_markdown, format_verdicts

__all__ = ["DEFAULT_ALPHA", "DEFAULT_CORRECTION", "DEFAULT_DRAWS", "EXCERPT_CHARS", "SIGN", "AuditReport",
           "OutputToken", "WorkFinding", "add_parser", "audit", "audit_markdown", "format_verdicts", "output_pairs",
           "run", "work_labels"]
