"""Every benchmark script builds its small model from the one ``cpu-small`` preset of ``RadFMConfig``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class _Built(Exception):
    """Raised by the stand-in model so that no 50 M-parameter model is built."""


@pytest.mark.parametrize("script", ["bench_train", "bench_generate"])
def test_bench_script_builds_the_cpu_small_preset(monkeypatch, script):
    import radfm.model.radfm
    from radfm.model.config import RadFMConfig

    def capture(config):
        raise _Built(config)

    monkeypatch.setattr(radfm.model.radfm, "RadFMForConditionalGeneration", capture)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    module = importlib.import_module(script)
    try:
        with pytest.raises(_Built) as built:
            module.build_model("cpu-small")
    finally:
        sys.modules.pop(script, None)
    assert built.value.args[0].to_dict() == RadFMConfig.preset("cpu-small").to_dict()
