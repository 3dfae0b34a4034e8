"""The HTML reports: their numbers are the JSON's, opponents are the most negative records, text is escaped, the
file is self-contained and small; `test_browser` renders them in headless Chromium."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch

from llm_attrib.apps.html_report import audit_html, trace_html
from llm_attrib.apps.trace import TracedRecord, TraceReport
from llm_attrib.cli import main
from llm_attrib.output_schema import validate

CARD = re.compile(r'<div class="record (?P<kind>\w+(?:-\w+)?)" data-id="(?P<id>[^"]*)"><b>\d+\.</b> score '
                  r'<span class="num" data-value="(?P<value>[^"]+)">(?P<shown>[^<]+)</span>')


def cards(page: str) -> list[tuple[str, str, float, str]]:
    """``(kind, id, exact score, shown score)`` of each record card, in page order."""
    return [(m["kind"], html.unescape(m["id"]), float(m["value"]), m["shown"]) for m in CARD.finditer(page)]


def test_trace_html_shows_the_json_numbers_for_proponents_and_opponents(model_dir, train_file, tmp_path, capsys):
    out = tmp_path / "trace.html"
    assert main(["trace", "--model", str(model_dir), "--train", str(train_file), "--id-column", "doc", "--prompt",
                 "the cat sat on", "--completion", " the mat", "--top-k", "3", "--json", "--html", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    validate(report, "trace-report")
    page = out.read_text()
    expected = [(kind, r["train_id"], r["score"], f"{r['score']:+.4g}")
                for kind, key in (("proponent", "top"), ("opponent", "bottom")) for r in report[key]]
    assert report["bottom"] and cards(page) == expected
    for record in report["top"] + report["bottom"]:
        for token, value in record["top_tokens"]:
            assert f'data-value="{value!r}"' in page
    assert "positive = the record raises log Pr(completion | prompt)" in page and "model_fingerprint" in page
    assert not re.search(r"\b(src|href)=|<script|@import|url\(", page)  # nothing to fetch: self-contained


def test_opponents_are_the_most_negative_records_and_token_parts_sum_to_the_scores(gpt2, tokenizer, train_records):
    from llm_attrib.attributors import ATTRIBUTORS
    from llm_attrib.apps.trace import trace_queries

    attributor = ATTRIBUTORS["influence-ekfac"](gpt2, tokenizer)
    scores, reports = trace_queries(attributor, train_records, [("the cat sat on", " the mat"), ("a dog", None)],
                                    top_k=3)
    for q, report in enumerate(reports):
        values = scores.values[q]
        negative = [i for i in torch.argsort(values).tolist() if values[i] < 0][:3]
        assert [r.train_id for r in report.bottom] == [scores.train_ids[i] for i in negative]
        assert [r.score for r in report.bottom] == [float(values[i]) for i in negative]
        assert [r.train_id for r in report.top] == [scores.train_ids[i] for i in
                                                    torch.argsort(values, descending=True)[:3].tolist()]
        assert report.output_tokens and 0 < report.n_prompt_tokens < len(report.output_tokens)
        for record in report.top + report.bottom:  # both heat-maps decompose the record's score
            assert sum(v for _, v in record.tokens) == pytest.approx(record.score, rel=1e-6, abs=1e-12)
            assert sum(record.output_parts) == pytest.approx(record.score, rel=1e-3, abs=1e-9)
            assert record.text.strip() in "".join(t for t, _ in record.tokens)  # with the special tokens


def synthetic_reports(n_queries: int, n_records: int, tokens: int = 60) -> list[TraceReport]:
    """Reports of ``n_queries`` queries with ``n_records`` records each (half proponents, half opponents), every
    record ``tokens`` tokens long, including text that must be escaped."""
    generator = torch.Generator().manual_seed(0)

    def record(q: int, r: int, sign: float) -> TracedRecord:
        parts = (torch.randn(tokens, generator=generator, dtype=torch.float64) * 1e-3).tolist()
        words = [("<script>alert(1)</script>" if t == 3 else f" w{q}_{r}_{t}") for t in range(tokens)]
        score = sign * (abs(sum(parts)) + r + 1)
        return TracedRecord(f"q{q}-r{r}", score, "".join(words), [(words[1], parts[1])], list(zip(words, parts)),
                            parts[:12])

    half = n_records // 2
    return [TraceReport(f"prompt {q} & <b>", f" completion {q}", "influence-ekfac", "log-prob",
                        [record(q, r, 1.0) for r in range(half)], bottom=[record(q, r, -1.0) for r in range(half)],
                        output_tokens=[f" t{t}" for t in range(12)], n_prompt_tokens=5)
            for q in range(n_queries)]


def test_a_report_of_50_queries_by_20_records_is_under_5_mb_and_escapes_all_text():
    """Records of 200 tokens of 9 characters (real tokens are shorter): each heat-map is cut to MAX_HEAT_TOKENS."""
    assert len(trace_html(synthetic_reports(50, 20, tokens=200), {}).encode()) <= 5_000_000
    reports = synthetic_reports(50, 20)
    page = trace_html(reports, {"kind": "trace", "arguments": {"prompt": "</dd><script>"}})
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;" in page
    assert cards(page) == [(kind, r.train_id, r.score, f"{r.score:+.4g}") for report in reports
                           for kind, records in (("proponent", report.top), ("opponent", report.bottom))
                           for r in records]


def synthetic_audit():
    from llm_attrib.apps.audit import AuditReport, OutputToken, WorkFinding
    from llm_attrib.apps.audit.permutation_test import describe_test
    from llm_attrib.overlap import longest_common_span

    output = synthetic_reports(1, 2)[0]
    output.completion = " the quick brown fox <jumps>"
    source = "intro text. The Quick brown fox <jumps> over"
    overlap = longest_common_span(output.completion, [source])
    finding = WorkFinding(work="Book <A>", output=0, n_records=4, score=1.5, p_value=0.001, adjusted_p=0.004,
                          flagged=True, overlap=overlap, overlap_record="b1", top_records=output.top,
                          output_tokens=[OutputToken(7, " t7", True, 0.9)], token_parts_sum=1.49,
                          overlap_excerpt=source[5:], overlap_excerpt_start=5)
    other = WorkFinding(work="Book B", output=0, n_records=2, score=-0.2, p_value=0.6, adjusted_p=1.0, flagged=False,
                        overlap=longest_common_span(output.completion, ["nothing shared"]), overlap_record=None,
                        top_records=[])
    metadata = {"kind": "copyright-provenance-audit", "method": "influence-ekfac", "units": "log-prob",
                "sign": "positive = the training records raise the output's log Pr(completion | prompt)",
                "library_version": "0", "model_fingerprint": "abc", "data_fingerprint": "def", "damping": None,
                "n_train": 20, "works_tested": ["Book <A>", "Book B"], "test": describe_test(correction="holm", alpha=0.01, draws=999, seed=0,
                                                                   n_tests=2)}
    return AuditReport(outputs=[output], findings=[finding, other], metadata=metadata)


def test_audit_html_shows_the_verdicts_and_marks_the_overlap_in_both_texts():
    report = synthetic_audit()
    page = audit_html(report)
    data = report.to_dict()
    for finding in data["findings"]:
        row = re.search(rf"<tr><td>1</td><td>{re.escape(html.escape(finding['work']))}</td>.*?</tr>", page)[0]
        assert [float(v) for v in re.findall(r'data-value="([^"]+)"', row)] == [
            finding["score"], finding["p_value"], finding["adjusted_p"]]
        assert ("FLAGGED" in row) == finding["flagged"]
    assert "holm" in page and "alpha = <b>0.01</b>" in page
    assert page.count("<mark>") == 2
    assert "<mark>the quick brown fox &lt;jumps</mark>" in page and "<mark>The Quick brown fox &lt;jumps</mark>" in page
    assert "Book &lt;A&gt;: flagged" in page and "<A>" not in page
