"""Scale options of InfluenceAttributor: low-rank queries, layer partitions, streamed data, resumable chunks."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.errors import CacheMismatchError, UserInputError

torch.set_num_threads(1)


def fitted(adapter, train, **kwargs):
    options = {"fisher": "empirical", "damping": "heuristic", "batch_size": 3, **kwargs}
    return InfluenceAttributor(adapter, "ekfac", **options).fit(train)


class Stream:
    """An iterable of unknown length that can be read more than once (like ``datasets.IterableDataset``)."""

    def __init__(self, records):
        self.records = records

    def __iter__(self):
        return iter(self.records)


@pytest.fixture()
def adapter(gpt2, tokenizer):
    return CausalLMAdapter(gpt2, tokenizer)


def test_low_rank_queries_are_exact_at_full_rank_and_close_below(adapter, train_records, query_records):
    full = fitted(adapter, train_records).score(query_records, train_records).values
    exact = fitted(adapter, train_records, query_rank=64).score(query_records, train_records).values
    torch.testing.assert_close(exact, full, rtol=1e-7, atol=1e-12)
    low = fitted(adapter, train_records, query_rank=4).score(query_records, train_records).values
    assert min(spearmanr(low[q], full[q]).statistic for q in range(len(query_records))) > 0.5


def test_rescoring_makes_the_top_candidates_exact(adapter, train_records, query_records):
    full = fitted(adapter, train_records).score(query_records, train_records).values
    low = fitted(adapter, train_records, query_rank=1).score(query_records, train_records).values
    rescored = fitted(adapter, train_records, query_rank=1, rescore_top=3).score(query_records, train_records).values
    union = sorted(set(torch.topk(low, 3, dim=1).indices.flatten().tolist()))
    torch.testing.assert_close(rescored[:, union], full[:, union], rtol=1e-7, atol=1e-12)
    others = [n for n in range(len(train_records)) if n not in union]
    torch.testing.assert_close(rescored[:, others], low[:, others])


@pytest.mark.parametrize("normalize", [None, "cosine"])
def test_layer_partitions_and_streamed_data_give_the_same_scores(adapter, train_records, query_records, normalize):
    reference = fitted(adapter, train_records, normalize=normalize).score(
        query_records, train_records, per_module=True, per_token=True)
    parted = fitted(adapter, train_records, normalize=normalize, layer_partitions=3)
    streamed = parted.score(query_records, Stream(train_records), per_module=True, per_token=True)
    torch.testing.assert_close(streamed.values, reference.values, rtol=1e-7, atol=1e-12)
    assert streamed.train_ids == reference.train_ids
    for name, block in reference.per_module.items():
        torch.testing.assert_close(streamed.per_module[name], block, rtol=1e-7, atol=1e-12)
    for row, expected in zip(streamed.per_token, reference.per_token):
        for got, want in zip(row, expected):
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-12)


def test_factors_fitted_by_layer_groups_are_the_same_and_never_all_in_memory(adapter, train_records, query_records,
                                                                            tmp_path):
    options = dict(fisher="sampled", seed=3)  # one seed draws the same targets for every group
    reference = fitted(adapter, train_records, **options)
    parted = fitted(adapter, train_records, layer_partitions=3, cache_dir=tmp_path, **options)
    assert parted.curvature.state == {}  # each group's factors were written to its file and released
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ekfac-factors-part0{i}of03.safetensors" for i in (1, 2, 3)]
    held = []
    original = parted.curvature.precondition
    parted.curvature.precondition = lambda grads: (held.append(set(parted.curvature.state)), original(grads))[1]
    expected = reference.score(query_records, train_records)
    torch.testing.assert_close(parted.score(query_records, train_records).values, expected.values,
                               rtol=1e-7, atol=1e-12)
    n_tensors = len(reference.curvature.state)
    assert held and all(0 < len(keys) < n_tensors for keys in held)
    assert parted.curvature.state == {}
    torch.testing.assert_close(parted.self_influence(train_records), reference.self_influence(train_records),
                               rtol=1e-7, atol=1e-12)
    reloaded = fitted(adapter, train_records, layer_partitions=3, cache_dir=tmp_path, **options)
    torch.testing.assert_close(reloaded.score(query_records, train_records).values, expected.values,
                               rtol=1e-7, atol=1e-12)


def test_a_datasets_iterable_dataset_is_streamed(adapter, train_records, query_records):
    from datasets import Dataset

    attributor = fitted(adapter, train_records)
    expected = attributor.score(query_records, train_records).values
    iterable = Dataset.from_list(train_records).to_iterable_dataset()
    torch.testing.assert_close(attributor.score(query_records, iterable).values, expected, rtol=1e-7, atol=1e-12)


def test_lower_precision_contractions_stay_close(adapter, train_records, query_records):
    full = fitted(adapter, train_records).score(query_records, train_records).values
    low = fitted(adapter, train_records, dtype=torch.float32).score(query_records, train_records).values
    assert low.dtype == torch.float64
    torch.testing.assert_close(low, full, rtol=1e-3, atol=1e-6 * float(full.abs().max()))


@pytest.mark.parametrize("model_dtype, contraction", [(torch.bfloat16, None), (torch.bfloat16, torch.bfloat16),
                                                       (torch.float16, None)])
def test_half_precision_models_give_the_float32_scores(tokenizer, gpt2, train_records, query_records, model_dtype,
                                                       contraction):
    """A bf16/fp16 model (as on a GPU) fits float32/float64 statistics and scores within its own rounding error."""
    reference = fitted(CausalLMAdapter(gpt2.float(), tokenizer), train_records).score(query_records, train_records)
    half = fitted(CausalLMAdapter(gpt2.to(model_dtype), tokenizer), train_records, dtype=contraction)
    scores = half.score(query_records, train_records).values
    assert scores.dtype == torch.float64 and torch.isfinite(scores).all()
    assert float((scores - reference.values).norm() / reference.values.norm()) < 0.02
    assert min(spearmanr(s, r).statistic for s, r in zip(scores, reference.values)) > 0.95


def test_an_interrupted_run_resumes_without_recomputing_finished_chunks(adapter, train_records, query_records,
                                                                        tmp_path, monkeypatch):
    expected = fitted(adapter, train_records, layer_partitions=2).score(query_records, train_records).values
    attributor = fitted(adapter, train_records, layer_partitions=2)
    original, calls = attributor._score_chunk, []

    def failing(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt("killed part-way")
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(attributor, "_score_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        attributor.score(query_records, train_records, output_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    assert not list(tmp_path.glob(".*.tmp"))
    calls.clear()
    monkeypatch.setattr(attributor, "_score_chunk", lambda *a, **k: (calls.append(a[0]), original(*a, **k))[1])
    got = attributor.score(query_records, train_records, output_dir=tmp_path).values
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12)
    n_chunks = 2 * -(-len(train_records) // attributor.config.batch_size)
    assert len(calls) == n_chunks - 4
    with pytest.raises(CacheMismatchError, match="queries"):
        attributor.score(query_records[:1], train_records, output_dir=tmp_path)


def test_a_one_shot_iterator_is_refused_with_several_partitions(adapter, train_records, query_records):
    attributor = fitted(adapter, train_records, layer_partitions=2)
    with pytest.raises(UserInputError, match="read once per layer partition"):
        attributor.score(query_records, (r for r in train_records))


@pytest.mark.parametrize("options, message", [
    (dict(query_rank=0), "query_rank"),
    (dict(layer_partitions=99), "layer_partitions"),
    (dict(rescore_top=5), "give query_rank too"),
    (dict(curvature="explicit", layer_partitions=2), "couples all tracked layers"),
])
def test_bad_scale_options_get_one_line_errors(adapter, options, message):
    with pytest.raises(UserInputError, match=message):
        InfluenceAttributor(adapter, **options)
