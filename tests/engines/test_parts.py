"""Small engine parts: CLI config names, LoRA + freeze counts, gradient checkpointing, bf16, grids."""

from __future__ import annotations

import pytest
import torch

from radfm.engines.cli import NAMED_CONFIGS, _resolve, named_configs
from radfm.engines.freeze import count_trainable, set_language_model_trainable


def test_cli_resolves_named_configs_and_rejects_unknown(tmp_path):
    assert _resolve("instruct") == [str(path) for path in named_configs("instruct")]
    assert [path.name for path in named_configs("pretrain")] == ["train.json", "pretrain.json"]
    assert all(path.is_file() for name in NAMED_CONFIGS for path in named_configs(name))
    with pytest.raises(FileNotFoundError, match="pretrain"):
        _resolve(str(tmp_path / "missing.json"))


def test_lora_trains_only_adapters_in_the_llm():
    from radfm.engines.build import apply_lora, load_model, make_optimizer

    model = apply_lora(load_model("tiny", seed=0).model, rank=4)
    total = sum(p.numel() for p in model.parameters())
    llm_total = sum(p.numel() for p in model.language_model.parameters())
    lora = sum(p.numel() for n, p in model.language_model.named_parameters() if "lora_" in n)
    assert 0 < lora < llm_total
    set_language_model_trainable(model, False, lora=True)
    assert count_trainable(model) == total - llm_total
    set_language_model_trainable(model, True, lora=True)
    assert count_trainable(model) == total - llm_total + lora
    optimizer_params = {id(p) for group in make_optimizer(model).param_groups for p in group["params"]}
    base_llm = [p for n, p in model.language_model.named_parameters() if "lora_" not in n]
    assert not any(id(p) in optimizer_params for p in base_llm)


def test_gradient_checkpointing_gives_the_same_gradients():
    from radfm.engines.build import load_model
    from radfm.engines.loss import weighted_next_token_loss
    from radfm.model.processing import image_token_ids

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = load_model("tiny", seed=0, gradient_checkpointing=checkpointing).model.train()
        vocab = model.config.base_vocab_size
        ids = torch.tensor([[1, *image_token_ids(vocab, 0), 5, 6, 7, 2]])
        weights = torch.zeros(ids.shape)
        weights[0, -3:] = 1.0
        torch.manual_seed(1)
        out = model(input_ids=ids, images=[[torch.rand(3, 64, 64, 8, generator=torch.Generator().manual_seed(0))]])
        weighted_next_token_loss(out.logits, ids, weights).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_trains(tmp_path):
    from radfm.engines.trainer import RadFMTrainer

    from .conftest import ToyDataset, ToyRadFM, toy_collate

    torch.manual_seed(0)
    model = ToyRadFM()
    start = model.vision_encoder.weight.detach().clone()
    loader = torch.utils.data.DataLoader(ToyDataset(8), batch_size=4, collate_fn=toy_collate)
    trainer = RadFMTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=model,
                           optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2), precision="bf16")
    trainer.run()
    assert torch.isfinite(trainer.state.output[0]["loss"])
    assert model.vision_encoder.weight.dtype == torch.float32  # autocast, not a cast of the weights
    assert not torch.equal(start, model.vision_encoder.weight)
    with pytest.raises(ValueError, match="precision"):
        RadFMTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=model,
                     optimizer=torch.optim.AdamW(model.parameters()), precision="fp8")


def test_radfm_train_cli_help_and_bad_config(capsys, tmp_path):
    from radfm.cli import main

    with pytest.raises(SystemExit) as help_exit:  # fire ends its help with exit status 0
        main(["train", "--help"])
    shown = capsys.readouterr()  # fire writes help to stderr when stdout is not a terminal
    assert help_exit.value.code == 0 and "Train with a MONAI bundle config" in shown.out + shown.err
    with pytest.raises(SystemExit) as exit_info:  # an input error: one line on stderr, status 1
        main(["train", str(tmp_path / "nope.json")])
    assert exit_info.value.code == 1 and "training config" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="training config"):  # --debug: the exception itself
        main(["train", str(tmp_path / "nope.json"), "--debug"])
