"""Does this CPU compute bfloat16 natively? (On AVX2-only CPUs bf16 matmuls are emulated: >10x slower.)

``cpu_bf16_support()`` reads the CPU's feature flags once (x86: ``avx512_bf16`` or ``amx_bf16``;
ARM: ``bf16``/``FEAT_BF16``) next to torch's vector capability
(``torch.backends.cpu.get_cpu_capability()``, e.g. "AVX2", "AVX512"). ``warn_slow_cpu_bf16``
warns (once per process) when a model is put on the CPU in bf16 without native support; the
CPU default stays float32 (``radfm.model.loading.resolve_dtype``).
"""

from __future__ import annotations

import functools
import platform
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_warned = False


@dataclass(frozen=True)
class CpuBf16Support:
    """``native``: True/False from the CPU flags, None when they could not be read."""

    capability: str  # torch's vector ISA for CPU kernels
    native: bool | None
    evidence: str

    def describe(self) -> str:
        verdict = {True: "native bf16", False: "no native bf16: emulated, far slower than fp32",
                   None: "bf16 support unknown"}[self.native]
        return f"{self.capability}, {verdict}; {self.evidence}"


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old torch or a stripped build
        return "unknown"


def _flags_from_cpuinfo(text: str) -> set[str]:
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def detect_bf16(cpuinfo: str | None = None, machine: str | None = None) -> tuple[bool | None, str]:
    """``(native, evidence)`` from ``/proc/cpuinfo`` text (or macOS ``sysctl``); pure given its inputs."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if path.is_file():
            cpuinfo = path.read_text(errors="replace")
    if cpuinfo:
        flags = _flags_from_cpuinfo(cpuinfo)
        if machine in ("x86_64", "amd64", "i686", "x86"):
            found = [flag for flag in _X86_BF16_FLAGS if flag in flags]
            if found:
                return True, f"CPU flags: {', '.join(found)}"
            return False, f"CPU flags lack {' and '.join(_X86_BF16_FLAGS)}"
        if machine in ("aarch64", "arm64"):
            return ("bf16" in flags), ("CPU features: bf16" if "bf16" in flags else "CPU features lack bf16")
    if platform.system() == "Darwin" and cpuinfo is None:
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if out in ("0", "1"):
                return out == "1", f"sysctl hw.optional.arm.FEAT_BF16={out}"
        except (OSError, subprocess.SubprocessError):
            pass
    return None, "CPU flags not readable"


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> CpuBf16Support:
    """This machine's answer, computed once per process."""
    native, evidence = detect_bf16()
    return CpuBf16Support(_torch_capability(), native, evidence)


def slow_bf16_message(support: CpuBf16Support | None = None) -> str | None:
    """The warning text for bf16 on this CPU, or None when bf16 is native (or unknown)."""
    support = support or cpu_bf16_support()
    if support.native is not False:
        return None
    return (f"bfloat16 on this CPU ({support.describe()}): matmuls are emulated and typically 10-100x slower "
            "than float32; use --dtype float32 (the CPU default) unless memory forces bf16")


def warn_slow_cpu_bf16(dtype, device) -> str | None:
    """Warn once per process when ``dtype`` is bfloat16 on a CPU ``device`` without native bf16; returns the text."""
    global _warned
    import torch

    if dtype is None or torch.device(device).type != "cpu":
        return None
    if (torch.bfloat16 if isinstance(dtype, str) and dtype.lower() in ("bfloat16", "bf16") else dtype) != torch.bfloat16:
        return None
    message = slow_bf16_message()
    if message is not None and not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return message
