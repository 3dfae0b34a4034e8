"""Two CPU processes (gloo) fit the same factors / TRAK features and give the same scores as one process."""

from __future__ import annotations

import os
import socket
from typing import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.trak import TrakAttributor
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer

from conftest import QUERIES, SENTENCES, TRAIN

WORLD_SIZE = 2


def _adapter() -> CausalLMAdapter:
    torch.set_num_threads(1)
    tokenizer = train_tokenizer(SENTENCES * 4, vocab_size=300, model_max_length=64)
    model = tiny_gpt2(n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0, vocab_size=len(tokenizer),
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id).double()
    return CausalLMAdapter(model, tokenizer)


def _train(n: int) -> list[dict]:
    """The first ``n`` of 11 records (11: shards of 5 and 6, batches of 2 leave a partial one)."""
    return ([dict(r) for r in TRAIN] + [{"text": s + " again"} for s in SENTENCES[:3]])[:n]


def _influence(n_train: int = 11) -> dict[str, torch.Tensor]:
    """EK-FAC on ``n_train`` records: with 1 record, rank 0's shard is empty when fitting and scoring."""
    train = _train(n_train)
    attributor = InfluenceAttributor(_adapter(), "ekfac", fisher="empirical", damping="heuristic",
                                     batch_size=2).fit(train)
    scores = attributor.score([dict(q) for q in QUERIES], train, per_module=True)
    return {**{f"factor/{k}": v for k, v in attributor.curvature.state.items()}, "scores": scores.values,
            "ids": torch.tensor(scores.train_ids), "self_influence": attributor.self_influence(train),
            **{f"module/{k}": v for k, v in scores.per_module.items()}}


def _trak(n_train: int) -> Callable[[], dict[str, torch.Tensor]]:
    """TRAK on ``n_train`` records: with 1 record, rank 0's shard is empty."""

    def results() -> dict[str, torch.Tensor]:
        train = _train(n_train)
        attributor = TrakAttributor([_adapter()], projection_dim=(3, 5), damping=1e-3, batch_size=2).fit(train)
        scores = attributor.score([dict(q) for q in QUERIES], train)
        return {"features": attributor._fitted[0].features, "scores": scores.values,
                "ids": torch.tensor(scores.train_ids), "self_influence": attributor.self_influence(train)}

    return results


CASES: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "influence-ekfac": _influence, "influence-empty-shard": lambda: _influence(1),
    "trak-uneven": _trak(11), "trak-empty-shard": _trak(1),
}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {case: make() for case, make in CASES.items()}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Rank 0's results of every case under 2 processes (one spawn for all cases)."""
    out = str(tmp_path_factory.mktemp("distributed") / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD_SIZE, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(distributed, case):
    single = CASES[case]()
    assert distributed[case].keys() == single.keys()
    for key, expected in single.items():
        torch.testing.assert_close(distributed[case][key], expected, rtol=1e-7, atol=1e-10, msg=f"{case}: {key}")
