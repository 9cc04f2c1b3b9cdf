"""The 14B memory plan: counts from the published key list, placement per loading mode, `radfm info`."""

from __future__ import annotations

import pytest

from radfm.cli import main
from radfm.model.memory_plan import GIB, LoadingMode, count_parameters, default_modes, default_spec_path, plan


@pytest.fixture(scope="module")
def counts():
    return count_parameters(default_spec_path())


@pytest.fixture(scope="module")
def meta_14b():
    """The 14B network on the meta device (sizes only, no memory)."""
    from radfm.model.config import RadFMConfig
    from radfm.model.radfm import RadFMForConditionalGeneration

    return RadFMForConditionalGeneration.empty(RadFMConfig.preset("radfm-14b"))


def test_counts_match_the_model_built_from_the_14b_preset(counts, meta_14b):
    from radfm.model.info import describe_model

    parts = describe_model(meta_14b)["parts"]
    assert counts.vision == parts["vision_encoder"]["parameters"]
    assert counts.perceiver == parts["perceiver"]["parameters"]
    assert counts.projection == parts["projection"]["parameters"]
    assert counts.figure_tokens == parts["figure_token_weight"]["parameters"]
    assert counts.llm == parts["language_model"]["parameters"]
    assert len(counts.layers) == 40 and counts.dropped > 0


def test_single_gpu_bf16_holds_all_weights(counts):
    result = plan(counts, LoadingMode("bf16", 2, [80]))
    assert result.fits and result.cpu_weights == 0 and result.disk_weights == 0
    assert result.gpu_weights[0] == pytest.approx(counts.total * 2 / GIB)
    assert result.gpu_peak[0] > result.gpu_weights[0]  # KV cache + workspace on top


def test_two_24gib_gpus_split_bf16_and_fp32_does_not_fit(counts):
    split = plan(counts, LoadingMode("bf16 2x24", 2, [24, 24]))
    assert split.fits and all(w > 0 for w in split.gpu_weights) and max(split.gpu_peak) <= 24
    assert sum(split.gpu_weights) == pytest.approx(counts.total * 2 / GIB)
    assert not plan(counts, LoadingMode("fp32 2x24", 4, [24, 24])).fits


def test_offload_and_quantized_modes(counts):
    results = {m.name: plan(counts, m) for m in default_modes()}
    assert all(r.fits for r in results.values())
    disk = next(r for name, r in results.items() if "disk" in name)
    assert disk.disk_weights > 0 and disk.cpu_weights <= 8 and max(disk.gpu_peak) <= 16
    nf4 = next(r for name, r in results.items() if "nf4" in name)
    int8 = next(r for name, r in results.items() if "int8" in name)
    assert nf4.gpu_weights[0] < int8.gpu_weights[0] < counts.total * 2 / GIB


def test_info_prints_counts_and_plan(capsys, tmp_path):
    report = tmp_path / "info.md"
    main(["info", "--preset", "radfm-14b", "--plan", "--output", str(report)])
    out = capsys.readouterr().out
    assert "| language_model | 13,015,864,320 |" in out
    assert "| bf16, device_map=auto, 2×24 GiB GPUs | yes |" in out
    assert report.read_text().strip() == out.strip()


def test_info_of_a_saved_model_reads_stored_dtypes(capsys, tiny_model_dir):
    main(["info", "--model", str(tiny_model_dir), "--json_output"])
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["stored_dtypes"]["language_model"] == ["float32"]
    assert summary["language_model"]["layers"] == 4


@pytest.mark.parametrize(("strategy", "expected_gib"), [("auto", (12.3, 12.1)), ("sequential", (21.2, 3.3))])
def test_accelerate_places_the_14b_on_two_gpus(meta_14b, strategy, expected_gib):
    """transformers' own planner (what from_pretrained runs; no GPU needed) splits the bf16 14B model over two 22 GiB caps."""
    import warnings

    import torch

    from radfm.model.loading import _device_of, plan_device_map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Device 0 is not available" on this CPU machine
        device_map = plan_device_map(meta_14b, strategy, {0: "22GiB", 1: "22GiB", "cpu": "64GiB"}, torch.bfloat16)
    per_device: dict = {}
    for name, param in meta_14b.named_parameters():
        device = _device_of(device_map, name)
        per_device[device] = per_device.get(device, 0) + param.numel() * 2 / GIB
    assert set(per_device) == {0, 1}  # nothing on CPU or disk
    assert (per_device[0], per_device[1]) == pytest.approx(expected_gib, abs=0.1)
    assert device_map["vision_encoder"] == device_map["language_model.model.embed_tokens"] == 0
