"""Per-example gradients from the layer hooks equal autograd's, per example, on three model families."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor


def autograd_gradients(adapter: CausalLMAdapter, record: dict, measure: bool) -> dict[str, torch.Tensor]:
    """One example at a time, with plain autograd on the parameters: ``{layer: [O, I]}``."""
    batch = adapter.collate(adapter.encode([record]))
    objective = (adapter.measure(batch) if measure else adapter.log_prob(batch)).sum()
    out = {}
    for layer in adapter.layers:
        params = layer.parameters()
        for p in params:
            p.requires_grad_(True)
        grads = torch.autograd.grad(objective, params, retain_graph=True)
        out[layer.name] = layer.matrix_from_parameter_grads(grads[0], grads[1] if layer.has_bias else None)
    return out


@pytest.mark.parametrize("model_name, modules", [("gpt2", "all"), ("llama", "all"), ("lora_gpt2", "all")])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_hook_gradients_equal_autograd(request, tokenizer, train_records, query_records, model_name, modules,
                                      padding_side):
    model = request.getfixturevalue(model_name)
    adapter = CausalLMAdapter(model, tokenizer, modules=modules, padding_side=padding_side)
    if model_name == "lora_gpt2":
        assert adapter.layers and all(".lora_" in layer.name for layer in adapter.layers)
    attributor = InfluenceAttributor(adapter, "identity", batch_size=4)
    for records, measure in ((train_records[:5], False), (query_records, True)):
        batched = attributor.gradients(records, measure=measure)
        for index, record in enumerate(records):
            expected = autograd_gradients(adapter, record, measure)
            for name, grad in expected.items():
                tolerance = dict(rtol=1e-9, atol=1e-11) if grad.dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(batched[name][index], grad, **tolerance)


def test_default_layers_are_mlp(gpt2, llama, tokenizer):
    assert {l.name.split(".")[-1] for l in CausalLMAdapter(gpt2, tokenizer).layers} == {"c_fc", "c_proj"}
    assert {l.name.split(".")[-1] for l in CausalLMAdapter(llama, tokenizer).layers} == {
        "gate_proj", "up_proj", "down_proj"}
    assert all(".mlp." in l.name for l in CausalLMAdapter(gpt2, tokenizer).layers)
