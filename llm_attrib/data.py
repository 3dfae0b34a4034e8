"""Records → token ids with label masks → padded batches; loading local files with `datasets`.

A *record* is a mapping. Two shapes are understood (column names configurable through `Columns`):

* prompt/completion (``{"prompt": ..., "completion": ...}``): only completion tokens are scored;
* document (``{"text": ...}``): every token after the first is scored.

Special tokens (`EncodingConfig`): by default a record gets the ones the tokenizer adds to a text, as when a model
is fine-tuned with ``Trainer`` on ``tokenizer(text)`` and labels = input ids; for a prompt/completion record the
tokenizer's BOS goes before the prompt and its EOS after the completion. ``bos``/``eos`` = True put one there
where the tokenizer adds none, False leave it out.

An `Encoded` example holds ``input_ids`` and ``labels`` of the same length, ``labels[t] = input_ids[t]`` where
token ``t`` is scored and ``IGNORE_INDEX`` (-100) elsewhere. Token ``t`` is predicted from tokens ``< t``, so
the scored quantity is ``Σ_{t: labels[t] != -100} log Pr(input_ids[t] | input_ids[:t])``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Mapping, Sequence

import torch

from llm_attrib.config import Config, ConfigError, at_least, option
from llm_attrib.errors import UserInputError

IGNORE_INDEX = -100
WINDOW = "window"
"""Key of a window record (`split_windows`): ``[start, stop, first_scored]`` token positions in its document."""

DATA_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}


@dataclass(frozen=True)
class Columns:
    """Names of the record fields: a record is prompt/completion if it has both, else a document."""

    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"
    id: str | None = None


@dataclass(frozen=True)
class EncodingConfig(Config):
    """How records become tokens beyond the tokenizer's own text encoding (CLI ``--bos``, recipe ``encoding.bos`` …);
    part of the adapter's fingerprint."""

    bos: bool | None = option(None, "BOS first: true prepends it where the tokenizer adds none (then every real "
                                    "token is scored), false leaves it out; none: as the tokenizer adds it")
    eos: bool | None = option(None, "EOS last (after a completion): true appends it where the tokenizer adds none, "
                                    "false leaves it out; none: as the tokenizer adds it")
    overflow: str = option("refuse", "a record longer than the context: refuse it; truncate it (a prompt keeps its "
                                     "BOS and its end, a completion and a document their start); or split a document "
                                     "into overlapping windows, scored each and summed per record",
                           choices=("refuse", "truncate", "split"))
    stride: int | None = option(None, "split: tokens from one window's start to the next's, less than the context "
                                      "(default: half of it); the overlap is context only", check=at_least(1))

    def validate(self) -> None:
        if self.stride is not None and self.overflow != "split":
            raise ConfigError("stride", f"goes with overflow 'split', not {self.overflow!r}")


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ``input_ids`` and ``labels`` (``-100`` = not scored), same length."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def n_scored(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class Batch:
    """A padded batch. All tensors ``[B, T]``; padding has ``attention_mask == 0`` and label ``-100``.

    ``position_ids`` count real tokens only, so left and right padding give the same positions.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids, self.labels)))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def record_text(record: Mapping[str, Any], columns: Columns = Columns(), separator: str = " ") -> str:
    """A record's text: prompt and completion joined by ``separator``, or the document's text."""
    if columns.prompt in record and columns.completion in record:
        return f"{record[columns.prompt]}{separator}{record[columns.completion]}"
    if columns.text in record:
        return str(record[columns.text])
    raise UserInputError(
        f"record has neither '{columns.text}' nor '{columns.prompt}'/'{columns.completion}': {sorted(record)}"
    )


def record_ids(records: Sequence[Any], id_key: str | None = "id", start: int = 0) -> list[Any]:
    """Each record's ``id_key`` field where records are mappings that have it, else its index (counted from
    ``start``, the first record's index in the whole data set)."""
    ids = []
    for index in range(len(records)):
        record = records[index]
        ids.append(record[id_key] if id_key and isinstance(record, Mapping) and id_key in record else start + index)
    return ids


def table_records(table: Iterable[Mapping[str, Any]], id_column: str | None = None,
                  where: str = "data") -> list[dict[str, Any]]:
    """Rows as dicts with an ``id``: the ``id_column`` value, else the row number. An id used twice is refused."""
    records = [{**row, "id": row[id_column] if id_column else index} for index, row in enumerate(table)]
    if id_column:
        check_unique_ids([record["id"] for record in records], f"{where}: column '{id_column}'")
    return records


def check_unique_ids(ids: Sequence[Any], where: str) -> None:
    """Refuse an id given to two records, naming it and both records (counted from 0)."""
    first: dict[Any, int] = {}
    for index, id_ in enumerate(ids):
        key = id_ if isinstance(id_, Hashable) else repr(id_)
        if key in first:
            raise UserInputError(f"{where}: id {id_!r} is given to records {first[key]} and {index} (counting from 0); "
                                 "give each record its own id")
        first[key] = index


def _token_ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def tokenizer_adds(tokenizer: Any) -> tuple[bool, bool]:
    """Whether the tokenizer puts BOS first and EOS last when it encodes a text with its special tokens."""
    special, plain = _token_ids(tokenizer, "a", True), _token_ids(tokenizer, "a", False)
    adds = [token is not None and special[end:][:1] == [token] and plain[end:][:1] != [token]
            for token, end in ((tokenizer.bos_token_id, 0), (tokenizer.eos_token_id, -1))]
    return adds[0], adds[1]


def _special_id(tokenizer: Any, name: str) -> int:
    token = getattr(tokenizer, f"{name}_token_id")
    if token is None:
        raise UserInputError(f"{name}=True but the tokenizer has no {name.upper()} token; set tokenizer.{name}_token "
                             f"or drop the option")
    return int(token)


def with_bos(tokenizer: Any, ids: list[int], bos: bool | None) -> list[int]:
    """``ids`` (the tokenizer's own encoding, special tokens included) with a BOS first (``bos=True``, added where
    missing), without the one the tokenizer adds (False), or as they are (None)."""
    if bos is None:
        return ids
    if bos:
        token = _special_id(tokenizer, "bos")
        return ids if ids[:1] == [token] else [token, *ids]
    return ids[1:] if tokenizer_adds(tokenizer)[0] and ids[:1] == [tokenizer.bos_token_id] else ids


def with_eos(tokenizer: Any, ids: list[int], eos: bool) -> list[int]:
    """``ids`` ending with one EOS (``eos=True``, added where missing), or without the one there (False)."""
    if eos:
        token = _special_id(tokenizer, "eos")
        return ids if ids[-1:] == [token] else [*ids, token]
    return ids[:-1] if ids[-1:] == [tokenizer.eos_token_id] and tokenizer_adds(tokenizer)[1] else ids


def prompt_token_ids(tokenizer: Any, prompt: str, chat_template: bool = False, bos: bool | None = None) -> list[int]:
    """The prompt's token ids: the tokenizer's encoding with its BOS but never an EOS, or its chat template (user turn
    + generation prompt); a BOS as ``bos`` says (`with_bos`)."""
    if not chat_template:
        return with_bos(tokenizer, with_eos(tokenizer, _token_ids(tokenizer, prompt, True), False), bos)
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserInputError("chat_template=True but the tokenizer has no chat template; set one or drop the option")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return with_bos(tokenizer, list(ids["input_ids"] if isinstance(ids, Mapping) else ids), bos)


def encode_pair(
    tokenizer: Any,
    prompt: str,
    completion: str,
    *,
    max_length: int,
    chat_template: bool = False,
    encoding: EncodingConfig = EncodingConfig(),
    where: str = "record",
) -> Encoded:
    """Tokenise ``prompt`` and ``completion`` separately and concatenate them, so the boundary is exact.

    The prompt gets the tokenizer's BOS (or its chat template, as a user turn with the generation prompt), the
    completion its EOS (both as ``encoding`` says, see the module docstring); completion tokens and that EOS are
    the only ones scored.
    """
    if not isinstance(completion, str) or not completion.strip():
        raise UserInputError(
            f"{where}: the completion is empty; give a non-empty completion (or omit it to generate one)"
        )
    if not isinstance(prompt, str):
        raise UserInputError(f"{where}: the prompt must be a string, got {type(prompt).__name__}")
    prompt_ids = prompt_token_ids(tokenizer, prompt, chat_template, encoding.bos)
    completion_ids = _token_ids(tokenizer, completion, add_special_tokens=False)
    if tokenizer_adds(tokenizer)[1] if encoding.eos is None else encoding.eos:
        completion_ids = with_eos(tokenizer, completion_ids, True)
    if not prompt_ids:
        raise UserInputError(
            f"{where}: the prompt tokenises to nothing and the tokenizer adds no BOS token, so the first completion "
            "token has no context; give a non-empty prompt (or bos=True)"
        )
    if encoding.overflow == "truncate" and len(prompt_ids) + len(completion_ids) > max_length:
        prompt_ids, completion_ids = _truncate_pair(tokenizer, prompt_ids, completion_ids, max_length)
    total = len(prompt_ids) + len(completion_ids)
    if len(prompt_ids) >= max_length:
        raise UserInputError(
            f"{where}: the prompt has {len(prompt_ids)} tokens but the model's context is {max_length}; "
            "shorten the prompt"
        )
    if total > max_length:
        raise UserInputError(
            f"{where}: prompt + completion have {total} tokens, more than the model's context of {max_length}; "
            "shorten them, or set overflow to 'truncate'" + (" (only documents are split)"
                                                             if encoding.overflow == "split" else "")
        )
    return Encoded(
        input_ids=tuple(prompt_ids + completion_ids),
        labels=tuple([IGNORE_INDEX] * len(prompt_ids) + completion_ids),
    )


def _truncate_pair(tokenizer: Any, prompt_ids: list[int], completion_ids: list[int],
                   max_length: int) -> tuple[list[int], list[int]]:
    """``max_length`` tokens of a pair: the prompt's BOS (if it starts with one) and its last tokens, the completion's
    first ones; the completion is cut only where it leaves no room for one prompt token after the BOS."""
    head = prompt_ids[:1] if prompt_ids[:1] == [tokenizer.bos_token_id] else []
    body = prompt_ids[len(head):]
    completion_ids = completion_ids[: max_length - len(head) - min(1, len(body))]
    keep = max_length - len(head) - len(completion_ids)
    return head + body[len(body) - keep:] if keep else head, completion_ids


def document_ids(tokenizer: Any, text: str, encoding: EncodingConfig = EncodingConfig(),
                 where: str = "record") -> list[int]:
    """A document's token ids, whole: BOS and EOS as ``encoding`` says."""
    if not isinstance(text, str) or not text.strip():
        raise UserInputError(f"{where}: the text is empty")
    ids = _token_ids(tokenizer, text, add_special_tokens=True)
    if encoding.eos is not None:
        ids = with_eos(tokenizer, ids, encoding.eos)
    return with_bos(tokenizer, ids, encoding.bos)


def encode_text(tokenizer: Any, text: str, *, max_length: int, encoding: EncodingConfig = EncodingConfig(),
                window: Sequence[int] | None = None, where: str = "record") -> Encoded:
    """Tokenise a document with BOS and EOS as ``encoding`` says; every token after the first is scored (all real
    tokens when the first is a BOS). One longer than ``max_length`` is refused, or cut to its start
    (``overflow="truncate"``); a ``window`` ``(start, stop, first_scored)`` of it (`split_windows`) is the tokens
    ``start:stop`` with only those from ``first_scored`` on scored."""
    ids = document_ids(tokenizer, text, encoding, where)
    if len(ids) < 2:
        raise UserInputError(f"{where}: the text has fewer than 2 tokens, so nothing can be scored")
    labels = [IGNORE_INDEX, *ids[1:]]
    if window is not None:
        start, stop, first_scored = window
        return Encoded(input_ids=tuple(ids[start:stop]),
                       labels=(IGNORE_INDEX,) * (first_scored - start) + tuple(labels[first_scored:stop]))
    if len(ids) > max_length and encoding.overflow == "truncate":
        return Encoded(input_ids=tuple(ids[:max_length]), labels=tuple(labels[:max_length]))
    if len(ids) > max_length:
        how = ("split it with `split_windows` (the command line and recipes do)" if encoding.overflow == "split"
               else "set overflow to 'truncate' or 'split'")
        raise UserInputError(
            f"{where}: the document has {len(ids)} tokens, more than the model's context of {max_length}; {how}"
        )
    return Encoded(input_ids=tuple(ids), labels=tuple(labels))


def window_spans(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, stop, first_scored)`` of the windows over ``n_tokens`` tokens: starts ``stride`` apart, at most
    ``max_length`` long, the last ending at the end; each token after the first is scored in exactly one window,
    the first that reaches it, with at least ``max_length - stride`` tokens of context there."""
    spans, scored_to = [], 1  # token 0 is predicted by none
    for start in range(0, n_tokens, stride):
        stop = min(start + max_length, n_tokens)
        spans.append((start, stop, scored_to))
        scored_to = stop
        if stop == n_tokens:
            break
    return spans


def split_windows(tokenizer: Any, records: Sequence[Mapping[str, Any]], *, max_length: int,
                  encoding: EncodingConfig, columns: Columns = Columns(), id_key: str = "id") -> list[dict[str, Any]]:
    """``records`` with each document longer than ``max_length`` tokens replaced by its windows (`window_spans`;
    stride ``encoding.stride``, default half the context): copies of the record with ``"id"`` ``"{id}#{k}"`` (window
    ``k`` from 0), ``"record_id"`` its own id (of its type) and ``WINDOW``. A record's summed window measurements are
    its measurement; `llm_attrib.scores.sum_windows` sums window scores back to records."""
    stride = encoding.stride or max(1, max_length // 2)
    if stride >= max_length:
        raise UserInputError(f"stride {stride} must be less than the context of {max_length} tokens, so that windows "
                             "overlap")
    out = []
    for index, (id_, record) in enumerate(zip(record_ids(records, id_key), records)):
        if columns.text not in record or (columns.prompt in record and columns.completion in record):
            out.append(record)
            continue
        n_tokens = len(document_ids(tokenizer, record[columns.text], encoding, f"record {index}"))
        if n_tokens <= max_length:
            out.append(record)
            continue
        out.extend({**record, id_key: f"{id_}#{k}", "record_id": id_, WINDOW: list(span)}
                   for k, span in enumerate(window_spans(n_tokens, max_length, stride)))
    return out


def encode_record(
    tokenizer: Any,
    record: Mapping[str, Any],
    *,
    columns: Columns = Columns(),
    max_length: int,
    chat_template: bool = False,
    encoding: EncodingConfig = EncodingConfig(),
    where: str = "record",
) -> Encoded:
    """Encode a prompt/completion record or a document record (see module docstring)."""
    if columns.prompt in record and columns.completion in record:
        return encode_pair(
            tokenizer,
            record[columns.prompt],
            record[columns.completion],
            max_length=max_length,
            chat_template=chat_template,
            encoding=encoding,
            where=where,
        )
    if columns.text in record:
        return encode_text(tokenizer, record[columns.text], max_length=max_length, encoding=encoding,
                           window=record.get(WINDOW), where=where)
    raise UserInputError(
        f"{where}: no column '{columns.text}' and no pair '{columns.prompt}'/'{columns.completion}' "
        f"(columns present: {sorted(record)}); name the right columns"
    )


def collate(
    examples: Sequence[Encoded], *, pad_token_id: int, padding_side: str = "right", pad_to: int | None = None
) -> Batch:
    """Pad ``examples`` to a common length (at least ``pad_to``) on ``padding_side`` ("left" or "right")."""
    if padding_side not in ("left", "right"):
        raise UserInputError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    length = max([len(e.input_ids) for e in examples] + [pad_to or 0])
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, span] = torch.tensor(example.input_ids)
        labels[row, span] = torch.tensor(example.labels)
        attention_mask[row, span] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, labels=labels)


def batched(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``batch_size``."""
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, not {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def chunk_documents(texts: Iterable[str], tokenizer: Any, chunk_tokens: int) -> list[str]:
    """Split each text into consecutive pieces of at most ``chunk_tokens`` tokens (decoded back to text)."""
    chunks: list[str] = []
    for text in texts:
        ids = _token_ids(tokenizer, text, add_special_tokens=False)
        chunks.extend(tokenizer.decode(ids[i : i + chunk_tokens]) for i in range(0, len(ids), chunk_tokens))
    return chunks


def load_records(path: str | os.PathLike, *, split: str = "train", required: Sequence[str] = ()) -> Any:
    """Load a local file or folder as a `datasets.Dataset`: json/jsonl/csv/parquet/text, or a saved Dataset.

    One-line errors name what to fix: a missing path, an unknown file type, an empty file (or a header without
    rows), a malformed JSON line (with its line number), ``required`` columns that are missing.
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"data path {path} does not exist")
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_BUILDERS) if path.is_dir() else [path]
        if not files:
            raise UserInputError(f"{path}: no json/jsonl/csv/parquet/txt files found")
        builder = DATA_BUILDERS.get(files[0].suffix)
        if builder is None:
            raise UserInputError(f"{path}: unknown file type '{files[0].suffix}'; use one of {sorted(DATA_BUILDERS)}")
        if builder in ("json", "csv", "text") and not any(_has_rows(f, header=builder == "csv") for f in files):
            empty = "empty but for a header" if builder == "csv" else "empty"
            raise UserInputError(f"{path}: no records (the file is {empty}); give a file with at least one record")
        kwargs = {"delimiter": "\t"} if files[0].suffix == ".tsv" else {}
        try:
            dataset = datasets.load_dataset(builder, data_files=[str(f) for f in files], split=split, **kwargs)
        except Exception as error:  # the loader's own message, on one line, or the malformed JSON line
            if builder == "json":
                for file in files:
                    _check_json(file)
            message = " ".join(str(error.__cause__ or error).split()) or type(error).__name__
            raise UserInputError(f"{path}: cannot read it as {builder}: {message}") from error
    if len(dataset) == 0:
        raise UserInputError(f"{path}: no records in split {split!r}; give data with at least one record")
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise UserInputError(f"{path}: missing column(s) {missing}; columns present: {dataset.column_names}")
    return dataset


def _has_rows(path: Path, header: bool) -> bool:
    """Whether a text file has a non-blank line (two with a ``header``), reading no further than that."""
    needed = 2 if header else 1
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            needed -= bool(line.strip())
            if needed == 0:
                return True
    return False


def _check_json(path: Path) -> None:
    """Raise a one-line error at the first line of ``path`` that is not JSON (one document, or one per line)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return  # one valid JSON document: the problem is elsewhere
    except json.JSONDecodeError as error:
        if text.lstrip()[:1] == "[":
            raise UserInputError(f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}); "
                                  "fix that line") from None
    for number, line in enumerate(text.split("\n"), start=1):  # JSON Lines ends lines with \n only
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                raise UserInputError(f"{path}: line {number}, column {error.colno}: not valid JSON ({error.msg}); "
                                     "fix or remove that line (JSON Lines: one object per line)") from None
