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
