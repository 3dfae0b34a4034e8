"""`llm-attrib run RECIPE.yaml [--set KEY=VALUE ...]`: run the whole job a recipe describes (`llm_attrib.recipe`).

Tasks (`TASKS`):

* ``trace``: the training records behind each query's completion (the model generates it where a query has
  none), scored by a gradient method of `ATTRIBUTORS`, optionally only on a TF-IDF/BM25 prefilter's candidates.
  Writes ``scores.json`` (every query's score for every training id, its top records and opponents with text and
  token parts), ``report.md`` and ``report.html`` (`llm_attrib.apps.html_report`: token heat-maps). A positive
  score means the record raises log Pr(completion | prompt). With ``encoding.overflow: split`` a document longer
  than the context is scored as its windows (ids ``"{id}#{k}"``); ``record_ids`` and ``record_scores`` sum them.
* ``value``: one value per row of a labelled data set by a method of `VALUATION_METHODS` (numeric ``features``,
  or a ``text`` column embedded by ``model``), through the code of ``llm-attrib value``. Writes ``values.json``
  and ``report.md`` (lowest and highest rows). Higher value = the row helps the base model more.

Files go to ``output.dir`` through `llm_attrib.store`'s atomic writes and carry metadata: library version,
model and data fingerprints, and the recipe as run (paths resolved, overrides applied).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llm_attrib import __version__
from llm_attrib.apps.options import show_progress
from llm_attrib.distributed import local_device, require_one_process
from llm_attrib.errors import UserInputError
from llm_attrib.recipe import DEMO, GenerateSpec, Recipe, load_recipe
from llm_attrib.store import atomic_path, data_fingerprint, model_fingerprint, write_json

SIGN = "positive = the record raises log Pr(completion | prompt); removing it would lower it"
FIXED_BY_METHOD = ("curvature", "normalize")
"""`InfluenceConfig` fields that `method.name` sets; `method.options` of a trace recipe may give any other."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run a recipe: a YAML file that describes a whole job",
                                   description=f"Run the whole job a recipe describes (tasks: {', '.join(TASKS)}); "
                                               "README.md's Recipes section lists its keys.")
    parser.add_argument("recipe", help="the recipe file, e.g. recipes/demo-trace.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key: dotted, list items by index (train.limit=100, "
                             "queries.0.prompt=...); VALUE is read as YAML; relative paths resolve against the "
                             "working directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_one_process("a recipe writes its outputs from one process; `llm-attrib trace` runs under several")
    recipe = load_recipe(args.recipe, args.overrides, tasks=TASKS)
    written = TASKS[recipe.task](recipe, Path(args.recipe).name)
    print(f"{recipe.task}: wrote {', '.join(map(str, written))}")
    return 0


# --------------------------------------------------------------------------------------------- shared pieces
def require(recipe: Recipe, task: str, needs: Sequence[str] = (), refuses: Sequence[str] = ()) -> None:
    """One-line errors for keys the task needs but the recipe lacks, or that the task does not use."""
    for key in needs:
        if recipe.get(key) is None:
            raise UserInputError(f"a {task} recipe needs `{key}`")
    for key in refuses:
        if recipe.get(key) is not None:
            raise UserInputError(f"`{key}` is not used by a {task} recipe; remove it")


def choose(value: str, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise UserInputError(f"{key}: unknown {value!r}; choose one of {', '.join(allowed)}")
    return value


@functools.cache
def demo_bundle() -> Any:
    """The embedded demo (built once, about a CPU minute, then loaded from the user cache)."""
    from llm_attrib.demo.default import load_default

    print("building or loading the demo model (first run: about a minute)...", file=sys.stderr)
    return load_default(progress=show_progress())


def model_folder(model: str) -> str:
    """A local model folder; ``demo`` is the demo's."""
    return str(demo_bundle().path) if model == DEMO else model


def metadata(recipe: Recipe, kind: str, model: Any, data: Any) -> dict[str, Any]:
    return {"kind": kind, "library_version": __version__,
            "model_fingerprint": None if model is None else model_fingerprint(model),
            "data_fingerprint": data_fingerprint(data), "recipe": dataclasses.asdict(recipe)}


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def quoted(text: str) -> str:
    """``text`` as a Markdown block quote, with the characters that would start emphasis, links or HTML escaped."""
    escaped = "".join("\\" + char if char in "\\`*_[<#" else char for char in str(text))
    return "\n".join(f"> {line}" for line in escaped.splitlines() or [""])


# ------------------------------------------------------------------------------------------------------ trace
def run_trace(recipe: Recipe, name: str) -> list[Path]:
    """Trace every query to the training records behind it; write scores.json and report.md."""
    from llm_attrib.adapters.causal_lm import CausalLMAdapter
    from llm_attrib.apps.html_report import trace_html
    from llm_attrib.apps.trace import trace_queries
    from llm_attrib.attributors import ATTRIBUTORS
    from llm_attrib.attributors.influence import InfluenceAttributor
    from llm_attrib.attributors.prefilter import Prefilter
    from llm_attrib.scores import sum_windows

    if recipe.method.name == "magic":
        from llm_attrib.apps.magic import run_trace_magic

        return run_trace_magic(recipe, name)
    check_trace(recipe)
    method = recipe.method
    if recipe.model == DEMO:
        model, tokenizer = demo_bundle().model, demo_bundle().tokenizer
    else:
        loaded = CausalLMAdapter.from_pretrained(recipe.model, base_model=recipe.base_model)
        model, tokenizer = loaded.model, loaded.tokenizer
    model.to(local_device())
    train = train_records(recipe)
    queries = query_pairs(recipe)
    out = Path(recipe.output.dir)
    factors = method.factors or out / "factors"
    base = ATTRIBUTORS[method.name](model, tokenizer)
    config = base.config.from_dict({**base.config.to_dict(), "seed": recipe.seed, **method.options},
                                   where="method.options")
    adapter = CausalLMAdapter(model, tokenizer, encoding=encoding_config(recipe))
    attributor = InfluenceAttributor(adapter, config=config, cache_dir=factors, progress=show_progress())
    split = adapter.encoding.overflow == "split"
    if split:
        train = adapter.split_windows(train)
    prefilter = None
    if method.prefilter is not None:
        prefilter = Prefilter(config=prefilter_config(method)).fit_or_load(
            Path(factors) / f"prefilter-{method.prefilter}.safetensors", train)
    generate = recipe.generate or GenerateSpec()
    scores, reports = trace_queries(attributor, train, queries, top_k=recipe.output.top_k,
                                    max_new_tokens=generate.max_new_tokens, stop=generate.stop, prefilter=prefilter)
    meta = {**metadata(recipe, "trace-scores", model, train), "method": scores.method, "units": scores.units,
            "sign": SIGN}
    def finite(row: list[float]) -> list[float | None]:
        return [v if np.isfinite(v) else None for v in row]

    records = sum_windows(scores, train) if split else None  # with encoding.overflow split: summed per record
    write_json(out / "scores.json", {
        "metadata": meta,
        "train_ids": scores.train_ids,
        **({"record_ids": records.train_ids} if split else {}),
        "queries": [{**report.to_dict(), "scores": finite(row),
                     **({"record_scores": finite(records.values[q].tolist())} if split else {})}
                    for q, (report, row) in enumerate(zip(reports, scores.values.tolist()))],
    })
    write_text(out / "report.md", trace_markdown(name, recipe, reports, meta, train))
    write_text(out / "report.html", trace_html(reports, meta, title=f"Trace: {name}"))
    return [out / "scores.json", out / "report.md", out / "report.html"]


def prefilter_config(method: Any) -> Any:
    """The `PrefilterConfig` of a trace recipe's ``method.prefilter`` and ``method.candidates`` (validated)."""
    from llm_attrib.attributors.prefilter import PrefilterConfig

    given = {} if method.candidates is None else {"candidates": method.candidates}
    return PrefilterConfig.from_dict({"index": method.prefilter, **given}, where="method")


def encoding_config(recipe: Recipe) -> Any:
    """The `EncodingConfig` of a trace recipe's ``encoding`` (validated)."""
    from llm_attrib.data import EncodingConfig

    return EncodingConfig.from_dict(recipe.encoding or {}, where="encoding")


def check_trace(recipe: Recipe) -> None:
    """One-line errors for what a trace recipe cannot run with, before any model is loaded."""
    from llm_attrib.attributors import ATTRIBUTORS
    from llm_attrib.attributors.influence import InfluenceConfig
    from llm_attrib.attributors.prefilter import PREFILTERS

    if recipe.model == DEMO and recipe.base_model is not None:
        raise UserInputError("base_model is for a peft adapter folder as `model`, not the demo; remove it")
    require(recipe, "trace", needs=("model", "queries"),
            refuses=("validation", "method.estimator", "train.label", "train.features", "queries.label",
                     "queries.features"))
    method = recipe.method
    choose(method.name, [key for key, factory in ATTRIBUTORS.items()
                         if getattr(factory, "fit_key", ("",))[0] == "influence"], "method.name")
    for option in method.options:
        if option in FIXED_BY_METHOD:
            raise UserInputError(f"method.options.{option}: set by method.name ({method.name!r}); choose another "
                                 "method instead")
    InfluenceConfig.from_dict(method.options, where="method.options")  # types and ranges, before any model loads
    encoding_config(recipe)
    if method.prefilter is not None:
        choose(method.prefilter, sorted(PREFILTERS), "method.prefilter")
        prefilter_config(method)
    if recipe.train != DEMO and recipe.train.prompt is not None and recipe.train.completion is None:
        raise UserInputError("train: a `prompt` mapping needs a `completion` column")


def train_records(recipe: Recipe) -> list[dict[str, Any]]:
    """The training records: the demo's documents, or the recipe's data spec as records."""
    if recipe.train == DEMO:
        return demo_bundle().train_records
    return recipe.train.records(*recipe.train.load(recipe.seed, "train"))


def query_pairs(recipe: Recipe) -> list[tuple[str, str | None]]:
    """``(prompt, completion or None)`` per query, inline or from a data spec with a prompt column."""
    if isinstance(recipe.queries, list):
        return [(query.prompt, query.completion) for query in recipe.queries]
    if recipe.queries.prompt is None:
        raise UserInputError("queries: name the `prompt` column(s) (and `completion`, or the model generates one)")
    records = recipe.queries.records(*recipe.queries.load(recipe.seed, "queries"))
    return [(record["prompt"], record.get("completion")) for record in records]


def trace_markdown(name: str, recipe: Recipe, reports: Sequence[Any], meta: dict[str, Any],
                   train: Sequence[dict[str, Any]]) -> str:
    """The report: per query, its completion and top records with score, id, top tokens and text."""
    method = recipe.method
    by_id = {record["id"]: record for record in train}
    lines = [
        f"# Trace: {name}", "",
        f"The training records behind each completion, scored by **{meta['method']}** ({meta['units']}). "
        f"**Sign: {SIGN}.**", "",
        f"- model: `{recipe.model}` (fingerprint {meta['model_fingerprint']})",
        f"- training records: {len(train)} (fingerprint {meta['data_fingerprint']})",
        f"- method: {method.name}" + (f", {method.prefilter} prefilter keeping {prefilter_config(method).candidates} "
                                      "candidates per query (other records not scored)" if method.prefilter else ""),
        f"- seed: {recipe.seed}; llm_attrib {meta['library_version']}", "",
    ]
    for number, report in enumerate(reports, start=1):
        origin = "generated by the model" if report.generated else "given"
        lines += [f"## Query {number}", "", "Prompt:", "", quoted(report.prompt), "",
                  f"Completion ({origin}):", "", quoted(report.completion), ""]
        for rank, record in enumerate(report.top, start=1):
            tokens = ", ".join(f"`{token.strip() or repr(token)}` {value:+.3g}" for token, value in record.top_tokens)
            lines += [f"{rank}. **{record.score:+.4g}** — id `{record.train_id}`; top tokens: {tokens}", "",
                      record_quote(by_id[record.train_id]), ""]
    return "\n".join(lines).rstrip() + "\n"


def record_quote(record: dict[str, Any]) -> str:
    """A training record as a block quote: its text, or its prompt then (after →) its completion."""
    if "completion" not in record:
        return quoted(record["text"])
    return quoted(record["prompt"]) + "\n>\n> **→** " + quoted(record["completion"]).removeprefix("> ")


# ------------------------------------------------------------------------------------------------------ value
def run_value(recipe: Recipe, name: str) -> list[Path]:
    """Value every training row; write values.json and report.md."""
    from llm_attrib.valuation.cli import numeric_features, text_embedder, value_arrays
    from llm_attrib.valuation.estimators import ESTIMATORS
    from llm_attrib.valuation.registry import VALUATION_METHODS

    require(recipe, "value", needs=("train.label",),
            refuses=("queries", "generate", "encoding", "method.prefilter", "method.candidates", "method.factors",
                     "train.prompt", "train.completion"))
    method = recipe.method
    choose(method.name, list(VALUATION_METHODS), "method.name")
    estimator = choose(method.estimator or "logistic", list(ESTIMATORS), "method.estimator")
    spec = recipe.train
    if spec.text is None and recipe.model is not None:
        raise UserInputError("`model` embeds `train.text` in a value recipe; name the text column or remove `model`")
    if spec.text is not None and recipe.model is None:
        raise UserInputError("train.text needs `model`, a local model folder (or 'demo') that embeds it")

    table, ids = spec.load(recipe.seed, "train")
    if spec.text is not None:
        model = model_folder(recipe.model)
        to_arrays = text_embedder(model, spec.text, spec.label)
    else:
        model = None
        features = spec.features or [c for c in table.column_names if c not in (spec.label, spec.id or "id")]
        to_arrays = numeric_features(features, spec.label)
    X_train, y_train = to_arrays(table, "train")
    X_val = y_val = None
    if recipe.validation is not None:
        X_val, y_val = to_arrays(recipe.validation.with_columns_of(spec).load(recipe.seed, "validation")[0],
                                 "validation")
    result = value_arrays(method.name, X_train, y_train, X_val, y_val, estimator=estimator, seed=recipe.seed,
                          params=method.options, progress=show_progress())
    result = dataclasses.replace(result, ids=np.asarray(ids, dtype=object))
    out = Path(recipe.output.dir)
    meta = {**metadata(recipe, "values", None, [X_train.tolist(), y_train.tolist()]), "model": model,
            "sign": "higher = more valuable; low values flag mislabelled or harmful rows"}
    points = [{**point, "label": label} for point, label in zip(result.to_records(), y_train.tolist())]
    write_json(out / "values.json", {"metadata": meta, "method": result.method,
                                     "n_utility_evaluations": result.n_utility_evaluations, "points": points})
    texts = table[spec.text] if spec.text is not None else None
    write_text(out / "report.md", value_markdown(name, recipe, result, y_train, texts, estimator))
    return [out / "values.json", out / "report.md"]


def value_markdown(name: str, recipe: Recipe, result: Any, labels: np.ndarray, texts: Sequence[str] | None,
                   estimator: str) -> str:
    """The report: the ``top_k`` lowest-valued rows (the first to inspect for wrong labels) and the highest."""
    k = min(recipe.output.top_k, len(result))
    lines = [
        f"# Value: {name}", "",
        f"One value per training row by **{result.method}** (base model: {estimator}). "
        "**Higher = more valuable**: low values flag rows that hurt the model, often mislabelled ones.", "",
        f"- training rows: {len(result)}; label column `{recipe.train.label}`; utility evaluations: "
        f"{result.n_utility_evaluations}",
        f"- seed: {recipe.seed}; llm_attrib {__version__}",
    ]
    for title, ascending in ((f"Lowest {k} values (inspect first)", True), (f"Highest {k} values", False)):
        header = "| rank | id | value | ± s.e. | label |" + (" text |" if texts is not None else "")
        lines += ["", f"## {title}", "", header, "|" + "---|" * (header.count("|") - 1)]
        for rank, index in enumerate(result.ranking(ascending=ascending)[:k], start=1):
            row = (f"| {rank} | {result.ids[index]} | {result.values[index]:+.4g} | {result.stderr[index]:.2g} | "
                   f"{labels[index]} |")
            if texts is not None:
                row += " " + " ".join(str(texts[index]).split()).replace("|", "\\|")[:200] + " |"
            lines.append(row)
    return "\n".join(lines) + "\n"


Task = Callable[[Recipe, str], list[Path]]
TASKS: dict[str, Task] = {"trace": run_trace, "value": run_value}
"""Recipe tasks by name: ``task(recipe, recipe_file_name) -> files written``."""
