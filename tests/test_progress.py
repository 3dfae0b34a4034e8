"""Long steps show progress: periodic lines on stderr when it is not a terminal, a tqdm bar with a total on one."""

from __future__ import annotations

import json

import pytest

from llm_attrib import progress as progress_module
from llm_attrib.cli import main
from llm_attrib.progress import progress


def test_a_log_gets_a_line_per_interval_and_one_at_the_end(monkeypatch, capsys):
    clock = iter(range(0, 1000, 4))  # each reading of the clock is 4 s later
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    assert list(progress(range(7), "influence-ekfac scores 1/1")) == list(range(7))
    assert capsys.readouterr().err.splitlines() == [
        "influence-ekfac scores 1/1: 3/7 batches (43%), 12 s",
        "influence-ekfac scores 1/1: 6/7 batches (86%), 24 s",
        "influence-ekfac scores 1/1: 7/7 batches (100%), 32 s",
    ]


def test_quick_disabled_or_failed_steps_print_nothing(capsys):
    assert list(progress(iter(range(3)), "quick")) == [0, 1, 2]
    assert list(progress(range(3), "off", enabled=False)) == [0, 1, 2]
    with pytest.raises(ValueError):
        for _ in progress(range(3), "failed"):
            raise ValueError
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar_with_the_total(monkeypatch, capsys):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: True)
    list(progress(range(7), "trak gradients"))
    err = capsys.readouterr().err
    assert "trak gradients" in err and "7/7" in err


def test_the_cli_shows_progress_in_a_log(monkeypatch, tmp_path, gpt2, tokenizer, train_records, capsys):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    gpt2.float().save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in train_records))
    assert main(["trace", "--model", str(tmp_path / "model"), "--train", str(train), "--prompt", "the cat",
                 "--completion", " sat", "--batch-size", "4", "--json"]) == 0
    err = capsys.readouterr().err
    assert "ekfac statistics 2/2: 2/2 batches (100%), " in err  # the curvature fit's last pass
    assert "influence-ekfac scores 1/1: 2/2 batches (100%), " in err
