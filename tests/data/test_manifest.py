import json

import pytest

from radfm.data.manifest import ImageRef, ManifestError, Sample, load_manifest, write_manifest


def _write_lines(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))


def test_round_trip_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    image = tmp_path / "img" / "a.png"
    image.write_bytes(b"x")
    samples = [
        Sample("s1", "ds", [ImageRef(str(image), modality="CT")], task="vqa", instruction="<image> What?", response="yes", split="test"),
        Sample("s2", "ds", [ImageRef(str(image))], text="As shown in Fig. 1 <image>, a mass."),
    ]
    assert write_manifest(samples, tmp_path / "m.jsonl") == 2
    raw = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert raw[0]["images"][0] == {"path": "img/a.png", "modality": "CT"}
    loaded = load_manifest(tmp_path / "m.jsonl")
    assert loaded[0].images[0].path == str(image.resolve())
    assert loaded[0].split == "test" and loaded[0].task == "vqa"
    assert loaded[1].is_interleaved and loaded[1].text.startswith("As shown")


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"id": "a", "dataset": "d", "task": "vqa", "images": [], "instruction": "q", "response": "r"}, None),
        ({"dataset": "d", "task": "vqa", "images": [], "instruction": "q", "response": "r"}, "id"),
        ({"id": "a", "dataset": "d", "task": "chat", "images": [], "instruction": "q", "response": "r"}, "task"),
        ({"id": "a", "dataset": "d", "task": "vqa", "images": [{"path": "x.png"}], "instruction": "q", "response": "r"}, "instruction"),
        ({"id": "a", "dataset": "d", "task": "vqa", "images": [{"nopath": 1}], "instruction": "<image>", "response": "r"}, "images[0].path"),
        ({"id": "a", "dataset": "d", "task": "vqa", "images": [], "instruction": "q", "response": "r", "split": "dev"}, "split"),
        ({"id": "a", "dataset": "d", "text": "two <image> <image>", "images": [{"path": "x.png"}]}, "text"),
    ],
)
def test_validation_names_file_line_field(tmp_path, obj, field):
    path = tmp_path / "m.jsonl"
    ok = {"id": "ok", "dataset": "d", "task": "vqa", "images": [], "instruction": "q", "response": "r"}
    _write_lines(path, [ok, obj])
    if field is None:
        assert len(load_manifest(path)) == 2
        return
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert f"{path}:2: field {field!r}" in str(err.value)


def test_invalid_json_and_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a",\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1: .*invalid JSON"):
        load_manifest(path)
    ok = {"id": "a", "dataset": "d", "task": "vqa", "images": [], "instruction": "q", "response": "r"}
    _write_lines(path, [ok, ok])
    with pytest.raises(ManifestError, match="duplicate id 'a' \\(first on line 1\\)"):
        load_manifest(path)


def test_paths_escaping_data_root_are_refused(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    obj = {"id": "a", "dataset": "d", "task": "vqa", "images": [{"path": "../secret.png"}], "instruction": "<image> q", "response": "r"}
    _write_lines(sub / "m.jsonl", [obj])
    with pytest.raises(ManifestError, match="outside the data root"):
        load_manifest(sub / "m.jsonl")
    # an explicit data root that holds the file allows it
    assert load_manifest(sub / "m.jsonl", data_root=tmp_path)[0].images[0].path == str(tmp_path / "secret.png")
    obj["images"] = [{"path": "/etc/passwd"}]
    _write_lines(sub / "m.jsonl", [obj])
    with pytest.raises(ManifestError, match="outside the data root"):
        load_manifest(sub / "m.jsonl", data_root=tmp_path)


def _dicom_folder_manifest(tmp_path):
    """A data root with a DICOM series folder ``series/`` and a manifest naming it; returns (manifest, folder, outside)."""
    root = tmp_path / "root"
    series = root / "series"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "shadow").write_text("planted secret")
    obj = {"id": "a", "dataset": "d", "task": "vqa", "images": [{"path": "series"}], "instruction": "<image> q",
           "response": "r"}
    _write_lines(root / "m.jsonl", [obj])
    return root / "m.jsonl", series, outside


def test_a_symlink_inside_a_dicom_folder_must_stay_in_the_data_root(tmp_path):
    """22-M4: the folder itself was checked, not the files the series reader reads from it."""
    manifest, series, outside = _dicom_folder_manifest(tmp_path)
    assert load_manifest(manifest)[0].images[0].path == str(series)
    (series / "2.dcm").symlink_to(outside / "shadow")
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: field 'images\[0\]\.path': 'series' is a folder holding "
                                            r"the link '2\.dcm', which resolves outside the data root"):
        load_manifest(manifest)
    (series / "2.dcm").unlink()
    (series / "deeper").mkdir()
    (series / "deeper" / "more").symlink_to(outside, target_is_directory=True)  # a linked folder, one level down
    with pytest.raises(ManifestError, match=r"the link 'deeper/more', which resolves outside"):
        load_manifest(manifest)
    (series / "deeper" / "more").unlink()
    (series / "3.dcm").symlink_to(series / "1.dcm")  # a link that stays inside is fine
    assert len(load_manifest(manifest)) == 1


def test_a_hostile_header_in_the_data_root_is_refused_when_the_sample_is_read(tmp_path):
    """22-H1 through the manifest door (what `radfm evaluate` and training read): a BOM before the NRRD
    magic used to skip the guard; the image loader now refuses it and no byte of the host file comes back."""
    from radfm.data.loaders import default_image_loader
    from radfm.transforms import ScanReadError

    secret = tmp_path / "host_secret"
    secret.write_bytes(b"root:x:0:0:planted\n" * 64)
    root = tmp_path / "root"
    root.mkdir()
    (root / "scan.nrrd").write_bytes(b"\xef\xbb\xbfNRRD0004\ntype: uint8\ndimension: 2\nsizes: 16 76\n"
                                     b"encoding: raw\ndata file: " + str(secret).encode() + b"\n")
    obj = {"id": "a", "dataset": "d", "task": "vqa", "images": ["scan.nrrd"], "instruction": "<image> q", "response": "r"}
    _write_lines(root / "m.jsonl", [obj])
    sample = load_manifest(root / "m.jsonl")[0]
    with pytest.raises(ScanReadError, match=r"scan\.nrrd: .*(BOM|magic)") as refused:
        default_image_loader()(sample.images[0].path)
    assert "planted" not in str(refused.value)
