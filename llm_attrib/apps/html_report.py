"""Self-contained HTML reports of a trace and of an audit: one file, inline CSS, no script, no network.

**Positive score = the training record raises the output's log Pr(completion | prompt)**; removing it would lower
it. Token heat-maps colour each token by its part of a score (`llm_attrib.scores.by_predicted_token`: the part
through the position before it, whose activations predict it): green raises, red lowers, the shade is the part's
size relative to the largest part in the same strip; hovering a coloured token shows its part. Every number is
also in an element's ``data-value`` attribute at full precision (``repr`` of the float), equal to the JSON's.
A record's heat-map shows at most `MAX_HEAT_TOKENS` tokens, centred on its largest part (the id finds the rest).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any, Sequence

from llm_attrib.apps.trace import TracedRecord, TraceReport

if TYPE_CHECKING:  # the audit's cli imports this module
    from llm_attrib.apps.audit.findings import AuditReport, WorkFinding

MAX_HEAT_TOKENS = 120
SIGN = "positive = the record raises log Pr(completion | prompt); removing it would lower it"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 12px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:28px}h3{font-size:15px}
.sign{background:#eef6ee;border-left:4px solid #393;padding:6px 10px}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:13px;background:#fafafa;
border:1px solid #ddd;padding:6px;overflow-wrap:anywhere}
.record{border:1px solid #ddd;border-radius:4px;margin:8px 0;padding:6px 10px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.num{font-family:ui-monospace,monospace}.flagged{color:#b00;font-weight:bold}.muted{color:#777}
.prompt{color:#666}mark{background:#ffe066}dl.meta dt{font-weight:bold}dl.meta dd{margin:0 0 4px 16px}
i{font-style:normal}.p1{background:#e3f4e3}.p2{background:#bde5bd}.p3{background:#8fd18f}.p4{background:#5bb85b}
.n1{background:#fbe3e3}.n2{background:#f4bdbd}.n3{background:#eb8f8f}.n4{background:#dc5b5b}
"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def number(value: float | None, spec: str = "+.4g") -> str:
    """A number shown with ``spec``, its exact value in ``data-value``."""
    if value is None:
        return '<span class="num muted">n/a</span>'
    return f'<span class="num" data-value="{value!r}">{value:{spec}}</span>'


def shade(value: float, scale: float) -> str:
    """The heat class of a part ``value`` against the strip's largest absolute part ``scale`` ("" = uncoloured)."""
    share = abs(value) / scale if scale > 0 else 0.0
    level = sum(share > bound for bound in (0.1, 0.25, 0.5, 0.75))
    return "" if level == 0 else f"{'p' if value > 0 else 'n'}{level}"


def heat_spans(tokens: Sequence[tuple[str, float]], limit: int | None = MAX_HEAT_TOKENS) -> str:
    """Tokens coloured by their parts; at most ``limit`` tokens, centred on the largest absolute part (… marks a
    cut)."""
    start, end = 0, len(tokens)
    if limit is not None and len(tokens) > limit:
        peak = max(range(len(tokens)), key=lambda t: abs(tokens[t][1]))
        start = min(max(0, peak - limit // 2), len(tokens) - limit)
        end = start + limit
    scale = max((abs(value) for _, value in tokens), default=0.0)
    spans = ["…" if start else ""]
    for token, value in tokens[start:end]:
        level = shade(value, scale)
        spans.append(f"<i class={level} title={value:+.3g}>{escape(token)}</i>" if level else escape(token))
    spans.append("…" if end < len(tokens) else "")
    return "".join(spans)


def heat_map(tokens: Sequence[tuple[str, float]], limit: int | None = MAX_HEAT_TOKENS) -> str:
    return f'<div class="text">{heat_spans(tokens, limit)}</div>'


def highlighted(text: str, start: int, end: int) -> str:
    """``text`` escaped, with ``text[start:end]`` marked."""
    return f"{escape(text[:start])}<mark>{escape(text[start:end])}</mark>{escape(text[end:])}"


def page(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def metadata_list(metadata: dict[str, Any]) -> str:
    """The metadata to reproduce the run, one entry per key (nested values as JSON)."""
    items = "".join(f"<dt>{escape(key)}</dt><dd>{escape(json.dumps(value, default=str))}</dd>"
                    for key, value in metadata.items())
    return f'<h2>To reproduce</h2><dl class="meta">{items}</dl>'


def output_strip(report: TraceReport, parts: Sequence[float], prompt: bool = True) -> str:
    """The completion's tokens coloured by ``parts`` (one per output token), after the prompt's, greyed (``prompt``)
    or left out."""
    n = report.n_prompt_tokens
    shown = f'<span class="prompt">{escape("".join(report.output_tokens[:n]))}</span>' if prompt else "…"
    return f'<div class="text">{shown}{heat_spans(list(zip(report.output_tokens[n:], parts[n:])), limit=None)}</div>'


def record_card(record: TracedRecord, rank: int, report: TraceReport, kind: str) -> str:
    tokens = ", ".join(f"{escape(repr(token))} {number(value, '+.3g')}" for token, value in record.top_tokens)
    parts = (f"<div>completion tokens it pushes:</div>{output_strip(report, record.output_parts, prompt=False)}"
             if record.output_parts else "")
    return (f'<div class="record {kind}" data-id="{escape(record.train_id)}"><b>{rank}.</b> score '
            f'{number(record.score)} — id <code>{escape(record.train_id)}</code>; top tokens: {tokens}'
            f"{heat_map(record.tokens) if record.tokens else heat_map([(record.text, 0.0)])}{parts}</div>")


def trace_section(report: TraceReport, index: int) -> str:
    """One query: prompt, completion, its tokens' totals over the listed records, proponents and opponents."""
    origin = "generated by the model" if report.generated else "given"
    listed = report.top + report.bottom
    lines = [f'<section class="query"><h2>Query {index}</h2>',
             f'<div>Prompt:</div><div class="text">{escape(report.prompt)}</div>',
             f'<div>Completion ({origin}):</div><div class="text">{escape(report.completion)}</div>']
    if listed and report.output_tokens and all(r.output_parts for r in listed):
        totals = [sum(values) for values in zip(*(r.output_parts for r in listed))]
        lines.append(f"<div>Each completion token's total part over the {len(listed)} listed records "
                     f"(proponents and opponents; prompt greyed):</div>{output_strip(report, totals)}")
    lines.append("<h3>Proponents (highest scores: raise the completion's log-probability)</h3>")
    lines += [record_card(record, rank, report, "proponent") for rank, record in enumerate(report.top, start=1)]
    lines.append("<h3>Opponents (most negative scores: lower it)</h3>")
    lines += [record_card(record, rank, report, "opponent") for rank, record in enumerate(report.bottom, start=1)]
    if not report.bottom:
        lines.append('<p class="muted">No scored record has a negative score.</p>')
    return "\n".join(lines) + "</section>"


def trace_html(reports: Sequence[TraceReport], metadata: dict[str, Any], title: str = "Trace") -> str:
    """The trace report of ``reports`` (one per query) with ``metadata`` (method, fingerprints, arguments...)."""
    first = reports[0] if reports else None
    method = f"{first.method} ({first.units})" if first else ""
    body = [f"<h1>{escape(title)}</h1>",
            f"<p>The training records behind each completion, scored by <b>{escape(method)}</b>.</p>",
            f'<p class="sign"><b>Sign:</b> {SIGN}. Token colours: green raises, red lowers.</p>',
            *(trace_section(report, q) for q, report in enumerate(reports, start=1)), metadata_list(metadata)]
    return page(title, body)


def audit_html(report: AuditReport) -> str:
    """The audit report: verdicts, evidence per flagged work, metadata."""
    meta, test = report.metadata, report.metadata["test"]
    rows = "".join(
        f"<tr><td>{f.output + 1}</td><td>{escape(f.work)}</td><td>{f.n_records}</td><td>{number(f.score)}</td>"
        f"<td>{number(f.p_value, '.3g')}</td><td>{number(f.adjusted_p, '.3g')}</td><td>{f.overlap.words}</td>"
        f"<td class=\"{'flagged' if f.flagged else ''}\">{'FLAGGED' if f.flagged else 'not flagged'}</td></tr>"
        for f in report.findings)
    body = ["<h1>Copyright-provenance audit</h1>",
            f"<p>Every training record is scored by <b>{escape(meta['method'])}</b> ({escape(meta['units'])}); a "
            "work's group score is the sum of its records' scores.</p>",
            f'<p class="sign"><b>Sign:</b> {escape(meta["sign"])}.</p>',
            f"<p>Test: {escape(test['name'])}; p = {escape(test['p_value'])}; {test['draws']} draws, seed "
            f"{test['seed']}. Correction: <b>{escape(test['correction'])}</b> over {escape(test['family'])}; a work is "
            f"flagged when its adjusted p-value &lt; alpha = <b>{test['alpha']}</b>.</p>",
            "<h2>Verdicts</h2><table><tr><th>output</th><th>work</th><th>records</th><th>group score</th><th>p</th>"
            f"<th>adjusted p ({escape(test['correction'])})</th><th>verbatim overlap (words)</th><th>verdict</th></tr>"
            f"{rows}</table>"]
    for q, output in enumerate(report.outputs):
        body.append(trace_section(output, q + 1))
        body += [evidence_section(f, output) for f in report.findings if f.output == q and f.flagged]
    body.append(metadata_list(meta))
    return page("Copyright-provenance audit", body)


def evidence_section(f: WorkFinding, output: TraceReport) -> str:
    """A flagged work's evidence: the verbatim overlap marked in the completion and in the record, the output
    positions carrying its influence, its top records."""
    lines = [f'<section class="evidence"><h3 class="flagged">{escape(f.work)}: flagged (group score '
             f"{number(f.score)}, p {number(f.p_value, '.3g')}, adjusted p {number(f.adjusted_p, '.3g')})</h3>"]
    o = f.overlap
    if o.words:
        start = o.source_start - f.overlap_excerpt_start
        lines += [f"<div>Longest verbatim overlap: <b>{o.words} words</b>; in the completion:</div>",
                  f'<div class="text">{highlighted(output.completion, o.output_start, o.output_end)}</div>',
                  f"<div>in record <code>{escape(f.overlap_record)}</code> (from character "
                  f"{f.overlap_excerpt_start}):</div>",
                  f'<div class="text">{highlighted(f.overlap_excerpt, start, start + o.source_end - o.source_start)}'
                  "</div>"]
    else:
        lines.append("<p>No word of the completion appears in the work's records.</p>")
    if output.output_tokens:
        parts = [0.0] * len(output.output_tokens)
        for token in f.output_tokens:
            parts[token.position] = token.score
        lines.append(f"<div>Output positions carrying the work's influence (top {len(f.output_tokens)}; all parts sum "
                     f"to {number(f.token_parts_sum)}):</div>" + heat_map(list(zip(output.output_tokens, parts)), None))
    lines.append("<div>Top records of the work:</div>")
    lines += [record_card(record, rank, output, "work-record") for rank, record in enumerate(f.top_records, start=1)]
    return "\n".join(lines) + "</section>"
