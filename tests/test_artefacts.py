"""Artefacts on disk: exact fingerprints, checksums, no pickle, umask modes, stale temp files, resume after kill -9,
and save_pretrained/from_pretrained of the text baselines and the prefilter."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.text import BM25Attributor, RandomAttributor, TfidfAttributor
from llm_attrib.data import Columns
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.attributors.prefilter import Prefilter
from llm_attrib.store import (
    DIR_MODE,
    FILE_MODE,
    data_fingerprint,
    load_tensors,
    model_fingerprint,
    remove_stale_temps,
    save_tensors,
    tensors_fingerprint,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _threads(n: int, compute):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return compute()
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------------ fingerprints
def test_fingerprints_hash_exact_bytes_whatever_the_threads_layout_or_copy(gpt2, tmp_path):
    big = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)) * 1e3  # a parallel sum's last digits vary
    matrix = torch.randn(300, 200, dtype=torch.float64)
    one = _threads(1, lambda: (tensors_fingerprint({"big": big}), model_fingerprint(gpt2)))
    two = _threads(2, lambda: (tensors_fingerprint({"big": big}), model_fingerprint(gpt2)))
    assert one == two
    transposed = matrix.t()
    assert not transposed.is_contiguous()
    assert tensors_fingerprint({"m": transposed}) == tensors_fingerprint({"m": transposed.contiguous()})
    assert data_fingerprint([transposed]) == data_fingerprint([transposed.contiguous()])
    save_tensors(tmp_path / "m.safetensors", {"m": transposed}, {"kind": "test"})
    reloaded, _ = load_tensors(tmp_path / "m.safetensors")
    assert tensors_fingerprint(reloaded) == tensors_fingerprint({"m": transposed})
    gpt2.save_pretrained(tmp_path / "model")
    from transformers import AutoModelForCausalLM

    assert model_fingerprint(AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float64)) == one[1]
    # exact: one ulp, another shape, or another dtype of equal values is another fingerprint
    nudged = matrix.clone()
    nudged[7, 3] = torch.nextafter(nudged[7, 3], torch.tensor(np.inf, dtype=torch.float64))
    variants = (matrix, nudged, matrix.reshape(200, 300), torch.arange(6.0), torch.arange(6.0, dtype=torch.float64))
    assert len({tensors_fingerprint({"m": m}) for m in variants}) == len(variants)


def test_the_demo_build_record_holds_under_another_thread_count(tmp_path):
    """A demo built while 2 threads run is loaded with 1 (the quickstart's cache refused this before)."""
    from llm_attrib.demo.default import DemoRecipe, load, load_default

    recipe = DemoRecipe(n_entities=3, docs_per_fact=1, n_distractors=2, vocab_size=200, n_embd=16, n_layer=1,
                        n_head=2, epochs=1, num_threads=2)
    built = _threads(2, lambda: load_default(tmp_path, recipe=recipe))
    loaded = _threads(1, lambda: load(built.path))
    assert loaded.info["model_fingerprint"] == model_fingerprint(built.model) == model_fingerprint(loaded.model)
    assert built.path.stat().st_mode & 0o777 == DIR_MODE  # not mkdtemp's 0700
    assert {p.stat().st_mode & 0o777 for p in built.path.rglob("*") if p.is_file()} == {FILE_MODE}


# ----------------------------------------------------------------------------------------- what a cache covers
def test_factors_of_prompt_completion_records_are_refused_for_the_same_texts_as_documents(gpt2, tokenizer,
                                                                                          query_records, tmp_path):
    adapter = CausalLMAdapter(gpt2, tokenizer)
    documents = [{"text": q["prompt"] + q["completion"]} for q in query_records]
    pairs, docs = adapter.encode(query_records), adapter.encode(documents)
    assert [e.input_ids for e in pairs] == [e.input_ids for e in docs]  # the same tokens, other scored ones
    InfluenceAttributor(adapter, "kfac", fisher="empirical", cache_dir=tmp_path).fit(query_records)
    with pytest.raises(CacheMismatchError, match="data"):
        InfluenceAttributor(adapter, "kfac", fisher="empirical", cache_dir=tmp_path).fit(documents)
    eos = CausalLMAdapter(gpt2, tokenizer, eos=True)
    assert eos.fingerprint() != adapter.fingerprint()  # EOS handling, like the tracked layers, is the model's key
    assert CausalLMAdapter(gpt2, tokenizer, modules="attention").fingerprint() != adapter.fingerprint()


def _factor_file(gpt2, tokenizer, train_records, folder: Path) -> Path:
    InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", fisher="empirical", cache_dir=folder
                        ).fit(train_records)
    return folder / "ekfac-factors.safetensors"


def test_flipped_bytes_in_a_factor_file_are_refused(gpt2, tokenizer, train_records, tmp_path):
    path = _factor_file(gpt2, tokenizer, train_records, tmp_path)
    data = bytearray(path.read_bytes())
    for position in range(len(data) - 1000, len(data), 7):  # inside the last tensors' values
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheMismatchError, match="corrupted \\(checksum mismatch\\); delete it and rerun"):
        InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", fisher="empirical", cache_dir=tmp_path
                            ).fit(train_records)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_truncated_or_garbage_factor_file_is_a_one_line_error(gpt2, tokenizer, train_records, tmp_path, damage):
    path = _factor_file(gpt2, tokenizer, train_records, tmp_path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CacheMismatchError) as raised:
        InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", fisher="empirical", cache_dir=tmp_path
                            ).fit(train_records)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and "delete it and rerun" in message


def test_the_cli_reports_a_truncated_factor_file_in_one_line(gpt2, tokenizer, train_records, tmp_path, capsys):
    from llm_attrib.cli import main

    model_dir, train_file, factors = tmp_path / "model", tmp_path / "train.jsonl", tmp_path / "factors"
    gpt2.float().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    train_file.write_text("".join(json.dumps(r) + "\n" for r in train_records))
    factors.mkdir()
    (factors / "ekfac-factors.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\"")
    status = main(["trace", "--model", str(model_dir), "--train", str(train_file), "--prompt", "the cat sat on",
                   "--completion", " the mat", "--factors", str(factors)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert status == 2 and len(errors) == 1 and "is corrupted" in errors[0], errors


# ------------------------------------------------------------------------------------------------- no pickle
class _Payload:
    """Unpickling this writes ``marker``: what a crafted cache file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_crafted_cache_never_runs_code(gpt2, tokenizer, train_records, query_records, tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    factors = tmp_path / "factors"
    factors.mkdir()
    (factors / "prefilter-bm25.pkl").write_bytes(payload)  # where the old prefilter cache lived: ignored
    fitted = Prefilter(index="bm25", candidates=2).fit_or_load(factors / "prefilter-bm25.safetensors", train_records)
    assert fitted.select(query_records).shape == (len(query_records), 2)
    for name in ("prefilter-tfidf.safetensors", "ekfac-factors.safetensors"):  # a payload under today's names
        (factors / name).write_bytes(payload)
    with pytest.raises(CacheMismatchError, match="corrupted"):
        Prefilter(index="tfidf").fit_or_load(factors / "prefilter-tfidf.safetensors", train_records)
    with pytest.raises(CacheMismatchError, match="corrupted"):
        InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", cache_dir=factors).fit(train_records)
    # a valid safetensors file whose tensor bytes are a pickle is data, never unpickled
    save_file({"index/data": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, str(factors / "x.safetensors"),
              metadata={"llm_attrib": json.dumps({"kind": "prefilter-bm25"})})
    with pytest.raises(CacheMismatchError):
        Prefilter(index="bm25").load(factors / "x.safetensors", train_records)
    assert not marker.exists()


def test_no_module_pickles_or_loads_unguarded():
    """No pickle or joblib artefacts in the library or the benchmarks; torch.load only with weights_only=True."""
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.|\bjoblib\.(load|dump)\b|\bcloudpickle\b|allow_pickle=True"
                         r"|torch\.load\((?![^)]*weights_only=True)")
    offenders = [f"{path.relative_to(REPO)}:{n}" for folder in ("llm_attrib", "eval")
                 for path in (REPO / folder).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert offenders == []


# ----------------------------------------------------------------------------------------- modes, temp files
def test_artefacts_follow_the_umask(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, torch
        from llm_attrib.store import save_tensors, write_json
        save_tensors({str(tmp_path / 'a.safetensors')!r}, {{"x": torch.ones(2)}}, {{"kind": "test"}})
        write_json({str(tmp_path / 'b.json')!r}, {{"a": 1}})
    """)
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        subprocess.run([sys.executable, "-c", script], check=True, umask=umask, cwd=REPO)
        assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(mode)}, oct(umask)


def test_only_dead_processes_temp_files_are_removed(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    host = re.sub(r"\W", "_", socket.gethostname())
    dead = tmp_path / f".a.safetensors.{host}-{done.pid}.k2j3h4.tmp"
    alive = tmp_path / f".a.safetensors.{host}-{os.getpid()}.q9w8e7.tmp"
    elsewhere = tmp_path / f".a.safetensors.otherhost-{done.pid}.z1x2c3.tmp"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"half a file")
    write_json(tmp_path / "b.json", {})  # the first write into a folder cleans it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, "b.json"])
    assert remove_stale_temps(tmp_path) == []


# -------------------------------------------------------------------------------------- kill -9, then resume
RUN = """
import json, os, signal, sys
import torch
from llm_attrib import store
from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from safetensors.torch import save_file

torch.set_num_threads(1)
model_dir, cache_dir, output_dir, out, kill_after = sys.argv[1:6]
records = json.loads(open(os.path.join(model_dir, "records.json")).read())
saved, computed = [], []
original_save = store.save_file


def save_then_maybe_die(tensors, path, metadata=None):
    original_save(tensors, path, metadata=metadata)
    if os.path.basename(path).startswith(".part"):
        saved.append(path)
        if len(saved) == int(kill_after) + 1:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-save: its temp file is written, not yet renamed


store.save_file = save_then_maybe_die
original_chunk = InfluenceAttributor._score_chunk
InfluenceAttributor._score_chunk = lambda self, start, *a, **k: computed.append(start) or original_chunk(
    self, start, *a, **k)
adapter = CausalLMAdapter.from_pretrained(model_dir)
attributor = InfluenceAttributor(adapter, "ekfac", batch_size=2, cache_dir=cache_dir).fit(records["train"])
scores = attributor.score(records["queries"], records["train"], output_dir=output_dir)
save_file({"values": scores.values.contiguous()}, out)
print(json.dumps({"computed": computed}))
"""


def test_a_run_killed_while_writing_resumes_from_its_chunks_bitwise_equal(gpt2, tokenizer, train_records,
                                                                            query_records, tmp_path):
    model_dir = tmp_path / "model"
    gpt2.float().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "records.json").write_text(json.dumps({"train": train_records, "queries": query_records}))
    script = tmp_path / "run.py"
    script.write_text(RUN)

    def run(name: str, kill_after: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(model_dir), str(tmp_path / f"{name}-factors"),
                               str(tmp_path / f"{name}-chunks"), str(tmp_path / f"{name}.safetensors"),
                               str(kill_after)], capture_output=True, text=True, cwd=REPO)

    killed = run("resumed", kill_after=2)  # 8 records in chunks of 2: 2 of 4 chunks finished, the 3rd mid-write
    assert killed.returncode == -9, killed.stderr[-2000:]
    chunks = tmp_path / "resumed-chunks"
    assert len(list(chunks.glob("part*.safetensors"))) == 2 and len(list(chunks.glob(".part*.tmp"))) == 1
    assert (tmp_path / "resumed-factors" / "ekfac-factors.safetensors").exists()

    resumed = run("resumed", kill_after=99)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["computed"] == [4, 6]  # chunks 0 and 2 were loaded
    whole = run("whole", kill_after=99)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert json.loads(whole.stdout.splitlines()[-1])["computed"] == [0, 2, 4, 6]
    expected, got = (load_file(str(tmp_path / f"{name}.safetensors"))["values"] for name in ("whole", "resumed"))
    assert torch.equal(got, expected)
    for folder in ("resumed-chunks", "resumed-factors"):
        assert not [p.name for p in (tmp_path / folder).iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------- text baselines, prefilter
@pytest.mark.parametrize("make", [lambda: RandomAttributor(seed=3), TfidfAttributor,
                                  lambda: BM25Attributor(k1=1.2, b=0.5)])
def test_text_attributors_reload_to_bitwise_equal_scores(make, train_records, query_records, tmp_path):
    attributor = make().fit(train_records)
    attributor.save_pretrained(tmp_path)
    reloaded = type(attributor).from_pretrained(tmp_path)
    assert reloaded.config == attributor.config and reloaded.is_fitted
    expected, got = attributor.score(query_records, train_records), reloaded.score(query_records, train_records)
    assert torch.equal(got.values, expected.values) and got.train_ids == expected.train_ids
    assert got.method == attributor.name == attributor.kind
    from llm_attrib.attributors import load_attributor

    assert torch.equal(load_attributor(tmp_path).score(query_records).values, expected.values)
    with pytest.raises(CacheMismatchError, match="columns"):
        type(attributor).from_pretrained(tmp_path, columns=Columns(text="body"))
    with pytest.raises(UserInputError, match="differ from those given to fit"):
        reloaded.score(query_records, train_records[:-1])


def test_tfidf_keeps_scikit_learns_cosine_scores(train_records, query_records):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from llm_attrib.data import record_text

    vectorizer = TfidfVectorizer()
    index = vectorizer.fit_transform([record_text(r) for r in train_records])
    expected = (vectorizer.transform([record_text(q) for q in query_records]) @ index.T).toarray()
    got = TfidfAttributor().fit(train_records).score(query_records, train_records).values
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_text_attributors_refuse_bad_options_and_scoring_before_fit(query_records):
    with pytest.raises(UserInputError, match="b must be between 0 and 1"):
        BM25Attributor(b=2.0)
    with pytest.raises(UserInputError, match="unknown option"):
        TfidfAttributor(ngram_range=(1, 2))
    with pytest.raises(UserInputError, match="call fit"):
        TfidfAttributor().score(query_records)


@pytest.mark.parametrize("kind", ["tfidf", "bm25"])
def test_a_prefilter_reloads_to_bitwise_equal_selections_and_scores(kind, gpt2, tokenizer, train_records,
                                                                    query_records, tmp_path):
    from llm_attrib.attributors import load_attributor

    prefilter = Prefilter(index=kind, candidates=3).fit(train_records)
    directory = prefilter.save_pretrained(tmp_path / "index")
    assert sorted(p.name for p in directory.iterdir()) == ["attributor_config.json", "attributor_state.safetensors"]
    reloaded = Prefilter.from_pretrained(directory)
    assert reloaded.config == prefilter.config
    assert torch.equal(reloaded.select(query_records), prefilter.select(query_records))
    torch.testing.assert_close(reloaded.index.score(query_records).values, prefilter.index.score(query_records).values,
                               rtol=0, atol=0)
    adapter = CausalLMAdapter(gpt2, tokenizer)
    wrapped = prefilter.around(InfluenceAttributor(adapter, "identity").fit(train_records))
    expected = wrapped.score(query_records, train_records).values
    wrapped.save_pretrained(tmp_path / "wrapped")  # the attributor it narrows goes to wrapped/attributor/
    again = load_attributor(tmp_path / "wrapped", adapter)
    assert isinstance(again.attributor, InfluenceAttributor)
    assert torch.equal(again.score(query_records, train_records).values, expected)
    with pytest.raises(CacheMismatchError, match="columns"):
        Prefilter.from_pretrained(directory, columns=Columns(text="body"))
