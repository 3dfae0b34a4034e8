"""Bad input through the real command line: exit status 2, one line on stderr naming what to fix, no traceback,
and nothing written to the output or factors folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_attrib.cli import main
from llm_attrib.demo.model import tiny_gpt2

LONG_PROMPT = "the cat " * 60  # more tokens than the tiny model's context of 64
VALUE_RECIPE = Path(__file__).parents[1] / "recipes" / "noisy-labels-value.yaml"
TRACE_RECIPE = Path(__file__).parents[1] / "recipes" / "demo-trace.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer) -> Path:
    """One folder for every case: a tiny model, LoRA adapters with unusable bases, good and bad data files."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("bad_input")
    model = tiny_gpt2(n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0, vocab_size=len(tokenizer),
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True))
    for name, base in (("lora-relative", "checkpoints/base"), ("lora-hub", "gpt2")):
        lora.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        config_path = root / name / "adapter_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "base_model_name_or_path": base}))
    texts = ["the cat sat on the mat", "a dog ran across the park", "rain fell on the quiet town"]
    (root / "train.jsonl").write_text("".join(json.dumps({"doc": f"d{i}", "text": t}) + "\n"
                                              for i, t in enumerate(texts)))
    (root / "empty.jsonl").write_text("")
    (root / "malformed.jsonl").write_text('{"text": "the cat sat"}\n{"text": "a dog ran\n{"text": "rain"}\n')
    (root / "duplicate_ids.jsonl").write_text("".join(
        json.dumps({"doc": doc, "text": t}) + "\n" for doc, t in zip(["a", "b", "a"], texts)))
    (root / "empty.csv").write_text("x,label\n")
    (root / "one_class.csv").write_text("x,label\n" + "".join(f"{i / 10},1\n" for i in range(8)))
    (root / "two_classes.csv").write_text("x,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(8)))
    return root


# command lines; {files} is the fixture's folder, {out} the case's own output folder
def trace(train: str = "train.jsonl", *extra: str, model: str = "model") -> list[str]:
    return ["trace", "--model", f"{{files}}/{model}", "--train", f"{{files}}/{train}", "--factors", "{out}/factors",
            "--prompt", "the cat", "--completion", " sat", *extra]


def value_recipe(*overrides: str) -> list[str]:
    settings = ["output.dir={out}", *overrides]
    return ["run", str(VALUE_RECIPE), *(item for setting in settings for item in ("--set", setting))]


def trace_recipe(*overrides: str) -> list[str]:
    settings = ["output.dir={out}", *overrides]
    return ["run", str(TRACE_RECIPE), *(item for setting in settings for item in ("--set", setting))]


def value(data: str, *extra: str) -> list[str]:
    return ["value", "--method", "data-oob", "--data", f"{{files}}/{data}", "--label-column", "label",
            "--out", "{out}/values.csv", *extra]


CASES = {
    "empty training file": (trace("empty.jsonl"), "empty.jsonl: no records"),
    "malformed jsonl line": (trace("malformed.jsonl"), "malformed.jsonl: line 2, column"),
    "missing column": (trace("train.jsonl", "--text-column", "body"), "no column 'body'"),
    "missing id column": (trace("train.jsonl", "--id-column", "key"), "missing id column 'key'"),
    "duplicate ids": (trace("duplicate_ids.jsonl", "--id-column", "doc"), "id 'a' is given to records 0 and 2"),
    "batch size 0": (trace("train.jsonl", "--batch-size", "0"), "--batch-size"),
    "damping lots": (trace("train.jsonl", "--damping", "lots"), "--damping"),
    "layer partitions 0": (trace("train.jsonl", "--layer-partitions", "0"), "--layer-partitions"),
    "max new tokens 0": (trace("train.jsonl", "--max-new-tokens", "0"), "--max-new-tokens: must be at least 1"),
    "top-k 0": (trace("train.jsonl", "--top-k", "0"), "--top-k: must be at least 1, not 0"),
    "top-k -3": (trace("train.jsonl", "--top-k", "-3"), "--top-k: must be at least 1, not -3"),
    "bad modules regex": (trace("train.jsonl", "--modules", "(["), "'([' is not a valid regular expression"),
    "empty completion": (trace("train.jsonl", "--completion", ""), "query 1: the completion is empty"),
    "prompt longer than the context": (trace("train.jsonl", "--prompt", LONG_PROMPT), "query 1: the prompt has"),
    "lora base relative": (trace(model="lora-relative"), "base_model_name_or_path 'checkpoints/base'"),
    "lora base hub id": (trace(model="lora-hub"), "base_model_name_or_path 'gpt2' is not a local folder"),
    "base model not a folder": (trace("train.jsonl", "--base-model", "{files}/nothing", model="lora-hub"),
                                "base_model '"),
    "base model without peft": (trace("train.jsonl", "--base-model", "{files}/model"),
                                "base_model is for a peft adapter folder"),
    "bos not a bool": (trace("train.jsonl", "--bos", "maybe"), "argument --bos: expected bool or None, got 'maybe'"),
    "recipe bos not a bool": (trace_recipe("encoding={bos: maybe}"), "encoding.bos must be bool or None"),
    "recipe encoding in a value recipe": (value_recipe("encoding={eos: true}"), "`encoding` is not used by a value"),
    "document longer than the context": (trace("train.jsonl", "--max-length", "6"),
                                         "record 0: the document has 10 tokens, more than the model's context of 6; "
                                         "set overflow to 'truncate' or 'split'"),
    "stride without split": (trace("train.jsonl", "--stride", "3"), "--stride goes with overflow 'split'"),
    "stride not less than the context": (trace("train.jsonl", "--max-length", "6", "--overflow", "split",
                                               "--stride", "6"), "stride 6 must be less than the context of 6"),
    "bad overflow": (trace("train.jsonl", "--overflow", "cut"), "argument --overflow: invalid choice: 'cut'"),
    "unknown flag": (trace("train.jsonl", "--bogus"), "llm-attrib trace: error: unrecognized arguments: --bogus"),
    "bad int": (trace("train.jsonl", "--batch-size", "x"), "argument --batch-size"),
    "missing argument": (["trace", "--model", "{files}/model"], "the following arguments are required"),
    "value empty csv": (value("empty.csv"), "empty.csv: no records"),
    "value one class": (value("one_class.csv"), "single class"),
    "value negative n_estimators": (value("two_classes.csv", "--param", "n_estimators=-5"), "'n_estimators'"),
    "recipe duplicate ids": (value_recipe("train.id=label"), "train.id 'label': id 0 is given to records 0 and"),
    "recipe negative n_estimators": (value_recipe("method.options={n_estimators: -5}"), "'n_estimators'"),
    "candidates 0": (trace("train.jsonl", "--prefilter", "bm25", "--candidates", "0"), "--candidates must be at least 1"),
    "eval without the real data": (["eval", "--data-dir", "{files}/nothing", "--benchmarks", "facts,roleplay",
                                    "--out-dir", "{out}", "--cache-dir", "{out}"],
                                   "benchmark roleplay needs gpteacher_roleplay.json"),
    "eval unknown benchmark": (["eval", "--benchmarks", "wiki", "--out-dir", "{out}"], "--benchmarks must be among"),
    "eval unknown method": (["eval", "--data-dir", "{files}", "--benchmarks", "facts", "--methods", "grad-dog",
                             "--out-dir", "{out}", "--cache-dir", "{out}"], "unknown method(s) ['grad-dog']"),
}


@pytest.mark.parametrize("argv, message", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(files, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    args = [arg.replace("{files}", str(files)).replace("{out}", str(out)) for arg in argv]
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"llm-attrib {args[0]}: error: ") and message in lines[0], lines[0]
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_the_installed_entry_point_prints_one_line_for_a_malformed_file(files, tmp_path):
    """A subprocess sees what the libraries print to the real stderr (loggers, warnings), which capsys cannot."""
    args = [arg.replace("{files}", str(files)).replace("{out}", str(tmp_path)) for arg in trace("malformed.jsonl")]
    done = subprocess.run([sys.executable, "-m", "llm_attrib.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"llm-attrib trace: error: {files}/malformed.jsonl: line 2, column 10: not valid JSON (Unterminated string "
        "starting at); fix or remove that line (JSON Lines: one object per line)"]
    assert not (tmp_path / "factors").exists()
