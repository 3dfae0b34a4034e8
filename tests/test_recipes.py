"""`llm-attrib run RECIPE`: the shipped recipes end to end on CPU, the schema's one-line errors, path resolution."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import SENTENCES
from llm_attrib.apps.run import TASKS
from llm_attrib.cli import main
from llm_attrib.demo.training import torch_threads
from llm_attrib.errors import UserInputError
from llm_attrib.recipe import load_recipe
from llm_attrib.output_schema import validate
from test_html_report import cards

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ROLEPLAY = RECIPES.parents[1] / "shared" / "data" / "gpteacher_roleplay.json"


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def run_recipe(recipe: Path | str, *overrides: str) -> int:
    return main(["run", str(recipe), *(item for override in overrides for item in ("--set", override))])


def assert_whole(out: Path) -> None:
    """Every artefact written whole: no temporary files left anywhere under ``out``."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_demo_trace_recipe_traces_given_and_generated_completions_with_the_methods_scores(tmp_path):
    """What holds on any build of the demo (training is not bit-exact across CPUs): a given completion is traced as
    given; a generated one is the model's own greedy continuation cut at the recipe's stop strings (recomputed here
    with the same model; it need not be the fact's answer on every build); every query's scores are those of the
    recipe's method through the Python API (loading the factors the run fitted); the report shows each top record.
    Whether the top records state the fact is a rate over the demo's 100 queries: see tests/test_quickstart.py."""
    from llm_attrib.apps.trace import generate_completion
    from llm_attrib.attributors import ATTRIBUTORS
    from llm_attrib.attributors.influence import InfluenceAttributor
    from llm_attrib.demo.default import load_default

    assert run_recipe(RECIPES / "demo-trace.yaml", f"output.dir={tmp_path}") == 0
    bundle = load_default()  # built by the run (user cache), so loading it here is cheap
    result = json.loads((tmp_path / "scores.json").read_text())
    validate(result, "trace-scores")
    assert result["train_ids"] == [record["id"] for record in bundle.train_records]
    assert result["metadata"]["recipe"]["model"] == "demo" and "raises" in result["metadata"]["sign"]
    assert result["metadata"]["method"].startswith("influence-ekfac")
    recipe = load_recipe(RECIPES / "demo-trace.yaml", tasks=TASKS)
    assert [query["prompt"] for query in result["queries"]] == [query.prompt for query in recipe.queries]
    assert [query["generated"] for query in result["queries"]] == [False, True, True]

    base = ATTRIBUTORS["influence-ekfac"](bundle.model, bundle.tokenizer)
    method = InfluenceAttributor(base.adapter, config=base.config.replace(seed=0, batch_size=16),
                                 cache_dir=tmp_path / "factors")
    records = []
    for query, spec in zip(result["queries"], recipe.queries):
        expected = spec.completion or generate_completion(method.adapter, spec.prompt, 8, stop=(".", "\n"))
        assert query["completion"] == expected and expected.strip()
        records.append({"prompt": query["prompt"], "completion": query["completion"]})
    scores = method.fit(bundle.train_records).score(records, bundle.train_records).values
    texts = {record["id"]: record["text"] for record in bundle.train_records}
    report = (tmp_path / "report.md").read_text()
    for query, row in zip(result["queries"], scores.tolist()):  # float32 contractions, summed in another order
        assert query["scores"] == pytest.approx(row, abs=1e-4 * max(map(abs, row)))
        # the listed records carry the highest (and most negative) scores in order; the corpus repeats some
        # documents word for word, so tied records may be listed in either order
        score_of = dict(zip(result["train_ids"], query["scores"]))
        assert [record["score"] for record in query["top"]] == sorted(query["scores"], reverse=True)[:5]
        assert [record["score"] for record in query["bottom"]] == sorted(s for s in query["scores"] if s < 0)[:5]
        assert all(score_of[record["train_id"]] == record["score"] for record in query["top"] + query["bottom"])
        assert all(texts[record["train_id"]] in report for record in query["top"])
    page = (tmp_path / "report.html").read_text()  # the HTML report shows the JSON's records and scores
    assert cards(page) == [(kind, record["train_id"], record["score"], f"{record['score']:+.4g}")
                           for query in result["queries"]
                           for kind, key in (("proponent", "top"), ("opponent", "bottom")) for record in query[key]]
    assert_whole(tmp_path)


@pytest.mark.skipif(not ROLEPLAY.exists(), reason="needs ../shared/data/gpteacher_roleplay.json")
def test_roleplay_trace_recipe_on_a_model_fine_tuned_on_its_records(tmp_path):
    from llm_attrib.demo.model import tiny_gpt2
    from llm_attrib.demo.tokenizer import train_tokenizer
    from llm_attrib.demo.training import train_causal_lm

    small = ["train.limit=24", "method.candidates=12", "method.options.max_examples=16", "generate.max_new_tokens=8",
             "generate.stop=[]"]
    recipe = load_recipe(RECIPES / "roleplay-trace.yaml", ["model=demo", *small])
    train = recipe.train.records(*recipe.train.load(recipe.seed, "train"))
    assert train[0]["prompt"] and train[0]["completion"] and all(isinstance(r["id"], int) for r in train)
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in train], 600, model_max_length=640)
    model = tiny_gpt2(len(tokenizer), n_positions=640, n_embd=32, n_layer=1, n_head=2, seed=0,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    train_causal_lm(model, tokenizer, train, epochs=2, lr=3e-3, batch_size=8, seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    repeated = train[5]  # a query that repeats a training record verbatim: that record should come first
    out = tmp_path / "out"
    assert run_recipe(RECIPES / "roleplay-trace.yaml", f"model={tmp_path / 'model'}", f"output.dir={out}", *small,
                      f"queries.1.prompt={json.dumps(repeated['prompt'])}",
                      f"queries.1.completion={json.dumps(repeated['completion'])}") == 0
    result = json.loads((out / "scores.json").read_text())
    assert result["train_ids"] == [r["id"] for r in train]
    generated, repeat = result["queries"]
    assert generated["generated"] and generated["completion"].strip()
    assert repeat["top"][0]["train_id"] == repeated["id"]
    assert sum(score is not None for score in repeat["scores"]) <= 12  # the prefilter's candidates only
    assert "bm25-prefilter" in result["metadata"]["method"]
    assert (out / "report.md").exists() and (out / "factors" / "prefilter-bm25.safetensors").exists()
    assert_whole(out)


def test_value_recipe_ranks_the_flipped_labels_lowest(tmp_path):
    assert run_recipe(RECIPES / "noisy-labels-value.yaml", f"output.dir={tmp_path}") == 0
    result = json.loads((tmp_path / "values.json").read_text())
    validate(result, "values")
    with open(RECIPES / "data" / "noisy-cancer" / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [point["id"] for point in result["points"]] == [row["id"] for row in rows]
    assert [point["label"] for point in result["points"]] == [int(row["label"]) for row in rows]
    flipped = set(json.loads((RECIPES / "data" / "noisy-cancer" / "flipped.json").read_text()))
    lowest = sorted(result["points"], key=lambda point: point["value"])[:len(flipped)]
    assert len(flipped & {point["id"] for point in lowest}) >= 0.7 * len(flipped)  # chance: 10%
    report = (tmp_path / "report.md").read_text()
    assert "Lowest 20 values" in report and lowest[0]["id"] in report
    assert_whole(tmp_path)


def test_value_recipe_with_validation_data_inherits_the_column_mapping(tmp_path):
    validation = RECIPES / "data" / "noisy-cancer" / "validation.csv"
    assert run_recipe(RECIPES / "noisy-labels-value.yaml", f"output.dir={tmp_path}", "method.name=knn-shapley",
                      "method.options={n_neighbors: 5}", f"validation.path={validation}", "train.limit=50") == 0
    points = json.loads((tmp_path / "values.json").read_text())["points"]
    assert len(points) == 50 and len({point["id"] for point in points}) == 50


def test_value_recipe_embeds_a_text_column_with_the_model(tmp_path):
    rows = [(sentence, index % 2) for index, sentence in enumerate(SENTENCES)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"sentence": s, "y": y}) + "\n" for s, y in rows * 2))
    assert run_recipe(VALUE, "model=demo", f"train.path={tmp_path / 'texts.jsonl'}", "train.id=null",
                      "train.text=sentence", "train.label=y", "method.options={n_estimators: 10}",
                      f"output.dir={tmp_path / 'out'}", "output.top_k=3") == 0
    points = json.loads((tmp_path / "out" / "values.json").read_text())["points"]
    assert [point["id"] for point in points] == list(range(len(rows) * 2))
    assert "| text |" in (tmp_path / "out" / "report.md").read_text()


def test_value_recipe_data_is_what_its_script_writes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("noisy_cancer", RECIPES / "data" / "noisy_cancer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "FOLDER", tmp_path)
    script.main()
    for name in ("train.csv", "validation.csv", "flipped.json"):
        assert (tmp_path / name).read_bytes() == (RECIPES / "data" / "noisy-cancer" / name).read_bytes()


def test_trace_recipe_with_data_specs_and_paths_relative_to_the_recipe(tmp_path, train_records, query_records):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text(
        "".join(json.dumps({"name": f"doc{i}", "body": r["text"]}) + "\n" for i, r in enumerate(train_records)))
    (tmp_path / "data" / "questions.csv").write_text(
        "q,a\n" + "".join(f"{q['prompt']},{q['completion']}\n" for q in query_records))
    (tmp_path / "job.yaml").write_text(
        "task: trace\nmodel: demo\n"
        "train: {path: json, data_files: data/docs.jsonl, text: body, id: name}\n"
        "queries: {path: data/questions.csv, prompt: q, completion: a}\n"
        "method: {name: grad-dot, prefilter: tfidf, candidates: 3}\n"
        "output: {dir: out, top_k: 2}\n")
    assert run_recipe(tmp_path / "job.yaml") == 0
    result = json.loads((tmp_path / "out" / "scores.json").read_text())
    validate(result, "trace-scores")  # with the prefilter's unscored records as null
    assert result["train_ids"] == [f"doc{i}" for i in range(len(train_records))]
    assert [query["prompt"] for query in result["queries"]] == [q["prompt"] for q in query_records]
    assert all(len(query["top"]) == 2 for query in result["queries"])
    assert all(sum(score is not None for score in query["scores"]) == 3 for query in result["queries"])


def test_relative_paths_resolve_against_the_recipe_and_overridden_ones_against_the_working_directory(
        tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "job.yaml").write_text(
        "task: value\ntrain: {path: t.csv, label: y}\nmethod: {name: loo}\noutput: {dir: out}\n")
    (tmp_path / "recipes" / "t.csv").write_text("x,y\n")
    (tmp_path / "elsewhere.csv").write_text("x,y\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("recipes/job.yaml", tasks=TASKS)
    assert recipe.train.path == str(tmp_path / "recipes" / "t.csv")
    assert recipe.output.dir == str(tmp_path / "recipes" / "out")
    recipe = load_recipe("recipes/job.yaml", ["train.path=elsewhere.csv", "output.dir=res"], tasks=TASKS)
    assert recipe.train.path == str(tmp_path / "elsewhere.csv") and recipe.output.dir == str(tmp_path / "res")
    assert load_recipe("recipes/job.yaml", ["train.path=json"]).train.path == "json"  # a datasets builder
    with pytest.raises(UserInputError, match="no such file or folder"):
        load_recipe("recipes/job.yaml", ["train.path=missing.csv"])


DEMO = RECIPES / "demo-trace.yaml"
VALUE = RECIPES / "noisy-labels-value.yaml"


@pytest.mark.parametrize("recipe, overrides, message", [
    (DEMO, ["tran=demo"], "demo-trace.yaml: unknown key 'tran'; allowed: task, method, output, train, model"),
    (VALUE, ["train.colums=[a]"], "train: unknown key 'colums'; allowed: path, data_files"),
    (VALUE, ["train.label=diagnosis"], "train: no column 'diagnosis' in"),
    (DEMO, ["queries.0.completion=''"], "queries.0.completion is empty"),
    (DEMO, ["queries.2.prompt=' '"], "queries.2.prompt is empty"),
    (DEMO, ["method.name=influence-foo"], "method.name: unknown 'influence-foo'; choose one of grad-dot"),
    (DEMO, ["method.options.bogus=0.1"], "method.options: unknown option 'bogus'; allowed: curvature, damping"),
    (DEMO, ["method.options.batch_size=0"], "method.options.batch_size must be at least 1, not 0"),
    (DEMO, ["method.options.curvature=kfac"], "method.options.curvature: set by method.name"),
    (DEMO, ["task=summarise"], "task: unknown task 'summarise'; choose one of trace, value"),
    (DEMO, ["output.top_k=many"], "output.top_k: expected an integer, got 'many'"),
    (DEMO, ["train=wiki"], "train: expected a mapping with keys path,"),
    (DEMO, ["model=no/such/model"], "model: no model folder at"),
    (DEMO, ["queries.7.prompt=x"], "'7' is not an index of a list of 3 items"),
    (DEMO, ["seed"], "--set 'seed': write KEY=VALUE"),
    (DEMO, ["validation={path: json}"], "`validation` is not used by a trace recipe"),
    (VALUE, ["train.completion=label"], "train: a `completion` column goes with a `prompt` column"),
    (VALUE, ["model=demo"], "`model` embeds `train.text` in a value recipe"),
    (VALUE, ["method.options={n_estimators: 5, depth: 2}"], "data-oob has no parameter 'depth'"),
    (RECIPES / "missing.yaml", [], "no recipe file at"),
])
def test_bad_recipes_get_one_line_and_exit_status_2(capsys, recipe, overrides, message):
    assert run_recipe(recipe, *overrides) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("llm-attrib run: error:")
    assert message in error


def test_every_shipped_recipe_parses():
    shipped = sorted(RECIPES.glob("*.yaml"))
    assert {path.name for path in shipped} >= {"demo-trace.yaml", "roleplay-trace.yaml", "noisy-labels-value.yaml"}


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_recipe_parses(path):
    if path.name == "roleplay-trace.yaml" and not ROLEPLAY.exists():
        pytest.skip(f"needs {ROLEPLAY} (the shared data folder beside the checkout)")
    overrides = ["model=demo"] if path.name == "roleplay-trace.yaml" else []
    assert load_recipe(path, overrides, tasks=TASKS).task in TASKS
