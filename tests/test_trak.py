"""TRAK: factored projections, exactness against autograd, invariances, ensembling, caching and errors."""

from __future__ import annotations

import copy

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors import trak
from llm_attrib.attributors.trak import TrakAttributor, kernel_features
from llm_attrib.capture import per_example_gradients
from llm_attrib.errors import CacheMismatchError, CurvatureError, UserInputError
from llm_attrib.projection import KroneckerProjection, layer_projections, random_matrix
from test_gradients import autograd_gradients

ONE_LAYER = r"h\.0\.mlp\.c_proj$"  # GPT-2 Conv1D, gradient [16, 64 + 1]: 1040 parameters
DAMPING = 1e-3

torch.set_num_threads(1)


def test_projecting_tokens_equals_projecting_the_materialised_gradient():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)
    g = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    projection = KroneckerProjection(random_matrix(4, 3, "gaussian", 1), random_matrix(7, 2, "rademacher", 2))
    grads = per_example_gradients(a, g)
    expected = (projection.outputs.T @ grads @ projection.inputs).flatten(1)
    torch.testing.assert_close(projection.project(a, g), expected)
    torch.testing.assert_close(projection.project_matrices(grads), expected)
    # the factored projection is the Kronecker product P_g ⊗ P_a acting on the row-major flattened gradient
    torch.testing.assert_close(grads.flatten(1) @ torch.kron(projection.outputs, projection.inputs), expected)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "orthogonal"])
def test_random_matrices_preserve_inner_products_in_expectation(kind):
    d, k = 64, 48
    mean = sum(random_matrix(d, k, kind, seed) @ random_matrix(d, k, kind, seed).T for seed in range(200)) / 200
    assert (mean - torch.eye(d, dtype=torch.float64)).abs().max() < 0.1
    torch.testing.assert_close(random_matrix(d, k, kind, 3), random_matrix(d, k, kind, 3))
    square = random_matrix(d, d, "orthogonal", 0)
    torch.testing.assert_close(square.T @ square, torch.eye(d, dtype=torch.float64))


def jacobian(adapter, records, measure) -> torch.Tensor:
    """``[n, n_params]``: each record's full gradient by autograd, layers concatenated (row-major ``[O, I]``)."""
    return torch.stack([torch.cat([g.flatten() for g in autograd_gradients(adapter, r, measure).values()])
                        for r in records])


def projection_matrix(attributor: TrakAttributor, adapter) -> torch.Tensor:
    """The materialised ``[n_params, k]`` block-diagonal Kronecker projection of the fitted model."""
    blocks = [torch.kron(p.outputs, p.inputs) for p in attributor._fitted[0].projections.values()]
    return torch.block_diag(*blocks)


@pytest.mark.parametrize("dim, kind", [((16, 65), "orthogonal"), ((2, 2), "gaussian"), ((3, 5), "rademacher")])
def test_trak_equals_the_exact_projected_computation(gpt2, tokenizer, train_records, query_records, dim, kind):
    """Full orthogonal projection: TRAK = exact ``∇f(q)ᵀ(JᵀJ + NλI)⁻¹Jᵀ``; smaller ones (k < N and k > N): the same
    with ``J P`` from autograd gradients and the materialised Kronecker projection."""
    adapter = CausalLMAdapter(gpt2, tokenizer, modules=ONE_LAYER)
    attributor = TrakAttributor([adapter], projection_dim=dim, projection=kind, damping=DAMPING,
                                batch_size=3).fit(train_records)
    projection = projection_matrix(attributor, adapter)
    if dim == (16, 65):
        projection = torch.eye(len(projection), dtype=torch.float64)  # orthogonal P drops out of the exact formula
    phi = jacobian(adapter, train_records, False) @ projection
    phi_q = jacobian(adapter, query_records, True) @ projection
    n, k = phi.shape
    kernel = phi.T @ phi + n * DAMPING * torch.eye(k, dtype=torch.float64)
    expected = phi_q @ torch.linalg.solve(kernel, phi.T)
    scores = attributor.score(query_records, train_records)
    torch.testing.assert_close(scores.values, expected, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(attributor.self_influence(train_records),
                               (phi @ torch.linalg.solve(kernel, phi.T)).diagonal(), rtol=1e-7, atol=1e-12)


def test_scores_do_not_depend_on_batch_size_or_padding(gpt2, tokenizer, train_records, query_records):
    def scores(batch_size, **options):
        adapter = CausalLMAdapter(gpt2, tokenizer, **options)
        return TrakAttributor([adapter], batch_size=batch_size).fit(train_records).score(query_records, train_records)

    expected = scores(4)
    assert expected.values.abs().max() > 0 and "removed" in expected.units
    variants = [(1, {}), (4, dict(padding_side="left")), (3, dict(padding_side="left", pad_to_multiple_of=32))]
    for batch_size, options in variants:
        torch.testing.assert_close(scores(batch_size, **options).values, expected.values, rtol=1e-7, atol=1e-12)


def test_an_ensemble_averages_its_models_scores(gpt2, tokenizer, train_records, query_records):
    other = copy.deepcopy(gpt2)
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(1.1)
    adapters = [CausalLMAdapter(model, tokenizer) for model in (gpt2, other)]
    single = [TrakAttributor([a]).fit(train_records).score(query_records, train_records).values for a in adapters]
    ensemble = TrakAttributor(adapters).fit(train_records).score(query_records, train_records)
    torch.testing.assert_close(ensemble.values, (single[0] + single[1]) / 2)
    assert ensemble.metadata["n_models"] == 2


def test_train_features_are_reused_only_for_the_fitted_records(gpt2, tokenizer, train_records, query_records,
                                                             tmp_path, monkeypatch):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    attributor = TrakAttributor([adapter], cache_dir=tmp_path).fit(train_records)
    expected = attributor.score(query_records, train_records).values
    with pytest.raises(UserInputError, match="differ from those given to fit"):
        attributor.score(query_records, train_records[:-1])
    with pytest.raises(UserInputError, match="differ from those given to fit"):
        attributor.self_influence(list(reversed(train_records)))

    calls = []
    original = trak.projected_gradients
    monkeypatch.setattr(trak, "projected_gradients", lambda *a, **k: calls.append(k["measure"]) or original(*a, **k))
    reloaded = TrakAttributor([adapter], cache_dir=tmp_path).fit(train_records)
    torch.testing.assert_close(reloaded.score(query_records, train_records).values, expected)
    assert calls == [True]  # only the queries' gradients: the training features came from the cache
    with pytest.raises(CacheMismatchError, match="data"):
        TrakAttributor([adapter], cache_dir=tmp_path).fit(train_records[:-1])
    with pytest.raises(CacheMismatchError, match="projection_dim"):
        TrakAttributor([adapter], cache_dir=tmp_path, projection_dim=8).fit(train_records)
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_arguments_get_one_line_errors(gpt2, tokenizer, train_records, query_records):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    with pytest.raises(UserInputError, match="fit"):
        TrakAttributor([adapter]).score(query_records, train_records)
    with pytest.raises(UserInputError, match="damping"):
        TrakAttributor([adapter], damping=-1.0)
    with pytest.raises(UserInputError, match="projection must be one of"):
        TrakAttributor([adapter], projection="sparse")  # refused at construction, before any fit
    with pytest.raises(UserInputError, match="projection_dim must be"):
        TrakAttributor([adapter], projection_dim=0)
    with pytest.raises(UserInputError, match="orthogonal"):
        random_matrix(3, 4, "orthogonal", 0)
    with pytest.raises(UserInputError, match="positive"):
        layer_projections(adapter.layers, 0)


def test_the_registry_builds_trak_on_the_final_model(gpt2, tokenizer, train_records, query_records):
    from llm_attrib.attributors import ATTRIBUTORS

    records = [{"id": f"doc{i}", **r} for i, r in enumerate(train_records)]
    scores = ATTRIBUTORS["trak"](gpt2, tokenizer).fit(records).score(query_records, records)
    assert scores.shape == (len(query_records), len(records)) and scores.train_ids[0] == "doc0"


def test_a_singular_kernel_is_refused():
    with pytest.raises(CurvatureError, match="singular"):
        kernel_features(torch.zeros(3, 5), 0.0)
    with pytest.raises(CurvatureError, match="NaN"):
        kernel_features(torch.full((3, 5), float("nan")), "heuristic")


@pytest.mark.parametrize("n, k", [(3, 8), (8, 3)])
def test_heuristic_damping_is_relative_to_the_kernels_nonzero_spectrum(n, k):
    """0.1 × the mean of F̄ = ΦᵀΦ/N's min(N, k) possibly non-zero eigenvalues, whichever Gram matrix is solved."""
    phi = torch.randn(n, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eigenvalues = torch.linalg.eigvalsh(phi.T @ phi / n)
    expected = 0.1 * float(eigenvalues.sum()) / min(n, k)
    solved, damping = kernel_features(phi, "heuristic")
    assert damping == pytest.approx(expected, rel=1e-12)
    exact = phi @ torch.linalg.inv(phi.T @ phi + n * expected * torch.eye(k, dtype=torch.float64))
    assert torch.allclose(solved, exact, rtol=1e-10, atol=1e-12)
