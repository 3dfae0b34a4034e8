"""The embedded demo: ground truth of the fact corpus, tokenizer, deterministic training, the measurement, cache."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.data import collate, encode_record
from llm_attrib.demo import default as demo_default
from llm_attrib.demo import (
    DemoRecipe,
    cache_root,
    generate_facts,
    load_default,
    tiny_gpt2,
    tiny_llama,
    train_causal_lm,
    train_tokenizer,
)
from llm_attrib.demo.facts import ATTRIBUTE_BY_NAME, DOCUMENT_KINDS, words
from llm_attrib.demo.training import torch_threads

TINY = dict(n_entities=4, docs_per_fact=3, paraphrase_fraction=0.4, n_distractors=10, seed=7)
TINY_RECIPE = DemoRecipe(n_entities=3, docs_per_fact=2, n_distractors=5, vocab_size=600, n_positions=64, n_embd=32,
                         n_layer=1, n_head=2, epochs=2, batch_size=8)


def log_likelihoods(model, tokenizer, records, batch_size=32, **options):
    """The adapter's measurement of ``records``: the one every attribution score refers to."""
    return CausalLMAdapter(model, tokenizer, modules="all", **options).measurements(records, batch_size)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def corpus():
    return generate_facts(**TINY)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    texts = [d["text"] for d in corpus.documents] + [q["prompt"] + q["completion"] for q in corpus.queries]
    return train_tokenizer(texts, vocab_size=600, model_max_length=64)


def gpt2(tokenizer, seed=0):
    return tiny_gpt2(len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, seed=seed,
                     pad_token_id=tokenizer.pad_token_id)


def llama(tokenizer, seed=0):
    return tiny_llama(len(tokenizer), max_position_embeddings=64, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, seed=seed,
                      pad_token_id=tokenizer.pad_token_id)


def documents(corpus):
    return [{"text": d["text"]} for d in corpus.documents]


# --- corpus ---------------------------------------------------------------------------------------------------

def test_corpus_is_a_function_of_its_seed():
    assert generate_facts(**TINY).to_json() == generate_facts(**TINY).to_json()
    assert generate_facts(**{**TINY, "seed": 8}).to_json() != generate_facts(**TINY).to_json()


def test_every_query_has_relevant_documents_that_state_its_fact(corpus):
    assert len(corpus.queries) == TINY["n_entities"] * len(ATTRIBUTE_BY_NAME)
    for query in corpus.queries:
        fact = corpus.facts[query["fact_id"]]
        assert fact["entity"] in query["prompt"] and query["completion"] == " " + fact["value"]
        relevant = corpus.relevant(query["id"])
        assert len(relevant) >= TINY["docs_per_fact"]
        for document in corpus.documents:
            states_it = fact["entity"] in document["text"] and f" {fact['value']}" in document["text"]
            if document["id"] in relevant:
                assert states_it, document
                assert document["kind"] != "distractor"


def test_paraphrases_avoid_the_query_keywords_and_direct_statements_use_them(corpus):
    assert corpus.paraphrases
    kinds = {d["kind"] for d in corpus.documents}
    assert kinds == set(DOCUMENT_KINDS)
    for document in corpus.documents:
        fact = corpus.facts[document["fact_ids"][0]]
        template_words = words(document["text"]) - words(fact["entity"]) - words(fact["value"])
        keywords = ATTRIBUTE_BY_NAME[fact["attribute"]].keywords
        if document["kind"] == "paraphrase":
            assert not template_words & keywords, document
        if document["kind"] == "direct":
            assert template_words & keywords, document


def test_corpus_survives_json(corpus):
    again = type(corpus).from_json(corpus.to_json())
    assert again.documents == corpus.documents and again.queries == corpus.queries
    assert all(again.relevant(q["id"]) == corpus.relevant(q["id"]) for q in corpus.queries)


# --- tokenizer ------------------------------------------------------------------------------------------------

def test_tokenizer_round_trips_and_keeps_the_completion_boundary(corpus, tokenizer):
    for text in [d["text"] for d in corpus.documents] + ["Unseen words: Zyxwv 2025 é!"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    with_special = tokenizer("hello there")["input_ids"]
    assert with_special[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in with_special
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    for query in corpus.queries:
        joint = tokenizer(query["prompt"] + query["completion"])["input_ids"]
        split = tokenizer(query["prompt"])["input_ids"] + tokenizer(query["completion"], add_special_tokens=False)["input_ids"]
        assert joint == split


# --- training and measurement ---------------------------------------------------------------------------------

def test_training_is_bitwise_reproducible_and_lowers_the_loss(corpus, tokenizer):
    records = documents(corpus)[:32]
    kwargs = dict(epochs=2, lr=3e-3, batch_size=8)
    before = log_likelihoods(gpt2(tokenizer), tokenizer, records).sum()
    seen = []
    hook = lambda epoch, model, step_size, optimizer: seen.append((epoch, model.training, step_size))
    first = train_causal_lm(gpt2(tokenizer), tokenizer, records, seed=1, on_epoch_end=hook, **kwargs)
    second = train_causal_lm(gpt2(tokenizer), tokenizer, records, seed=1, **kwargs)
    assert seen == [(1, True, pytest.approx(3e-3 * 4)), (2, True, pytest.approx(3e-3 * 4))]  # 32 records / 8
    other = train_causal_lm(gpt2(tokenizer), tokenizer, records, seed=2, **kwargs)
    first_state, second_state, other_state = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)
    assert not all(torch.equal(first_state[name], other_state[name]) for name in first_state)
    assert log_likelihoods(first, tokenizer, records).sum() > before + 50


@pytest.mark.parametrize("make_model", [gpt2, llama])
def test_log_likelihoods_match_a_hand_computation_for_any_batching(corpus, tokenizer, make_model):
    model = make_model(tokenizer)
    records = corpus.queries[:5] + documents(corpus)[:4]
    expected = []
    for record in records:
        encoded = encode_record(tokenizer, record, max_length=64)
        ids = torch.tensor([encoded.input_ids])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        expected.append(sum(float(log_probs[t - 1, ids[0, t]]) for t, label in enumerate(encoded.labels) if label != -100))
    expected = torch.tensor(expected, dtype=torch.float64)
    for batch_size, side in [(1, "right"), (4, "right"), (4, "left"), (len(records), "left")]:
        got = log_likelihoods(model, tokenizer, records, batch_size, padding_side=side)
        assert got.shape == (len(records),)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    assert (expected < 0).all()


def test_log_likelihoods_score_only_the_completion(corpus, tokenizer):
    model = gpt2(tokenizer)
    query = corpus.queries[0]
    with_eos = log_likelihoods(model, tokenizer, [query], eos=True)
    without = log_likelihoods(model, tokenizer, [query])
    batch = collate([encode_record(tokenizer, query, max_length=64)], pad_token_id=tokenizer.pad_token_id)
    n_completion = len(tokenizer(query["completion"], add_special_tokens=False)["input_ids"])
    assert int((batch.labels != -100).sum()) == n_completion
    assert with_eos < without  # one more scored token, log-prob < 0


# --- cache ----------------------------------------------------------------------------------------------------

def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_ATTRIB_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("LLM_ATTRIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "llm_attrib"


def test_interrupted_build_leaves_nothing(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_default, "train_causal_lm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_default(tmp_path, recipe=TINY_RECIPE)
    assert list(tmp_path.iterdir()) == []


def test_cached_build_reloads_identically_and_rebuilds_on_a_new_recipe(tmp_path):
    built = load_default(tmp_path, recipe=TINY_RECIPE)
    assert [p.name for p in tmp_path.iterdir()] == [built.path.name]
    assert built.path.name.startswith("demo-v2-") and not built.model.training
    reloaded = load_default(tmp_path, recipe=TINY_RECIPE)
    assert reloaded.info == built.info and reloaded.corpus.documents == built.corpus.documents
    batch = collate([encode_record(built.tokenizer, q, max_length=64) for q in built.corpus.queries[:4]],
                    pad_token_id=built.tokenizer.pad_token_id)
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    with torch.no_grad():
        assert torch.equal(built.model(**inputs).logits, reloaded.model(**inputs).logits)
    assert reloaded.tokenizer(built.train_records[0]["text"])["input_ids"] == built.tokenizer(built.train_records[0]["text"])["input_ids"]
    rebuilt = load_default(tmp_path, recipe=TINY_RECIPE, rebuild=True)
    assert rebuilt.info["model_fingerprint"] == built.info["model_fingerprint"]
    assert [p.name for p in tmp_path.iterdir()] == [built.path.name]
    assert DemoRecipe(**{**TINY_RECIPE.__dict__, "epochs": 1}).digest() != TINY_RECIPE.digest()
