"""MAGIC: metagradients equal central finite differences of the replayed training (float64, tiny GPT-2, full and
LoRA), and neither the query batch, the padding side nor the number of checkpoints changes them."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.attributors.magic import MagicAttributor
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.training import ReplayableRun, train_replayable
from llm_attrib.training.smoothness import metasmoothness, outcome, random_subsets

OPTIONS = dict(epochs=2, batch_size=3, lr=1e-2, schedule="cosine", warmup_steps=1, max_grad_norm=1.0,
               weight_decay=0.1)


def finite_differences(run: ReplayableRun, queries: list[dict], h: float = 1e-6) -> torch.Tensor:
    """``[Q, n]`` (f(w + h e_i) − f(w − h e_i)) / 2h of the replayed run."""
    batch = run.adapter.collate(run.adapter.encode(queries))
    columns = []
    for i in range(len(run.encoded)):
        step = torch.zeros(len(run.encoded), dtype=torch.float64)
        step[i] = h
        columns.append((outcome(run, batch, run.weights + step) - outcome(run, batch, run.weights - step)) / (2 * h))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("lora", [False, True])
def test_metagradients_equal_finite_differences_of_the_replayed_training(gpt2, tokenizer, train_records,
                                                                         query_records, tmp_path, lora):
    """Warm-up, cosine decay, clipping and weight decay included (clipping is active: lr 1e-2, norm 1)."""
    options = dict(OPTIONS, **({"lora_rank": 2, "lora_targets": ("c_attn", "c_fc")} if lora else {}))
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, **options)
    scores = MagicAttributor(run).fit(train_records).score(query_records)
    # Central differences err by O(h²) (Adam's early steps are strongly curved in w: 6e-7 of the largest score at
    # h = 2e-6, 1.5e-7 at 1e-6); Richardson's extrapolation of h and h/2 cancels the h² term.
    expected = (4 * finite_differences(run, query_records, 1e-6) - finite_differences(run, query_records, 2e-6)) / 3
    assert scores.values.shape == (3, 8) and expected.abs().max() > 1e-3
    torch.testing.assert_close(scores.values, expected, rtol=0, atol=1e-7 * float(expected.abs().max()))
    assert scores.method == "magic" and "log Pr(completion | prompt)" in scores.units


def test_query_batch_checkpoints_and_padding_side_do_not_change_the_scores(gpt2, tokenizer, train_records,
                                                                           query_records, tmp_path):
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path / "a", **OPTIONS)
    reference = MagicAttributor(run, query_batch=3).fit(train_records).score(query_records).values
    one_by_one = MagicAttributor(run, query_batch=1).fit(train_records).score(query_records).values
    torch.testing.assert_close(one_by_one, reference, rtol=1e-12, atol=1e-14)
    every_step = train_replayable(gpt2, tokenizer, train_records, tmp_path / "b", checkpoint_every=1, **OPTIONS)
    one_segment = train_replayable(gpt2, tokenizer, train_records, tmp_path / "c", checkpoint_every=6, **OPTIONS)
    assert len(every_step.checkpoint_steps) == 7 and len(one_segment.checkpoint_steps) == 2
    for other in (every_step, one_segment):
        values = MagicAttributor(other).fit(train_records).score(query_records).values
        torch.testing.assert_close(values, reference, rtol=1e-12, atol=1e-14)
    left = train_replayable(gpt2, tokenizer, train_records, tmp_path / "d", padding_side="left", **OPTIONS)
    values = MagicAttributor(left).fit(train_records).score(query_records).values
    torch.testing.assert_close(values, reference, rtol=0, atol=1e-9 * float(reference.abs().max()))


def test_saved_scores_reload_bitwise_and_only_for_the_same_run(gpt2, tokenizer, train_records, query_records,
                                                              tmp_path):
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path / "run", **OPTIONS)
    magic = MagicAttributor(run).fit(train_records)
    magic.save_pretrained(tmp_path / "saved")
    again = MagicAttributor.from_pretrained(tmp_path / "saved", ReplayableRun(tmp_path / "run", gpt2, tokenizer))
    assert torch.equal(again.score(query_records, train_records).values, magic.score(query_records).values)
    other = train_replayable(gpt2, tokenizer, train_records, tmp_path / "other", **dict(OPTIONS, seed=1))
    with pytest.raises(CacheMismatchError, match="run_id"):
        MagicAttributor.from_pretrained(tmp_path / "saved", other)


def test_scores_resume_from_the_cache_of_reverse_passes(gpt2, tokenizer, train_records, query_records, tmp_path,
                                                        monkeypatch):
    import llm_attrib.training.metagradient as metagradient

    run = train_replayable(gpt2, tokenizer, train_records, tmp_path / "run", **OPTIONS)
    first = MagicAttributor(run, query_batch=2, cache_dir=tmp_path / "cache").fit(train_records).score(query_records)
    assert len(list((tmp_path / "cache").glob("magic-*.safetensors"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a cached reverse pass was recomputed")

    monkeypatch.setattr(metagradient, "metagradients", refuse)
    again = MagicAttributor(run, query_batch=2, cache_dir=tmp_path / "cache").fit(train_records).score(query_records)
    assert torch.equal(again.values, first.values) and again.metadata == first.metadata


def test_records_that_are_not_the_runs_are_refused_in_one_line(gpt2, tokenizer, train_records, tmp_path):
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, **OPTIONS)
    magic = MagicAttributor(run)
    with pytest.raises(UserInputError, match="record 7 \\(of 8\\) is missing"):
        magic.fit(train_records[:7])
    with pytest.raises(UserInputError, match="training record 0 is not the run's record 0"):
        magic.fit(train_records[::-1])
    with pytest.raises(UserInputError, match="call fit"):
        magic.score([{"prompt": "a", "completion": " b"}])
    with pytest.raises(UserInputError, match="no self-influence"):
        magic.fit(train_records).self_influence(train_records)
    with pytest.raises(UserInputError, match="ReplayableRun"):
        MagicAttributor(gpt2)


def test_metasmoothness_compares_replays_with_the_first_order_prediction(gpt2, tokenizer, train_records,
                                                                         query_records, tmp_path):
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path, **OPTIONS)
    scores = MagicAttributor(run).fit(train_records).score(query_records).values
    batch = run.adapter.collate(run.adapter.encode(query_records))
    rows = random_subsets(8, 2, 0.25, seed=3)
    assert rows.sum(dim=1).tolist() == [2.0, 2.0]
    tiny = metasmoothness(run, batch, scores, directions=2, fraction=0.25, scale=1e-6, seed=3)
    removed = outcome(run, batch, 1.0 - 1e-6 * rows[1]) - outcome(run, batch)
    torch.testing.assert_close(tiny.minus[1], removed, rtol=0, atol=0)
    torch.testing.assert_close(tiny.predicted, 1e-6 * rows @ scores.T, rtol=1e-12, atol=0)
    assert tiny.smooth and tiny.removal_error < 1e-4 and tiny.linearity > 0.999 and tiny.correlation > 0.999
    whole = metasmoothness(run, batch, scores, directions=2, fraction=0.25, seed=3)  # removing 2 of 8 records
    assert whole.removal_error > tiny.removal_error and set(whole.to_dict()) >= {"smooth", "linearity"}
    assert ("NOT smooth" in whole.summary()) == (not whole.smooth)


def test_the_registry_builds_magic_from_a_training_history_with_its_run(gpt2, tokenizer, train_records, tmp_path):
    from types import SimpleNamespace

    from llm_attrib.attributors import ATTRIBUTORS, load_attributor

    with pytest.raises(UserInputError, match="recorded run"):
        ATTRIBUTORS["magic"](gpt2, tokenizer)
    run = train_replayable(gpt2, tokenizer, train_records, tmp_path / "run", **OPTIONS)
    magic = ATTRIBUTORS["magic"](gpt2, tokenizer, SimpleNamespace(replayable_run=run))
    assert isinstance(magic, MagicAttributor)
    magic.fit(train_records).save_pretrained(tmp_path / "saved")
    assert isinstance(load_attributor(tmp_path / "saved", run), MagicAttributor)
