"""A benchmark's training runs: checkpoints for TracIn, and models trained from other seeds for ensembles (TRAK).

`TrainingRuns` retrains the benchmark's model with its `DemoRetrainer` (same records, seed ``s``), keeping copies
after `N_CHECKPOINTS` evenly spaced epochs (`checkpoint_epochs`) with their TracIn weights ``η_k`` = learning rate ×
optimizer steps since the previous checkpoint. Training is bitwise deterministic on CPU, so the run of the
benchmark's own seed ends at the benchmark's model; this is checked by fingerprint (the demo fact model comes from
its own cache), because TracIn's checkpoints must belong to the model being explained.

Runs are trained on first use and kept in memory; with ``cache_dir`` also on disk, one safetensors file per seed
whose metadata (retrainer settings, data fingerprint, seed, checkpoint epochs) must match (`CacheMismatchError`),
and beside it the AdamW second moments at each checkpoint (``seed<s>-adam.safetensors``; a run cached before they
were kept is retrained, bitwise the same, when they are first asked for: `TrainingRuns.adam_moments`).
Training and loading run under a forked global RNG, so asking for runs changes nothing another method sees.
`TrainingRuns.retrain` trains on any subset of the records the same way (AirRep's subset models), timed and forked
alike.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from llm_attrib.curvature.adam import AdamMoment, optimizer_moments
from llm_attrib.errors import CacheMismatchError
from llm_attrib.retraining.retrain import DemoRetrainer
from llm_attrib.store import data_fingerprint, load_tensors, model_fingerprint, save_tensors

N_CHECKPOINTS = 4


def checkpoint_epochs(epochs: int, n: int = N_CHECKPOINTS) -> list[int]:
    """``n`` evenly spaced epochs ending at ``epochs`` (fewer if there are fewer epochs): 40, 4 → [10, 20, 30, 40]."""
    return sorted({max(1, round(epochs * (k + 1) / n)) for k in range(n)})


@dataclass
class TrainedRun:
    """One seeded run: ``checkpoints`` (models in eval mode after ``epochs``; the last is the final model) and
    ``learning_rates`` ``η_k`` (learning rate × optimizer steps since the previous checkpoint)."""

    epochs: list[int] = field(default_factory=list)
    checkpoints: list[torch.nn.Module] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    moments: list[dict[str, AdamMoment]] | None = None
    """The optimizer's Adam moments at each checkpoint (None: loaded from a cache that did not keep them)."""

    @property
    def model(self) -> torch.nn.Module:
        return self.checkpoints[-1]


class TrainingRuns:
    """Runs of ``retrainer`` on ``records``; ``model`` is the benchmark's model, the end of the run of ``seed``.

    Implements `llm_attrib.attributors.checkpoints.TrainingHistory` for the registry's factories. ``seconds`` adds
    up the time spent training or loading runs (the suite reports it apart from a method's own time).
    """

    def __init__(self, retrainer: DemoRetrainer, records: Sequence[Mapping[str, Any]], seed: int,
                 model: torch.nn.Module, cache_dir: str | Path | None = None):
        self.retrainer = retrainer
        self.records = records
        self.seed = seed
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.seconds = 0.0
        self._runs: dict[int, TrainedRun] = {}

    def checkpoints(self) -> tuple[list[torch.nn.Module], list[float]]:
        """The model's own run: models after `checkpoint_epochs` (the last = the model) and their ``η_k``."""
        run = self.run(self.seed)
        return run.checkpoints, run.learning_rates

    def adam_moments(self) -> list[dict[str, AdamMoment]]:
        """The AdamW moments at each of `checkpoints` (by parameter name), for Adam-aware TracIn."""
        run = self.run(self.seed)
        if run.moments is None:
            path = None if self.cache_dir is None else self.cache_dir / f"seed{self.seed}.safetensors"
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                run.moments = self._train(self.seed, path).moments  # the same run, bitwise: keeps its moments now
            self.seconds += time.perf_counter() - start
        return run.moments

    def models(self, n: int) -> list[torch.nn.Module]:
        """The model and ``n - 1`` others trained on the same records from seeds ``seed + 1, …, seed + n - 1``."""
        return [self.model] + [self.run(self.seed + i).model for i in range(1, n)]

    def retrain(self, records: Sequence[Mapping[str, Any]], seed: int) -> torch.nn.Module:
        """A model trained like the benchmark's on exactly ``records`` from seed ``seed`` (counted in ``seconds``)."""
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            model = self.retrainer(records, seed)
        self.seconds += time.perf_counter() - start
        return model

    def settings(self) -> dict[str, Any]:
        """What changes a retrained model: the retrainer's model config and training hyper-parameters (building the
        config seeds the global RNG, hence the fork)."""
        with torch.random.fork_rng(devices=[]):
            return self.retrainer.settings()

    def run(self, seed: int) -> TrainedRun:
        """The run of ``seed``: from memory, else from ``cache_dir``, else trained (and saved there)."""
        if seed not in self._runs:
            start = time.perf_counter()
            path = None if self.cache_dir is None else self.cache_dir / f"seed{seed}.safetensors"
            with torch.random.fork_rng(devices=[]):
                run = self._load(seed, path) if path is not None and path.exists() else self._train(seed, path)
            self.seconds += time.perf_counter() - start
            if seed == self.seed and model_fingerprint(run.model) != model_fingerprint(self.model):
                raise CacheMismatchError(
                    f"retraining with seed {seed} does not reproduce the benchmark's model, so its checkpoints would "
                    "belong to another model: was the model trained with other settings or thread counts?")
            self._runs[seed] = run
        return self._runs[seed]

    def _metadata(self, seed: int) -> dict[str, Any]:
        return {"kind": "training-run", "settings": self.retrainer.settings(),
                "data": data_fingerprint(list(self.records)), "seed": seed,
                "epochs": checkpoint_epochs(self.retrainer.epochs)}

    def _train(self, seed: int, path: Path | None) -> TrainedRun:
        epochs, run = checkpoint_epochs(self.retrainer.epochs), TrainedRun(moments=[])
        pending = 0.0

        def keep(epoch: int, model: torch.nn.Module, step_size: float, optimizer: torch.optim.Optimizer) -> None:
            nonlocal pending
            pending += step_size
            if epoch in epochs:
                snapshot = copy.deepcopy(model).eval()
                snapshot.zero_grad(set_to_none=True)
                run.epochs.append(epoch)
                run.checkpoints.append(snapshot)
                run.learning_rates.append(pending)
                run.moments.append(optimizer_moments(model, optimizer))
                pending = 0.0

        self.retrainer(self.records, seed, on_epoch_end=keep)
        if path is not None:
            tensors = {f"{k}/{name}": tensor.clone() for k, model in enumerate(run.checkpoints)
                       for name, tensor in model.state_dict().items()}
            save_tensors(path, tensors, {**self._metadata(seed), "learning_rates": run.learning_rates,
                                         "model_fingerprint": model_fingerprint(run.model)})
            save_tensors(_moments_path(path), {f"{k}/{name}": m.exp_avg_sq for k, moments in enumerate(run.moments)
                                               for name, m in moments.items()},
                         {**self._metadata(seed), "model_fingerprint": model_fingerprint(run.model),
                          "optimizer": {f"{k}/{name}": [m.step, m.beta2, m.eps] for k, moments in enumerate(run.moments)
                                        for name, m in moments.items()}})
        return run

    def _load(self, seed: int, path: Path) -> TrainedRun:
        tensors, metadata = load_tensors(path, expect=self._metadata(seed))
        run = TrainedRun(list(metadata["epochs"]), [], list(metadata["learning_rates"]))
        if _moments_path(path).exists():
            saved, about = load_tensors(_moments_path(path), expect={**self._metadata(seed),
                                                                      "model_fingerprint": metadata["model_fingerprint"]})
            run.moments = [{} for _ in run.epochs]
            for key, tensor in saved.items():
                k, name = key.split("/", 1)
                run.moments[int(k)][name] = AdamMoment(tensor, *about["optimizer"][key])
        for k in range(len(run.epochs)):
            model = self.retrainer.build_model(seed)
            model.load_state_dict({name.split("/", 1)[1]: tensor for name, tensor in tensors.items()
                                   if name.startswith(f"{k}/")})
            run.checkpoints.append(model.eval())
        if model_fingerprint(run.model) != metadata["model_fingerprint"]:
            raise CacheMismatchError(f"{path}: the weights do not match their recorded fingerprint; delete the file")
        return run


def _moments_path(path: Path) -> Path:
    return path.with_name(path.stem + "-adam.safetensors")
