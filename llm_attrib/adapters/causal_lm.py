"""`CausalLMAdapter`: any Hugging Face ``AutoModelForCausalLM`` (peft/LoRA included) plus its tokenizer."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from llm_attrib.adapters.base import Adapter, upcast
from llm_attrib.capture import TrackedLayer, find_layers
from llm_attrib.data import (IGNORE_INDEX, Batch, Columns, Encoded, EncodingConfig, collate, encode_record,
                             split_windows, tokenizer_adds)
from llm_attrib.errors import UserInputError

LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "mlp": (r"(^|\.)mlp\.",),
    "attention": (r"(^|\.)(attn|self_attn|attention)\.",),
    "all": (r".",),
}
LORA_PATTERN = r"\.lora_[AB]\.[^.]+$"
ALWAYS_EXCLUDED = (r"(^|\.)lm_head$", r"(^|\.)score$", r"\.base_layer$")


def _is_peft(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def select_layers(model: nn.Module, modules: str | Sequence[str] | None = None) -> list[TrackedLayer]:
    """Tracked layers of a causal LM.

    ``modules`` is a preset ("mlp", "attention", "all") or regexes matched against qualified layer names; ``None``
    (the default) is "mlp", and on a peft model every LoRA layer, i.e. the adapter's own ``target_modules``. On a
    peft model only the LoRA matrices (``lora_A``/``lora_B``) are tracked, within the selected part of the model.
    """
    if modules is None:
        modules = "all" if _is_peft(model) else "mlp"
    patterns = LAYER_PRESETS[modules] if isinstance(modules, str) and modules in LAYER_PRESETS else (
        (modules,) if isinstance(modules, str) else tuple(modules)
    )
    layers = find_layers(model, patterns, exclude=ALWAYS_EXCLUDED)
    if _is_peft(model):
        lora = [layer for layer in layers if re.search(LORA_PATTERN, layer.name)]
        if not lora:
            raise UserInputError(f"the peft model has no LoRA layer within {list(patterns)}; widen `modules`")
        layers = lora
    return layers


class CausalLMAdapter(Adapter):
    """Differentiate a causal LM's log-likelihoods.

    Training objective for a record: ``log Pr(scored tokens)`` = minus its summed token NLL. Measurement for a
    query (prompt/completion record): ``log Pr(completion | prompt)``, completion tokens only; prompt tokens
    and padding carry label -100 and never enter it. Gradients are taken in eval mode (no dropout).

    Args:
        model: a causal LM (``transformers`` or peft-wrapped).
        tokenizer: its tokenizer; a pad token is taken from EOS when it has none.
        modules: which layers to track (see `select_layers`; default: a peft model's LoRA layers, else "mlp").
        columns: record field names.
        max_length: context length; defaults to the model config's.
        chat_template: wrap prompts in the tokenizer's chat template (a user turn + generation prompt).
        encoding: BOS/EOS handling (`EncodingConfig`; default: as the tokenizer adds them); ``encoding_options``
            (``bos=True``, ``eos=True`` …) change single fields of it.
        padding_side: "right" or "left"; scores do not depend on it.
        pad_to_multiple_of: pad batches to a multiple of this length (GPU-friendly shapes); scores do not
            depend on it.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        modules: str | Sequence[str] | None = None,
        columns: Columns = Columns(),
        max_length: int | None = None,
        chat_template: bool = False,
        encoding: EncodingConfig | None = None,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        **encoding_options: Any,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.layers = select_layers(model, modules)
        self.columns = columns
        self.max_length = max_length or _context_length(model, tokenizer)
        self.chat_template = chat_template
        self.encoding = (encoding or EncodingConfig()).replace(**encoding_options)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise UserInputError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        self.pad_token_id = int(pad)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | None = None,
                        base_model: str | os.PathLike | None = None, **kwargs: Any) -> "CausalLMAdapter":
        """Load a local model folder (a peft adapter folder too) and its tokenizer; weights in ``dtype`` if given
        (e.g. ``torch.bfloat16`` on a GPU), else as transformers loads them (float32). ``base_model``: the local
        base model folder of a peft adapter, instead of its ``base_model_name_or_path``; the tokenizer comes from
        the adapter folder, or from the base model where the adapter folder has none."""
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not path.exists():
            raise UserInputError(f"model path {path} does not exist")
        dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        load = {dtype_key: dtype} if dtype is not None else {}
        tokenizer_path = path
        if (path / "adapter_config.json").exists():
            model, base = _load_peft(path, load, base_model)
            tokenizer_path = path if (path / "tokenizer_config.json").exists() else base
        elif base_model is not None:
            raise UserInputError(f"base_model is for a peft adapter folder, and {path} has no adapter_config.json; "
                                 "drop base_model")
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), **load)
        return cls(model, AutoTokenizer.from_pretrained(str(tokenizer_path)), **kwargs)

    def settings(self) -> dict[str, Any]:
        """What decides the tokens and which are scored: columns, context, chat template, the encoding options and
        whether the tokenizer adds BOS/EOS itself (an added EOS follows a completion)."""
        return {"columns": dataclasses.asdict(self.columns), "max_length": self.max_length,
                "chat_template": self.chat_template, "encoding": self.encoding.to_dict(),
                "tokenizer_adds": list(tokenizer_adds(self.tokenizer))}

    def encode(self, records: Sequence[Mapping[str, Any]], first_index: int = 0, name: str = "record") -> list[Encoded]:
        """Errors name a record as ``{name} {index}`` (``record 0``, or ``query 1`` for `trace`'s queries)."""
        return [
            encode_record(
                self.tokenizer,
                record,
                columns=self.columns,
                max_length=self.max_length,
                chat_template=self.chat_template,
                encoding=self.encoding,
                where=f"{name} {index}",
            )
            for index, record in enumerate(records, start=first_index)
        ]

    def split_windows(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``records`` with each document longer than the context replaced by its overlapping windows
        (`llm_attrib.data.split_windows`, stride ``encoding.stride``); sum their scores back with
        `llm_attrib.scores.sum_windows`."""
        return split_windows(self.tokenizer, records, max_length=self.max_length, encoding=self.encoding,
                             columns=self.columns)

    def collate(self, examples: Sequence[Encoded]) -> Batch:
        pad_to = None
        if self.pad_to_multiple_of:
            longest = max(len(e.input_ids) for e in examples)
            pad_to = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = collate(examples, pad_token_id=self.pad_token_id, padding_side=self.padding_side, pad_to=pad_to)
        return batch.to(self.device)

    def logits(self, batch: Batch) -> torch.Tensor:
        """``[B, T, V]``; token ``t``'s logits predict token ``t + 1``."""
        return self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits

    def _token_log_probs(self, batch: Batch) -> torch.Tensor:
        """``[B, T-1, V]`` float32 log-probabilities of token ``t+1`` given tokens ``≤ t``."""
        return torch.log_softmax(upcast(self.logits(batch)[:, :-1]), dim=-1)

    def log_prob(self, batch: Batch) -> torch.Tensor:
        return _scored_log_probs(self._token_log_probs(batch), batch.labels[:, 1:]).sum(dim=1)

    @torch.no_grad()
    def measurements(self, records: Sequence[Mapping[str, Any]], batch_size: int = 32) -> torch.Tensor:
        """``[n]`` float64 measurements of ``records``, without gradients: Σ log Pr(token | prefix) over each
        record's scored tokens (completion, or document tokens after the first), the tokens' float32
        log-probabilities summed in float64. Higher = more likely; padding contributes nothing."""
        sums = [_scored_log_probs(self._token_log_probs(batch), batch.labels[:, 1:]).double().sum(dim=1)
                for batch in self.batches(self.encode(records), batch_size)]
        return torch.cat(sums) if sums else torch.zeros(0, dtype=torch.float64)

    def sampled_log_prob(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        log_probs = self._token_log_probs(batch)
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE_INDEX
        with torch.no_grad():
            sampled = targets.clone()
            sampled[scored] = torch.multinomial(log_probs.detach()[scored].exp(), 1, generator=generator).squeeze(-1)
        return _scored_log_probs(log_probs, sampled).sum(dim=1)

    def token_mask(self, batch: Batch) -> torch.Tensor:
        return batch.attention_mask.bool()


def _load_peft(path: Path, load: Mapping[str, Any], base_model: str | os.PathLike | None) -> tuple[nn.Module, Path]:
    """A peft adapter folder on its base model and the base's folder: ``base_model`` if given, else the adapter's
    ``base_model_name_or_path``. The base must be a local folder: one that is not (a relative path that does not
    resolve from the current directory, a hub id) is refused in one line before any download is tried. For a hub
    base, load the model yourself and pass it to `CausalLMAdapter`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base_model is not None:
        if not Path(base_model).is_dir():
            raise UserInputError(f"base_model {str(base_model)!r} is not a local folder; give the base model's folder")
        base = str(base_model)
    else:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or not Path(base).is_dir():
            raise UserInputError(
                f"{path}/adapter_config.json: base_model_name_or_path {base!r} is not a local folder (relative paths "
                "are read from the current directory; hub ids are not downloaded); pass the base model's folder as "
                "base_model (--base-model), or set that field to it"
            )
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, **load), str(path))
    return model, Path(base)


def _scored_log_probs(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]``: ``log_probs[b, t, targets[b, t]]`` where the target is not -100, else 0."""
    scored = targets != IGNORE_INDEX
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(scored, picked, torch.zeros_like(picked))


def _context_length(model: nn.Module, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**8:
        return limit
    raise UserInputError("cannot tell the model's context length; pass max_length")
