"""The one Attributor contract: validated configs, and save_pretrained → from_pretrained scoring bitwise equal."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import llm_attrib
from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors import load_attributor
from llm_attrib.attributors.airrep import AirRepAttributor
from llm_attrib.attributors.base import Attributor
from llm_attrib.attributors.checkpoints import Checkpoints
from llm_attrib.attributors.influence import InfluenceAttributor, InfluenceConfig
from llm_attrib.attributors.tracin import TracInAttributor
from llm_attrib.attributors.trak import TrakAttributor, TrakConfig
from llm_attrib.config import ConfigError
from llm_attrib.errors import CacheMismatchError, UserInputError


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """A copy of ``model`` with seeded Gaussian noise on every parameter (a stand-in for another checkpoint)."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return other


def fake_retrain(model: torch.nn.Module):
    """``retrain(records, seed)``: a deterministic model per (subset, seed), so AirRep's subset outcomes vary."""

    def retrain(records, seed):
        return perturbed(model, seed * 1000 + len(records) + sum(len(str(r)) for r in records))

    return retrain


def builders(gpt2, tokenizer):
    """``name -> (make(), args for from_pretrained)`` for every attributor with a model."""
    adapter = CausalLMAdapter(gpt2, tokenizer)
    others = [gpt2, perturbed(gpt2, 1)]
    return {
        "influence-ekfac": (lambda: InfluenceAttributor(adapter, "ekfac", fisher="empirical", batch_size=3),
                            (adapter,)),
        "influence-kfac-partitions": (lambda: InfluenceAttributor(adapter, "kfac", layer_partitions=2,
                                                                  damping=1e-6), (adapter,)),
        "grad-dot": (lambda: InfluenceAttributor(adapter, "identity"), (adapter,)),
        "tracin": (lambda: TracInAttributor(Checkpoints(others, tokenizer), [0.1, 0.05]),
                   (Checkpoints(others, tokenizer),)),
        "trak-ensemble": (lambda: TrakAttributor(Checkpoints(others, tokenizer), projection_dim=(3, 4)),
                          (Checkpoints(others, tokenizer),)),
        "airrep": (lambda: AirRepAttributor(gpt2, tokenizer, fake_retrain(gpt2), n_subsets=4, epochs=5, dim=3),
                   (gpt2, tokenizer)),
    }


@pytest.mark.parametrize("name", ["influence-ekfac", "influence-kfac-partitions", "grad-dot", "tracin",
                                  "trak-ensemble", "airrep"])
def test_a_reloaded_attributor_scores_bitwise_equal_without_refitting(name, gpt2, tokenizer, train_records,
                                                                      query_records, tmp_path, monkeypatch):
    make, args = builders(gpt2, tokenizer)[name]
    fitted = make().fit(train_records)
    expected = fitted.score(query_records, train_records)
    fitted.save_pretrained(tmp_path / name)
    cls = type(fitted)
    monkeypatch.setattr(cls, "fit", lambda *a, **k: pytest.fail("from_pretrained must not refit"))
    for reloaded in (cls.from_pretrained(tmp_path / name, *args), load_attributor(tmp_path / name, *args)):
        assert type(reloaded) is cls and reloaded.config == fitted.config
        got = reloaded.score(query_records, train_records)
        assert torch.equal(got.values, expected.values)
        assert got.train_ids == expected.train_ids and got.method == expected.method and got.units == expected.units
        if name != "airrep":
            assert torch.equal(reloaded.self_influence(train_records), fitted.self_influence(train_records))


def test_a_saved_attributor_is_refused_for_another_model_or_class(gpt2, tokenizer, train_records, tmp_path):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    InfluenceAttributor(adapter, fisher="empirical").fit(train_records).save_pretrained(tmp_path)
    with pytest.raises(CacheMismatchError, match="bound_to"):
        InfluenceAttributor.from_pretrained(tmp_path, CausalLMAdapter(perturbed(gpt2, 3), tokenizer))
    with pytest.raises(CacheMismatchError, match="holds a 'influence' attributor, not 'trak'"):
        TrakAttributor.from_pretrained(tmp_path, [adapter])
    with pytest.raises(UserInputError, match="holds no saved attributor"):
        load_attributor(tmp_path / "nothing", adapter)
    with pytest.raises(UserInputError, match="call fit"):
        InfluenceAttributor(adapter).save_pretrained(tmp_path / "unfitted")


@pytest.mark.parametrize("options, message", [
    (dict(fisher="bogus"), "fisher must be one of"),
    (dict(batch_size=0), "batch_size must be at least 1, not 0"),
    (dict(damping="lots"), "damping must be a non-negative number or 'heuristic'"),
    (dict(damping=float("nan")), "damping must be a non-negative number"),
    (dict(max_examples=2.5), "max_examples must be int or None"),
    (dict(seed=True), "seed must be int"),
    (dict(curvature="identity", damping=1e-8), "cannot be applied by identity curvature"),
    (dict(bogus=1), "unknown option 'bogus'"),
])
def test_a_wrong_option_is_refused_at_construction_naming_the_field(options, message, gpt2, tokenizer):
    with pytest.raises(UserInputError, match=message):
        InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), **options)


def test_configs_are_frozen_and_round_trip_through_dicts():
    config = InfluenceConfig(damping=1e-8, batch_size=4)
    with pytest.raises(AttributeError):
        config.batch_size = 2  # type: ignore[misc]
    assert InfluenceConfig.from_dict(config.to_dict()) == config
    assert TrakConfig.from_dict({"projection_dim": [3, 4]}).projection_dim == (3, 4)  # JSON lists become tuples
    with pytest.raises(ConfigError, match=r"method\.options\.batch_size must be at least 1"):
        InfluenceConfig.from_dict({"batch_size": 0}, where="method.options")


def test_cli_flags_and_recipe_keys_are_the_config_fields():
    from llm_attrib.cli import build_parser

    help_text = subprocess.run([sys.executable, "-m", "llm_attrib.cli", "trace", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for name in ("curvature", "damping", "normalize", "fisher", "max_examples", "batch_size", "seed", "query_rank",
                 "rescore_top", "layer_partitions"):
        assert "--" + name.replace("_", "-") in help_text
    args = build_parser().parse_args(["trace", "--model", "m", "--train", "t", "--prompt", "p", "--damping", "1e-8",
                                      "--query-rank", "4", "--rescore-top", "none"])
    assert InfluenceConfig.from_arguments(args) == InfluenceConfig(damping=1e-8, query_rank=4)


def test_every_attributor_follows_one_contract():
    from llm_attrib.attributors import ATTRIBUTOR_CLASSES
    import importlib

    for kind, path in ATTRIBUTOR_CLASSES.items():
        module, name = path.split(":")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Attributor) and cls.kind == kind
        for method in ("fit", "score", "self_influence", "save_pretrained", "from_pretrained"):
            assert callable(getattr(cls, method))


def test_import_llm_attrib_exposes_the_public_surface_lazily():
    code = ("import sys, llm_attrib; assert 'torch' not in sys.modules; "
            "names = [n for n in llm_attrib.__all__ if n != '__version__']; "
            "[getattr(llm_attrib, n) for n in names]; print(len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 20
    assert llm_attrib.InfluenceAttributor is InfluenceAttributor
