"""The outputs' JSON Schema: shipped with the package, it accepts what llm_attrib writes (the CLI's and recipes' own
outputs are validated where their tests run them: test_html_report, test_audit, test_recipes, test_valuation_cli)
and rejects a corrupted document, naming where; `Scores.to_dataset` and `to_parquet` keep every score."""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import torch

from llm_attrib.output_schema import KINDS, SchemaError, schema, validate
from llm_attrib.scores import Scores
from test_html_report import synthetic_audit, synthetic_reports

ROOT = Path(__file__).resolve().parents[1]


def test_the_schema_is_package_data_and_names_each_kind():
    assert resources.files("llm_attrib").joinpath("schemas/outputs-v1.json").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.json" in package_data["llm_attrib"]
    assert set(KINDS.values()) <= set(schema()["$defs"]) and "v1" in schema()["$id"]


def documents() -> dict[str, dict]:
    """A valid document of each kind, through the code that writes the real ones (JSON round trip)."""
    report = synthetic_reports(1, 4)[0]
    values = {"method": "knn-shapley", "n_utility_evaluations": 0, "extra": {},
              "points": [{"index": 0, "id": "r0", "value": 0.5, "stderr": math.nan, "count": 1, "rank": 0}]}
    return {name: json.loads(json.dumps(document, default=str)) for name, document in
            (("trace-report", report.to_dict()), ("audit", synthetic_audit().to_dict()), ("values", values))}


CORRUPTIONS = [
    ("trace-report", lambda d: d.pop("bottom"), "$: missing key(s) bottom"),
    ("trace-report", lambda d: d["top"][0].update(score="0.5"), "$.top[0].score: expected number"),
    ("trace-report", lambda d: d["top"][1]["tokens"][0].append(1.0), "$.top[1].tokens[0]: 3 items"),
    ("trace-report", lambda d: d.update(n_prompt_tokens=True), "$.n_prompt_tokens: expected integer"),
    ("audit", lambda d: d["findings"][0].update(adjusted_p=1.5), "$.findings[0].adjusted_p: 1.5 is above"),
    ("audit", lambda d: d["metadata"]["test"].update(correction="none"), "$.metadata.test.correction"),
    ("audit", lambda d: d["outputs"][0]["top"][0].pop("train_id"), "$.outputs[0].top[0]: missing key(s) train_id"),
    ("values", lambda d: d["points"][0].update(rank=-1), "$.points[0].rank: -1 is below the minimum 0"),
]


@pytest.mark.parametrize("kind, corrupt, message", CORRUPTIONS)
def test_a_valid_document_passes_and_a_corrupted_one_is_rejected_naming_where(kind, corrupt, message):
    document = documents()[kind]
    validate(document, kind)
    broken = copy.deepcopy(document)
    corrupt(broken)
    with pytest.raises(SchemaError, match=re.escape(message)):
        validate(broken, kind)


def test_the_validator_refuses_keywords_it_does_not_implement(monkeypatch):
    from llm_attrib import output_schema

    unsupported = {"$defs": {"values": {"type": "object", "pattern": "x"}}}
    monkeypatch.setattr(output_schema, "schema", lambda version=1: unsupported)
    with pytest.raises(ValueError, match="'pattern'"):
        validate({}, "values")


def test_scores_go_to_a_dataset_and_parquet_with_every_score(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    values = torch.tensor([[0.5, -1.0, math.nan], [2.0, 0.0, -0.25]], dtype=torch.float64)
    scores = Scores(values, ["q0", "q1"], ["a", "b", "c"], method="influence-ekfac", units="log-prob")
    dataset = scores.to_dataset()
    assert dataset.column_names == ["query_id", "train_id", "score"] and len(dataset) == 6
    assert dataset["query_id"] == ["q0"] * 3 + ["q1"] * 3 and dataset["train_id"] == ["a", "b", "c"] * 2
    torch.testing.assert_close(torch.tensor(dataset["score"], dtype=torch.float64), values.reshape(-1),
                               equal_nan=True)
    assert json.loads(dataset.info.description)["units"] == "log-prob"
    scores.to_parquet(tmp_path / "scores.parquet")
    table = pq.read_table(tmp_path / "scores.parquet")
    assert json.loads(table.schema.metadata[b"llm_attrib"])["sign"].startswith("positive = raises")
    back = datasets.Dataset.from_parquet(str(tmp_path / "scores.parquet"))
    assert back["train_id"] == dataset["train_id"] and back["query_id"] == dataset["query_id"]
    torch.testing.assert_close(torch.tensor(back["score"], dtype=torch.float64), values.reshape(-1), equal_nan=True)


def test_to_dataset_gives_records_outside_a_prefilters_candidates_as_missing():
    from llm_attrib.attributors.prefilter import NOT_A_CANDIDATE

    scores = Scores(torch.tensor([[0.5, NOT_A_CANDIDATE]], dtype=torch.float64), ["q"], ["a", "b"])
    row = scores.to_dataset()["score"]
    assert row[0] == 0.5 and math.isnan(row[1])
