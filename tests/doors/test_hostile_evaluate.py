"""``radfm evaluate`` on a manifest whose scan header (inside the data root) points outside it.

The manifest's data-root confinement covers the indirection: the case is recorded as failed,
naming the header, the other cases are evaluated, and the secret appears in no output file.
"""

from __future__ import annotations

import json

import numpy as np

SECRET = b"root:x:0:0:planted-secret-for-evaluate\n" * 16


def test_evaluate_refuses_a_header_pointing_outside_the_data_root(tmp_path):
    from PIL import Image

    from radfm.doors.evaluate import evaluate

    secret = tmp_path / "host" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)).save(root / "ok.png")
    side = int(len(SECRET) ** 0.5)
    (root / "attack.nhdr").write_text(f"NRRD0004\ntype: uint8\ndimension: 2\nspace dimension: 2\n"
                                      "space directions: (1,0) (0,1)\nspace origin: (0,0)\n"
                                      f"sizes: {side} {side}\nencoding: raw\nbyte skip: -1\n"
                                      "data file: ../host/passwd\n")  # a valid header: without the guard it reads
    rows = [{"id": name, "dataset": "d", "task": "vqa", "images": [{"path": f"{name}.{suffix}"}],
             "instruction": "<image> What is shown?", "response": "a scan", "split": "test"}
            for name, suffix in (("ok", "png"), ("attack", "nhdr"))]
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    output = tmp_path / "eval"
    evaluate(manifest=str(manifest), model="tiny", output=str(output), batch_size=1, max_new_tokens=2,
             bertscore=False, n_resamples=20)
    predictions = {json.loads(line)["id"]: json.loads(line) for line in
                   (output / "predictions.jsonl").read_text().splitlines()}
    assert predictions["ok"]["error"] is None
    error = predictions["attack"]["error"]
    assert "attack.nhdr" in error and "outside the header's folder" in error
    for produced in output.rglob("*"):
        if produced.is_file():
            assert b"planted-secret" not in produced.read_bytes(), produced
