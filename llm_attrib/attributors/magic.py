"""`MagicAttributor`: exact attribution of a replayable fine-tune by metagradients (MAGIC, Ilyas & Engstrom 2025).

``score[q, i] = d log Pr(completion_q | prompt_q; θ_T(w)) / d w_i`` at the run's recorded weights (1 unless the run
set others), where ``w_i`` multiplies record ``i``'s summed token NLL in the loss of every step that uses it
(`llm_attrib.training.step`: Σ_i w_i NLL_i / scored tokens of the batch) and ``θ_T(w)`` is the replayed run's end.
**Positive = upweighting the record raises the query's log-probability**; to first order, removing record ``i`` changes
``f(q)`` by ``-score[q, i]``, so the scores compare with influence scores. They are exact derivatives of the actual
training, not of a curvature model of it; how far they predict *finite* changes (leaving records out) depends on how
smooth the training is in ``w``: `metasmoothness` measures it and `MagicAttributor.smoothness` reports it.

Cost per reverse pass (`llm_attrib.training.metagradient`): about one training run of forward recomputation plus one
double-backward step per training step; ``query_batch`` queries share one pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.config import Config, at_least, option
from llm_attrib.data import batched
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.training.run import ReplayableRun

UNITS = ("d log Pr(completion | prompt) / d w_i: change of the query's log-probability per unit of record i's loss "
         "weight in the replayed fine-tune (removing the record: about minus the score)")


@dataclass(frozen=True)
class MagicConfig(Config):
    """Options of `MagicAttributor`."""

    flag_prefix = "magic-"
    query_batch: int = option(8, "queries per reverse pass through training (they share its recomputation and "
                                 "graphs; memory grows by one optimizer state per query)", check=at_least(1))
    check_replay: bool = option(True, "fit replays the run's first segment and refuses a run that does not come "
                                      "out bitwise (other libraries, thread count)")
    smoothness_directions: int = option(0, "random leave-some-out directions along which score() also measures "
                                           "metasmoothness (2 replays each; 0: not measured)", check=at_least(0))
    smoothness_fraction: float = option(0.05, "fraction of the records each smoothness direction removes / "
                                              "doubles", check=at_least(0))


class MagicAttributor(Attributor):
    """MAGIC scores of a `ReplayableRun`; see the module docstring for sign and units.

    Args:
        run: the recorded run (bound to its initial model and tokenizer).
        config: a `MagicConfig`; keyword ``options`` are its fields.
        progress: print each reverse pass's progress.
        cache_dir: keep each reverse pass's scores there (keyed by the run and the pass's query tokens), so that an
            interrupted `score` resumes and a repeated one is read back bitwise.
    """

    kind = "magic"
    config_class = MagicConfig
    config: MagicConfig

    def __init__(self, run: ReplayableRun, *, config: MagicConfig | None = None, progress: bool = False,
                 cache_dir: str | Path | None = None, **options: Any):
        if not isinstance(run, ReplayableRun):
            raise UserInputError(f"MAGIC differentiates a recorded run: give a ReplayableRun, not {type(run).__name__}")
        self.config = make_config(MagicConfig, config, options)
        self.run = run
        self.progress = progress
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._fitted = False
        self.last_smoothness: Any = None

    @property
    def name(self) -> str:
        return "magic"

    @property
    def units(self) -> str:
        return UNITS

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def _bound_to(self) -> dict[str, Any]:
        return {"run_id": self.run.run_id}

    def fit(self, train: Sequence[Any]) -> "MagicAttributor":
        """Check that ``train`` are the run's records, in its order (each encoded to the recorded tokens), and (with
        ``check_replay``) that the run replays bitwise over its first segment."""
        self._check_records(train)
        if self.config.check_replay:
            self._check_first_segment()
        self._remember_train(train)
        self._fitted = True
        return self

    def _check_records(self, train: Sequence[Any]) -> None:
        recorded = self.run.encoded
        encoded = self.run.adapter.encode(list(train)[: len(recorded)])
        for index, (mine, theirs) in enumerate(zip(encoded, recorded)):
            if mine != theirs:
                raise UserInputError(f"training record {index} is not the run's record {index} (its tokens differ): "
                                     "give the run's records in the run's order")
        if len(train) < len(recorded):
            raise UserInputError(f"the run's record {len(train)} (of {len(recorded)}) is missing from the training "
                                 "records: give all of the run's records")
        if len(train) > len(recorded):
            raise UserInputError(f"{len(train)} training records, but the run trained on {len(recorded)}: give only "
                                 "the run's records")

    def _check_first_segment(self) -> None:
        from llm_attrib.store import tensors_checksum

        run = self.run
        stop = run.checkpoint_steps[1]
        *_, state = run.states(run.state(0), 0, stop)
        if tensors_checksum(state.named()) != tensors_checksum(run.state(stop).named()):
            raise UserInputError(f"{run.directory}: replaying steps 0-{stop} does not reproduce the record (recorded "
                                 f"with {run.record['versions']}, {run.config.num_threads} thread(s)): MAGIC needs a "
                                 "bitwise replay (same libraries, CPU)")

    def score(self, queries: Sequence[Any], train: Iterable[Any] | None = None) -> Scores:
        """``[n_query, n_train]`` metagradients; ``metadata`` has the cost (seconds per query, and as a multiple of
        the recorded training time when known; states held × bytes per state) and, with ``smoothness_directions``,
        the metasmoothness of these queries."""
        from llm_attrib.data import record_ids

        self._check_same_train(train)
        run = self.run
        encoded = run.adapter.encode(list(queries), name="query")
        if not encoded:
            raise UserInputError("no queries to score")
        rows, seconds, held, size = [], 0.0, 0, 0
        for group in batched(encoded, self.config.query_batch):
            values, cost = self._reverse_pass(group)
            rows.append(values)
            seconds, held, size = seconds + cost.seconds, max(held, cost.states_held), cost.state_bytes
        values = torch.cat(rows)
        metadata: dict[str, Any] = {
            "run_id": run.run_id, "steps": run.total_steps, "checkpoints": len(run.checkpoint_steps),
            "seconds_per_query": seconds / len(encoded), "states_held": held, "state_bytes": size,
            "peak_state_memory_bytes": held * size,
        }
        if run.train_seconds:
            metadata["cost_per_query_in_runs"] = seconds / len(encoded) / run.train_seconds
        if self.config.smoothness_directions:
            self.last_smoothness = self.smoothness(queries, values)
            metadata["smoothness"] = self.last_smoothness.to_dict()
        return Scores(values=values, query_ids=record_ids(list(queries)), train_ids=list(self._train_ids),
                      method=self.name, units=self.units, metadata=metadata)

    def _reverse_pass(self, group: Sequence[Any]) -> tuple[torch.Tensor, Any]:
        """One reverse pass for the encoded queries ``group`` (read from / written to ``cache_dir`` if set)."""
        from llm_attrib.store import data_fingerprint, load_tensors, save_tensors
        from llm_attrib.training.metagradient import ReverseCost, metagradients

        path = None
        if self.cache_dir is not None:
            key = data_fingerprint({"run_id": self.run.run_id, "queries": list(group)})
            path = self.cache_dir / f"magic-{key}.safetensors"
            if path.is_file():
                tensors, metadata = load_tensors(path, expect={"kind": "magic-scores", "run_id": self.run.run_id})
                return tensors["values"], ReverseCost(**metadata["cost"])
        values, cost = metagradients(self.run, self.run.adapter.collate(group), self._progress_hook())
        if path is not None:
            save_tensors(path, {"values": values}, {"kind": "magic-scores", "run_id": self.run.run_id,
                                                    "cost": dataclasses.asdict(cost)})
        return values, cost

    def smoothness(self, queries: Sequence[Any], scores: torch.Tensor | None = None) -> Any:
        """`llm_attrib.training.smoothness.Smoothness` of ``queries`` (their scores computed if not given) along
        ``smoothness_directions`` (at least 1) random directions."""
        from llm_attrib.training.smoothness import metasmoothness

        self._check_fitted()
        if scores is None:
            scores = self.score(queries).values
        batch = self.run.adapter.collate(self.run.adapter.encode(list(queries), name="query"))
        return metasmoothness(self.run, batch, scores, directions=max(1, self.config.smoothness_directions),
                              fraction=self.config.smoothness_fraction)

    def _progress_hook(self) -> Any:
        if not self.progress:
            return None
        import sys

        total = self.run.total_steps

        def hook(t: int) -> None:
            if t % max(1, total // 10) == 0:
                print(f"magic: reversed to step {t}/{total}", file=sys.stderr, flush=True)
        return hook

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, self._train_metadata()

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self._restore_train(metadata)
        self._fitted = True
