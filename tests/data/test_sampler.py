import torch

from radfm.data.sampler import ModalityBatchSampler, collate_samples

DIMS = [2] * 30 + [3] * 7


def test_batches_never_mix_2d_and_3d():
    sampler = ModalityBatchSampler(DIMS, seed=1)
    batches = list(sampler)
    for batch in batches:
        dims = {DIMS[i] for i in batch}
        assert len(dims) == 1
        assert len(batch) <= (4 if dims == {2} else 1)
    assert sorted(i for b in batches for i in b) == list(range(len(DIMS)))
    assert sum(len(b) == 1 and DIMS[b[0]] == 3 for b in batches) == 7
    custom = list(ModalityBatchSampler(DIMS, batch_size_2d=8, batch_size_3d=2, drop_last=True))
    assert all(len(b) == (8 if DIMS[b[0]] == 2 else 2) for b in custom)


def test_deterministic_by_seed_and_epoch():
    a, b = ModalityBatchSampler(DIMS, seed=3), ModalityBatchSampler(DIMS, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(ModalityBatchSampler(DIMS, seed=4)) != list(ModalityBatchSampler(DIMS, seed=3))


def test_ranks_see_disjoint_equal_shards():
    shards = [list(ModalityBatchSampler(DIMS, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))
    assert len(ModalityBatchSampler(DIMS, seed=2, num_replicas=3, rank=0)) == len(shards[0])


def test_dataset_ratios():
    groups = ["a"] * 20 + ["b"] * 20
    sampler = ModalityBatchSampler([2] * 40, groups, ratios={"a": 3, "b": 1}, samples_per_epoch=40, seed=0)
    drawn = [groups[i] for b in sampler for i in b]
    assert drawn.count("a") == 30 and drawn.count("b") == 10
    # a small dataset is repeated to meet its share
    sampler = ModalityBatchSampler([2] * 22, ["a"] * 20 + ["b"] * 2, ratios={"a": 1, "b": 1}, samples_per_epoch=20, seed=0)
    drawn = [i for b in sampler for i in b]
    assert sum(i >= 20 for i in drawn) == 10


def test_collate_pads_and_keeps_image_lists():
    items = [
        {"id": "a", "input_ids": torch.tensor([1, 5, 6]), "labels": torch.tensor([-100, 5, 6]),
         "loss_weights": torch.tensor([0.0, 1.0, 3.0]), "attention_mask": torch.ones(3, dtype=torch.long),
         "images": [torch.zeros(3, 32, 32, 4), torch.zeros(3, 64, 64, 8)]},
        {"id": "b", "input_ids": torch.tensor([1, 7]), "labels": torch.tensor([-100, 7]),
         "loss_weights": torch.tensor([0.0, 1.0]), "attention_mask": torch.ones(2, dtype=torch.long),
         "images": [torch.zeros(3, 32, 32, 4)]},
    ]
    right = collate_samples(items, pad_token_id=0)
    assert right["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert right["labels"].tolist()[1] == [-100, 7, -100]
    assert right["loss_weights"].tolist()[1] == [0.0, 1.0, 0.0]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert [len(x) for x in right["images"]] == [2, 1] and right["images"][0][1].shape == (3, 64, 64, 8)
    left = collate_samples(items, padding_side="left")
    assert left["input_ids"].tolist()[1] == [0, 1, 7] and left["attention_mask"].tolist()[1] == [0, 1, 1]
