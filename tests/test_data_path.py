"""Real data as users have it: LoRA adapters with peft's defaults, a base model given by path."""

from __future__ import annotations

import json

import pytest

from llm_attrib.cli import main
from tests.conftest import SENTENCES


@pytest.fixture()
def lora_folders(tmp_path, llama, tokenizer):
    """A tiny Llama saved as a base folder and a LoRA on peft's default targets (q_proj, v_proj) whose
    ``base_model_name_or_path`` points at it, plus a copy whose base is a hub id."""
    from peft import LoraConfig, get_peft_model

    llama.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    lora = get_peft_model(llama, LoraConfig(r=2, init_lora_weights=False))
    for name, base in (("lora", str(tmp_path / "base")), ("lora-hub", "meta-llama/Llama-3.2-1B")):
        lora.save_pretrained(tmp_path / name)
        config = tmp_path / name / "adapter_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": base}))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    return tmp_path


def trace_json(capsys, model, train, *extra: str) -> dict:
    assert main(["trace", "--model", str(model), "--train", str(train), "--prompt", "the cat sat on",
                 "--completion", " the mat", "--top-k", "3", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_lora_with_peft_default_targets_traces_with_no_modules(lora_folders, capsys):
    """No --modules: the tracked layers are the adapter's own LoRA layers (q_proj, v_proj), all of them."""
    from llm_attrib.adapters import CausalLMAdapter

    adapter = CausalLMAdapter.from_pretrained(lora_folders / "lora")
    names = {layer.name.split(".")[-3] for layer in adapter.layers}
    assert names == {"q_proj", "v_proj"} and len(adapter.layers) == 2 * 2 * 2  # 2 layers × 2 targets × A, B
    report = trace_json(capsys, lora_folders / "lora", lora_folders / "train.jsonl")
    assert len(report["top"]) == 3 and all(record["score"] != 0 for record in report["top"])


def test_base_model_overrides_an_unusable_base_model_name_or_path(lora_folders, capsys):
    """The adapter names a hub id; --base-model points at the local base, and the tokenizer comes from there."""
    expected = trace_json(capsys, lora_folders / "lora", lora_folders / "train.jsonl")
    got = trace_json(capsys, lora_folders / "lora-hub", lora_folders / "train.jsonl", "--base-model",
                     str(lora_folders / "base"))
    assert got == expected
