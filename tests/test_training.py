"""The replayable trainer: it is AdamW (the demo's loop, to float64 rounding), its record replays bitwise, and runs
that cannot be replayed are refused in one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llm_attrib.data import EncodingConfig
from llm_attrib.demo.training import train_causal_lm
from llm_attrib.errors import UserInputError
from llm_attrib.store import tensors_checksum
from llm_attrib.training import ReplayableRun, TrainConfig, learning_rates, train_replayable
from llm_attrib.training.run import RUN_FILE, trainable

EOS = EncodingConfig(eos=True)


def checksum(params: dict) -> str:
    return tensors_checksum({n: p.detach() for n, p in params.items()})


def test_the_trainer_is_the_demo_adamw_loop(gpt2, tokenizer, train_records, tmp_path):
    """Constant rate, no clipping: the same seeded order and AdamW update as `train_causal_lm`. The demo loop takes
    its log-softmax in float32 even for a float64 model, hence the tolerance (a wrong update differs by ~lr)."""
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, epochs=2, batch_size=3, lr=1e-2,
                           weight_decay=0.1, encoding=EOS)
    final = run.state(run.total_steps).params
    reference = train_causal_lm(gpt2, tokenizer, train_records, epochs=2, lr=1e-2, batch_size=3, seed=0,
                                weight_decay=0.1, num_threads=1)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(final[name], p.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lora", [False, True])
def test_replay_is_bitwise_and_the_checkpoint_interval_changes_nothing(gpt2, tokenizer, train_records, tmp_path,
                                                                       lora):
    options = dict(epochs=2, batch_size=3, lr=5e-3, schedule="cosine", warmup_steps=2, max_grad_norm=0.5,
                   weight_decay=0.01, **({"lora_rank": 2, "lora_targets": ("c_attn", "c_fc")} if lora else {}))
    untouched = checksum(dict(gpt2.named_parameters()))
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path / "a", **options)
    assert checksum(dict(gpt2.named_parameters())) == untouched  # the initial model is left as it was
    assert run.checkpoint_steps == [0, 3, 6] and run.total_steps == 6
    again = ReplayableRun(tmp_path / "a", gpt2, tokenizer)
    final = again.replay()
    assert checksum(final.params) == checksum(run.state(6).params)
    assert checksum(final.m) == checksum(run.state(6).m) and checksum(final.v) == checksum(run.state(6).v)
    every_step = train_replayable(gpt2, tokenizer, train_records, tmp_path / "b", checkpoint_every=1, **options)
    assert every_step.checkpoint_steps == list(range(7))
    assert checksum(every_step.state(6).params) == checksum(final.params)
    trained = trainable(run.model_at(final))
    assert checksum(trained) == checksum(final.params)
    if lora:
        assert all("lora_" in name for name in final.params)


def test_an_interrupted_run_resumes_bitwise_and_a_finished_one_is_reused(gpt2, tokenizer, train_records, tmp_path):
    options = dict(epochs=2, batch_size=2, lr=1e-2, checkpoint_every=2)
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, **options)
    final = checksum(run.state(run.total_steps).params)
    (tmp_path / RUN_FILE).unlink()
    for step in (6, 8):  # killed after the checkpoint before step 6
        run.checkpoint_path(step).unlink()
    resumed = train_replayable(gpt2, tokenizer, train_records, tmp_path, **options)
    assert resumed.train_seconds is None and checksum(resumed.state(8).params) == final
    stamp = run.checkpoint_path(8).stat().st_mtime_ns
    train_replayable(gpt2, tokenizer, train_records, tmp_path, **options)
    assert run.checkpoint_path(8).stat().st_mtime_ns == stamp


def test_per_record_weights_scale_each_records_loss(gpt2, tokenizer, train_records, tmp_path):
    """Weight 0 on a record = training without it (same order of the others, same batches' token counts aside)."""
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, epochs=1, batch_size=8, lr=1e-2)
    state = run.state(0)
    zero = torch.ones(len(train_records), dtype=torch.float64)
    zero[3] = 0.0
    weighted = run.replay(zero)
    assert checksum(weighted.params) != checksum(run.replay().params)
    # one batch of all records: the weight-0 record contributes nothing to the gradient
    batch = run.batch(0)
    rows = [i for i, record in enumerate(run.order[0]) if record != 3]
    from llm_attrib.training import batch_loss

    params = {n: p.detach().requires_grad_() for n, p in state.params.items()}
    n_all = int((batch.labels[:, 1:] != -100).sum())
    sub = run.adapter.collate([run.encoded[run.order[0][r]] for r in rows])
    n_sub = int((sub.labels[:, 1:] != -100).sum())
    full = batch_loss(run.model, params, batch, zero[torch.tensor(run.order[0])])
    without = batch_loss(run.model, params, sub, torch.ones(len(rows), dtype=torch.float64)) * n_sub / n_all
    torch.testing.assert_close(full, without, rtol=1e-12, atol=0)


def test_learning_rate_schedules():
    config = TrainConfig(lr=1.0, warmup_steps=2, schedule="linear")
    assert learning_rates(config, 6) == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    cosine = learning_rates(config.replace(schedule="cosine"), 6)
    assert cosine[:3] == [0.5, 1.0, 1.0] and math.isclose(cosine[4], 0.5)
    assert learning_rates(config.replace(schedule="constant", warmup_steps=0), 3) == [1.0, 1.0, 1.0]


def test_runs_that_cannot_be_replayed_are_refused_in_one_line(gpt2, tokenizer, train_records, tmp_path):
    import copy

    noisy = copy.deepcopy(gpt2)
    noisy.transformer.drop.p = 0.1
    with pytest.raises(UserInputError, match="dropout") as error:
        train_replayable(noisy, tokenizer, train_records, tmp_path / "x")
    assert "\n" not in str(error.value)
    with pytest.raises(UserInputError, match="run.json is missing"):
        ReplayableRun(tmp_path / "x", gpt2, tokenizer)
    train_replayable(gpt2, tokenizer, train_records, tmp_path / "r", batch_size=4, checkpoint_every=1)
    path = tmp_path / "r" / RUN_FILE
    record = json.loads(path.read_text())
    with pytest.raises(UserInputError, match="not the one"):
        ReplayableRun(tmp_path / "r", _other(gpt2), tokenizer)
    record["learning_rates"][1] *= 2  # a record that the weights do not come from
    path.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="differs from the record after step 2"):
        ReplayableRun(tmp_path / "r", gpt2, tokenizer).replay()
    record["config"]["optimizer"] = "sgd"
    path.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="optimizer 'sgd' cannot be replayed"):
        ReplayableRun(tmp_path / "r", gpt2, tokenizer)
    (tmp_path / "r" / "checkpoints" / "step-000001.safetensors").unlink()
    record["config"]["optimizer"] = "adamw"
    path.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="is missing"):
        ReplayableRun(tmp_path / "r", gpt2, tokenizer).state(1)


def _other(model):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    return other
