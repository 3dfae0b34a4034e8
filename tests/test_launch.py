"""`llm-attrib trace` and `audit` under the real launcher: `torchrun --nproc_per_node 2` (CPU, gloo) gives the same
report as one process, once, and leaves one copy of each cached artefact (no temporary files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_attrib import distributed
from llm_attrib.cli import main

from test_audit import audit_args, audit_files  # noqa: F401  (fixture: a model trained on a planted work)

REPO = Path(__file__).resolve().parents[1]


def _trace_args(model: Path, train: Path, factors: Path) -> list[str]:
    """Uneven batches over the shards (3 per batch, 4 records per rank); the empirical Fisher, whose factors
    do not depend on the number of processes; the prefilter, whose index rank 0 builds and the other loads."""
    return ["trace", "--model", str(model), "--train", str(train), "--id-column", "doc", "--prompt", "the cat",
            "--max-new-tokens", "4", "--top-k", "4", "--fisher", "empirical", "--damping", "heuristic",
            "--batch-size", "3", "--factors", str(factors), "--prefilter", "tfidf", "--candidates", "6", "--json"]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "llm_attrib.cli", *args]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)


def test_torchrun_two_processes_print_one_report_equal_to_one_process(model_dir, train_file, tmp_path, capsys):
    launched = _torchrun(_trace_args(model_dir, train_file, tmp_path / "factors-2"))
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert main(_trace_args(model_dir, train_file, tmp_path / "factors-1")) == 0
    two, one = json.loads(launched.stdout), json.loads(capsys.readouterr().out)  # one report: rank 0's only

    assert two["completion"] == one["completion"] and two["completion"].strip()
    assert [r["train_id"] for r in two["top"]] == [r["train_id"] for r in one["top"]]
    assert [r["score"] for r in two["top"]] == pytest.approx([r["score"] for r in one["top"]], rel=1e-4)
    for mine, theirs in zip(two["top"], one["top"]):
        assert [t for t, _ in mine["top_tokens"]] == [t for t, _ in theirs["top_tokens"]]
        assert [v for _, v in mine["top_tokens"]] == pytest.approx([v for _, v in theirs["top_tokens"]],
                                                                    rel=1e-4, abs=1e-9)
    written = sorted(p.name for p in (tmp_path / "factors-2").iterdir())
    assert written == ["ekfac-factors.safetensors", "prefilter-tfidf.safetensors"]  # no leftover .tmp files


def test_torchrun_audit_writes_the_report_of_one_process(audit_files, tmp_path):
    """Each output's position evidence scores one record over two processes: rank 1's shard is empty."""
    folder = audit_files[0]
    args = audit_args(folder, "--outputs", str(folder / "outputs.jsonl"), "--fisher", "empirical")
    launched = _torchrun(args + ["--output-dir", str(tmp_path / "two")])
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert main(args + ["--output-dir", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / name / "audit.json").read_text()) for name in ("two", "one"))
    assert two["flagged_works"] == one["flagged_works"] == ["planted"]
    assert [o["completion"] for o in two["outputs"]] == [o["completion"] for o in one["outputs"]]
    for mine, theirs in zip(two["findings"], one["findings"]):
        assert (mine["output"], mine["work"], mine["flagged"]) == (theirs["output"], theirs["work"], theirs["flagged"])
        assert mine["score"] == pytest.approx(theirs["score"], rel=1e-4)
        evidence = theirs["token_parts_sum"]  # position evidence is computed for flagged works only
        assert mine["token_parts_sum"] == (None if evidence is None else pytest.approx(evidence, rel=1e-4))
        assert mine["p_value"] == pytest.approx(theirs["p_value"], abs=0.01)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.parametrize("args", [["value", "--method", "data-oob", "--data", "data.csv", "--label-column", "y"],
                                  ["eval"]])
def test_one_process_commands_refuse_several_processes(args, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)  # as under a launcher, without its start-up
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"llm-attrib {args[0]}: error: this command runs in one process") and "\n" not in error
