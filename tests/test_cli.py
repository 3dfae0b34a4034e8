"""The `llm-attrib` command line on a local model folder and data file: output and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from llm_attrib.cli import main


def test_trace_prints_top_records_as_json(model_dir, train_file, train_records, capsys):
    """The CLI's top records and opponents are the Python API's highest and most negative scores (same defaults: the
    flags are generated from the config), in the JSON and in the console's tables."""
    from llm_attrib.adapters import CausalLMAdapter
    from llm_attrib.attributors.influence import InfluenceAttributor

    common = ["trace", "--model", str(model_dir), "--train", str(train_file), "--id-column", "doc",
              "--prompt", "the cat sat on", "--completion", " the mat", "--top-k", "3", "--damping", "heuristic"]
    assert main(common) == 0
    console = capsys.readouterr().out.split("\nopponents (most negative")
    status = main([*common, "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["completion"] == " the mat" and "raises" in report["sign"]
    attributor = InfluenceAttributor(CausalLMAdapter.from_pretrained(model_dir), "ekfac", damping="heuristic")
    values = attributor.fit(train_records).score([{"prompt": "the cat sat on", "completion": " the mat"}],
                                                 train_records).values[0]
    top = torch.argsort(values, descending=True)[:3].tolist()
    assert [record["train_id"] for record in report["top"]] == [f"d{i}" for i in top]
    assert [record["score"] for record in report["top"]] == pytest.approx([float(values[i]) for i in top], rel=1e-5)
    assert [record["text"] for record in report["top"]] == [train_records[i]["text"] for i in top]
    bottom = [i for i in torch.argsort(values).tolist() if values[i] < 0][:3]
    assert bottom and [record["train_id"] for record in report["bottom"]] == [f"d{i}" for i in bottom]
    assert len(console) == 2
    for table, ids in zip(console, (top, bottom)):
        assert [line.split()[2] for line in table.splitlines() if line[:4].strip().isdigit()] == [f"d{i}" for i in ids]


def test_trace_scale_options_give_the_default_scores(model_dir, train_file, capsys):
    """bf16 weights, two layer groups and rank-2 queries re-scored at full rank: the float32 full-rank scores."""
    common = ["trace", "--model", str(model_dir), "--train", str(train_file), "--id-column", "doc", "--prompt",
              "the cat sat on", "--completion", " the mat", "--top-k", "8", "--json", "--damping", "heuristic"]
    assert main(common) == 0
    expected = {r["train_id"]: r["score"] for r in json.loads(capsys.readouterr().out)["top"]}
    assert main([*common, "--dtype", "bfloat16", "--layer-partitions", "2", "--query-rank", "2",
                 "--rescore-top", "8"]) == 0
    got = {r["train_id"]: r["score"] for r in json.loads(capsys.readouterr().out)["top"]}
    scale = max(abs(v) for v in expected.values())
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - v) < 0.02 * scale for k, v in expected.items())


def test_trace_generates_a_completion_when_none_is_given(model_dir, train_file, capsys):
    from llm_attrib.adapters import CausalLMAdapter
    from llm_attrib.apps.trace import generate_completion

    assert main(["trace", "--model", str(model_dir), "--train", str(train_file), "--prompt", "the cat",
                 "--top-k", "2", "--json", "--max-new-tokens", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["generated"] and report["completion"].strip()
    assert report["completion"] == generate_completion(CausalLMAdapter.from_pretrained(model_dir), "the cat", 4)


def test_fit_factors_then_trace_reuses_them(model_dir, train_file, tmp_path, capsys, monkeypatch):
    """trace --factors loads what fit-factors wrote: no curvature is fitted (fit raises), the file is untouched, and
    the scores equal those of a trace that fits the same factors itself."""
    from llm_attrib.curvature.base import Curvature

    factors = tmp_path / "factors"
    common = ["--model", str(model_dir), "--train", str(train_file), "--factors", str(factors)]
    query = ["--prompt", "the cat", "--completion", " sat", "--top-k", "8", "--json"]
    assert main(["fit-factors", *common]) == 0
    capsys.readouterr()
    [saved] = factors.glob("ekfac-factors*.safetensors")
    before = (saved.read_bytes(), saved.stat().st_mtime_ns)
    with monkeypatch.context() as patch:
        patch.setattr(Curvature, "fit", lambda *args, **kwargs: pytest.fail("refitted instead of loading the factors"))
        assert main(["trace", *common, *query]) == 0
    loaded = json.loads(capsys.readouterr().out)["top"]
    assert (saved.read_bytes(), saved.stat().st_mtime_ns) == before
    assert main(["trace", "--model", str(model_dir), "--train", str(train_file), *query]) == 0
    fitted_here = json.loads(capsys.readouterr().out)["top"]
    assert [(r["train_id"], r["score"]) for r in loaded] == [(r["train_id"], r["score"]) for r in fitted_here]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text-column", "body"], "no column 'body'"),
        (["--completion", ""], "completion is empty"),
        (["--prompt", "the cat " * 60, "--completion", " sat"], "context"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(model_dir, train_file, capsys, extra, message):
    args = ["trace", "--model", str(model_dir), "--train", str(train_file), "--prompt", "the cat",
            "--completion", " sat", *extra]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("llm-attrib trace: error:") and message in error
