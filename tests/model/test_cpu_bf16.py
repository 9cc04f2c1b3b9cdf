"""bf16 on CPUs without native support: detected from the CPU flags, warned, and reported by ``radfm info``."""

from __future__ import annotations

import warnings

import pytest
import torch

from radfm.model import cpu_bf16 as cpu
from radfm.model.cpu_bf16 import CpuBf16Support, detect_bf16

AVX2_ONLY = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "processor : 0\nFeatures : fp asimd sve bf16 i8mm\n"


def test_detection_from_cpu_flags():
    assert detect_bf16(AVX2_ONLY, "x86_64") == (False, "CPU flags lack avx512_bf16 and amx_bf16")
    assert detect_bf16(SAPPHIRE_RAPIDS, "x86_64") == (True, "CPU flags: avx512_bf16, amx_bf16")
    assert detect_bf16(GRAVITON3, "aarch64")[0] is True
    assert detect_bf16("processor : 0\nFeatures : fp asimd\n", "aarch64")[0] is False
    assert detect_bf16("", "x86_64")[0] in (None, True, False)  # unreadable flags: whatever the host says, no crash


@pytest.fixture
def avx2_only(monkeypatch):
    support = CpuBf16Support("AVX2", False, "CPU flags lack avx512_bf16 and amx_bf16")
    monkeypatch.setattr(cpu, "cpu_bf16_support", lambda: support)
    monkeypatch.setattr(cpu, "_warned", False)
    return support


@pytest.fixture
def native_bf16(monkeypatch):
    support = CpuBf16Support("AVX512", True, "CPU flags: avx512_bf16")
    monkeypatch.setattr(cpu, "cpu_bf16_support", lambda: support)
    monkeypatch.setattr(cpu, "_warned", False)
    return support


def test_bf16_on_an_avx2_cpu_warns_once_and_the_default_stays_fp32(avx2_only):
    from radfm.model.loading import resolve_dtype

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_dtype("auto", "cpu") == torch.float32  # the CPU default
        assert not caught
        assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # honoured, but warned
        assert resolve_dtype("bf16", "cpu") == torch.bfloat16  # once per process
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "AVX2" in messages[0] and "--dtype float32" in messages[0]


def test_no_warning_with_native_bf16_or_on_a_gpu_or_in_fp32(native_bf16, monkeypatch):
    assert cpu.warn_slow_cpu_bf16(torch.bfloat16, "cpu") is None
    monkeypatch.setattr(cpu, "cpu_bf16_support", lambda: CpuBf16Support("AVX2", False, "test"))
    assert cpu.warn_slow_cpu_bf16(torch.bfloat16, "cuda:0") is None
    assert cpu.warn_slow_cpu_bf16(torch.float32, "cpu") is None


def test_tiny_model_in_bf16_on_an_avx2_cpu_warns(avx2_only):
    from radfm.model.loading import load

    with pytest.warns(RuntimeWarning, match="bfloat16 on this CPU"):
        model, _ = load("tiny", device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_info_and_plan_report_the_cpu(avx2_only, monkeypatch, capsys):
    from radfm.model import info as info_module
    from radfm.model.memory_plan import CPU_BF16_ROW, cpu_bf16_note

    assert "AVX2, no native bf16" in " ".join(info_module.compute_devices(avx2_only))
    note = cpu_bf16_note(avx2_only)
    assert "does not apply here" in note and "CPU only, fp32" in note
    assert "does not apply" not in cpu_bf16_note(CpuBf16Support("AVX512", True, "CPU flags: avx512_bf16"))
    assert "native bf16" in CPU_BF16_ROW
    info_module.info(preset="tiny", json_output=True)
    out = capsys.readouterr().out
    assert '"native_bf16": false' in out and '"capability": "AVX2"' in out


def test_plan_row_says_when_the_bf16_row_applies(avx2_only):
    from radfm.model.memory_plan import memory_plan

    text = memory_plan(cpu_support=avx2_only)
    assert "| CPU only, bf16 (only on CPUs with native bf16" in text
    assert text.rstrip().endswith('plan with the "CPU only, fp32" row.')
