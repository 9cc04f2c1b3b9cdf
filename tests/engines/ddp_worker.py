"""One rank of the DDP equivalence test (launched by test_ddp.py; not a test module).

Env: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; argv: output file, per-rank batch size.
Training runs with validation on (``ValidationHandler`` every epoch): a ``ClosedSetEvaluator``
over the tiny RadFM (DDP-wrapped) and a ``DistributedSampler`` without padding; each rank writes
the validation case ids it saw and the metrics it reports to ``<output>.rank<R>.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

VAL_CASES = 5  # odd: the two ranks get 3 and 2 cases (no padding)


def load_toys():
    spec = importlib.util.spec_from_file_location("engines_toys", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def val_cases(n: int = VAL_CASES) -> list[dict]:
    """Closed-set cases as ``ClosedSetDataset`` yields them (tiny images, yes/no answers)."""
    g = torch.Generator().manual_seed(1)
    return [{"ids": f"v{i}", "task": "modality_inductive", "prompt": f"<image> Is this case {i} a CT?",
             "images": [torch.rand(3, 64, 64, 4, generator=g)], "reference": "yes" if i % 2 else "no",
             "choices": ["yes", "no"]} for i in range(n)]


def make_evaluator(distributed: bool):
    """A ClosedSetEvaluator over the tiny RadFM (DDP-wrapped under a process group), recording case ids."""
    from ignite.engine import Events
    from monai.data import DistributedSampler

    from radfm.data.loaders import collate_cases
    from radfm.engines.build import load_model
    from radfm.engines.validation import ClosedSetEvaluator

    # the cases' scans are 64x64x4: the processor's grid, so they reach the model as they are
    model, processor = load_model("tiny", seed=0, image_grid={"size_3d": [64, 64], "max_depth": 4})
    network = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    cases = val_cases()
    sampler = DistributedSampler(cases, shuffle=False, even_divisible=False) if distributed else None
    loader = torch.utils.data.DataLoader(cases, batch_size=1, sampler=sampler, collate_fn=collate_cases)
    evaluator = ClosedSetEvaluator(device="cpu", val_data_loader=loader, network=network, processor=processor,
                                   max_new_tokens=3)
    evaluator.seen_ids = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.seen_ids.extend(e.state.output["ids"]))
    return evaluator


def train(batch_size: int, epochs: int = 2, validate: bool = False) -> torch.nn.Module:
    """The toy model after ``epochs`` with the RadFM trainer (DDP when a process group is up)."""
    from radfm.data.resumable_sampler import ResumableSampler
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
    handlers = []
    if validate:
        from monai.handlers import ValidationHandler

        train.evaluator = make_evaluator(dist.is_initialized())
        handlers.append(ValidationHandler(validator=train.evaluator, interval=1, epoch_level=True))
    trainer = RadFMTrainer(device="cpu", max_epochs=epochs, train_data_loader=loader, network=network,
                           optimizer=optimizer, max_grad_norm=1.0, train_handlers=handlers)
    trainer.run()
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    trained = train(int(sys.argv[2]), validate=True)
    rank = dist.get_rank()
    evaluator = train.evaluator
    Path(f"{sys.argv[1]}.rank{rank}.json").write_text(json.dumps(
        {"seen_ids": evaluator.seen_ids, "metrics": {k: float(v) for k, v in evaluator.state.metrics.items()}}))
    if rank == 0:
        torch.save(trained.state_dict(), sys.argv[1])
    dist.destroy_process_group()
