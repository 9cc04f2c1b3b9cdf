"""The quick start (`make demo`): the shipped demo model answers about the shipped phantom scans."""

from __future__ import annotations

import json

from .conftest import RADFM_BUNDLE


def test_demo_model_is_small_safetensors():
    demo = RADFM_BUNDLE / "models" / "demo"
    weights = list(demo.glob("*.safetensors"))
    assert weights and sum(p.stat().st_size for p in weights) <= 20 * 2**20
    assert not list(demo.glob("*.bin")) and (demo / "tokenizer.json").is_file() and (demo / "config.json").is_file()
    results = json.loads((demo / "eval.json").read_text())
    assert results["settings"]["eval_seed"] != results["settings"]["seed"]  # held out by a new seed


def test_demo_prints_answers_for_a_two_scan_prompt(capsys):
    from radfm.demo import main

    main(max_new_tokens=6)
    out = capsys.readouterr().out
    assert out.count("  Q: ") == 4 and out.count("  A: ") == 4
    two_scans = out.split("[xray_phantom.png, ct_phantom.nii.gz]")[1].split("\n\n")[0]
    answer = two_scans.split("A: ")[1]
    # the demo model names modalities reliably (100% on held-out phantoms): X-ray (2D) and CT (3D)
    assert "X-ray" in answer and "CT" in answer, answer


def test_demo_leaves_the_host_logging_alone(capsys):
    """Called in a process that has configured logging (a notebook, a test runner), the demo does not
    apply the bundle's logging.conf: logging's fileConfig would close every handler the host has
    (pytest's own capture handler among them, which killed the test session)."""
    import io
    import logging

    from radfm.demo import main

    stream = io.StringIO()
    host = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(host)
    try:
        main(max_new_tokens=2)
        assert host in root.handlers and not stream.closed
        logging.getLogger("radfm.host").warning("still open")
        assert "still open" in stream.getvalue()
    finally:
        root.removeHandler(host)
    assert "A: " in capsys.readouterr().out


def test_the_banner_says_where_the_weights_come_from(capsys):
    """`make demo` logs "Restored all variables from .../models/model.pt" under a banner naming models/demo: the
    banner names both, and models/model.pt must hold exactly the tensors of models/demo (one set of weights)."""
    import torch
    from safetensors.torch import load_file

    from radfm.demo import main

    main(max_new_tokens=2)
    assert "its weights load from models/model.pt, the same tensors as models/demo/model.safetensors" in \
        capsys.readouterr().out
    bundle_weights = torch.load(RADFM_BUNDLE / "models" / "model.pt", weights_only=True)
    folder_weights = load_file(RADFM_BUNDLE / "models" / "demo" / "model.safetensors")
    assert set(bundle_weights) == set(folder_weights)
    assert all(torch.equal(bundle_weights[name], folder_weights[name]) for name in folder_weights)
