"""Two CPU processes (gloo) fit the same factors and give the same scores as one process."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer

from conftest import QUERIES, SENTENCES, TRAIN

WORLD_SIZE = 2


def _attributor() -> tuple[InfluenceAttributor, list[dict]]:
    torch.set_num_threads(1)
    tokenizer = train_tokenizer(SENTENCES * 4, vocab_size=300, model_max_length=64)
    model = tiny_gpt2(n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0, vocab_size=len(tokenizer),
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id).double()
    train = [dict(r) for r in TRAIN] + [{"text": s + " again"} for s in SENTENCES[:3]]  # 11: uneven shards
    attributor = InfluenceAttributor(CausalLMAdapter(model, tokenizer), "ekfac", fisher="empirical",
                                     damping="heuristic", batch_size=2)
    return attributor.fit(train), train


def _results() -> dict[str, torch.Tensor]:
    attributor, train = _attributor()
    scores = attributor.score([dict(q) for q in QUERIES], train, per_module=True)
    return {**{f"factor/{k}": v for k, v in attributor.curvature.state.items()}, "scores": scores.values,
            "ids": torch.tensor(scores.train_ids), "self_influence": attributor.self_influence(train),
            **{f"module/{k}": v for k, v in scores.per_module.items()}}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        results = _results()
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(out)
    single = _results()
    assert distributed.keys() == single.keys()
    for key, expected in single.items():
        torch.testing.assert_close(distributed[key], expected, rtol=1e-7, atol=1e-10, msg=key)
