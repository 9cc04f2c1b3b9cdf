import torch
from torch.utils.data import DataLoader

from radfm.data.dataset import ManifestDataset
from radfm.data.sampler import ModalityBatchSampler, collate_samples
from radfm.data.sequences import SequenceBuilder


def test_dataset_loader_end_to_end(phantom_dir, tiny_tokenizer, base_vocab_size, tmp_path):
    builder = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=256)
    ds = ManifestDataset(phantom_dir / "train.jsonl", builder, tasks=["diagnosis_inductive"], cache_dir=tmp_path / "cache")
    assert len(ds) > 8 and set(ds.dims) == {2, 3}
    sampler = ModalityBatchSampler(ds.dims, ds.groups, seed=0)
    batches = list(sampler)
    first_2d = next(b for b in batches if ds.dims[b[0]] == 2)
    first_3d = next(b for b in batches if ds.dims[b[0]] == 3)
    # one 2D and one 3D batch through a real DataLoader (workers=0 keeps the test light)
    loader = DataLoader(ds, batch_sampler=[first_2d, first_3d], collate_fn=collate_samples)
    batch_2d, batch_3d = list(loader)
    assert len(batch_2d["ids"]) == 4 and {tuple(i[0].shape) for i in batch_2d["images"]} == {(3, 512, 512, 4)}
    assert len(batch_3d["ids"]) == 1 and tuple(batch_3d["images"][0][0].shape) == (3, 256, 256, 16)
    for batch in (batch_2d, batch_3d):
        assert batch["input_ids"].shape == batch["labels"].shape == batch["loss_weights"].shape
        assert all(len(imgs) == 1 for imgs in batch["images"])
    # the cache returns exactly what preprocessing gave
    path = ds.samples[0].images[0].path
    assert len(list((tmp_path / "cache").glob("*.pt"))) >= 2
    assert torch.equal(ds.load_image(path), ds.load_image(path))


def test_batches_feed_the_tiny_model(phantom_dir, tiny_tokenizer, base_vocab_size):
    from radfm import RadFMConfig, RadFMForConditionalGeneration

    torch.manual_seed(0)
    model = RadFMForConditionalGeneration(RadFMConfig.preset("tiny", vocab_size=base_vocab_size)).eval()
    builder = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=128)
    ds = ManifestDataset(phantom_dir / "val.jsonl", builder, tasks=["report"])
    batch = collate_samples([ds[i] for i in range(min(2, len(ds))) if ds.dims[i] == ds.dims[0]])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], images=batch["images"], attention_mask=batch["attention_mask"])
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.logits.shape[2] == base_vocab_size
