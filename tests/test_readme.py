"""README.md is current: CI runs exactly its two commands, and each example output is what its command prints now.

Rule for an example output (fixed before comparing; the demo model is trained on the CPU at hand and training is not
bit-exact across CPUs, so another machine's build can print other scores, ranks, even another completion):

* If the demo build of this machine is the one the README's marker names (same model fingerprint), the block must
  list the same records in the same order with the same texts, marks and top tokens as the command's output, and
  every number must agree to 1% of the table's largest score (a token part: of the largest part), and the rate
  line must be the same: given a build the quickstart is deterministic up to
  the last digits of float reductions, which BLAS kernels may sum in another order (seen: a token part of 5.76e-05
  printed as 5.71e-05 in another process on the same build, beside scores of 0.35).
* On any build, (a) the lines that do not depend on the weights — the expected answer, the prompt, the method and
  its units, the table header — and the number of rows equal the command's output now; and (b) the block is what the
  current code prints for its own content: re-rendering its ranks, scores, ids and top tokens with `format_report`,
  the texts and `*` marks taken from the current corpus's ground truth, reproduces it exactly (so every id exists,
  every text is that document's, every mark is right and every number has the current format).

`python -m eval.readme_examples` regenerates the blocks (and their demo build) on this machine.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

from llm_attrib.apps.trace import TracedRecord, TraceReport, format_report

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUFFIX = "; positive = raises log Pr(completion | prompt))"
ROW = re.compile(r"^\s*(?P<rank>\d+)\s+(?P<score>\S+)\s+(?P<id>\S+) ")
TOKEN = re.compile(r"""(?P<token>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") (?P<value>[+-][^,\s]+)(?:, |$)""")


def load_script():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "eval" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves its annotations through the module
    spec.loader.exec_module(module)
    return module


def readme_commands() -> list[str]:
    """The commands of the README's first code block (comments dropped)."""
    block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("   #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_starts_with_the_two_commands_and_ci_runs_exactly_them():
    install, test = readme_commands()
    assert install == 'pip install torch==2.13.0 && pip install -e ".[dev]" && llm-attrib quickstart'
    assert test == "python -m pytest -q"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci.index(install) < ci.index(test)  # the main job first, on a fresh cache (set before both)
    assert any(line.startswith("export LLM_ATTRIB_CACHE=") for line in ci[: ci.index(install)])


TABLE_LINES = 6 + 2 * 5
"""The quickstart's report: the expected answer, the trace header (prompt, completion, method, blank, column names)
and two lines per record of the top 5; a blank line and the rate over all demo questions follow."""
RATE = re.compile(r"over all \d+ demo questions, each traced with its true answer: on average \d\.\d\d of the top 5 "
                  r"documents state the fact \(a random ranking: \d\.\d\d\)")


def split_rate(output: str) -> tuple[list[str], str]:
    """The quickstart's output as its report lines and its last line, the rate (after one blank line)."""
    lines = output.splitlines()
    assert len(lines) == TABLE_LINES + 2 and lines[TABLE_LINES] == "", lines
    return lines[:TABLE_LINES], lines[-1]


def parse_trace_report(lines: list[str], corpus) -> TraceReport:
    """A printed trace report (prompt line onward) read back, each record's text taken from the corpus."""
    prompt, completion = (ast.literal_eval(line.split(":", 1)[1].strip()) for line in lines[:2])
    method, units = lines[2].split(":", 1)[1].strip().split(" (", 1)
    assert units.endswith(SUFFIX), lines[2]
    texts = {document["id"]: document["text"] for document in corpus.documents}
    top = []
    for row, tokens in zip(lines[5::2], lines[6::2]):
        match = ROW.match(row)
        assert match and int(match["rank"]) == len(top) + 1, row
        assert tokens.strip().startswith("top tokens: "), tokens
        pairs = [(ast.literal_eval(m["token"]), float(m["value"]))
                 for m in TOKEN.finditer(tokens.strip()[len("top tokens: "):])]
        top.append(TracedRecord(match["id"], float(match["score"]), texts[match["id"]], pairs))
    return TraceReport(prompt, completion, method, units[: -len(SUFFIX)], top)


def parse_trace_table(lines: list[str], corpus, relevant: set[str]) -> str:
    """Re-render a printed trace report (prompt line onward) with `format_report`, texts and marks from the corpus."""
    return format_report(parse_trace_report(lines, corpus), marks={doc_id: "  *" for doc_id in relevant})


def assert_same_report_up_to_float_order(block: list[str], now: list[str], corpus) -> None:
    """The same records, order, texts and top tokens, every number within 1% of the largest score (module rule)."""
    assert block[0] == now[0]
    ours, theirs = parse_trace_report(block[1:], corpus), parse_trace_report(now[1:], corpus)
    tolerance = 0.01 * max(abs(record.score) for record in theirs.top)
    # token parts are the gradient stage's (a hybrid's fused scores are ranks): 1% of the largest part
    token_tolerance = 0.01 * max(abs(value) for record in theirs.top for _, value in record.top_tokens)
    assert [(r.train_id, r.text) for r in ours.top] == [(r.train_id, r.text) for r in theirs.top]
    for mine, current in zip(ours.top, theirs.top):
        assert abs(mine.score - current.score) <= tolerance, (mine.train_id, mine.score, current.score)
        pairs = list(zip(sorted(mine.top_tokens), sorted(current.top_tokens)))  # near-equal parts may swap places
        assert len(pairs) == len(mine.top_tokens) == len(current.top_tokens), mine.train_id
        assert all(a[0] == b[0] and abs(a[1] - b[1]) <= token_tolerance for a, b in pairs), mine.train_id


def test_every_readme_example_is_what_its_command_prints():
    from llm_attrib.demo.default import load_default

    script = load_script()
    found = script.examples(README.read_text())
    assert [example.command for example in found] == ["llm-attrib quickstart"]
    for example in found:
        output = script.run_command(example.command)  # builds the demo into the user cache if it is missing
        bundle = load_default()
        (block, rate), (now, rate_now) = split_rate(example.output), split_rate(output)
        if example.build == bundle.info["model_fingerprint"]:  # README example stale: python -m eval.readme_examples
            assert_same_report_up_to_float_order(block, now, bundle.corpus)
            assert rate == rate_now  # the rate over all questions: deterministic given the build
        assert RATE.fullmatch(rate) and RATE.fullmatch(rate_now), (rate, rate_now)
        query = bundle.corpus.queries[0]
        assert len(block) == len(now) and len(block) == TABLE_LINES
        for index in (0, 1, 3, 4, 5):  # expected answer, prompt, method and units, blank, header
            assert block[index] == now[index], (index, block[index], now[index])
        assert block[0] == f"expected answer: {query['completion']!r}; documents stating the fact are marked with *"
        relevant = set(bundle.corpus.relevant(query["id"]))
        assert parse_trace_table(block[1:], bundle.corpus, relevant) == "\n".join(block[1:])
        assert parse_trace_table(now[1:], bundle.corpus, relevant) == "\n".join(now[1:])  # the rule holds for now too


def test_the_rule_rejects_a_stale_example():
    """Re-rendering tells a block printed by the current code from one with another text, mark or number format."""
    from llm_attrib.demo.default import load_default

    corpus = load_default().corpus
    relevant = set(corpus.relevant(corpus.queries[0]["id"]))
    lines = split_rate(load_script().examples(README.read_text())[0].output)[0][1:]  # from the prompt line on
    assert parse_trace_table(lines, corpus, relevant) == "\n".join(lines)
    row = lines[5]
    marked = row.endswith("  *")
    stale = {
        "another text": row[:-4] + "#" + row[-3:] if marked else row[:-1] + "#",
        "another mark": row[:-3] if marked else row + "  *",
        "another number format": re.sub(r"^(\s*1\s+)(\S+)", lambda m: f"{m[1]}{float(m[2]):.6f}", row),
    }
    for what, changed in stale.items():
        assert changed != row, what
        edited = [changed, *lines[6:]]
        assert parse_trace_table(lines[:5] + edited, corpus, relevant) != "\n".join(lines[:5] + edited), what
