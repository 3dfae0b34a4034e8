"""The grid's records from the real text of ``../shared/data``, full length (never the suite's 24 + 24 tokens).

Each builder returns ``n`` seeded records as text, before any tokenizer exists (the cell trains its tokenizer on
its training records, then `fit_lengths` truncates every record to the token budget):

* roleplay (`llm_attrib.evaluation.benchmarks.roleplay_records`): GPTeacher role-play, prompt = instruction (+ input) + ``"\\nAnswer:"``, completion = `` output``;
* `gsm8k`: GSM8K, prompt = question + ``"\\nAnswer:"``, completion = `` answer`` (the worked solution);
* `shakespeare`: plain documents, consecutive line-aligned passages of tiny Shakespeare (~100 tokens each).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.benchmarks import roleplay_records

Record = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    """Token budget of one record: a prompt keeps its last ``prompt`` tokens (its ``Answer:`` cue), a completion
    its first ``completion``, a document its first ``document`` tokens (BOS and EOS not counted)."""

    prompt: int = 48
    completion: int = 80
    document: int = 126

    @property
    def context(self) -> int:
        """Positions a model needs: BOS + the longest record + EOS."""
        return max(self.prompt + self.completion, self.document) + 2


def gsm8k(path: Path, n: int, seed: int) -> list[Record]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    return [{"id": f"gsm8k-{i}", "prompt": row["question"].strip() + "\nAnswer:", "completion": " " + row["answer"].strip()}
            for i, row in enumerate(rows[:n])]


PASSAGE_CHARS = 360
"""Characters per Shakespeare passage before tokenisation (~100 tokens of a 512-token BPE; `fit_lengths` cuts at 126)."""


def shakespeare(path: Path, n: int, seed: int) -> list[Record]:
    """``n`` consecutive passages (whole lines, ~`PASSAGE_CHARS` characters each) from a seeded start, shuffled."""
    lines = path.read_text().splitlines(keepends=True)
    passages: list[str] = []
    current = ""
    start = random.Random(seed).randrange(max(1, len(lines) // 2))
    for line in lines[start:]:
        current += line
        if len(current) >= PASSAGE_CHARS:
            passages.append(current.strip())
            current = ""
            if len(passages) == n:
                break
    if len(passages) < n:
        raise UserInputError(f"{path} holds fewer than {n} passages of {PASSAGE_CHARS} characters after line {start}")
    random.Random(seed + 1).shuffle(passages)
    return [{"id": f"shakespeare-{i}", "text": text} for i, text in enumerate(passages)]


SOURCES: dict[str, tuple[str, Callable[[Path, int, int], list[Record]]]] = {
    "roleplay": ("gpteacher_roleplay.json", roleplay_records),
    "gsm8k": ("gsm8k_train.jsonl", gsm8k),
    "shakespeare": ("tinyshakespeare.txt", shakespeare),
}
"""Data set name → (its file in the data folder, its builder ``(path, n, seed) -> records``)."""


def texts(records: list[Record]) -> list[str]:
    """The full text of each record (a tokenizer's training corpus)."""
    return [r["text"] if "text" in r else r["prompt"] + r["completion"] for r in records]


def _keep(tokenizer: Any, text: str, n: int, last: bool = False) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= n:
        return text
    return tokenizer.decode(ids[-n:] if last else ids[:n])


def fit_lengths(tokenizer: Any, records: list[Record], budget: Budget) -> list[Record]:
    """Each record cut to ``budget`` (a prompt from the left, a completion and a document from the right)."""
    out = []
    for r in records:
        if "text" in r:
            out.append({**r, "text": _keep(tokenizer, r["text"], budget.document)})
        else:
            out.append({**r, "prompt": _keep(tokenizer, r["prompt"], budget.prompt, last=True),
                        "completion": _keep(tokenizer, r["completion"], budget.completion)})
    return out
