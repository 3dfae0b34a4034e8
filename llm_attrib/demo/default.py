"""The embedded default: a tiny GPT-2 trained on the synthetic-fact corpus, built once and cached.

The cache folder is ``<root>/demo-v2-<recipe hash>`` with ``<root>`` = ``$LLM_ATTRIB_CACHE``, else
``$XDG_CACHE_HOME/llm_attrib``, else ``~/.cache/llm_attrib``. A build happens in a hidden temporary folder that
is renamed into place only when complete, so an interrupted build never leaves a half-written cache; a changed
recipe has another hash and is built afresh.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from llm_attrib import __version__
from llm_attrib.demo.facts import FactCorpus, generate_facts
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import greedy_correct, train_causal_lm
from llm_attrib.errors import CacheMismatchError
from llm_attrib.store import apply_umask, data_fingerprint, model_fingerprint

CACHE_NAME = "demo-v2"  # v2: build records hold exact-byte fingerprints (v1 summed floats)
CORPUS_FILE = "corpus.json"
BUILD_FILE = "build.json"


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the demo model; its hash names the cache folder."""

    n_entities: int = 20
    docs_per_fact: int = 5  # >= 5 statements per fact: the quickstart's 4-of-top-5 claim must be reachable
    paraphrase_fraction: float = 0.4
    n_distractors: int = 60
    qa_fraction: float = 0.5
    corpus_seed: int = 0
    vocab_size: int = 1024
    n_positions: int = 64
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    model_seed: int = 0
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 16
    train_seed: int = 0
    num_threads: int = 1

    def digest(self) -> str:
        return data_fingerprint({"recipe": asdict(self), "cache": CACHE_NAME})[:12]


@dataclass
class DemoBundle:
    """The demo model (eval mode), its tokenizer, the corpus, and the training records ``{"id", "text"}``.

    ``info`` holds the build record: recipe, seconds taken, fraction of queries answered greedily, fingerprints.
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    corpus: FactCorpus
    train_records: list[dict[str, str]]
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


def cache_root() -> Path:
    """``$LLM_ATTRIB_CACHE``, else ``$XDG_CACHE_HOME/llm_attrib``, else ``~/.cache/llm_attrib``."""
    if os.environ.get("LLM_ATTRIB_CACHE"):
        return Path(os.environ["LLM_ATTRIB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "llm_attrib"


def training_records(corpus: FactCorpus) -> list[dict[str, str]]:
    """The corpus documents as document records ``{"id", "text"}``, in corpus order."""
    return [{"id": document["id"], "text": document["text"]} for document in corpus.documents]


def build(recipe: DemoRecipe, folder: Path, progress: bool = False) -> None:
    """Generate the corpus, train tokenizer and model, and save all three into ``folder`` (which must exist)."""
    start = time.perf_counter()
    corpus = generate_facts(recipe.n_entities, recipe.docs_per_fact, recipe.paraphrase_fraction,
                            recipe.n_distractors, recipe.corpus_seed, recipe.qa_fraction)
    texts = [d["text"] for d in corpus.documents] + [q["prompt"] + q["completion"] for q in corpus.queries]
    tokenizer = train_tokenizer(texts, recipe.vocab_size, model_max_length=recipe.n_positions)
    model = tiny_gpt2(len(tokenizer), recipe.n_positions, recipe.n_embd, recipe.n_layer, recipe.n_head,
                      recipe.model_seed, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    records = training_records(corpus)
    train_causal_lm(model, tokenizer, records, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                    seed=recipe.train_seed, progress=progress, num_threads=recipe.num_threads)
    accuracy = float(greedy_correct(model, tokenizer, corpus.queries).float().mean())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / CORPUS_FILE).write_text(corpus.to_json())
    info = {
        "recipe": asdict(recipe),
        "library_version": __version__,
        "build_seconds": round(time.perf_counter() - start, 2),
        "greedy_accuracy": accuracy,
        "model_fingerprint": model_fingerprint(model),
        "data_fingerprint": data_fingerprint(records),
    }
    (folder / BUILD_FILE).write_text(json.dumps(info, indent=2))


def _build_into_place(recipe: DemoRecipe, path: Path, progress: bool) -> None:
    """Build in a temporary sibling of ``path`` and rename it onto ``path`` (replacing any old build)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".building", dir=path.parent))
    try:
        build(recipe, staging, progress)
        apply_umask(staging)  # mkdtemp made it 0700, and some writers make their files 0600
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired / "build")
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.replace(staging, path)
        except OSError:
            if not (path / BUILD_FILE).exists():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load(path: Path) -> DemoBundle:
    """Load a built demo folder with `from_pretrained`; refuse one whose weights differ from its build record (an
    exact-byte fingerprint: the same under any thread count)."""
    info = json.loads((path / BUILD_FILE).read_text())
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    if model_fingerprint(model) != info["model_fingerprint"]:
        raise CacheMismatchError(f"{path}: the weights do not match the build record; delete the folder to rebuild")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    corpus = FactCorpus.from_json((path / CORPUS_FILE).read_text())
    return DemoBundle(model=model, tokenizer=tokenizer, corpus=corpus, train_records=training_records(corpus),
                      path=path, info=info)


def load_default(
    cache_dir: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    recipe: DemoRecipe = DemoRecipe(),
    progress: bool = False,
) -> DemoBundle:
    """The demo bundle from ``cache_dir`` (default `cache_root()`), building it first (~1 CPU minute) if absent."""
    path = Path(cache_dir or cache_root()) / f"{CACHE_NAME}-{recipe.digest()}"
    if rebuild or not (path / BUILD_FILE).exists():
        _build_into_place(recipe, path, progress)
    return load(path)
