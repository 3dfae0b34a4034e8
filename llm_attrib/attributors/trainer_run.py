"""A Hugging Face ``Trainer`` run read as TracIn needs it: checkpoints, learning rates and Adam moments.

``Trainer`` writes ``<output_dir>/checkpoint-<step>/`` folders with the weights (``model.safetensors``, or a peft
adapter: ``adapter_model.safetensors`` + ``adapter_config.json``), ``trainer_state.json`` (``global_step`` and a
``log_history`` holding the learning rate every ``logging_steps``) and ``optimizer.pt`` (the optimizer's
``state_dict``: per parameter index ``exp_avg``, ``exp_avg_sq``, ``step``; per group ``betas``, ``eps`` and the
indices). `TrainerRun` reads them:

* **Checkpoint weights** ``w_k = Σ η_t`` over the optimizer steps ``t`` in ``(s_{k−1}, s_k]`` that checkpoint ``k``
  (at step ``s_k``; ``s_0 = 0``) stands for. With `AttributionCallback` in the run the learning rate of every step is
  recorded exactly; otherwise the logged values are used (the value logged at step ``s`` is the rate step ``s``
  ran at, as transformers logs it; a test checks this against the callback), interpolated linearly between logs and
  held constant beyond them.
* **Adam moments** per parameter name (`llm_attrib.curvature.adam.AdamMoment`). ``optimizer.pt`` names parameters
  by index only; the callback records the names per optimizer group, and without it the names follow
  ``Trainer.create_optimizer``'s grouping (decayed parameters first, then the others, each in
  ``named_parameters`` order, trainable ones only), checked against every moment's shape.

`AttributionCallback` costs one float per optimizer step in memory and one small JSON per checkpoint
(``attribution.json``: parameter names per optimizer group, the learning rate of every step so far, the batch
sizes); it adds no forward or backward pass and copies no tensor.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.curvature.adam import AdamMoment, AdamPreconditioner
from llm_attrib.errors import UserInputError
from llm_attrib.store import atomic_path

RECORD_FILE = "attribution.json"
STATE_FILE, OPTIMIZER_FILE, ADAPTER_CONFIG = "trainer_state.json", "optimizer.pt", "adapter_config.json"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read {path}: {error}") from None


class TrainerRun(Sequence):
    """The ``checkpoint-<step>`` folders of a ``Trainer`` output directory, in step order, as a sequence of
    `CausalLMAdapter` (one model loaded per access, never cached) for `llm_attrib.attributors.tracin.TracInAttributor`.

    Args:
        output_dir: the Trainer's ``output_dir``.
        tokenizer: default: loaded from the first checkpoint (``Trainer`` saves its ``processing_class`` there).
        base_model: for peft (LoRA) checkpoints, the base model (a model, copied before each adapter is attached, or
            a folder); default: the ``base_model_name_or_path`` of the adapter config.
        device: where each checkpoint's model is put.
        adapter_options: passed to every `CausalLMAdapter` (``modules``, ``encoding`` …).
    """

    def __init__(self, output_dir: str | os.PathLike, tokenizer: Any = None, *,
                 base_model: nn.Module | str | os.PathLike | None = None, device: str | torch.device | None = None,
                 **adapter_options: Any):
        self.output_dir = Path(output_dir)
        if not self.output_dir.is_dir():
            raise UserInputError(f"Trainer output folder {self.output_dir} does not exist")
        found = sorted((int(m.group(1)), p) for p in self.output_dir.iterdir()
                       if p.is_dir() and (m := CHECKPOINT.fullmatch(p.name)))
        if not found:
            raise UserInputError(f"{self.output_dir} holds no checkpoint-<step> folder: train with save_steps or "
                                 "save_strategy='epoch' so that Trainer keeps checkpoints")
        self.steps = [step for step, _ in found]
        self.folders = [folder for _, folder in found]
        for folder in self.folders:
            if not (folder / STATE_FILE).is_file():
                raise UserInputError(f"{folder} has no {STATE_FILE}: is it a Trainer checkpoint?")
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.folders[0]))
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.device = device
        self.adapter_options = adapter_options

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            raise UserInputError("a TrainerRun is read whole: select checkpoints by deleting folders, not by slicing")
        return CausalLMAdapter(self.model(index), self.tokenizer, **self.adapter_options)

    # -------------------------------------------------------------------------------------- weights
    def is_peft(self, index: int) -> bool:
        return (self.folders[index] / ADAPTER_CONFIG).is_file()

    def model(self, index: int) -> nn.Module:
        """Checkpoint ``index``'s model in eval mode; a peft adapter's parameters require grad, as in training (the
        gradients are taken through them, and they name the optimizer's parameters)."""
        from transformers import AutoModelForCausalLM

        folder = self.folders[index]
        if self.is_peft(index):
            from peft import PeftModel

            base = self.base_model
            if base is None:
                base = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
                if not base:
                    raise UserInputError(f"{folder / ADAPTER_CONFIG} names no base model: pass base_model=")
            base = copy.deepcopy(base) if isinstance(base, nn.Module) else AutoModelForCausalLM.from_pretrained(str(base))
            model = PeftModel.from_pretrained(base, str(folder), is_trainable=True)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder))
        if self.device is not None:
            model = model.to(self.device)
        return model.eval()

    # ------------------------------------------------------------------------------- learning rates
    def record(self) -> dict[str, Any] | None:
        """The last checkpoint's `AttributionCallback` record, or None if the run had no callback."""
        path = self.folders[-1] / RECORD_FILE
        return _read_json(path) if path.is_file() else None

    def logged_learning_rates(self) -> dict[int, float]:
        """``{step: learning rate}`` as logged in the last checkpoint's ``trainer_state.json``."""
        history = _read_json(self.folders[-1] / STATE_FILE).get("log_history", [])
        return {int(entry["step"]): float(entry["learning_rate"]) for entry in history if "learning_rate" in entry}

    def step_learning_rates(self) -> list[float]:
        """The learning rate of each optimizer step ``1 … s_K`` (index 0 = step 1): recorded by the callback, else
        from the logged values (see the module docstring)."""
        last = self.steps[-1]
        record = self.record()
        if record is not None:
            rates = {int(step): float(lr) for step, lr in record["learning_rates"].items()}
            missing = [step for step in range(1, last + 1) if step not in rates]
            if missing:
                raise UserInputError(f"{RECORD_FILE} has no learning rate for step {missing[0]}: was the callback "
                                     "added when training resumed?")
            return [rates[step] for step in range(1, last + 1)]
        logged = self.logged_learning_rates()
        if not logged:
            raise UserInputError(f"{self.folders[-1] / STATE_FILE} logs no learning rate: train with logging_steps "
                                 "<= save_steps, or with llm_attrib.AttributionCallback")
        steps, rates = zip(*sorted(logged.items()))
        # linear between logs, held at the first and last logged values beyond them (one vectorised pass)
        return np.interp(np.arange(1, last + 1), steps, rates).tolist()

    def learning_rate_weights(self) -> list[float]:
        """``w_k = Σ η_t`` over the steps ``(s_{k−1}, s_k]`` of each checkpoint (TracIn's ``η_k``)."""
        rates = self.step_learning_rates()
        bounds = [0, *self.steps]
        return [float(sum(rates[start:end])) for start, end in zip(bounds, bounds[1:])]

    # --------------------------------------------------------------------------------- Adam moments
    def adam_moments(self, index: int, model: nn.Module | None = None) -> dict[str, AdamMoment]:
        """Checkpoint ``index``'s Adam moments by parameter name; ``model``: that checkpoint's model if already loaded
        (`model`)."""
        folder = self.folders[index]
        path = folder / OPTIMIZER_FILE
        if not path.is_file():
            raise UserInputError(f"{folder} has no {OPTIMIZER_FILE}: Adam-aware TracIn needs the optimizer state "
                                 "(do not train with save_only_model=True), or use optimizer='sgd'")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: one line, never unpickled code
            raise UserInputError(f"cannot read {path}: {type(error).__name__}: {error}") from None
        groups = state.get("param_groups", [])
        record = _read_json(folder / RECORD_FILE) if (folder / RECORD_FILE).is_file() else None
        if model is None:
            model = self.model(index)
        names = record["parameter_groups"] if record is not None else trainer_parameter_groups(model)
        if [len(g["params"]) for g in groups] != [len(n) for n in names]:
            raise UserInputError(f"{path}: its parameter groups hold {[len(g['params']) for g in groups]} parameters, "
                                 f"the model's trainable ones {[len(n) for n in names]}: train with "
                                 "llm_attrib.AttributionCallback, which records the names")
        parameters = dict(model.named_parameters())
        moments = {}
        for group, group_names in zip(groups, names):
            if "betas" not in group or "eps" not in group:
                raise UserInputError(f"{path} is not an Adam/AdamW state (no betas/eps): use optimizer='sgd'")
            for index_in_state, name in zip(group["params"], group_names):
                entry = state["state"].get(index_in_state)
                if not entry:
                    continue  # never stepped (e.g. no gradient reached it)
                if "exp_avg_sq" not in entry:
                    raise UserInputError(f"{path} holds no exp_avg_sq: not an Adam/AdamW state; use optimizer='sgd'")
                if tuple(entry["exp_avg_sq"].shape) != tuple(parameters[name].shape):
                    raise UserInputError(f"{path}: the moment of {name} has shape {tuple(entry['exp_avg_sq'].shape)}, "
                                         f"the parameter {tuple(parameters[name].shape)}: another model's optimizer")
                moments[name] = AdamMoment(entry["exp_avg_sq"], float(entry["step"]), float(group["betas"][1]),
                                           float(group["eps"]))
        return moments

    def preconditioner(self, index: int, adapter: CausalLMAdapter) -> AdamPreconditioner:
        """Adam's step sizes at checkpoint ``index`` for ``adapter``'s tracked layers."""
        return AdamPreconditioner.from_moments(adapter.model, adapter.layers, self.adam_moments(index, adapter.model))


def trainer_parameter_groups(model: nn.Module) -> list[list[str]]:
    """The parameter names of ``Trainer.create_optimizer``'s two groups (weight-decayed, then not), trainable only."""
    from transformers import Trainer

    decayed = set(Trainer.get_decay_parameter_names(None, model))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    return [[n for n in trainable if n in decayed], [n for n in trainable if n not in decayed]]


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class AttributionCallback(_callback_base()):
    """A ``Trainer`` callback that records what `TrainerRun` reads exactly: the parameter names of each optimizer
    group and the learning rate of every optimizer step, into ``attribution.json`` of each checkpoint (atomically,
    after ``Trainer`` saved it). ``Trainer(..., callbacks=[AttributionCallback()])``."""

    def __init__(self) -> None:
        self.parameter_groups: list[list[str]] = []
        self.learning_rates: dict[int, float] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        self.parameter_groups = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self.learning_rates[state.global_step + 1] = float(optimizer.param_groups[0]["lr"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        record = {"version": 1, "parameter_groups": self.parameter_groups,
                  "learning_rates": {str(step): lr for step, lr in sorted(self.learning_rates.items())},
                  "per_device_train_batch_size": args.per_device_train_batch_size,
                  "gradient_accumulation_steps": args.gradient_accumulation_steps, "world_size": args.world_size}
        with atomic_path(folder / RECORD_FILE) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
