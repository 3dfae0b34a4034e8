"""Real data as users have it: LoRA adapters with peft's defaults, a base model given by path, BOS/EOS as the
model was trained."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tokenizers import processors

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.cli import main
from llm_attrib.data import IGNORE_INDEX, tokenizer_adds
from tests.conftest import SENTENCES

DOCUMENT = {"text": SENTENCES[0]}
PAIR = {"prompt": "the cat sat on", "completion": " the mat"}


def with_template(tokenizer, single: str):
    """A copy of ``tokenizer`` whose special tokens are ``single`` (``"$A"``: none, as GPT-2's)."""
    other = copy.deepcopy(tokenizer)
    specials = [(t, tokenizer.convert_tokens_to_ids(t)) for t in (tokenizer.bos_token, tokenizer.eos_token)
                if t in single]
    other.backend_tokenizer.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return other


@pytest.fixture()
def no_bos(tokenizer):
    return with_template(tokenizer, "$A")


def hf_summed_loss(model, ids: list[int]) -> float:
    """Hugging Face's own loss of ``ids`` (labels = input ids, mean over the predicted tokens) × their number."""
    with torch.no_grad():
        return float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss) * (len(ids) - 1)


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



def test_a_recipe_names_the_base_model(lora_folders):
    (lora_folders / "trace.yaml").write_text("""
task: trace
model: lora-hub
base_model: base
train: {path: train.jsonl}
queries: [{prompt: "the cat sat on", completion: " the mat"}]
method: {name: grad-dot}
output: {dir: out}
""")
    assert main(["run", str(lora_folders / "trace.yaml")]) == 0
    written = json.loads((lora_folders / "out" / "scores.json").read_text())
    assert written["metadata"]["recipe"]["base_model"] == str(lora_folders / "base")
    assert len(written["queries"][0]["scores"]) == len(SENTENCES)

# ------------------------------------------------------------------------------------------------- BOS and EOS
@pytest.mark.parametrize("tokenizer_kind", ["adds BOS", "adds none"])
def test_by_default_the_attributed_loss_is_hugging_faces_loss(gpt2, tokenizer, no_bos, tokenizer_kind):
    """Defaults = Trainer on tokenizer(text) with labels = input ids: the loss the adapter attributes (minus its
    measurement, whose gradient is the one every score uses) is HF's mean loss × the predicted tokens."""
    tok = tokenizer if tokenizer_kind == "adds BOS" else no_bos
    adapter = CausalLMAdapter(gpt2, tok)
    ids = tok(DOCUMENT["text"])["input_ids"]
    encoded = adapter.encode([DOCUMENT])[0]
    assert list(encoded.input_ids) == ids and encoded.n_scored == len(ids) - 1
    loss = -float(adapter.measurements([DOCUMENT])[0])
    assert loss == pytest.approx(hf_summed_loss(gpt2, ids), rel=1e-6)  # log-probs in float32
    batch = adapter.collate([encoded])
    assert -float(adapter.log_prob(batch)[0].detach()) == pytest.approx(loss, rel=1e-6)


def test_bos_true_prepends_one_where_the_tokenizer_adds_none_and_scores_every_token(gpt2, tokenizer, no_bos):
    adapter = CausalLMAdapter(gpt2, no_bos, bos=True)
    words = no_bos(DOCUMENT["text"])["input_ids"]
    encoded = adapter.encode([DOCUMENT])[0]
    assert list(encoded.input_ids) == [no_bos.bos_token_id, *words]
    assert list(encoded.labels) == [IGNORE_INDEX, *words]  # every real token scored
    with torch.no_grad():
        log_probs = torch.log_softmax(gpt2(torch.tensor([[no_bos.bos_token_id, *words]])).logits[0], dim=-1)
    by_hand = sum(float(log_probs[t, words[t]]) for t in range(len(words)))  # position t predicts word t
    assert float(adapter.measurements([DOCUMENT])[0]) == pytest.approx(by_hand, rel=1e-6)
    # a tokenizer that adds BOS already: bos=True changes nothing; bos=False drops it
    assert CausalLMAdapter(gpt2, tokenizer, bos=True).encode([DOCUMENT]) == CausalLMAdapter(gpt2, tokenizer).encode(
        [DOCUMENT])
    assert list(CausalLMAdapter(gpt2, tokenizer, bos=False).encode([DOCUMENT])[0].input_ids) == words


def test_eos_for_documents_and_completions(gpt2, tokenizer):
    eos = tokenizer.eos_token_id
    document, pair = CausalLMAdapter(gpt2, tokenizer, eos=True).encode([DOCUMENT, PAIR])
    assert document.input_ids[-1] == eos and document.labels[-1] == eos
    assert pair.input_ids[-1] == eos and pair.labels[-1] == eos
    assert pair.n_scored == len(tokenizer(PAIR["completion"], add_special_tokens=False)["input_ids"]) + 1
    # a tokenizer that adds EOS: by default after the completion (as in tokenizer(prompt + completion)), never
    # after the prompt; eos=False leaves it out
    adds_eos = with_template(tokenizer, f"{tokenizer.bos_token} $A {tokenizer.eos_token}")
    assert tokenizer_adds(adds_eos) == (True, True) and tokenizer_adds(tokenizer) == (True, False)
    pair, document = CausalLMAdapter(gpt2, adds_eos).encode([PAIR, DOCUMENT])
    assert pair.input_ids.count(eos) == 1 and pair.labels[-1] == eos and document.labels[-1] == eos
    pair, document = CausalLMAdapter(gpt2, adds_eos, eos=False).encode([PAIR, DOCUMENT])
    assert eos not in pair.input_ids and eos not in document.input_ids


def test_the_encoding_and_what_the_tokenizer_adds_are_in_the_fingerprint(gpt2, tokenizer):
    adapters = [CausalLMAdapter(gpt2, tokenizer, **options)
                for options in ({}, {"bos": True}, {"bos": False}, {"eos": True}, {"eos": False})]
    adds_eos = with_template(tokenizer, f"{tokenizer.bos_token} $A {tokenizer.eos_token}")
    adapters.append(CausalLMAdapter(gpt2, adds_eos))  # same options, a tokenizer that adds EOS: other tokens
    assert len({adapter.fingerprint() for adapter in adapters}) == 6


def test_bos_through_the_cli(tmp_path, gpt2, no_bos, capsys):
    """--bos true scores the first word of each document: the scores change."""
    gpt2.float().save_pretrained(tmp_path / "model")
    no_bos.save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    default = trace_json(capsys, tmp_path / "model", tmp_path / "train.jsonl")
    with_bos = trace_json(capsys, tmp_path / "model", tmp_path / "train.jsonl", "--bos", "true")
    assert [r["score"] for r in default["top"]] != [r["score"] for r in with_bos["top"]]


# ------------------------------------------------------------------------------------------ longer than the context
LONG = {"id": "long", "text": " ".join(SENTENCES[:2])}
SHORT = {"text": "the cat sat"}


def test_truncate_keeps_a_prompts_bos_and_end_and_the_start_of_a_completion_or_document(gpt2, tokenizer):
    bos = tokenizer.bos_token_id
    adapter = CausalLMAdapter(gpt2, tokenizer, max_length=6, overflow="truncate")
    prompt = tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"]
    completion = tokenizer(" " + SENTENCES[1], add_special_tokens=False)["input_ids"]
    short, long_completion, document = adapter.encode([
        {"prompt": SENTENCES[0], "completion": " the mat"},
        {"prompt": "the cat", "completion": " " + SENTENCES[1]},
        {"text": SENTENCES[0]}])
    mat = tokenizer(" the mat", add_special_tokens=False)["input_ids"]
    assert list(short.input_ids) == [bos, *prompt[-(5 - len(mat)):], *mat] and short.n_scored == len(mat)
    assert list(long_completion.input_ids) == [bos, tokenizer("the cat", add_special_tokens=False)["input_ids"][-1],
                                               *completion[:4]]
    assert list(document.input_ids) == [bos, *prompt[:5]] and document.n_scored == 5
    with pytest.raises(Exception, match="set overflow to 'truncate' or 'split'"):
        CausalLMAdapter(gpt2, tokenizer, max_length=6).encode([{"text": SENTENCES[0]}])


def test_windows_score_every_token_once_and_their_measurements_are_computed_on_the_window(gpt2, tokenizer):
    adapter = CausalLMAdapter(gpt2, tokenizer, max_length=8, overflow="split", stride=3)
    ids = tokenizer(LONG["text"])["input_ids"]
    windows = adapter.split_windows([LONG, SHORT | {"id": "short"}])
    assert [w["id"] for w in windows[:2]] == ["long#0", "long#1"] and windows[-1]["id"] == "short"
    assert {w.get("record_id") for w in windows[:-1]} == {"long"}
    encoded = adapter.encode(windows[:-1])
    scored = [start + t for w, e in zip(windows, encoded) for t, label in enumerate(e.labels)
              if label != IGNORE_INDEX and (start := w["window"][0]) is not None]
    assert sorted(scored) == list(range(1, len(ids))) and all(len(e.input_ids) <= 8 for e in encoded)
    by_hand = 0.0
    for window, example in zip(windows, encoded):
        with torch.no_grad():
            log_probs = torch.log_softmax(gpt2(torch.tensor([list(example.input_ids)])).logits[0], dim=-1)
        by_hand += sum(float(log_probs[t - 1, label]) for t, label in enumerate(example.labels) if label >= 0)
    assert float(adapter.measurements(windows[:-1]).sum()) == pytest.approx(by_hand, rel=1e-6)


def test_window_scores_sum_to_the_records(gpt2, tokenizer, query_records):
    """Scores of a record's windows (each a record of its own, id "{id}#{k}") summed back by `sum_windows`, with
    per-token parts over the whole document; a record that fits keeps its id (of its type) and column."""
    from llm_attrib import InfluenceAttributor
    from llm_attrib.scores import sum_windows

    adapter = CausalLMAdapter(gpt2, tokenizer, max_length=16, overflow="split", stride=5)
    train = adapter.split_windows([LONG, SHORT | {"id": 7}])
    queries = [query_records[0], query_records[2]]
    windows = InfluenceAttributor(adapter, "identity").fit(train).score(queries, train, per_token=True)
    records = sum_windows(windows, train)
    assert records.train_ids == ["long", 7] and len(windows.train_ids) == len(train) > 2
    torch.testing.assert_close(records.values[:, 0], windows.values[:, :-1].sum(dim=1))
    torch.testing.assert_close(records.values[:, 1], windows.values[:, -1])
    n_tokens = len(tokenizer(LONG["text"])["input_ids"])
    for q in range(len(queries)):
        assert records.per_token[q][0].shape == (n_tokens,)
        assert float(records.per_token[q][0].sum()) == pytest.approx(float(records.values[q, 0]), rel=1e-6)


def test_split_through_the_cli(tmp_path, gpt2, tokenizer, capsys):
    """--overflow split traces a data set with a record longer than --max-length: its windows are reported."""
    gpt2.float().save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [LONG, {"id": "s", **SHORT}]))
    report = trace_json(capsys, tmp_path / "model", tmp_path / "train.jsonl", "--max-length", "10",
                        "--overflow", "split", "--stride", "4")
    assert {r["train_id"] for r in report["top"]} <= {"long#0", "long#1", "long#2", "long#3", "long#4", "long#5", "s"}


def test_split_in_a_recipe_reports_windows_and_their_sums_per_record(tmp_path, gpt2, tokenizer):
    """A document longer than the model's context (64) in a trace recipe: scored as windows, summed per record."""
    gpt2.float().save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    records = [{"id": "all", "text": " ".join(SENTENCES)}, {"id": "cat", "text": SENTENCES[0]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "trace.yaml").write_text(f"""
task: trace
model: model
train: {{path: train.jsonl, id: id}}
queries: [{{prompt: "the cat sat on", completion: " the mat"}}]
method: {{name: grad-dot}}
encoding: {{overflow: split, stride: 32}}
output: {{dir: out}}
""")
    assert main(["run", str(tmp_path / "trace.yaml")]) == 0
    written = json.loads((tmp_path / "out" / "scores.json").read_text())
    n = len(written["train_ids"]) - 1
    assert n >= 2 and written["train_ids"] == [f"all#{k}" for k in range(n)] + ["cat"]
    assert written["record_ids"] == ["all", "cat"]
    scores, summed = written["queries"][0]["scores"], written["queries"][0]["record_scores"]
    assert summed == pytest.approx([sum(scores[:n]), scores[n]], rel=1e-6)


# ---------------------------------------------------------------------------------------------------------- ids
@pytest.mark.parametrize("ids", [[f"doc-{i}" for i in range(len(SENTENCES))], [10 * i for i in range(len(SENTENCES))]],
                         ids=["strings", "ints"])
def test_an_id_column_is_used_and_ids_keep_their_type_in_trace_recipe_and_audit_json(tmp_path, gpt2, tokenizer,
                                                                                    capsys, ids):
    """No --id-column and no recipe `id` key: the data set's own `id` column names the records, with its type, in
    trace --json, a trace recipe's scores.json and audit.json alike."""
    gpt2.float().save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    works = ["cats" if i < 2 else None for i in range(len(SENTENCES))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"id": id_, "text": s, "work": w}) + "\n"
                                                  for id_, s, w in zip(ids, SENTENCES, works)))
    traced = trace_json(capsys, tmp_path / "model", tmp_path / "train.jsonl")
    assert {r["train_id"] for r in traced["top"]} <= set(ids) and len(traced["top"]) == 3
    (tmp_path / "trace.yaml").write_text("""
task: trace
model: model
train: {path: train.jsonl}
queries: [{prompt: "the cat sat on", completion: " the mat"}]
method: {name: grad-dot}
output: {dir: out}
""")
    assert main(["run", str(tmp_path / "trace.yaml")]) == 0
    written = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert written["train_ids"] == ids
    assert main(["audit", "--model", str(tmp_path / "model"), "--train", str(tmp_path / "train.jsonl"),
                 "--work-column", "work", "--prompt", "the cat sat on", "--completion", " the mat", "--draws", "199",
                 "--curvature", "identity", "--output-dir", str(tmp_path / "audit")]) == 0
    audited = json.loads((tmp_path / "audit" / "audit.json").read_text())
    listed = [r["train_id"] for finding in audited["findings"] for r in finding["top_records"]]
    assert listed and set(listed) <= set(ids)
