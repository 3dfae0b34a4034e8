"""Trace generation sources: the training records behind a model's output, down to their tokens.

``trace(attributor, train, prompt, completion)`` scores every training record against the measurement
``log Pr(completion | prompt)`` (generating the completion first if none is given) and reports the top
records (proponents) and the most negative ones (opponents) with their scores and, for each, the tokens that carry
most of the score. Positive score = the record raises the probability of the completion.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from llm_attrib import __version__
from llm_attrib.apps import options
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.data import IGNORE_INDEX, prompt_token_ids, record_text
from llm_attrib.distributed import broadcast_from_main, is_main_process
from llm_attrib.errors import UserInputError
from llm_attrib.attributors.prefilter import Prefilter
from llm_attrib.scores import Scores, by_predicted_token
from llm_attrib.store import data_fingerprint


@dataclass
class TracedRecord:
    """One training record behind the output: its id, score, text and its most influential tokens.

    tokens: every token of the record with its part of ``score`` (by the token it predicts, `by_predicted_token`;
    the parts sum to ``score``). output_parts: the record's part through each output token (`TraceReport`'s
    ``output_tokens``, prompt then completion, by the token predicted); they sum to ``score`` up to float error.
    """

    train_id: Any
    score: float
    text: str
    top_tokens: list[tuple[str, float]] = field(default_factory=list)
    tokens: list[tuple[str, float]] = field(default_factory=list)
    output_parts: list[float] = field(default_factory=list)


@dataclass
class TraceReport:
    """One query traced: ``top`` (proponents, highest scores first) and ``bottom`` (opponents, most negative
    first); ``output_tokens`` the tokens of prompt + completion, the first ``n_prompt_tokens`` the prompt's."""

    prompt: str
    completion: str
    method: str
    units: str
    top: list[TracedRecord]
    generated: bool = False  # the model generated the completion
    bottom: list[TracedRecord] = field(default_factory=list)
    output_tokens: list[str] = field(default_factory=list)
    n_prompt_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sign": "positive = the record raises log Pr(completion | prompt)"}


def generate_completion(adapter: Any, prompt: str, max_new_tokens: int = 32, stop: Sequence[str] = ("\n",),
                        where: str = "query") -> str:
    """Greedy continuation of ``prompt`` (the model's own output), special tokens dropped, cut before the
    first ``stop`` string. Errors name the prompt as ``where``."""
    tokenizer, model = adapter.tokenizer, adapter.model
    prompt_ids = prompt_token_ids(tokenizer, prompt, adapter.chat_template, adapter.encoding.bos)
    n_prompt = len(prompt_ids)
    if n_prompt >= adapter.max_length:
        raise UserInputError(f"{where}: the prompt has {n_prompt} tokens but the model's context is "
                             f"{adapter.max_length}; shorten the prompt")
    input_ids = torch.tensor([prompt_ids], device=adapter.device)
    budget = min(max_new_tokens, adapter.max_length - n_prompt)
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                max_new_tokens=budget, do_sample=False, pad_token_id=adapter.pad_token_id)
    completion = tokenizer.decode(output[0, n_prompt:], skip_special_tokens=True)
    for marker in stop:
        completion = completion.split(marker)[0]
    if not completion.strip():
        raise UserInputError(f"{where}: the model generated an empty completion for this prompt; give a completion")
    return completion


def trace_queries(
    attributor: InfluenceAttributor,
    train: Sequence[Any],
    queries: Sequence[tuple[str, str | None]],
    *,
    top_k: int = 5,
    tokens_per_record: int = 5,
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    prefilter: Prefilter | None = None,
) -> tuple[Scores, list[TraceReport]]:
    """Trace ``(prompt, completion)`` queries in one pass over ``train`` (a ``None`` completion is generated):
    their `Scores` ``[n_query, n_train]`` and one `TraceReport` each (see `trace`).

    Options and queries are checked before any fit: a bad query (an empty completion, longer than the context) is
    refused naming it, ``query 1`` for the first. Under several processes every rank scores rank 0's generated
    completions.
    """
    for name, value in (("top_k", top_k), ("max_new_tokens", max_new_tokens)):
        if value < 1:
            raise UserInputError(f"{name} must be at least 1, not {value}")
    adapter = attributor.adapter
    pairs = [(prompt, broadcast_from_main(generate_completion(adapter, prompt, max_new_tokens, stop, f"query {q}"))
              if completion is None else completion) for q, (prompt, completion) in enumerate(queries, start=1)]
    records = [{adapter.columns.prompt: prompt, adapter.columns.completion: completion} for prompt, completion in pairs]
    adapter.encode(records, first_index=1, name="query")
    if not attributor.curvature.is_fitted:
        attributor.fit(train)
    scorer = attributor if prefilter is None else prefilter.around(attributor)
    scores = scorer.score(records, train, per_token=True)
    reports = []
    row_of = {train_id: i for i, train_id in enumerate(scores.train_ids)}
    for q, (prompt, completion) in enumerate(pairs):
        top = top_records(adapter, train, scores, q, top_k, tokens_per_record)
        bottom = [record for record in top_records(adapter, train, scores, q, top_k, tokens_per_record, largest=False)
                  if record.score < 0]  # opponents: only records that lower the completion's log-probability
        listed = top + bottom
        encoded, parts = output_parts(attributor, [train[row_of[r.train_id]] for r in listed], prompt, completion)
        for record, row in zip(listed, parts.tolist()):
            record.output_parts = row
        reports.append(TraceReport(
            prompt=prompt, completion=completion, method=scores.method, units=scores.units, top=top,
            generated=queries[q][1] is None, bottom=bottom,
            output_tokens=[adapter.tokenizer.decode([t]) for t in encoded.input_ids],
            n_prompt_tokens=sum(label == IGNORE_INDEX for label in encoded.labels)))
    return scores, reports


def output_parts(attributor: InfluenceAttributor, records: Sequence[Any], prompt: str, completion: str,
                 block: int = 32) -> tuple[Any, torch.Tensor]:
    """Each record's influence through each position of the output ``prompt + completion``: the output's
    encoding and ``[n_records, T]`` float64 parts, by the token each position predicts (`by_predicted_token`).

    Influence is symmetric in its two gradients, so the records are scored as queries against the output as the one
    "training" record: its per-token parts are ``g_tᵀ Q a_t`` at each output position ``t`` (``a_t``, ``g_t`` from
    the gradient of log Pr(completion | prompt)); a record's parts sum to its score. A prompt token's part is
    influence that reaches the completion only through attention.
    """
    adapter = attributor.adapter
    output = {adapter.columns.prompt: prompt, adapter.columns.completion: completion}
    encoded = adapter.encode([output])[0]
    rows = [torch.zeros(0, len(encoded.input_ids), dtype=torch.float64)]
    for start in range(0, len(records), block):
        scores = attributor.score(list(records[start : start + block]), [output], per_token=True)
        rows.append(torch.stack([by_predicted_token(row[0].double()) for row in scores.per_token]))
    return encoded, torch.cat(rows)


def top_records(adapter: Any, train: Sequence[Any], scores: Scores, query: int, top_k: int,
                tokens_per_record: int, largest: bool = True) -> list[TracedRecord]:
    """Query ``query``'s ``top_k`` scored records with the highest scores (``largest=False``: the most negative,
    most negative first), each with its ``tokens_per_record`` tokens of largest part in the same direction: a
    token's share is the part through the position before it, whose activations predict it (`by_predicted_token`)."""
    top = []
    finite = torch.isfinite(scores.values[query])
    order = [i for i in torch.argsort(scores.values[query], descending=largest).tolist() if finite[i]][:top_k]
    for index in order:
        example = adapter.encode([train[index]], first_index=index)[0]
        token_scores = by_predicted_token(scores.per_token[query][index])  # the first token: predicted by none
        best = (torch.argsort(token_scores[1:], descending=largest)[:tokens_per_record] + 1).tolist()
        tokens = [(adapter.tokenizer.decode([token]), float(part)) for token, part in
                  zip(example.input_ids, token_scores.tolist())]
        top.append(TracedRecord(
            train_id=scores.train_ids[index],
            score=float(scores.values[query, index]),
            text=(record_text(train[index], adapter.columns, separator="") if isinstance(train[index], dict)
                  else str(train[index])),
            top_tokens=[tokens[t] for t in best],
            tokens=tokens,
        ))
    return top


def trace(
    attributor: InfluenceAttributor,
    train: Sequence[Any],
    prompt: str,
    completion: str | None = None,
    **options: Any,
) -> TraceReport:
    """Top-``top_k`` training records behind ``completion`` given ``prompt`` (fits the curvature if needed);
    ``options`` as in `trace_queries`.

    With a fitted ``prefilter`` only its lexical candidates are scored (the others are never reported); a
    `HybridAttributor` as ``prefilter`` reports its fused ranks, with its gradient stage's token parts.
    """
    return trace_queries(attributor, train, [(prompt, completion)], **options)[1][0]


def format_report(report: TraceReport, marks: dict[Any, str] | None = None, opponents: bool = False) -> str:
    """A plain-text table of the report; ``marks`` adds a tag after chosen ids (e.g. ground truth); ``opponents``
    adds a second table of the most negative records (`TraceReport.bottom`)."""
    lines = [
        f"prompt:     {report.prompt!r}",
        f"completion: {report.completion!r}",
        f"method:     {report.method} ({report.units}; positive = raises log Pr(completion | prompt))",
        "",
        f"{'rank':>4}  {'score':>11}  {'id':<12} text",
        *record_lines(report.top, marks),
    ]
    if opponents:
        lines += ["", "opponents (most negative: they lower log Pr(completion | prompt)):",
                  *(record_lines(report.bottom, marks) or ["  none: no scored record has a negative score"])]
    return "\n".join(lines)


def record_lines(records: Sequence[TracedRecord], marks: dict[Any, str] | None = None) -> list[str]:
    """Two lines per record: rank, score, id, text (cut to 80 characters) and tag; its top tokens."""
    lines = []
    for rank, record in enumerate(records, start=1):
        tag = (marks or {}).get(record.train_id, "")
        text = record.text if len(record.text) <= 80 else record.text[:77] + "..."
        lines.append(f"{rank:>4}  {record.score:>11.4g}  {str(record.train_id):<12} {text}{tag}")
        tokens = ", ".join(f"{tok!r} {val:+.3g}" for tok, val in record.top_tokens)
        lines.append(f"{'':>31}top tokens: {tokens}")
    return lines


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("trace", help="the training records behind a model's output",
                                   description=__doc__.splitlines()[0])
    options.add_model_and_data_options(parser)
    options.add_attributor_options(parser)
    options.add_prefilter_options(parser)
    options.add_method_options(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--completion", default=None, help="default: the model's own greedy continuation")
    parser.add_argument("--top-k", type=at_least_one, default=5, help="records listed (at least 1)")
    parser.add_argument("--max-new-tokens", type=at_least_one, default=32,
                        help="generation budget when --completion is not given (at least 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--html", default=None, metavar="FILE",
                        help="also write a self-contained HTML report (token heat-maps, proponents, opponents)")
    parser.set_defaults(func=run)


def at_least_one(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Trace and print the report (rank 0 prints under several processes)."""
    if args.method == "magic":
        from llm_attrib.apps.magic import trace_magic

        return trace_magic(args)
    adapter = options.make_adapter(args)
    train = options.load_train(args, adapter)
    attributor = options.make_attributor(args, adapter)
    report = trace(attributor, train, args.prompt, args.completion, top_k=args.top_k,
                   max_new_tokens=args.max_new_tokens, prefilter=options.make_prefilter(args, train))
    if not is_main_process():
        return 0
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_report(report, opponents=True))
    if args.html is not None:
        from llm_attrib.apps.html_report import trace_html
        from llm_attrib.apps.run import write_text

        metadata = {"kind": "trace", "library_version": __version__, "method": report.method, "units": report.units,
                    "model_fingerprint": adapter.fingerprint(), "data_fingerprint": data_fingerprint(list(train)),
                    "arguments": {k: v for k, v in vars(args).items() if k != "func"}}
        write_text(Path(args.html), trace_html([report], metadata))
    return 0
