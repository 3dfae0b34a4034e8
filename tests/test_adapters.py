"""Adapters' measurements against hand computation: `ClassifierAdapter`'s margin (value and gradient, and the
influence scores built on it), `CausalLMAdapter`'s chat template (prompt boundary, label mask, measurement)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from llm_attrib.adapters import CausalLMAdapter, ClassifierAdapter
from llm_attrib.apps.trace import generate_completion
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.data import IGNORE_INDEX, encode_pair
from llm_attrib.errors import UserInputError


# ------------------------------------------------------------------------------------------ classifier margin
def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def records(n: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return [(x[i], (i * 3 + seed) % 4) for i in range(n)]


def margin_by_hand(logits: list[float], y: int) -> float:
    """logit_y − log Σ_{c≠y} exp(logit_c): the log-odds of the true class against all others."""
    return logits[y] - math.log(sum(math.exp(v) for c, v in enumerate(logits) if c != y))


def flat_gradient(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, list(model.parameters()))])


def test_margin_measurement_matches_a_hand_computation():
    model = classifier()
    adapter = ClassifierAdapter(model, measurement="margin")
    queries = records(5, seed=1)
    with torch.no_grad():
        got = adapter.measure(adapter.collate(adapter.encode(queries)))
        logits = model(torch.stack([x for x, _ in queries]))
    expected = [margin_by_hand(logits[i].tolist(), y) for i, (_, y) in enumerate(queries)]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    # it is not the log-probability: log p = logit_y − logsumexp(all) < margin
    log_prob = ClassifierAdapter(model).measure(adapter.collate(adapter.encode(queries)))
    assert (log_prob < got).all()
    # two classes: the margin is the plain logit difference
    two = nn.Linear(3, 2).double()
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        difference = float(two(x)[0, 1] - two(x)[0, 0])
        assert float(ClassifierAdapter(two, measurement="margin").measure((x, torch.tensor([1])))) == pytest.approx(
            difference, rel=1e-12)
    with pytest.raises(UserInputError, match="measurement must be one of"):
        ClassifierAdapter(model, measurement="accuracy")


def test_grad_dot_of_the_margin_is_the_autograd_inner_product():
    """Identity-curvature influence with the margin measurement = ∇margin(q)ᵀ ∇log p(z), both by autograd of the
    hand-written formulas over every parameter (every Linear layer is tracked by default)."""
    model = classifier()
    adapter = ClassifierAdapter(model, measurement="margin")
    train, queries = records(7, seed=2), records(3, seed=3)
    scores = InfluenceAttributor(adapter, "identity", batch_size=4).fit(train).score(queries, train)

    def margin(x, y):
        logits = model(x.unsqueeze(0))[0]
        return logits[y] - torch.logsumexp(torch.cat([logits[:y], logits[y + 1:]]), dim=0)

    def log_prob(x, y):
        return torch.log_softmax(model(x.unsqueeze(0))[0], dim=0)[y]

    query_grads = torch.stack([flat_gradient(model, margin(x, y)) for x, y in queries])
    train_grads = torch.stack([flat_gradient(model, log_prob(x, y)) for x, y in train])
    torch.testing.assert_close(scores.values.double(), query_grads @ train_grads.T, rtol=1e-10, atol=1e-12)
    log_prob_scores = InfluenceAttributor(ClassifierAdapter(model), "identity").fit(train).score(queries, train)
    assert not torch.allclose(log_prob_scores.values, scores.values)


# --------------------------------------------------------------------------------------------- chat template
TEMPLATE = ("{% for message in messages %}<|user|> {{ message['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture()
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = TEMPLATE
    return chat


def test_chat_template_wraps_the_prompt_and_only_completion_tokens_are_scored(chat_tokenizer):
    prompt, completion = "the cat sat on", " the mat"
    wrapped = chat_tokenizer(f"<|user|> {prompt} <|assistant|>", add_special_tokens=False)["input_ids"]
    answer = chat_tokenizer(completion, add_special_tokens=False)["input_ids"]
    encoded = encode_pair(chat_tokenizer, prompt, completion, max_length=64, chat_template=True)
    assert list(encoded.input_ids) == wrapped + answer
    assert list(encoded.labels) == [IGNORE_INDEX] * len(wrapped) + answer
    plain = encode_pair(chat_tokenizer, prompt, completion, max_length=64)
    assert len(wrapped) > len(plain.input_ids) - len(answer)  # the template added tokens before the boundary
    with pytest.raises(UserInputError, match="no chat template"):
        encode_pair(tokenizer_without_template(chat_tokenizer), prompt, completion, max_length=64,
                    chat_template=True)


def tokenizer_without_template(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    return bare


def test_chat_template_measurement_is_log_pr_of_the_completion_given_the_wrapped_prompt(gpt2, chat_tokenizer):
    adapter = CausalLMAdapter(gpt2, chat_tokenizer, chat_template=True)
    query = {"prompt": "a dog ran", "completion": " across the park"}
    wrapped = chat_tokenizer("<|user|> a dog ran <|assistant|>", add_special_tokens=False)["input_ids"]
    answer = chat_tokenizer(query["completion"], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([wrapped + answer])
    with torch.no_grad():
        log_probs = torch.log_softmax(gpt2(input_ids=ids).logits[0].double(), dim=-1)
        expected = sum(float(log_probs[len(wrapped) + i - 1, token]) for i, token in enumerate(answer))
        got = float(adapter.measure(adapter.collate(adapter.encode([query]))))
    assert got == pytest.approx(expected, rel=1e-9)
    plain = CausalLMAdapter(gpt2, chat_tokenizer)
    with torch.no_grad():
        assert float(plain.measure(plain.collate(plain.encode([query])))) != pytest.approx(expected, rel=1e-6)


def test_generation_continues_the_wrapped_prompt(gpt2, chat_tokenizer):
    adapter = CausalLMAdapter(gpt2, chat_tokenizer, chat_template=True)
    wrapped = chat_tokenizer("<|user|> the cat <|assistant|>", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        output = gpt2.generate(input_ids=torch.tensor([wrapped]), attention_mask=torch.ones(1, len(wrapped)),
                               max_new_tokens=4, do_sample=False, pad_token_id=adapter.pad_token_id)
    expected = chat_tokenizer.decode(output[0, len(wrapped):], skip_special_tokens=True)
    if not expected.strip():  # an untrained model may emit only special tokens or spaces: refused, not returned
        with pytest.raises(UserInputError, match="empty completion"):
            generate_completion(adapter, "the cat", max_new_tokens=4, stop=())
    else:
        assert generate_completion(adapter, "the cat", max_new_tokens=4, stop=()) == expected
