"""One rank of the DDP equivalence test (launched by test_ddp.py; not a test module).

Env: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; argv: output file, per-rank batch size.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def load_toys():
    spec = importlib.util.spec_from_file_location("engines_toys", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(batch_size: int, epochs: int = 2) -> torch.nn.Module:
    """The toy model after ``epochs`` with the RadFM trainer (DDP when a process group is up)."""
    from radfm.engines.sampler import ResumableSampler
    from radfm.engines.trainer import RadFMTrainer

    toys = load_toys()
    torch.manual_seed(0)
    model = toys.ToyRadFM()
    model.dropout.p = 0.0
    dataset = toys.ToyDataset()
    sampler = ResumableSampler(dataset, seed=5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=toys.toy_collate,
                                         generator=torch.Generator())
    network = torch.nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    trainer = RadFMTrainer(device="cpu", max_epochs=epochs, train_data_loader=loader, network=network,
                           optimizer=optimizer, max_grad_norm=1.0)
    trainer.run()
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    trained = train(int(sys.argv[2]))
    if dist.get_rank() == 0:
        torch.save(trained.state_dict(), sys.argv[1])
    dist.destroy_process_group()
