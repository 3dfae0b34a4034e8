"""Influence scores: invariances, decompositions, caching and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.data import Encoded, IGNORE_INDEX, encode_pair, load_records
from llm_attrib.errors import CacheMismatchError, UserInputError


def fitted(adapter, train, kind="ekfac", **kwargs):
    damping = {} if kind == "identity" else {"damping": "heuristic"}
    return InfluenceAttributor(adapter, kind, fisher="empirical", batch_size=4, **damping, **kwargs).fit(train)


def test_scores_do_not_depend_on_batch_size_padding_side_or_extra_padding(gpt2, tokenizer, train_records,
                                                                           query_records):
    reference = fitted(CausalLMAdapter(gpt2, tokenizer), train_records)
    expected = reference.score(query_records, train_records).values
    variants = [
        dict(padding_side="left"),
        dict(padding_side="right", pad_to_multiple_of=32),
        dict(padding_side="left", pad_to_multiple_of=32),
    ]
    for options in variants:
        for batch_size in (1, 8):
            attributor = fitted(CausalLMAdapter(gpt2, tokenizer, **options), train_records)
            attributor.config = attributor.config.replace(batch_size=batch_size)
            got = attributor.score(query_records, train_records).values
            torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12, msg=f"{options} batch {batch_size}")


def test_factors_do_not_depend_on_fit_batch_size(gpt2, tokenizer, train_records):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    one = InfluenceAttributor(adapter, "ekfac", fisher="empirical", batch_size=1).fit(train_records)
    eight = InfluenceAttributor(adapter, "ekfac", fisher="empirical", batch_size=8).fit(train_records)
    for key, value in one.curvature.state.items():
        if key.endswith("eigenvalues"):
            torch.testing.assert_close(value, eight.curvature.state[key], rtol=1e-7, atol=1e-12)


def test_measurement_scores_completion_tokens_only(gpt2, tokenizer):
    """log Pr(completion | prompt) = log Pr(prompt + completion) − log Pr(prompt), by the chain rule."""
    adapter = CausalLMAdapter(gpt2, tokenizer)
    pair = encode_pair(tokenizer, "the cat sat on", " the mat and", max_length=64)
    n_prompt = pair.labels.count(IGNORE_INDEX)
    whole = Encoded(pair.input_ids, (IGNORE_INDEX,) + pair.input_ids[1:])
    prompt = Encoded(pair.input_ids[:n_prompt], (IGNORE_INDEX,) + pair.input_ids[1:n_prompt])
    with torch.no_grad():
        measured = adapter.measure(adapter.collate([pair]))
        chain = adapter.log_prob(adapter.collate([whole])) - adapter.log_prob(adapter.collate([prompt]))
    torch.testing.assert_close(measured, chain)
    # changing the prompt's own likelihood (not its content) is impossible, but changing a prompt token does
    # not enter the sum as a scored term: the label mask covers exactly the completion
    assert pair.labels[:n_prompt] == (IGNORE_INDEX,) * n_prompt
    assert pair.labels[n_prompt:] == pair.input_ids[n_prompt:]


def test_per_module_and_per_token_parts_sum_to_the_score(gpt2, tokenizer, train_records, query_records):
    attributor = fitted(CausalLMAdapter(gpt2, tokenizer, padding_side="left"), train_records)
    scores = attributor.score(query_records, train_records, per_module=True, per_token=True)
    torch.testing.assert_close(sum(scores.per_module.values()), scores.values)
    for q, row in enumerate(scores.per_token):
        for n, tokens in enumerate(row):
            assert len(tokens) == len(tokenizer(train_records[n]["text"])["input_ids"])
            torch.testing.assert_close(tokens.sum(), scores.values[q, n])


def test_self_influence_is_the_diagonal_of_train_on_train_scores(gpt2, tokenizer, train_records):
    attributor = fitted(CausalLMAdapter(gpt2, tokenizer), train_records)
    diagonal = attributor.score(train_records, train_records).values.diagonal()
    torch.testing.assert_close(attributor.self_influence(train_records), diagonal)
    assert (diagonal > 0).all()


def test_cosine_normalisation_gives_unit_self_similarity(gpt2, tokenizer, train_records):
    attributor = fitted(CausalLMAdapter(gpt2, tokenizer), train_records, kind="identity", normalize="cosine")
    values = attributor.score(train_records, train_records).values
    torch.testing.assert_close(values.diagonal(), torch.ones(len(train_records), dtype=values.dtype))
    assert values.abs().max() <= 1 + 1e-9


def test_cached_factors_are_reused_and_a_mismatch_is_refused(gpt2, tokenizer, train_records, query_records,
                                                            tmp_path, monkeypatch):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    first = fitted(adapter, train_records, cache_dir=tmp_path)
    expected = first.score(query_records, train_records).values
    second = InfluenceAttributor(adapter, "ekfac", fisher="empirical", damping="heuristic", batch_size=4,
                                 cache_dir=tmp_path)
    monkeypatch.setattr(second.curvature, "fit", lambda *a, **k: pytest.fail("cached factors were refitted"))
    torch.testing.assert_close(second.fit(train_records).score(query_records, train_records).values, expected)
    with pytest.raises(CacheMismatchError, match="data"):
        fitted(adapter, train_records[:-1] + [{"text": "something else entirely"}], cache_dir=tmp_path)
    with torch.no_grad():
        gpt2.transformer.h[0].mlp.c_fc.weight.add_(0.01)
    with pytest.raises(CacheMismatchError, match="model"):
        fitted(CausalLMAdapter(gpt2, tokenizer), train_records, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "the cat", "completion": ""}, "completion is empty"),
        ({"prompt": "the cat " * 80, "completion": " sat"}, "longer|context"),
        ({"question": "the cat", "answer": " sat"}, "no column 'text'"),
    ],
)
def test_bad_records_get_one_line_errors(gpt2, tokenizer, record, message):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    with pytest.raises(UserInputError, match=message) as error:
        adapter.encode([record])
    assert "\n" not in str(error.value)


def test_missing_column_in_a_data_file_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "answer": "b"}\n')
    with pytest.raises(UserInputError, match=r"missing column\(s\) \['completion'\]"):
        load_records(path, required=["prompt", "completion"])


def test_relative_normalisation_divides_by_the_root_of_self_influence(gpt2, tokenizer, train_records, query_records):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    raw = fitted(adapter, train_records)
    relative = fitted(adapter, train_records, normalize="relative")
    expected = raw.score(query_records, train_records).values / raw.self_influence(train_records).sqrt()[None, :]
    torch.testing.assert_close(relative.score(query_records, train_records).values, expected)


def test_token_parts_are_reported_against_the_token_they_predict(gpt2, tokenizer, train_records, query_records):
    """A causal LM's last position predicts nothing in the record, so its part is exactly 0 and relabelling each
    part by the token its position predicts (the next one) keeps the sum; trace's top tokens name those tokens."""
    from llm_attrib.apps.trace import top_records
    from llm_attrib.scores import by_predicted_token

    adapter = CausalLMAdapter(gpt2, tokenizer)
    attributor = fitted(adapter, train_records)
    scores = attributor.score(query_records, train_records, per_token=True)
    for q in range(len(query_records)):
        for n, parts in enumerate(scores.per_token[q]):
            assert parts[-1] == 0
            relabelled = by_predicted_token(parts)
            assert relabelled[0] == 0 and torch.equal(relabelled[1:], parts[:-1])
            torch.testing.assert_close(relabelled.sum(), scores.values[q, n], rtol=1e-9, atol=1e-12)
    top = top_records(adapter, train_records, scores, 0, top_k=2, tokens_per_record=3)
    for record in top:
        index = scores.train_ids.index(record.train_id)
        ids = adapter.encode([train_records[index]])[0].input_ids
        parts = scores.per_token[0][index]
        best = torch.argsort(parts[:-1], descending=True)[:3].tolist()  # positions; each predicts the token after it
        assert [token for token, _ in record.top_tokens] == [tokenizer.decode([ids[t + 1]]) for t in best]
        assert [value for _, value in record.top_tokens] == [float(parts[t]) for t in best]
