"""The evaluation suite's benchmarks: a trained tiny model, its training records, queries, and how to retrain it.

* `roleplay_benchmark`: a tiny GPT-2 trained on GPTeacher role-play instructions (prompt = instruction + input,
  completion = output), loaded with ``datasets.load_dataset("json", ...)`` as a user would, subsampled with a
  seed and truncated; queries are held-out records of the same file.
* `facts_benchmark`: the synthetic-fact demo corpus (`llm_attrib.demo.default`) at a small recipe; queries ask
  facts whose supporting documents are known (recall@k, MRR, tail-patch, per query group).
* `facts_hard_benchmark`: a fact corpus with aliases, unseen query phrasings and namesake decoys
  (`llm_attrib.demo.facts.generate_facts`), its tiny GPT-2 trained here; per query group (verbatim, paraphrased,
  alias) MRR, recall@10 and recall@10 of the alias documents.
* `provenance_benchmark`: tiny-Shakespeare works, some planted among unrelated role-play text; queries quote or
  perturb planted and never-trained works (precision/recall of flagged works).
* `loo_benchmark`: a smaller role-play model whose leave-one-out effects are affordable to measure (the suite
  adds the LOO ground truth, `llm_attrib.evaluation.loo`).
* `mislabel_benchmark`: the role-play model trained with a seeded fraction of completions swapped
  (`llm_attrib.evaluation.mislabel.swap_completions`); no queries — each method's self-influence ranks the
  training records (AUROC, precision@k against the swapped ones).

Each benchmark carries its own ``evaluators`` (scores → metrics) and ``attributor_evaluators`` (fitted
attributor → metrics); the suite adds LDS / LOO where it has ground truth. Its ``runs``
(`llm_attrib.retraining.runs.TrainingRuns`) give the checkpoints of its model's training and models trained from
other seeds, on demand, for TracIn and ensembles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from llm_attrib.demo.default import DemoRecipe, load_default
from llm_attrib.demo.facts import generate_facts
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import greedy_correct
from llm_attrib.evaluation.fact_tracing import group_report, retrieval_report, tail_patch_report
from llm_attrib.evaluation.mislabel import detection_report, self_influence_scores, swap_completions
from llm_attrib.evaluation.provenance import (evaluate_provenance, evaluate_provenance_permutation,
                                              passage_queries, split_works)
from llm_attrib.retraining.retrain import DemoRetrainer
from llm_attrib.retraining.runs import TrainingRuns
from llm_attrib.scores import Scores

Evaluator = Callable[[Scores], dict[str, float]]
AttributorEvaluator = Callable[[Any], dict[str, float]]


@dataclass
class Benchmark:
    """A trained model with its data. ``retrainer`` rebuilds it from scratch on any subset (seeded); ``seed`` is the
    one that trained ``model``, and ``runs`` retrains it on demand (checkpoints, other seeds)."""

    name: str
    model: torch.nn.Module
    tokenizer: Any
    train_records: list[dict[str, Any]]
    query_records: list[dict[str, Any]]
    retrainer: DemoRetrainer
    evaluators: list[Evaluator] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    attributor_evaluators: list[AttributorEvaluator] = field(default_factory=list)
    seed: int = 0
    runs: TrainingRuns = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runs = TrainingRuns(self.retrainer, self.train_records, self.seed, self.model)


def _truncate(tokenizer: Any, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else text


def roleplay_records(path: str | Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded random records of a GPTeacher-style JSON file as ``{"id", "prompt", "completion"}``."""
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(path), split="train").shuffle(seed=seed)
    dataset = dataset.select(range(min(n, len(dataset))))
    return [
        {
            "id": f"roleplay-{i}",
            "prompt": row["instruction"] + (f"\n{row['input']}" if row["input"] else "") + "\nAnswer:",
            "completion": " " + row["output"].strip(),
        }
        for i, row in enumerate(dataset)
    ]


def _tiny_gpt2_builder(tokenizer: Any, n_positions: int, n_embd: int) -> Callable[[int], torch.nn.Module]:
    def build_model(model_seed: int) -> torch.nn.Module:
        return tiny_gpt2(len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=2, n_head=4, seed=model_seed,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)

    return build_model


def roleplay_benchmark(
    path: str | Path,
    *,
    n_train: int = 160,
    n_query: int = 16,
    max_prompt_tokens: int = 24,
    max_completion_tokens: int = 24,
    vocab_size: int = 512,
    n_embd: int = 64,
    epochs: int = 4,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    name: str = "roleplay",
    corrupt_fraction: float = 0.0,
) -> Benchmark:
    """Train the role-play tiny GPT-2 (seeded) on ``n_train`` records; ``n_query`` held-out records are the queries.

    With ``corrupt_fraction > 0`` that fraction of the training records get another record's completion
    (`swap_completions`, seeded) before training, and the benchmark evaluates mislabel detection instead.
    """
    raw = roleplay_records(path, n_train + n_query, seed)
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in raw[:n_train]], vocab_size,
                                model_max_length=max_prompt_tokens + max_completion_tokens + 2)
    records = [
        {**r, "prompt": _truncate(tokenizer, r["prompt"], max_prompt_tokens),
         "completion": _truncate(tokenizer, r["completion"], max_completion_tokens)}
        for r in raw
    ]
    build_model = _tiny_gpt2_builder(tokenizer, tokenizer.model_max_length, n_embd)
    retrainer = DemoRetrainer(build_model, tokenizer, epochs=epochs, lr=lr, batch_size=batch_size)
    train, queries = records[:n_train], records[n_train:]
    settings = {"data": str(path), "n_train": n_train, "n_query": n_query, "seed": seed,
                "max_prompt_tokens": max_prompt_tokens, "max_completion_tokens": max_completion_tokens,
                **retrainer.settings()}
    attributor_evaluators: list[AttributorEvaluator] = []
    if corrupt_fraction > 0:
        train, corrupted = swap_completions(train, corrupt_fraction, seed=seed)
        k = int(corrupted.sum())
        settings.update(corrupt_fraction=corrupt_fraction, n_corrupted=k)

        def detect(attributor: Any) -> dict[str, float]:
            report = detection_report(self_influence_scores(attributor, train), corrupted, ks=(k,))
            return {**report, "precision@k": report[f"precision@{k}"], "k": k}

        attributor_evaluators.append(detect)
    return Benchmark(name, retrainer(train, seed), tokenizer, train, queries, retrainer,
                     settings=settings, attributor_evaluators=attributor_evaluators, seed=seed)


def loo_benchmark(path: str | Path, *, n_train: int = 48, n_query: int = 16, seed: int = 0) -> Benchmark:
    """A smaller role-play model (``n_train`` records), so that retraining once per left-out example is cheap."""
    return roleplay_benchmark(path, n_train=n_train, n_query=n_query, seed=seed, name="loo")


def mislabel_benchmark(path: str | Path, *, n_train: int = 160, fraction: float = 0.15, seed: int = 0) -> Benchmark:
    """The role-play model trained with ``fraction`` of its completions swapped; no queries (self-influence only)."""
    return roleplay_benchmark(path, n_train=n_train, n_query=0, seed=seed, name="mislabel", corrupt_fraction=fraction)


FACTS_RECIPE = DemoRecipe(n_entities=8, docs_per_fact=3, n_distractors=24, epochs=40)


def facts_benchmark(cache_dir: str | Path, recipe: DemoRecipe = FACTS_RECIPE) -> Benchmark:
    """The demo fact model at ``recipe`` (built once into ``cache_dir``); queries are the corpus's fact queries."""
    bundle = load_default(cache_dir, recipe=recipe)
    tokenizer = bundle.tokenizer
    build_model = _tiny_gpt2_builder(tokenizer, recipe.n_positions, recipe.n_embd)
    retrainer = DemoRetrainer(build_model, tokenizer, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size)
    queries = [{k: q[k] for k in ("id", "prompt", "completion")} for q in bundle.corpus.queries]
    evaluators: list[Evaluator] = [
        lambda scores: retrieval_report(scores, bundle.corpus),
        lambda scores: tail_patch_report(bundle.model, tokenizer, scores, queries, bundle.train_records),
        lambda scores: group_report(scores, bundle.corpus),
    ]
    return Benchmark("facts", bundle.model, tokenizer, bundle.train_records, queries, retrainer, evaluators,
                     settings={"recipe": vars(recipe) if hasattr(recipe, "__dict__") else str(recipe),
                               "greedy_accuracy": bundle.info.get("greedy_accuracy"), **retrainer.settings()},
                     seed=recipe.train_seed)


FACTS_HARD_CORPUS = dict(n_entities=12, docs_per_fact=3, n_distractors=30, alias_fraction=1 / 3,
                         held_out_fraction=1 / 3, decoys_per_fact=1)
"""`generate_facts` arguments of `facts_hard_benchmark`: 60 queries, 20 per group."""


def facts_hard_benchmark(*, seed: int = 0, corpus: dict[str, Any] | None = None, n_embd: int = 128,
                         epochs: int = 60, lr: float = 3e-3, batch_size: int = 16) -> Benchmark:
    """A tiny GPT-2 (trained here, seeded) on a hard fact corpus (``corpus``: `generate_facts` arguments, default
    `FACTS_HARD_CORPUS`, seeded by ``seed``); queries are its fact queries, evaluated per group."""
    facts = generate_facts(**{**FACTS_HARD_CORPUS, **(corpus or {})}, seed=seed)
    texts = [d["text"] for d in facts.documents] + [q["prompt"] + q["completion"] for q in facts.queries]
    tokenizer = train_tokenizer(texts, 1024, model_max_length=64)
    train = [{"id": d["id"], "text": d["text"]} for d in facts.documents]
    queries = [{k: q[k] for k in ("id", "prompt", "completion")} for q in facts.queries]
    retrainer = DemoRetrainer(_tiny_gpt2_builder(tokenizer, 64, n_embd), tokenizer, epochs=epochs, lr=lr,
                              batch_size=batch_size)
    model = retrainer(train, seed).eval()
    evaluators: list[Evaluator] = [lambda scores: retrieval_report(scores, facts),
                                   lambda scores: group_report(scores, facts)]
    accuracy = float(greedy_correct(model, tokenizer, facts.queries).float().mean())
    return Benchmark("facts-hard", model, tokenizer, train, queries, retrainer, evaluators,
                     settings={"corpus": facts.config, "greedy_accuracy": accuracy, **retrainer.settings()}, seed=seed)


def provenance_benchmark(
    shakespeare: str | Path,
    roleplay: str | Path,
    *,
    n_works: int = 12,
    n_planted: int = 6,
    n_calibration: int = 3,
    speeches_per_work: int = 16,
    n_filler: int = 48,
    queries_per_work: int = 2,
    max_tokens: int = 48,
    epochs: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
) -> Benchmark:
    """Plant ``n_planted`` of ``n_works`` Shakespeare works (each speech one document) among ``n_filler`` role-play
    outputs and train a tiny GPT-2. Queries quote (verbatim / 30% of words replaced) every work; those of
    ``n_calibration`` never-trained works set the threshold, the rest are flagged against it."""
    works = split_works(Path(shakespeare).read_text(), n_works, speeches_per_work)
    rng = random.Random(seed)
    order = list(range(n_works))
    rng.shuffle(order)
    planted, calibration = set(order[:n_planted]), set(order[n_planted : n_planted + n_calibration])
    filler = [r["completion"].strip() for r in roleplay_records(roleplay, n_filler, seed)]
    texts = [speech for w in sorted(planted) for speech in works[w]] + filler
    tokenizer = train_tokenizer(texts, 512, model_max_length=max_tokens)
    documents = [{"id": f"work{w}/speech{i}", "text": _truncate(tokenizer, speech, max_tokens - 2)}
                 for w in sorted(planted) for i, speech in enumerate(works[w])]
    documents += [{"id": f"filler{i}", "text": _truncate(tokenizer, text, max_tokens - 2)} for i, text in enumerate(filler)]
    groups = [d["id"].split("/")[0] if d["id"].startswith("work") else None for d in documents]
    queries = passage_queries(works, [f"work{w}" for w in range(n_works)], per_work=queries_per_work,
                              prompt_words=10, completion_words=10, perturb=0.3, seed=seed)
    queries = [{**q, "prompt": _truncate(tokenizer, q["prompt"], max_tokens // 2 - 2),
                "completion": _truncate(tokenizer, q["completion"], max_tokens // 2 - 2)} for q in queries]
    retrainer = DemoRetrainer(_tiny_gpt2_builder(tokenizer, max_tokens, 64), tokenizer, epochs=epochs, lr=lr, batch_size=16)
    is_calibration = [int(q["work"][4:]) in calibration for q in queries]
    query_works = [q["work"] for q in queries]
    evaluators: list[Evaluator] = [
        lambda scores: evaluate_provenance(scores.values, groups, query_works, is_calibration),
        lambda scores: {f"permutation/{key}": value for key, value in evaluate_provenance_permutation(
            scores.values, groups, query_works, is_calibration, seed=seed).items()},
    ]
    return Benchmark("provenance", retrainer(documents, seed), tokenizer, documents, queries, retrainer, evaluators,
                     settings={"planted": sorted(planted), "calibration": sorted(calibration), "n_works": n_works,
                               "seed": seed, **retrainer.settings()}, seed=seed)
