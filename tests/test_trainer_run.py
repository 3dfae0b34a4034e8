"""TracIn from a real Hugging Face ``Trainer`` run: its checkpoints, logged learning rates and Adam moments.

A tiny GPT-2 (float32, as Trainer trains it) is fine-tuned by ``transformers.Trainer`` for 6 AdamW steps under a
warm-up + linear schedule, saving a checkpoint every 2 steps. The tests read the output folder with `TrainerRun`
and compare with hand computations from the files Trainer wrote: the learning rates it logged, and Adam-aware
TracIn ``Σ_k w_k ∇f(q; θ_k)ᵀ (∇log p(z; θ_k) / (√v̂_k + ε))`` from ``optimizer.pt`` loaded by hand.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.tracin import TracInAttributor
from llm_attrib.attributors.trainer_run import RECORD_FILE, AttributionCallback, TrainerRun
from llm_attrib.data import collate
from llm_attrib.errors import UserInputError
from tests.conftest import QUERIES, TRAIN

STEPS, SAVE_EVERY, LR, WARMUP = 6, 2, 5e-3, 2


class EncodedDataset(torch.utils.data.Dataset):
    """Training records encoded by the adapter (what it attributes), for Trainer."""

    def __init__(self, adapter: CausalLMAdapter, records):
        self.encoded = adapter.encode(records)

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i):
        return self.encoded[i]


def run_trainer(model, tokenizer, output_dir, *, callback: bool, lora: bool = False):
    from transformers import Trainer, TrainingArguments

    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["c_fc", "c_proj"],
                                                 lora_dropout=0.0, fan_in_fan_out=True, init_lora_weights=False))
    pad = tokenizer.pad_token_id

    def collator(items):
        batch = collate(items, pad_token_id=pad)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}

    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=STEPS, save_steps=SAVE_EVERY, logging_steps=1, learning_rate=LR,
        warmup_steps=WARMUP, lr_scheduler_type="linear", per_device_train_batch_size=4, weight_decay=0.01,
        report_to=[], use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True,
        save_total_limit=None,
    )
    dataset = EncodedDataset(CausalLMAdapter(model, tokenizer), TRAIN)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      processing_class=tokenizer, callbacks=[AttributionCallback()] if callback else [])
    trainer.train()
    return model


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tokenizer):
    from llm_attrib.demo.model import tiny_gpt2

    model = tiny_gpt2(len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    output = tmp_path_factory.mktemp("trainer") / "out"
    run_trainer(model, tokenizer, output, callback=True)
    return output


def expected_learning_rates() -> list[float]:
    """transformers' linear schedule with warm-up: step t (from 1) runs at LR × λ(t − 1)."""
    def factor(done: int) -> float:
        return done / WARMUP if done < WARMUP else max(0.0, (STEPS - done) / (STEPS - WARMUP))

    return [LR * factor(t - 1) for t in range(1, STEPS + 1)]


def test_the_run_gives_its_checkpoints_and_the_learning_rates_trainer_logged(full_run, tokenizer, tmp_path):
    run = TrainerRun(full_run, tokenizer)
    assert run.steps == [2, 4, 6] and len(run) == 3
    history = json.loads((full_run / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    logged = {entry["step"]: entry["learning_rate"] for entry in history if "learning_rate" in entry}
    assert run.logged_learning_rates() == logged and len(logged) == STEPS
    rates = expected_learning_rates()
    assert run.step_learning_rates() == pytest.approx(rates, rel=1e-9, abs=1e-15)  # the callback's exact record
    assert run.learning_rate_weights() == pytest.approx([sum(rates[0:2]), sum(rates[2:4]), sum(rates[4:6])])
    # without the callback's record: the logged values, each the rate its step ran at; between sparser logs,
    # linear interpolation (exact for this piecewise-linear schedule where no log is missing at a kink)
    bare = tmp_path / "bare"
    shutil.copytree(full_run, bare)
    for record in bare.rglob(RECORD_FILE):
        record.unlink()
    assert TrainerRun(bare, tokenizer).step_learning_rates() == pytest.approx(rates, rel=1e-9, abs=1e-15)
    state_file = bare / "checkpoint-6" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"] = [e for e in state["log_history"] if e.get("step") not in (4, 5)]  # a gap on the decay
    state_file.write_text(json.dumps(state))
    assert TrainerRun(bare, tokenizer).step_learning_rates() == pytest.approx(rates, rel=1e-9, abs=1e-15)


def adam_tracin_by_hand(run: TrainerRun, query, record) -> float:
    """``Σ_k w_k Σ_layers ⟨∇f(q), ∇log p(z) / (√v̂ + ε)⟩`` over the MLP weights and biases, from optimizer.pt."""
    total = 0.0
    for k, weight in enumerate(run.learning_rate_weights()):
        adapter = run[k]
        model = adapter.model
        params = dict(model.named_parameters())
        state = torch.load(run.folders[k] / "optimizer.pt", weights_only=True)
        names = json.loads((run.folders[k] / RECORD_FILE).read_text())["parameter_groups"]
        index = {i: n for group, group_names in zip(state["param_groups"], names)
                 for i, n in zip(group["params"], group_names)}
        group_of = {i: g for g in state["param_groups"] for i in g["params"]}
        tracked = {n for layer in adapter.layers for n in (f"{layer.name}.weight", f"{layer.name}.bias")} & set(params)

        def grads(rec, measure):
            model.zero_grad()
            batch = adapter.collate(adapter.encode([rec]))
            value = adapter.log_prob(batch)[0]
            value.backward()
            return {n: params[n].grad.double().clone() for n in tracked}

        gq, gz = grads(query, True), grads(record, False)
        for i, name in index.items():
            if name not in tracked:
                continue
            s = state["state"][i]
            beta2, eps = group_of[i]["betas"][1], group_of[i]["eps"]
            denominator = (s["exp_avg_sq"].double() / (1 - beta2 ** float(s["step"]))).sqrt() + eps
            total += weight * float((gq[name] * gz[name] / denominator).sum())
    return total


def test_adam_aware_tracin_equals_a_hand_computation_from_the_saved_optimizer_state(full_run, tokenizer):
    attributor = TracInAttributor.from_trainer_output(full_run, tokenizer).fit(TRAIN)
    assert attributor.name == "tracin-adam" and attributor.config.optimizer == "adam"
    scores = attributor.score(QUERIES[:2], TRAIN)
    run = TrainerRun(full_run, tokenizer)
    for q in range(2):
        for z in (0, 5):
            assert float(scores.values[q, z]) == pytest.approx(adam_tracin_by_hand(run, QUERIES[q], TRAIN[z]),
                                                               rel=2e-4, abs=1e-9)


def test_sgd_tracin_over_one_checkpoint_is_grad_dot_times_its_weight(full_run, tokenizer, tmp_path):
    from llm_attrib.attributors.influence import InfluenceAttributor

    single = tmp_path / "one"
    single.mkdir()
    shutil.copytree(full_run / "checkpoint-2", single / "checkpoint-2")
    attributor = TracInAttributor.from_trainer_output(single, tokenizer, optimizer="sgd").fit(TRAIN)
    [weight] = TrainerRun(single, tokenizer).learning_rate_weights()
    grad_dot = InfluenceAttributor(TrainerRun(single, tokenizer)[0], "identity").fit(TRAIN).score(QUERIES, TRAIN)
    assert torch.allclose(attributor.score(QUERIES, TRAIN).values, weight * grad_dot.values, rtol=1e-6, atol=0)


def test_without_the_callback_the_names_follow_trainers_grouping(full_run, tokenizer, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(full_run, bare)
    for record in bare.rglob(RECORD_FILE):
        record.unlink()
    with_record, without = TrainerRun(full_run, tokenizer), TrainerRun(bare, tokenizer)
    a, b = with_record.adam_moments(1), without.adam_moments(1)
    assert a.keys() == b.keys() and all(torch.equal(a[n].exp_avg_sq, b[n].exp_avg_sq) for n in a)


def test_a_lora_run_is_read_with_its_base_model(tokenizer, tmp_path):
    from llm_attrib.demo.model import tiny_gpt2

    def base():
        return tiny_gpt2(len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)

    run_trainer(base(), tokenizer, tmp_path / "lora", callback=True, lora=True)
    run = TrainerRun(tmp_path / "lora", tokenizer, base_model=base())
    assert run.is_peft(0) and all("lora_" in layer.name for layer in run[0].layers)
    attributor = TracInAttributor(run, run.learning_rate_weights(), optimizer="adam").fit(TRAIN)
    scores = attributor.score(QUERIES[:1], TRAIN)
    # by hand over the LoRA layers: the same formula, the moments of the adapter's parameters only
    assert float(scores.values[0, 3]) == pytest.approx(adam_tracin_by_hand(run, QUERIES[0], TRAIN[3]), rel=2e-4,
                                                       abs=1e-9)
    assert torch.isfinite(scores.values).all() and scores.values.abs().sum() > 0


def test_bad_runs_are_refused_in_one_line(full_run, tokenizer, tmp_path):
    with pytest.raises(UserInputError, match="holds no checkpoint"):
        TrainerRun(tmp_path, tokenizer)
    with pytest.raises(UserInputError, match="give a TrainerRun"):
        TracInAttributor([CausalLMAdapter(TrainerRun(full_run, tokenizer).model(0), tokenizer)], [1.0],
                         optimizer="adam")
    broken = tmp_path / "broken"
    shutil.copytree(full_run, broken)
    (broken / "checkpoint-2" / "optimizer.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserInputError, match="cannot read .*optimizer.pt"):
        TrainerRun(broken, tokenizer).adam_moments(0)
    (broken / "checkpoint-4" / "optimizer.pt").unlink()
    with pytest.raises(UserInputError, match="has no optimizer.pt"):
        TrainerRun(broken, tokenizer).adam_moments(1)
