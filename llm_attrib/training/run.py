"""A replayable fine-tune: `train_replayable` trains and records the run in a folder, `ReplayableRun` replays it.

The folder holds ``run.json`` (the options, the encoded records and their loss weights, the record order of every
step, each step's learning rate, the seed, the thread count, library versions, the initial model's fingerprint) and
``checkpoints/step-NNNNNN.safetensors``: the optimizer state (trainable parameters and AdamW's moments) before step
0, every ``checkpoint_every`` steps (default ⌈√T⌉) and after the last step. A record fixes the run: on CPU with the
recorded thread count, `ReplayableRun.replay` reproduces every checkpoint bitwise (and says where it does not).
Checkpoints carry the run's id, so an interrupted training resumes from its last one; ``run.json`` is written last.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from llm_attrib import __version__
from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.data import Batch, Columns, Encoded, EncodingConfig, batched
from llm_attrib.errors import UserInputError
from llm_attrib.training.config import OPTIMIZERS, TrainConfig, learning_rates
from llm_attrib.training.step import AdamW, State, adamw_step

RUN_FILE = "run.json"
KIND = "llm-attrib-replayable-run"
CHECKPOINT_KIND = "replay-state"
StateHook = Callable[[int, State], None]


def library_versions() -> dict[str, str]:
    """The versions a replay depends on (recorded; a bitwise replay is promised for the same ones)."""
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "llm_attrib": __version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:  # peft is needed only for LoRA runs
        pass
    return versions


def dropouts(model: torch.nn.Module) -> dict[str, float]:
    """Dropout probabilities above 0 in ``model``: its dropout modules (a peft adapter's ``lora_dropout`` included)
    and the config's ``attention_dropout`` (applied functionally by Llama-style attention)."""
    found = {f"{name} (p)": float(module.p) for name, module in model.named_modules()
             if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0}
    attention = getattr(getattr(model, "config", None), "attention_dropout", 0.0)
    if isinstance(attention, (int, float)) and attention > 0:
        found["config.attention_dropout"] = float(attention)
    return found


def check_replayable(model: torch.nn.Module) -> None:
    """Refuse a model with dropout (a replay and its derivative need a deterministic forward pass)."""
    found = dropouts(model)
    if found:
        key, value = next(iter(found.items()))
        raise UserInputError(f"the model has dropout ({key} = {value:g}): a replayable run needs a deterministic "
                             "forward pass; set every dropout probability of its config (and LoRA's) to 0")


def _with_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """A copy of ``model`` (the run's initial model), wrapped in a LoRA adapter initialised under the run's seed
    when ``lora_rank`` is set."""
    model = copy.deepcopy(model).eval()
    if config.lora_rank is None:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=list(config.lora_targets) or None)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return get_peft_model(model, lora).eval()


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _record_order(n_records: int, config: TrainConfig) -> list[list[int]]:
    """The record indices of every step: a seeded permutation per epoch, cut into batches."""
    generator = torch.Generator().manual_seed(config.seed)
    order = []
    for _ in range(config.epochs):
        order.extend(list(b) for b in batched(torch.randperm(n_records, generator=generator).tolist(),
                                              config.batch_size))
    return order


class ReplayableRun:
    """A recorded run (see the module docstring), bound to its initial model.

    Args:
        directory: the run's folder.
        model: the model the run started from (checked by fingerprint); None: loaded from the recorded
            ``model_path``.
        tokenizer: its tokenizer (None: loaded from ``model_path``).
    """

    def __init__(self, directory: str | Path, model: torch.nn.Module | None = None, tokenizer: Any = None):
        from llm_attrib.store import model_fingerprint

        self.directory = Path(directory)
        path = self.directory / RUN_FILE
        if not path.is_file():
            raise UserInputError(f"{self.directory} is not a replayable run ({RUN_FILE} is missing); train one with "
                                 "llm-attrib train or llm_attrib.training.train_replayable")
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserInputError(f"{path} is not valid JSON ({error}); train the run again") from None
        if not isinstance(record, dict) or record.get("kind") != KIND:
            raise UserInputError(f"{path} is not an llm_attrib replayable run record")
        optimizer = record.get("config", {}).get("optimizer")
        if optimizer not in OPTIMIZERS:
            raise UserInputError(f"{path}: optimizer {optimizer!r} cannot be replayed (an explicit differentiable "
                                 f"update exists for {', '.join(OPTIMIZERS)} only)")
        self.record = record
        self.config = TrainConfig.from_dict(record["config"], where=str(path))
        if model is None or tokenizer is None:
            model, tokenizer = self._load_initial(model, tokenizer)
        if model_fingerprint(model) != record["initial_model"]:
            raise UserInputError(f"this model is not the one {self.directory} started from (fingerprint "
                                 f"{model_fingerprint(model)}, the run's {record['initial_model']}); pass the run's "
                                 "initial model")
        self._bind(model, tokenizer)

    @classmethod
    def _recorded(cls, directory: Path, record: dict[str, Any], model: torch.nn.Module, tokenizer: Any,
                  config: TrainConfig) -> "ReplayableRun":
        run = cls.__new__(cls)
        run.directory, run.record, run.config = directory, record, config
        run._bind(model, tokenizer)
        return run

    def _load_initial(self, model: Any, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = self.record.get("model_path")
        if source is None or not Path(source).is_dir():
            raise UserInputError(f"{self.directory}: the run records no loadable initial model folder "
                                 f"(model_path={source!r}); pass the initial model and tokenizer")
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager")
            model = model.to(getattr(torch, self.record.get("dtype", "float32")))
        return model.eval(), tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(source)

    def _bind(self, model: torch.nn.Module, tokenizer: Any) -> None:
        check_replayable(model)
        self.initial_model, self.tokenizer = model, tokenizer
        self.model = _with_lora(model, self.config)
        if sorted(trainable(self.model)) != sorted(self.record["trainable"]):
            raise UserInputError(f"{self.directory}: the model's trainable parameters are not the run's")
        settings = self.record["encoding"]
        self.adapter = CausalLMAdapter(self.model, tokenizer, modules="all", columns=Columns(**settings["columns"]),
                                       max_length=settings["max_length"], chat_template=settings["chat_template"],
                                       encoding=EncodingConfig.from_dict(settings["encoding"]),
                                       padding_side=self.config.padding_side)
        self.encoded = [Encoded(tuple(ids), tuple(labels)) for ids, labels in self.record["records"]]
        self.order: list[list[int]] = self.record["order"]
        self.learning_rates: list[float] = self.record["learning_rates"]
        self.checkpoint_steps: list[int] = self.record["checkpoint_steps"]
        self.dtype = next(iter(trainable(self.model).values())).dtype
        self.weights = torch.tensor(self.record["weights"], dtype=self.dtype)
        self.hyper = AdamW(self.config.beta1, self.config.beta2, self.config.eps, self.config.weight_decay,
                           self.config.max_grad_norm)

    # ------------------------------------------------------------------------------------------ the record
    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def total_steps(self) -> int:
        return len(self.order)

    @property
    def train_seconds(self) -> float | None:
        """Wall time of the recorded training (None when it was resumed)."""
        return self.record.get("train_seconds")

    def checkpoint_path(self, step: int) -> Path:
        return self.directory / "checkpoints" / f"step-{step:06d}.safetensors"

    def state(self, step: int) -> State:
        """The recorded state before ``step`` (``step == total_steps``: after the last step)."""
        from llm_attrib.store import load_tensors

        if step not in self.checkpoint_steps:
            raise UserInputError(f"{self.directory} keeps no state before step {step}; kept: {self.checkpoint_steps}")
        path = self.checkpoint_path(step)
        if not path.is_file():
            raise UserInputError(f"{path} is missing: the run folder is incomplete; train the run again")
        tensors, _ = load_tensors(path, expect={"kind": CHECKPOINT_KIND, "run_id": self.run_id, "step": step})
        return State(*({n: tensors[f"{group}/{n}"] for n in self.record["trainable"]} for group in ("params", "m", "v")))

    def batch(self, step: int) -> Batch:
        return self.adapter.collate([self.encoded[i] for i in self.order[step]])

    # ------------------------------------------------------------------------------------------ stepping
    def step(self, state: State, step: int, weights: torch.Tensor) -> State:
        """The state after ``step`` from ``state`` before it, with per-record loss ``weights`` ``[n_records]``
        (the batch's entries are used); no graph is kept (MAGIC rebuilds a step's graph with `adamw_step`)."""
        batch_weights = weights[torch.tensor(self.order[step])]
        with torch.enable_grad():
            new, _ = adamw_step(self.model, state.detached(requires_grad=True), self.batch(step), batch_weights,
                                self.learning_rates[step], step + 1, self.hyper)
        return new.detached()

    def states(self, start: State, first: int, stop: int, weights: torch.Tensor | None = None) -> Iterator[State]:
        """The states after steps ``first … stop - 1``, from ``start`` (the state before ``first``)."""
        from llm_attrib.demo.training import torch_threads  # the demo trainer's helper (imported on use: see test_layout)

        weights = self.weights if weights is None else weights
        state = start
        with torch_threads(self.config.num_threads):
            for t in range(first, stop):
                state = self.step(state, t, weights)
                yield state

    def replay(self, weights: Sequence[float] | torch.Tensor | None = None, *, check: bool = True) -> State:
        """The final state, trained again from the record (with other per-record loss ``weights``, if given).
        With the recorded weights and ``check``, every recorded checkpoint must come out bitwise, else a one-line
        error names the first step that differs."""
        from llm_attrib.store import tensors_checksum

        same = weights is None
        weights = self.weights if same else torch.as_tensor(weights, dtype=self.dtype)
        if weights.shape != (len(self.encoded),):
            raise UserInputError(f"weights has shape {tuple(weights.shape)}; give one weight per record "
                                 f"({len(self.encoded)})")
        state = self.state(0)
        for t, state in enumerate(self.states(state, 0, self.total_steps, weights), start=1):
            if same and check and t in self.checkpoint_steps:
                recorded = self.state(t)
                if tensors_checksum(state.named()) != tensors_checksum(recorded.named()):
                    raise UserInputError(
                        f"{self.directory}: the replay differs from the record after step {t} (recorded with "
                        f"{self.record['versions']} and {self.config.num_threads} thread(s); now "
                        f"{library_versions()}): a bitwise replay needs the same libraries on CPU")
        return state

    def model_at(self, state: State) -> torch.nn.Module:
        """A copy of the run's model with ``state``'s parameters (the final model: ``model_at(state(total_steps))``)."""
        model = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, p in trainable(model).items():
                p.copy_(state.params[name])
        return model.eval()

    # ------------------------------------------------------------------------------------------ training
    def _train(self, progress: bool) -> None:
        """Run the recorded steps, saving the checkpoints; resume from the last saved one of this run."""
        from llm_attrib.store import CacheMismatchError

        start, state = 0, None
        for step in sorted(self.checkpoint_steps, reverse=True):
            if self.checkpoint_path(step).is_file():
                try:
                    state, start = self.state(step), step
                    break
                except CacheMismatchError:  # another run's, or damaged: train over it
                    continue
        if state is None:
            state = State.initial(trainable(self.model))
            self._save(0, state)
        began = time.perf_counter()
        for t, state in enumerate(self.states(state, start, self.total_steps), start=start + 1):
            if t in self.checkpoint_steps:
                self._save(t, state)
            if progress and (t % max(1, self.total_steps // 10) == 0 or t == self.total_steps):
                print(f"step {t}/{self.total_steps}", file=sys.stderr, flush=True)
        self.record["train_seconds"] = time.perf_counter() - began if start == 0 else None

    def _save(self, step: int, state: State) -> None:
        from llm_attrib.store import save_tensors

        save_tensors(self.checkpoint_path(step), state.named(),
                     {"kind": CHECKPOINT_KIND, "run_id": self.run_id, "step": step})


def default_checkpoint_every(total_steps: int) -> int:
    return max(1, math.ceil(math.sqrt(total_steps)))


def train_replayable(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    directory: str | Path,
    config: TrainConfig | None = None,
    *,
    weights: Sequence[float] | None = None,
    columns: Columns = Columns(),
    encoding: EncodingConfig | None = None,
    max_length: int | None = None,
    chat_template: bool = False,
    model_path: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> ReplayableRun:
    """Fine-tune a copy of ``model`` (left unchanged: it is the run's initial model) on ``records`` and record the
    run in ``directory`` (see the module docstring); returns the `ReplayableRun`. A finished run with the same
    record is reused; an interrupted one resumes from its last checkpoint.

    ``weights``: per-record loss weights (default 1; the loss is in `llm_attrib.training.step`). ``options`` are
    `TrainConfig` fields. ``model_path``: the initial model's folder, recorded so that the run can be loaded from
    the folder alone (CLI). Encoding (``columns``, ``encoding``, ``max_length``, ``chat_template``) as for
    `CausalLMAdapter`."""
    from llm_attrib.attributors.base import make_config
    from llm_attrib.store import data_fingerprint, model_fingerprint, write_json

    config = make_config(TrainConfig, config, options)
    check_replayable(model)
    directory = Path(directory)
    prepared = _with_lora(model, config)
    adapter = CausalLMAdapter(prepared, tokenizer, modules="all", columns=columns, max_length=max_length,
                              chat_template=chat_template, encoding=encoding)
    encoded = adapter.encode(records)
    if not encoded:
        raise UserInputError("no training records: a run needs at least one")
    weights = [1.0] * len(encoded) if weights is None else [float(w) for w in weights]
    if len(weights) != len(encoded):
        raise UserInputError(f"{len(weights)} weights for {len(encoded)} records; give one per record")
    order = _record_order(len(encoded), config)
    every = config.checkpoint_every or default_checkpoint_every(len(order))
    record: dict[str, Any] = {
        "kind": KIND, "config": config.to_dict(), "encoding": adapter.settings(),
        "initial_model": model_fingerprint(model), "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "trainable": list(trainable(prepared)), "records": [[list(e.input_ids), list(e.labels)] for e in encoded],
        "weights": weights, "order": order, "learning_rates": learning_rates(config, len(order)),
        "versions": library_versions(),
    }
    record["run_id"] = data_fingerprint(record)
    record["checkpoint_steps"] = sorted({*range(0, len(order), every), len(order)})
    existing = directory / RUN_FILE
    if existing.is_file():
        previous = json.loads(existing.read_text())
        if previous.get("run_id") == record["run_id"] and previous.get("checkpoint_steps") == record["checkpoint_steps"]:
            return ReplayableRun._recorded(directory, previous, model, tokenizer, config)
        existing.unlink()
    record["model_path"] = None if model_path is None else str(Path(model_path).resolve())
    run = ReplayableRun._recorded(directory, record, model, tokenizer, config)
    run._train(progress)
    write_json(existing, run.record)
    return run
