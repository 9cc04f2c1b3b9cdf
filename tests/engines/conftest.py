"""A toy RadFM-shaped model and dataset: the trainer mechanics tested in seconds.

``ToyRadFM`` has the parts the engines touch: ``language_model`` (an LLM stand-in),
``vision_encoder``, dropout (so RNG restore matters), and ``forward(input_ids, images,
attention_mask) -> .logits [B, L, V]`` where image tokens (ids >= V) take a projected image.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

VOCAB = 20


class ToyLM(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, VOCAB)


class ToyRadFM(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.vision_encoder = nn.Linear(3, hidden)
        self.language_model = ToyLM(hidden)
        self.dropout = nn.Dropout(0.2)
        self.config = SimpleNamespace(base_vocab_size=VOCAB)

    def forward(self, input_ids, images, attention_mask=None):
        is_image = input_ids >= VOCAB
        embeds = self.language_model.embed(input_ids.clamp(max=VOCAB - 1))
        image_vecs = torch.stack([self.vision_encoder(torch.stack(s).mean(dim=(2, 3, 4)).mean(0)) for s in images])
        embeds = torch.where(is_image[..., None], image_vecs[:, None, :].expand_as(embeds), embeds)
        hidden = torch.tanh(self.language_model.mix(self.dropout(embeds))).cumsum(dim=1)
        return SimpleNamespace(logits=self.language_model.head(hidden))


class ToyDataset(torch.utils.data.Dataset):
    """Sample i: an image whose brightness encodes the answer token (id 5 or 6)."""

    def __init__(self, n: int = 24, length: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            answer = 5 + i % 2
            ids = torch.randint(7, VOCAB, (length,), generator=g)
            ids[0] = 1
            ids[2] = VOCAB  # image token
            ids[-1] = answer
            weights = torch.zeros(length)
            weights[-1] = 3.0 if i % 3 == 0 else 1.0
            weights[-2] = 1.0
            img = torch.full((3, 4, 4, 4), float(answer - 5)) + 0.1 * torch.rand(3, 4, 4, 4, generator=g)
            self.items.append({"ids": f"s{i}", "input_ids": ids, "loss_weights": weights, "images": [img]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def toy_collate(samples: list[dict]) -> dict:
    return {
        "ids": [s["ids"] for s in samples],
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.ones(len(samples), samples[0]["input_ids"].shape[0], dtype=torch.long),
        "loss_weights": torch.stack([s["loss_weights"] for s in samples]),
        "images": [s["images"] for s in samples],
    }


@pytest.fixture
def toy_model() -> ToyRadFM:
    torch.manual_seed(0)
    return ToyRadFM()
