import hashlib
import json

import nibabel as nib
import numpy as np
from PIL import Image

from radfm.cli import main as radfm_main
from radfm.data.manifest import load_manifest
from radfm.data.phantoms import make_phantoms


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    make_phantoms(tmp_path / "a", n=12, seed=11, progress=False)
    make_phantoms(tmp_path / "b", n=12, seed=11, progress=False)
    make_phantoms(tmp_path / "c", n=12, seed=12, progress=False)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b and any(p.endswith(".nii.gz") for p in a) and any(p.endswith(".png") for p in a)
    assert a != c
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def _image(path):
    if path.endswith(".png"):
        return np.asarray(Image.open(path), dtype=np.float32)
    return nib.load(path).get_fdata().transpose(1, 0, 2)[:, :, 8]  # [rows, cols] mid slice


def test_manifests_and_ground_truth_agree(phantom_dir):
    cases = {c["id"]: c for c in map(json.loads, (phantom_dir / "cases.jsonl").read_text().splitlines())}
    assert len(cases) == 24 and {c["split"] for c in cases.values()} == {"train", "val", "test"}
    samples = [s for split in ("train", "val", "test") for s in load_manifest(phantom_dir / f"{split}.jsonl")]
    assert {s.task for s in samples} == {"modality_open", "modality_inductive", "diagnosis_inductive", "vqa", "report", "rationale"}
    for s in samples:
        case = cases[s.id.split(":")[0]]
        assert s.split == case["split"] and s.images[0].path.endswith(case["image"])
        if s.task == "modality_open":
            assert s.response == case["modality"]
        elif s.task == "vqa" and s.extra["question_type"] == "count":
            assert s.response == ["none", "one", "two", "three"][len(case["lesions"])]
        elif s.task == "vqa" and s.extra["question_type"] == "location":
            assert s.response == ", ".join(les["location"] for les in case["lesions"])
        elif s.task == "diagnosis_inductive":
            asked = "mass" if "mass" in s.instruction else "cyst"
            assert (s.response == "yes") == (asked in case["diseases"])
        elif s.task == "report":
            assert s.response.startswith("Findings: ") and len(case["lesions"]) == s.response.count(" region.")


def test_lesions_are_where_the_answers_say(phantom_dir):
    cases = [json.loads(line) for line in (phantom_dir / "cases.jsonl").read_text().splitlines()]
    checked = 0
    for case in cases:
        img = _image(str(phantom_dir / case["image"]))
        h, w = img.shape
        for location in ("left upper", "right upper", "left lower", "right lower"):
            # a window around the quadrant's lesion centre, clear of rims, spine and ventricles
            cy = 0.33 if "upper" in location else 0.67
            cx = 0.33 if location.startswith("left") else 0.67
            window = img[int((cy - 0.08) * h):int((cy + 0.08) * h), int((cx - 0.08) * w):int((cx + 0.08) * w)]
            bright, dark = (np.abs(window - 247) < 12).sum(), (np.abs(window - 8) < 12).sum()
            lesion = next((les for les in case["lesions"] if les["location"] == location), None)
            if lesion is None:
                assert bright < 5 and dark < 5, (case["id"], location)
            else:
                assert (bright if lesion["brightness"] == "bright" else dark) >= 12, (case["id"], lesion)
                checked += 1
    assert checked >= 10


def test_cli_phantoms_and_convert(tmp_path, fixtures_dir, capsys):
    radfm_main(["data", "phantoms", "--output", str(tmp_path / "p"), "--n", "6", "--seed", "1"])
    assert (tmp_path / "p" / "train.jsonl").is_file() and len(list((tmp_path / "p" / "images").iterdir())) == 6
    out = fixtures_dir / "vqa_rad"
    radfm_main(["data", "convert", "vqa-rad", str(out), "--output", str(tmp_path / "m.jsonl")])
    assert len(load_manifest(tmp_path / "m.jsonl", data_root=fixtures_dir)) == 2
