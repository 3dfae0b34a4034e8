"""TracIn-CP: the weighted sum over checkpoints equals brute-force autograd gradients; options and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.checkpoints import Checkpoints
from llm_attrib.attributors.tracin import TracInAttributor
from llm_attrib.errors import UserInputError
from test_gradients import autograd_gradients

LEARNING_RATES = [0.1, 0.05, 0.02]


@pytest.fixture()
def checkpoints(gpt2, tmp_path):
    """Three float64 GPT-2s: the fixture and two seeded perturbations of it, the last one saved as a folder."""
    models = [gpt2]
    for seed in (1, 2):
        model = copy.deepcopy(gpt2)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        models.append(model)
    models[-1].save_pretrained(tmp_path / "checkpoint-2")
    return models[:-1] + [tmp_path / "checkpoint-2"]


def flat_gradient(adapter: CausalLMAdapter, record: dict, measure: bool) -> torch.Tensor:
    return torch.cat([g.flatten() for g in autograd_gradients(adapter, record, measure).values()])


def brute_force(models, tokenizer, queries, train, cosine=False) -> torch.Tensor:
    total = torch.zeros(len(queries), len(train), dtype=torch.float64)
    for lr, model in zip(LEARNING_RATES, models):
        if not isinstance(model, torch.nn.Module):
            model = AutoModelForCausalLM.from_pretrained(str(model))
        adapter = CausalLMAdapter(model, tokenizer)
        q = torch.stack([flat_gradient(adapter, r, True) for r in queries])
        z = torch.stack([flat_gradient(adapter, r, False) for r in train])
        if cosine:
            q, z = q / q.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
        total += lr * q @ z.T
    return total


@pytest.mark.parametrize("normalize", [None, "cosine"])
def test_tracin_equals_the_weighted_sum_of_autograd_gradient_products(checkpoints, tokenizer, train_records,
                                                                      query_records, normalize):
    torch.set_num_threads(1)
    attributor = TracInAttributor(Checkpoints(checkpoints, tokenizer), LEARNING_RATES, normalize=normalize,
                                  batch_size=4).fit(train_records)
    scores = attributor.score(query_records, train_records)
    expected = brute_force(checkpoints, tokenizer, query_records, train_records, cosine=normalize == "cosine")
    assert AutoModelForCausalLM.from_pretrained(str(checkpoints[-1])).dtype == torch.float64
    torch.testing.assert_close(scores.values, expected, rtol=1e-6, atol=1e-12)
    assert scores.method == ("tracin-cosine" if normalize else "tracin") and "raises" in scores.units


def test_parts_sum_to_the_score_and_self_influence_is_the_diagonal(checkpoints, tokenizer, train_records):
    torch.set_num_threads(1)
    attributor = TracInAttributor(Checkpoints(checkpoints, tokenizer, padding_side="left")[:2],
                                  LEARNING_RATES[:2]).fit(train_records)
    scores = attributor.score(train_records, train_records, per_module=True, per_token=True)
    torch.testing.assert_close(sum(scores.per_module.values()), scores.values)
    torch.testing.assert_close(torch.stack([torch.stack([t.sum() for t in row]) for row in scores.per_token]),
                               scores.values)
    torch.testing.assert_close(attributor.self_influence(train_records), scores.values.diagonal())


def test_bad_arguments_get_one_line_errors(gpt2, tokenizer, train_records, query_records):
    adapters = [CausalLMAdapter(gpt2, tokenizer)] * 2
    with pytest.raises(UserInputError, match="learning rates for 2 checkpoints"):
        TracInAttributor(adapters, [0.1])
    with pytest.raises(UserInputError, match="non-negative"):
        TracInAttributor(adapters, [0.1, float("nan")])
    with pytest.raises(UserInputError, match="does not exist"):
        Checkpoints(["/no/such/checkpoint"], tokenizer)
    attributor = TracInAttributor(adapters, [0.1, 0.1])
    with pytest.raises(UserInputError, match="fit"):
        attributor.score(query_records, train_records)
    with pytest.raises(UserInputError, match="once per checkpoint"):
        attributor.fit(train_records).score(query_records, iter(train_records))
