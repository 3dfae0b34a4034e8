"""Estimators beyond plain EK-FAC: the CG-refined solve against the exact dense Fisher solve, and averages over
checkpoints and Fisher samples against hand-weighted sums of plain influence scores."""

from __future__ import annotations

import copy

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.influence.ensemble import InfluenceEnsemble
from llm_attrib.attributors.influence.refine import layer_damping
from llm_attrib.config import ConfigError
from llm_attrib.curvature import make_curvature
from llm_attrib.demo.model import tiny_gpt2


@pytest.fixture()
def small(tokenizer):
    """A GPT-2 small enough for a dense Fisher of its MLP layers (148 parameters), in float64."""
    model = tiny_gpt2(vocab_size=len(tokenizer), n_positions=64, n_embd=4, n_layer=1, n_head=2, seed=0,
                      pad_token_id=tokenizer.pad_token_id).double()
    return CausalLMAdapter(model, tokenizer)


def dense_solve(adapter, train, queries, damping_of, seed=0, fisher="sampled"):
    """``N·(F̄ + Λ)⁻¹ ∇f(q)`` with the explicit Fisher of the same sample and targets, ``Λ`` per layer."""
    explicit = make_curvature("explicit", damping=0.0).fit(adapter, adapter.encode(train), n_train=len(train),
                                                           batch_size=3, seed=seed, fisher=fisher)
    grads = InfluenceAttributor(adapter, "identity").gradients(queries, measure=True)
    damping = torch.cat([torch.full((layer.n_params,), damping_of(layer.name), dtype=torch.float64)
                         for layer in adapter.layers])
    flat = torch.cat([grads[layer.name].flatten(1) for layer in adapter.layers], dim=1)
    solved = torch.linalg.solve(explicit.state["fisher"] + torch.diag(damping), flat.T).T / len(train)
    out, start = {}, 0
    for layer in adapter.layers:
        out[layer.name] = solved[:, start:start + layer.n_params].reshape(grads[layer.name].shape)
        start += layer.n_params
    return out


def refined(adapter, train, queries, steps, **options):
    attributor = InfluenceAttributor(adapter, "ekfac", refine_steps=steps, batch_size=3, **options).fit(train)
    grads = attributor.gradients(queries, measure=True)
    return attributor, attributor._precondition(grads, adapter.layers)


@pytest.mark.parametrize("damping", [1e-3, "heuristic"])
def test_enough_cg_steps_reach_the_exact_damped_fisher_solve(small, train_records, query_records, damping):
    attributor, got = refined(small, train_records, query_records, 80, damping=damping)  # 1e-14 by 80 steps
    expected = dense_solve(small, train_records, query_records, lambda name: layer_damping(attributor.curvature, name))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-7, atol=1e-9 * expected[name].abs().max())


def test_cg_error_falls_with_steps_and_zero_steps_is_ekfac(small, train_records, query_records):
    attributor, _ = refined(small, train_records, query_records, 1, damping=0.1)
    expected = dense_solve(small, train_records, query_records, lambda name: 0.1)
    grads = attributor.gradients(query_records, measure=True)
    errors = []
    for steps in (0, 1, 3, 10):
        _, got = refined(small, train_records, query_records, steps, damping=0.1)
        errors.append(sum(float((got[k] - expected[k]).square().sum()) for k in got))
        if steps == 0:
            plain = InfluenceAttributor(small, "ekfac", damping=0.1, batch_size=3).fit(train_records)
            for k, value in plain.curvature.precondition(grads).items():
                assert torch.equal(got[k], value)
    assert errors[3] < 1e-6 * errors[0] and errors[2] < errors[0]  # relative: 0.82 (0 and 1 step), 0.41 (2), 1.5e-4 (10)


def test_refined_scores_are_the_refined_solve_against_training_gradients(small, train_records, query_records):
    attributor, solved = refined(small, train_records, query_records, 4, damping=1e-3)
    train_grads = attributor.gradients(train_records, measure=False)
    expected = sum(torch.einsum("qoi,noi->qn", solved[k], train_grads[k]) for k in solved)
    scores = attributor.score(query_records, train_records)
    torch.testing.assert_close(scores.values, expected, rtol=1e-9, atol=1e-12)
    assert scores.method == "influence-ekfac-cg4"


@pytest.mark.parametrize("options, message", [
    (dict(curvature="identity"), "factored preconditioner"),
    (dict(curvature="ekfac", layer_partitions=2), "layer_partitions=1"),
    (dict(curvature="ekfac", normalize="relative"), "RelatIF"),
    (dict(curvature="ekfac", refine_steps=-1), "at least 0"),
])
def test_bad_refine_options_are_refused(small, options, message):
    options = {"refine_steps": 2, **options}
    with pytest.raises(ConfigError, match=message):
        InfluenceAttributor(small, **options)


def test_an_ensemble_of_one_checkpoint_and_one_fisher_sample_is_plain_influence(gpt2, tokenizer, train_records,
                                                                                query_records):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    ensemble = InfluenceEnsemble([adapter], [0.7], damping=1e-3, batch_size=3).fit(train_records)
    plain = InfluenceAttributor(adapter, "ekfac", damping=1e-3, batch_size=3).fit(train_records)
    got, expected = ensemble.score(query_records, train_records), plain.score(query_records, train_records)
    torch.testing.assert_close(got.values, expected.values, rtol=1e-12, atol=0)
    assert got.method == "influence-ekfac-ensemble"


def test_ensemble_weights_checkpoints_by_learning_rate_and_averages_fisher_samples(gpt2, tokenizer, train_records,
                                                                                   query_records, tmp_path):
    later = copy.deepcopy(gpt2)
    with torch.no_grad():
        for parameter in later.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    adapters = [CausalLMAdapter(gpt2, tokenizer), CausalLMAdapter(later, tokenizer)]
    options = dict(damping="heuristic", batch_size=3, max_examples=6)
    ensemble = InfluenceEnsemble(adapters, [1.0, 3.0], fisher_samples=2, **options).fit(train_records)
    got = ensemble.score(query_records, train_records, per_module=True)
    parts = {(k, s): InfluenceAttributor(adapters[k], "ekfac", seed=s, **options).fit(train_records)
             .score(query_records, train_records, per_module=True) for k in (0, 1) for s in (0, 1)}
    expected = sum(w / 4 / 2 * parts[k, s].values for (k, s), w in zip(parts, (1.0, 1.0, 3.0, 3.0)))
    torch.testing.assert_close(got.values, expected, rtol=1e-10, atol=0)
    assert not torch.allclose(parts[1, 0].values, parts[1, 1].values)  # the two Fisher samples differ
    torch.testing.assert_close(sum(got.per_module.values()), got.values, rtol=1e-10, atol=1e-12)
    ensemble.save_pretrained(tmp_path / "saved")
    loaded = InfluenceEnsemble.from_pretrained(tmp_path / "saved", adapters)
    assert torch.equal(loaded.score(query_records, train_records).values, got.values)


def test_ensemble_weights_must_match_the_checkpoints(gpt2, tokenizer):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    with pytest.raises(ConfigError, match="one weight per checkpoint"):
        InfluenceEnsemble([adapter, adapter], [1.0])
    with pytest.raises(ConfigError, match="positive sum"):
        InfluenceEnsemble([adapter], [0.0])


def test_a_shared_curvature_is_the_last_checkpoints_applied_at_every_checkpoint(gpt2, tokenizer, train_records,
                                                                                 query_records):
    later = copy.deepcopy(gpt2)
    with torch.no_grad():
        for parameter in later.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    adapters = [CausalLMAdapter(gpt2, tokenizer), CausalLMAdapter(later, tokenizer)]
    ensemble = InfluenceEnsemble(adapters, [1.0, 1.0], shared_curvature=True, damping=1e-3,
                                 batch_size=3).fit(train_records)
    last = InfluenceAttributor(adapters[1], "ekfac", damping=1e-3, batch_size=3).fit(train_records)
    first = InfluenceAttributor(adapters[0], make_curvature("ekfac", damping=1e-3).load_state(
        dict(last.curvature.state), last.curvature.metadata()), batch_size=3)
    expected = (first.score(query_records, train_records).values + last.score(query_records, train_records).values) / 2
    torch.testing.assert_close(ensemble.score(query_records, train_records).values, expected, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="refine_steps=0"):
        InfluenceEnsemble(adapters, shared_curvature=True, refine_steps=2)


def test_registry_entries_build_the_estimators(gpt2, tokenizer):
    from llm_attrib.attributors import ATTRIBUTORS

    class History:
        def checkpoints(self):
            return [copy.deepcopy(gpt2) for _ in range(4)], [1.0, 2.0, 3.0, 4.0]

        def models(self, n):
            return [copy.deepcopy(gpt2) for _ in range(n)]

    assert ATTRIBUTORS["influence-ekfac-cg2"](gpt2, tokenizer).config.refine_steps == 2
    source = ATTRIBUTORS["influence-ekfac-source3"](gpt2, tokenizer, training=History())
    assert len(source.members) == 3 and source.weights == pytest.approx([2 / 9, 3 / 9, 4 / 9])
    seeds = ATTRIBUTORS["influence-ekfac-seeds3"](gpt2, tokenizer, training=History())
    assert len(seeds.members) == 3 and seeds.weights == pytest.approx([1 / 3] * 3)
