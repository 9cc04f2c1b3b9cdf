"""The rating app under attack: host files through scan headers, oversized scans, recomputable blinding,
sessions that never end, and JSON values that are not scores."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radfm.rating import store, views
from radfm.rating.app import create_app
from radfm.rating.study import create_study

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_files import hostile_headers  # noqa: E402  (the sweep writes the same files)

SECRET = b"root:x:0:0:planted-secret-for-the-rating-app\n" * 8


def _predictions(folder: Path, images: list[list[str]], models: tuple[str, ...] = ("a", "b")) -> list[Path]:
    files = []
    for model in models:
        path = folder / f"{model}.jsonl"
        rows = [{"id": f"case-{k}", "dataset": "d", "task": "vqa", "images": case_images,
                 "instruction": "<image> " * len(case_images) + "What is shown?", "reference": "r",
                 "prediction": f"{model} answer {k}", "model": model}
                for k, case_images in enumerate(images)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        files.append(path)
    return files


def _signed_in(app, token: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    assert client.post("/signin", data={"token": token}).status_code == 303
    return client


@pytest.mark.parametrize("variant", sorted(hostile_headers("/x")))
def test_image_endpoint_does_not_follow_a_header_to_a_host_file(tmp_path, variant):
    """A header inside the study (written there after create) that points at a host file: 422, no byte of it."""
    secret = tmp_path / "host" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    good = tmp_path / f"scan{'.nrrd' if 'nrrd' in variant or 'nhdr' in variant else '.mha'}"
    if good.suffix == ".nrrd":
        good.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\n\n" + bytes(16))
    else:
        good.write_bytes(b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
                         b"ElementDataFile = LOCAL\n" + bytes(16))
    result = create_study(tmp_path / "study", _predictions(tmp_path, [[str(good)]]), raters=["eve"])
    stored = next((Path(result["study"]) / "images").rglob(f"*{good.suffix}"))
    stored.write_bytes(hostile_headers(secret)[variant])
    eve = _signed_in(create_app(result["study"]), result["tokens"]["eve"])
    for url in ("/case/1/image/0.png?window=0,255", "/case/1/image/0.json"):
        response = eve.get(url)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert stored.name in detail and ("refus" in detail or "outside the header's folder" in detail), detail
        assert b"planted-secret" not in response.content and b"root:" not in response.content
        assert str(len(SECRET)) not in detail and f"{len(SECRET):,}" not in detail  # 22-H1 (e): no size of it


def test_create_refuses_files_that_are_not_scans(tmp_path, scans):
    """22-M4: `rate create` copied any path (e.g. /etc/hostname) into the study; now only scans are copied."""
    host_file = tmp_path / "hostname"
    host_file.write_text("build-machine-7\n")
    for bad, message in ((host_file, "unsupported file type"),
                         (Path("/etc/hostname") if Path("/etc/hostname").is_file() else host_file, "unsupported")):
        with pytest.raises(ValueError, match=rf"a\.jsonl:1: image not accepted: .*{message}"):
            create_study(tmp_path / "study", _predictions(tmp_path, [[str(bad)]]), raters=["r"])
        assert not (tmp_path / "study").exists() and not list(tmp_path.glob(".study.building-*"))
    # a folder is copied only as its DICOM files; a link leaving it is refused
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "notes.txt").write_text("not copied")
    with pytest.raises(ValueError, match="a folder without DICOM files"):
        create_study(tmp_path / "study", _predictions(tmp_path, [[str(folder)]]))
    import shutil

    shutil.copy(scans["dicom"], folder / "1.dcm")
    (folder / "2.dcm").symlink_to(host_file)
    with pytest.raises(ValueError, match=r"2\.dcm: a link to .*hostname, outside the DICOM folder"):
        create_study(tmp_path / "study", _predictions(tmp_path, [[str(folder)]]))
    (folder / "2.dcm").unlink()
    result = create_study(tmp_path / "study", _predictions(tmp_path, [[str(folder)]]))
    copied = sorted(p.name for p in (Path(result["study"]) / "images").rglob("*") if p.is_file())
    assert copied == ["1.dcm"]
    # --data_root confines the images to one folder
    with pytest.raises(ValueError, match="outside the data root"):
        create_study(tmp_path / "study2", _predictions(tmp_path, [[str(scans["nifti"])]]), data_root=folder)


@pytest.mark.parametrize("per_task", [0, -3, True, 2.5])
def test_per_task_must_be_positive_before_any_work(tmp_path, per_task):
    """22-L2: `rate create --per_task 0` built an empty study's worth of work before failing."""
    with pytest.raises(ValueError, match="per_task: expected a positive number"):
        create_study(tmp_path / "study", [tmp_path / "missing.jsonl"], per_task=per_task)
    assert not (tmp_path / "study").exists()


def test_image_size_limit_is_configurable(tmp_path, scans):
    result = create_study(tmp_path / "study", _predictions(tmp_path, [[str(scans["nifti"])]]), raters=["r"])
    small = _signed_in(create_app(result["study"], max_scan_bytes=1000), result["tokens"]["r"])
    refused = small.get("/case/1/image/0.png")
    assert refused.status_code == 422 and "over the limit of 1,000 bytes" in refused.json()["detail"]
    default = _signed_in(create_app(result["study"]), result["tokens"]["r"])
    assert default.get("/case/1/image/0.png").status_code == 200


def test_blinded_order_needs_the_study_secret(tmp_path):
    """Two studies built from the same files: same rater number and case ids, different orders."""
    models = ("m1", "m2", "m3", "m4")
    files = _predictions(tmp_path, [[] for _ in range(16)], models)
    orders, secrets = [], []
    for name in ("first", "second"):
        result = create_study(tmp_path / name, files, raters=["alice"])
        with store.connect(result["study"]) as conn:
            secrets.append(store.blinding_secret(conn))
            rater = store.rater_for_token(conn, result["tokens"]["alice"])["pk"]
            cases = [views.load_case(conn, rater, n) for n in range(1, 17)]
            orders.append([[conn.execute("SELECT model FROM candidates WHERE pk=?", (c.candidate_pk,)).fetchone()[0]
                            for c in case.candidates] for case in cases])
        # the unkeyed seed of the reported attack (sha256 of rater number and case id) does not give the order
        recomputed = []
        for case in cases:
            pks = sorted(c.candidate_pk for c in case.candidates)
            seed = int.from_bytes(hashlib.sha256(f"{rater}\x1f{case.case_id}".encode()).digest()[:8], "big")
            random.Random(seed).shuffle(pks)
            recomputed.append(pks == [c.candidate_pk for c in case.candidates])
        assert sum(recomputed) < 8, recomputed  # chance alone matches about 1 in 24 cases
    assert secrets[0] != secrets[1] and len(secrets[0]) == 32
    assert orders[0] != orders[1]
    # stable: the same study shows the same order again
    with store.connect(tmp_path / "first") as conn:
        again = views.load_case(conn, 1, 1)
        assert [c.candidate_pk for c in again.candidates] == [c.candidate_pk for c in
                                                             views.load_case(conn, 1, 1).candidates]


def test_blinding_secret_is_never_sent_to_the_browser(tmp_path):
    result = create_study(tmp_path / "study", _predictions(tmp_path, [[], []]), raters=["alice"])
    with store.connect(result["study"]) as conn:
        secret = store.blinding_secret(conn).hex()
    alice = _signed_in(create_app(result["study"]), result["tokens"]["alice"])
    for url in ("/case/1", "/cases", "/api/case/1", "/case/2"):
        response = alice.get(url)
        assert response.status_code == 200 and secret not in response.text and secret[:16] not in response.text


def test_sessions_expire(study):
    folder, tokens = study
    app = create_app(folder, session_ttl_s=3600)
    alice = _signed_in(app, tokens["alice"])
    assert alice.get("/api/case/1").status_code == 200
    cookie = alice.cookies.get("radfm_rating_session")
    with store.connect(folder) as conn:  # the session is now two hours old
        conn.execute("UPDATE sessions SET created_at = created_at - 7200")
    assert alice.get("/api/case/1").status_code == 401
    assert alice.get("/case/1").headers["location"] == "/signin"
    with store.connect(folder) as conn:
        assert store.rater_for_session(conn, cookie, max_age_s=3 * 3600) is not None  # a longer TTL still accepts it
    assert _signed_in(app, tokens["alice"]).get("/api/case/1").status_code == 200  # signing in again works
    with store.connect(folder) as conn:  # and cleared the expired session
        assert store.rater_for_session(conn, cookie, max_age_s=None) is None
    with pytest.raises(ValueError, match="session_ttl_s"):
        create_app(folder, session_ttl_s=0)


@pytest.mark.parametrize("body", [
    {"slot": 0, "score": True},
    {"slot": 0, "score": "3"},
    {"slot": 0, "score": 3.0},
    {"slot": "0", "score": 3},
    {"slot": True, "score": 3},
])
def test_json_values_that_are_not_scores_are_refused(study, body):
    folder, tokens = study
    alice = _signed_in(create_app(folder), tokens["alice"])
    response = alice.post("/api/case/1/score", json=body)
    assert response.status_code == 422, response.text
    assert alice.get("/api/case/1").json()["scores"]["0"] is None  # nothing was stored


def test_real_scores_and_the_form_fallback_still_work(study):
    folder, tokens = study
    alice = _signed_in(create_app(folder), tokens["alice"])
    assert alice.post("/api/case/1/score", json={"slot": 0, "score": 3}).status_code == 200
    assert alice.get("/api/case/1").json()["scores"]["0"] == 3
    assert alice.post("/api/case/1/skip", json={"skipped": "yes"}).status_code == 422
    assert alice.post("/case/1", data={"score-1": "4"}).status_code == 303  # form fields are text
    assert alice.get("/api/case/1").json()["scores"]["1"] == 4
    assert alice.post("/case/1", data={"score-2": "true"}).status_code == 422
    with store.connect(folder) as conn, pytest.raises(ValueError, match="score"):
        store.set_score(conn, 1, 1, True)
