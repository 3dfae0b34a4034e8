"""Data Banzhaf (Wang & Jia 2023): the average marginal contribution over all subsets, estimated by MSR.

Higher = more valuable. Robust to noise in the utility because every subset size counts equally.
"""

from __future__ import annotations

from llm_attrib.valuation.semivalue import Semivalue
from llm_attrib.valuation.semivalue_weights import LogWeight, banzhaf_log_weight


class DataBanzhaf(Semivalue):
    """Banzhaf values, by default by maximum sample reuse with each point in a subset with probability ½
    (parameters: see `Semivalue`)."""

    method_name = "banzhaf"

    def log_weight(self) -> LogWeight:
        return banzhaf_log_weight
