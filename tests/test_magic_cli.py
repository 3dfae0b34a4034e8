"""``llm-attrib train`` then ``llm-attrib trace --method magic``: the CLI's scores are the API's, and runs or models
that do not belong together are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from llm_attrib.cli import main


def test_train_then_trace_with_magic_gives_the_api_scores(model_dir, train_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_attrib.attributors.magic import MagicAttributor
    from llm_attrib.training import ReplayableRun

    run_dir = tmp_path / "run"
    data = ["--model", str(model_dir), "--train", str(train_file), "--id-column", "doc"]
    assert main(["train", *data, "--output", str(run_dir), "--epochs", "2", "--batch-size", "3", "--lr", "1e-2",
                 "--schedule", "linear", "--warmup-steps", "1", "--max-grad-norm", "1.0"]) == 0
    assert "trained 6 steps on 8 records" in capsys.readouterr().out
    query = ["--prompt", "the cat sat on", "--completion", " the mat", "--top-k", "3"]
    trace = ["trace", "--model", str(run_dir / "model"), "--train", str(train_file), "--id-column", "doc", *query,
             "--method", "magic", "--run", str(run_dir)]
    assert main([*trace, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    run = ReplayableRun(run_dir, model, AutoTokenizer.from_pretrained(model_dir))
    records = [json.loads(line) for line in train_file.read_text().splitlines()]
    values = MagicAttributor(run).fit(records).score([{"prompt": "the cat sat on", "completion": " the mat"}]).values[0]
    top = torch.argsort(values, descending=True)[:3].tolist()
    assert report["method"] == "magic" and [r["train_id"] for r in report["top"]] == [f"d{i}" for i in top]
    assert [r["score"] for r in report["top"]] == pytest.approx([float(values[i]) for i in top], rel=1e-9)
    assert report["cost"]["steps"] == 6 and report["smoothness"] is None
    assert main([*trace, "--magic-smoothness-directions", "1", "--magic-smoothness-fraction", "0.25"]) == 0
    console = capsys.readouterr().out
    assert "method:     magic" in console and "metasmoothness (1 directions, 25% of records" in console


def test_magic_without_its_run_or_with_another_model_is_refused(model_dir, train_file, tmp_path, capsys):
    common = ["trace", "--train", str(train_file), "--prompt", "the cat sat on", "--completion", " the mat",
              "--method", "magic"]
    assert main([*common, "--model", str(model_dir)]) == 2
    assert "needs --run" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--train", str(train_file), "--output", str(run_dir),
                 "--batch-size", "4"]) == 0
    capsys.readouterr()
    assert main([*common, "--model", str(model_dir), "--run", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "is not the final model of --run" in error and len(error.strip().splitlines()) == 1
    assert main([*common, "--model", str(run_dir / "model"), "--run", str(run_dir), "--prefilter", "bm25"]) == 2
    assert "--method magic scores every record" in capsys.readouterr().err
    assert main(["train", "--model", str(model_dir), "--train", str(train_file), "--output", str(run_dir),
                 "--lora-targets", "c_attn"]) == 2
    assert "--lora-targets goes with lora_rank" in capsys.readouterr().err


def test_a_trace_recipe_with_method_magic_scores_the_runs_records(model_dir, train_file, tmp_path):

    run_dir = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--train", str(train_file), "--id-column", "doc",
                 "--output", str(run_dir), "--batch-size", "4", "--lr", "1e-2"]) == 0
    (tmp_path / "job.yaml").write_text(
        "task: trace\n"
        f"train: {{path: json, data_files: {train_file}, text: text, id: doc}}\n"
        "queries: [{prompt: the cat sat on, completion: ' the mat'}, {prompt: a dog ran, completion: ' across'}]\n"
        f"method: {{name: magic, run: {run_dir}, options: {{query_batch: 1}}}}\n"
        "output: {dir: out, top_k: 2}\n")
    assert main(["run", str(tmp_path / "job.yaml")]) == 0
    result = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert result["metadata"]["method"] == "magic" and result["cost"]["steps"] == 2
    assert result["train_ids"] == [f"d{i}" for i in range(8)]
    best = max(range(8), key=lambda i: result["queries"][0]["scores"][i])
    assert result["queries"][0]["top"][0]["train_id"] == f"d{best}" and len(result["queries"]) == 2
    assert "**magic**" in (tmp_path / "out" / "report.md").read_text()
    (tmp_path / "bad.yaml").write_text((tmp_path / "job.yaml").read_text().replace("task: trace\n",
                                                                                    "task: trace\nmodel: demo\n"))
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
