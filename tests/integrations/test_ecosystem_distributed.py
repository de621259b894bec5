"""Gates under DistributedDataParallel and FSDP2 (``fully_shard``): 2 CPU processes, gloo backend.

One spawn runs both: each rank draws *different* gate noise (seed 100 + rank, the usual DDP practice)
and sees different data; gradients are averaged, so ``mu`` and the hard masks must stay identical on
every rank and equal what rank 0 saves. DDP runs with ``broadcast_buffers=True`` (the default), which
broadcasts the boolean ``weight_mask`` buffers over gloo at every forward.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import torch_slt

STEPS = 4


def make_model() -> nn.Module:
    torch.manual_seed(0)          # the same frozen weights everywhere (DDP would broadcast rank 0's)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return torch_slt.apply(model, "stg", lam=0.2, mu_init=0.2)


def train(model: nn.Module, wrapped: nn.Module, rank: int) -> None:
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.05)
    torch.manual_seed(100 + rank)                         # per-rank gate noise
    g = torch.Generator().manual_seed(rank)               # per-rank data
    for _ in range(STEPS):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(wrapped(x), y) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    wrapped.eval()
    with torch.no_grad():
        wrapped(x)                                        # refreshes the weight_mask buffers


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # --- DDP
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=True)
        train(model, ddp, rank)
        result = {f"ddp.{n}.mask": m.weight_mask.clone() for n, m, _ in torch_slt.gated_tensors(model)}
        result.update({f"ddp.{n}": p.detach().clone() for n, p in torch_slt.named_mask_parameters(model)})
        if rank == 0:
            torch_slt.save_file(model, os.path.join(out, "rank0.safetensors"))

        # --- FSDP2: every Linear and the root sharded; gates become DTensors outside forward
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = make_model()
        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        train(model, model, rank)
        result.update({f"fsdp.{n}.mask": m.weight_mask.clone() for n, m, _ in torch_slt.gated_tensors(model)})
        result.update({f"fsdp.{n}": p.detach().full_tensor().clone()
                       for n, p in torch_slt.named_mask_parameters(model)})
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_and_fsdp2_keep_masks_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    saved = torch_slt.load_file(tmp_path / "rank0.safetensors")
    assert set(ranks[0]) == set(ranks[1])
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between ranks"
    for name in ("0", "2"):
        mask = ranks[0][f"ddp.{name}.mask"]
        assert torch.equal(saved[f"{name}.weight_mask"], mask)
        assert torch.equal(saved[f"{name}.weight_mu"], ranks[0][f"ddp.{name}.weight_mu"])
        assert 0 < int(mask.sum()) < mask.numel(), "training should prune some weights, not all"
        # FSDP2 computes the same averaged gradients as DDP, so it learns the same masks
        assert torch.equal(ranks[0][f"fsdp.{name}.mask"], mask)
        torch.testing.assert_close(ranks[0][f"fsdp.{name}.weight_mu"], ranks[0][f"ddp.{name}.weight_mu"])
    fresh = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    assert torch_slt.load_state_dict(fresh, saved).missing_keys == []
