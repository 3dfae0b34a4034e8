"""`llm-attrib audit`: the permutation test against exact enumeration, the multiple-testing corrections against hand
computation, verbatim overlap against brute force, and an end-to-end audit of a tiny model trained on a planted work."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest
import torch

from llm_attrib.cli import main
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import train_causal_lm
from llm_attrib.errors import UserInputError
from llm_attrib.overlap import longest_common_span
from llm_attrib.significance import CORRECTIONS, group_p_values, permutation_p_values, require_reachable
from llm_attrib.output_schema import validate
from test_html_report import cards

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- permutation test
def exact_tail(pool: torch.Tensor, size: int, observed: float) -> float:
    """Share of all ``size``-subsets of ``pool`` (1-D) whose sum is at least ``observed``."""
    sums = [float(pool[list(subset)].sum()) for subset in itertools.combinations(range(len(pool)), size)]
    return sum(s >= observed for s in sums) / len(sums)


def test_permutation_p_values_match_exact_enumeration_of_all_same_size_groups():
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(2, 12, generator=generator, dtype=torch.float64)  # 2 queries, 12 unprotected records
    # a group of 4 at two places in the null distribution per query, and a group of 3: C(12,4)=495, C(12,3)=220
    observed = torch.tensor([[1.0, 2.5, 0.5], [-0.5, 3.0, 1.5]], dtype=torch.float64)
    sizes = [4, 4, 3]
    draws = 20000
    p = permutation_p_values(observed, sizes, pool, draws=draws, seed=7)
    for q in range(2):
        for g, size in enumerate(sizes):
            tail = exact_tail(pool[q], size, float(observed[q, g]))
            exceed = round(float(p[q, g]) * (draws + 1)) - 1  # p = (1 + #exceed) / (1 + draws)
            assert abs(exceed - draws * tail) <= 4 * (draws * tail * (1 - tail)) ** 0.5 + 1, (q, g, tail)
    # a group beating every possible group gets the smallest p; one below every group gets 1
    extremes = torch.tensor([[pool[0].sort().values[-4:].sum() + 1e-9, pool[0].sort().values[:4].sum()]])
    assert permutation_p_values(extremes, [4, 4], pool[:1], draws=500, seed=0).tolist() == [[1 / 501, 1.0]]


def test_a_groups_p_value_does_not_depend_on_the_other_groups_tested():
    pool = torch.randn(1, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alone = permutation_p_values(torch.tensor([[2.0]]), [5], pool, draws=300, seed=3)
    together = permutation_p_values(torch.tensor([[0.1, 2.0]]), [7, 5], pool, draws=300, seed=3)
    assert together[0, 1] == alone[0, 0]


def test_group_p_values_draw_only_from_records_of_no_work_and_test_only_the_chosen_works():
    scores = torch.tensor([[5.0, 4.0, 0.1, 0.2, 9.0, 0.3]])
    test = group_p_values(scores, ["a", "a", None, None, "b", None], draws=200, seed=0, only=["a"])
    assert (test.labels, test.sizes, test.n_pool, test.scores.tolist()) == (["a"], [2], 3, [[9.0]])
    assert test.p_values.tolist() == [[1 / 201]]  # every pair of the pool {0.1, 0.2, 0.3} sums to less than 9


# --------------------------------------------------------------------------------------- multiple testing
@pytest.mark.parametrize("name, expected, flagged_at_005", [
    # p = [0.01, 0.04, 0.03, 0.005], m = 4; sorted 0.005 < 0.01 < 0.03 < 0.04
    ("bonferroni", [0.04, 0.16, 0.12, 0.02], [True, False, False, True]),
    # Holm: 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    ("holm", [0.03, 0.06, 0.06, 0.02], [True, False, False, True]),
    # BH: 0.005·4/1 = 0.02, 0.01·4/2 = 0.02, 0.03·4/3 = 0.04, 0.04·4/4 = 0.04; running minimum from the largest
    ("bh", [0.02, 0.04, 0.04, 0.02], [True, True, True, True]),
])
def test_corrections_match_hand_computation(name, expected, flagged_at_005):
    p = torch.tensor([[0.01, 0.04], [0.03, 0.005]], dtype=torch.float64)  # the family is every entry
    adjusted = CORRECTIONS[name](p)
    assert adjusted.shape == p.shape
    assert adjusted.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    assert (adjusted.flatten() < 0.05).tolist() == flagged_at_005


def test_corrections_cap_at_one_and_settings_that_cannot_flag_are_refused():
    for correction in CORRECTIONS.values():
        assert correction(torch.tensor([0.6, 0.9])).max() <= 1
    with pytest.raises(UserInputError, match="at least 301 draws"):
        require_reachable("holm", n_tests=3, draws=99, alpha=0.01)
    require_reachable("holm", n_tests=3, draws=301, alpha=0.01)


# ------------------------------------------------------------------------------------------------- overlap
def test_longest_common_span_ignores_case_and_punctuation_and_locates_the_span():
    output = "Hello, World! the quick brown fox"
    found = longest_common_span(output, ["nothing here", "a Quick  brown-fox jumps"])
    assert (found.words, found.text, found.output_word, found.source) == (3, "quick brown fox", 3, 1)
    assert output[found.output_start : found.output_end] == "quick brown fox"
    assert "a Quick  brown-fox jumps"[found.source_start : found.source_end] == "Quick  brown-fox"
    assert longest_common_span("abc", ["xyz"]).words == 0


def test_longest_common_span_matches_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        output = [rng.choice("abcd") for _ in range(12)]
        sources = [[rng.choice("abcd") for _ in range(rng.randrange(1, 15))] for _ in range(3)]
        brute = max((n for source in sources for n in range(1, len(output) + 1)
                     for i in range(len(output) - n + 1) for j in range(len(source) - n + 1)
                     if output[i : i + n] == source[j : j + n]), default=0)
        assert longest_common_span(" ".join(output), [" ".join(s) for s in sources]).words == brute


# ---------------------------------------------------------------------------------------------- end to end
SYLLABLES = ["zor", "vak", "quel", "mir", "thax", "yub", "drin", "oss", "plim", "kre"]
COMMON = ("the a of to and in on at with from by for is was as it this that he she they we one two man day "
          "house road tree water light town time hand door field stone wind night old new small long").split()


SEEDS = range(8)
"""The end-to-end audit runs on corpora of 8 seeds, each with its own model, and its claims are stated as rates over
them (measured on one CPU: the planted work flagged for 16 of 16 given outputs and 6 of 8 generated ones, the decoy
for 0 of 24; the model recites at least 8 words of the record in 7 of 8, elsewhere it recites some, then strays, and
the work lowers the stray words' probability more than it raises the recited ones). Training is not bit-exact across
CPUs, so each threshold leaves room below what was measured; chance for a flag is below alpha = 0.01 per test."""


def corpus(seed: int) -> tuple[list[dict], list[dict]]:
    """Training records and outputs. "planted" (8 records of made-up words, unlike anything else) is reproduced by
    the outputs; "decoy" (8 records) is a protected work the model was trained on too, but its text comes from the
    same generator as the 40 unprotected records and the outputs share nothing with it: under the null by design."""
    rng = random.Random(seed)
    invented = sorted({rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(200)})
    records = [{"id": f"planted{i}", "text": " ".join(rng.choice(invented) for _ in range(14)), "work": "planted"}
               for i in range(8)]
    records += [{"id": f"decoy{i}", "text": " ".join(rng.choice(COMMON) for _ in range(14)), "work": "decoy"}
                for i in range(8)]
    records += [{"id": f"plain{i}", "text": " ".join(rng.choice(COMMON) for _ in range(14)),
                 "work": None if i % 2 else ""} for i in range(40)]  # null and blank both mean unprotected
    words = [records[i]["text"].split() for i in (0, 5, 2)]
    outputs = [{"prompt": " ".join(w[:5]), "completion": " " + " ".join(w[5:13])} for w in words[:2]]
    outputs.append({"prompt": " ".join(words[2][:5])})  # the model completes it: does it reproduce the work?
    return records, outputs


def build_audit(folder, seed: int) -> tuple[list[dict], list[dict]]:
    """Train a tiny GPT-2 on the corpus of ``seed`` and write model, training data and outputs into ``folder``."""
    records, outputs = corpus(seed)
    tokenizer = train_tokenizer([r["text"] for r in records], 400, model_max_length=48)
    model = tiny_gpt2(len(tokenizer), n_positions=48, n_embd=32, n_layer=2, n_head=2, seed=0,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    train_causal_lm(model, tokenizer, [{"text": r["text"]} for r in records], epochs=50, lr=4e-3, batch_size=8,
                    seed=0, num_threads=1)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "train.jsonl").write_text("".join(json.dumps({**r, "empty": ""}) + "\n" for r in records))
    (folder / "outputs.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return records, outputs


@pytest.fixture(scope="module")
def audit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    return (folder, *build_audit(folder, SEEDS[0]))


def audit_args(folder, *extra: str) -> list[str]:
    return ["audit", "--model", str(folder / "model"), "--train", str(folder / "train.jsonl"), "--id-column", "id",
            "--work-column", "work", "--draws", "999", "--output-dir", str(folder / "report"), *extra]


@pytest.fixture(scope="module")
def audits(audit_files, tmp_path_factory):
    """``[(records, outputs, audit.json, console)]``, one per seed of `SEEDS`, each audited through the CLI."""
    import contextlib
    import io

    results = []
    for seed in SEEDS:
        folder = audit_files[0] if seed == SEEDS[0] else tmp_path_factory.mktemp(f"audit-seed{seed}")
        records, outputs = audit_files[1:] if seed == SEEDS[0] else build_audit(folder, seed)
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            assert main(audit_args(folder, "--outputs", str(folder / "outputs.jsonl"), "--html",
                                   str(folder / "report" / "audit.html"))) == 0
        report = json.loads((folder / "report" / "audit.json").read_text())
        results.append((records, outputs, report, console.getvalue(), (folder / "report" / "audit.md").read_text()))
    return results


def test_audit_json_follows_the_schema_and_the_html_report_shows_its_verdicts_and_evidence(audits, audit_files):
    """Each audit.json follows the schema; the first seed's audit.html: one verdict row per finding with the JSON's score and p-values, and for each
    flagged work its top records with the JSON's scores."""
    for audited in audits:
        validate(audited[2], "audit")  # every seed's audit.json follows the outputs' schema
    report, page = audits[0][2], (audit_files[0] / "report" / "audit.html").read_text()
    rows = re.findall(r"<tr><td>\d+</td>.*?</tr>", page)
    assert len(rows) == len(report["findings"])
    for row, finding in zip(rows, report["findings"]):
        assert [float(v) for v in re.findall(r'data-value="([^"]+)"', row)] == [
            finding["score"], finding["p_value"], finding["adjusted_p"]]
    flagged = [(r["train_id"], r["score"]) for f in report["findings"] if f["flagged"] for r in f["top_records"]]
    assert [(i, v) for kind, i, v, _ in cards(page) if kind == "work-record"] == flagged
    assert page.count("<mark>") == 2 * sum(f["flagged"] and f["overlap"]["words"] > 0 for f in report["findings"])


def test_audit_report_states_its_method_test_and_verdicts(audits):
    for records, outputs, report, console, markdown in audits:
        meta = report["metadata"]
        assert meta["method"] == "influence-ekfac" and "raise" in meta["sign"] and meta["test"]["correction"] == "holm"
        assert meta["n_unprotected_records"] == 40 and meta["test"]["alpha"] == 0.01 and meta["model_fingerprint"]
        assert report["flagged_works"] == list(dict.fromkeys(f["work"] for f in report["findings"] if f["flagged"]))
        assert [o["generated"] for o in report["outputs"]] == [False, False, True]
        assert [o["completion"] for o in report["outputs"][:2]] == [o["completion"] for o in outputs[:2]]
        assert "Sign: positive" in markdown and "holm" in markdown
        if report["flagged_works"]:
            assert "FLAGGED" in console and f"flagged: {', '.join(report['flagged_works'])};" in console
            assert "**FLAGGED**" in markdown
        for finding in report["findings"]:
            assert finding["flagged"] == (finding["adjusted_p"] < 0.01)
            if finding["flagged"]:  # the output positions' parts are a decomposition of the work's group score
                assert finding["token_parts_sum"] == pytest.approx(finding["score"], rel=1e-3)
                assert any(token["in_completion"] for token in finding["output_tokens"])


def test_given_outputs_that_reproduce_the_planted_work_are_flagged_with_verbatim_evidence(audits):
    """Over 8 seeds × 2 given outputs (each copies 8 words of a planted record): the words are found verbatim in that
    record (lexical: exact on any build); the planted work is flagged for at least 14 of 16 (measured 16), each flag at
    the smallest p-value the 999 draws allow, and that record is the work's top record for at least 14 (measured 16)."""
    flagged = top_is_source = 0
    for records, outputs, report, _, _ in audits:
        findings = {(f["output"], f["work"]): f for f in report["findings"]}
        for q, source in ((0, "planted0"), (1, "planted5")):
            planted = findings[q, "planted"]
            span = outputs[q]["completion"].strip()
            assert planted["overlap"]["text"] == span and planted["overlap"]["words"] == 8
            assert planted["overlap_record"] == source
            if planted["flagged"]:
                flagged += 1
                assert planted["p_value"] == 1 / 1000 and planted["adjusted_p"] < 0.01
            top_is_source += planted["top_records"][0]["train_id"] == source
    assert flagged >= 14 and top_is_source >= 14


def test_the_decoy_work_is_not_flagged(audits):
    """The decoy is under the null by design: flagged for at most 1 of its 24 (output, seed) tests (measured 0;
    Holm at alpha 0.01 bounds the chance of any false flag per audit by 1%)."""
    decoy_flags = [f["flagged"] for _, _, report, _, _ in audits for f in report["findings"] if f["work"] == "decoy"]
    assert len(decoy_flags) == 3 * len(SEEDS) and sum(decoy_flags) <= 1


def test_generated_outputs_recite_the_planted_record_and_are_flagged_at_a_stated_rate(audits):
    """The third output's completion is generated from the first 5 words of planted2. Over 8 seeds the model recites
    at least 5 of the record's next words in at least 6 (measured 7 with at least 8 words), the overlap evidence finds
    at least the recited words in planted2, and the planted work is flagged in at least 4 (measured 6)."""
    reciting = flagged = 0
    for records, _, report, _, _ in audits:
        record = records[2]["text"].split()[5:]
        generated = report["outputs"][2]["completion"].split()
        recited = next((i for i, (a, b) in enumerate(zip(generated, record)) if a != b),
                       min(len(generated), len(record)))
        planted = {f["work"]: f for f in report["findings"] if f["output"] == 2}["planted"]
        if recited >= 5:
            reciting += 1
            assert planted["overlap_record"] == "planted2" and planted["overlap"]["words"] >= recited
        flagged += planted["flagged"]
    assert reciting >= 6 and flagged >= 4


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "zorvak", "--work-column", "author"], "no work column 'author'"),
    (["--prompt", "zorvak", "--work", "Anonymous"], "unknown work 'Anonymous'"),
    (["--prompt", "zorvak", "--work-column", "empty"], "no protected records"),
    ([], "--prompt"),
    (["--prompt", "zorvak", "--draws", "10"], "at least 201 draws"),
])
def test_bad_input_is_one_line_and_exit_status_2(audit_files, capsys, extra, message):
    folder = audit_files[0]
    assert main(audit_args(folder, *extra)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("llm-attrib audit: error:") and message in error[0], error
