"""The rating app over HTTP (in-process client): sign-in, own ratings only, safe image serving."""

from __future__ import annotations

import io
import os

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from radfm.rating import store
from radfm.rating.app import SESSION_COOKIE, create_app


@pytest.fixture
def app_and_tokens(study):
    folder, tokens = study
    return create_app(folder), tokens, folder


def _signed_in(app, token: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    response = client.post("/signin", data={"token": token})
    assert response.status_code == 303, response.text
    return client


def test_signin_required_and_bad_token_refused(app_and_tokens):
    app, tokens, _ = app_and_tokens
    anonymous = TestClient(app, follow_redirects=False)
    assert anonymous.get("/case/1").headers["location"] == "/signin"
    assert anonymous.get("/api/case/1").status_code == 401
    assert anonymous.get("/case/1/image/0.png").status_code == 401
    assert anonymous.post("/api/case/1/score", json={"slot": 0, "score": 3}).status_code == 401
    refused = anonymous.post("/signin", data={"token": "guess"})
    assert refused.status_code == 401 and "Unknown token" in refused.text
    anonymous.cookies.set(SESSION_COOKIE, tokens["alice"])  # a rater token is not a session
    assert anonymous.get("/api/case/1").status_code == 401


def test_case_page_is_blinded_and_shows_rubric(app_and_tokens):
    app, tokens, _ = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    assert alice.get("/").headers["location"] == "/case/1"
    page = alice.get("/case/1")
    assert page.status_code == 200
    html = page.text
    for text in ("Where is the lesion?", "Left upper lung.", "Answer A", "Answer C", "Garbled", "Completely correct"):
        assert text in html
    assert "Case 1 of 3" in html
    # answers are shown, model names are not (the answers in the fixture start with the model name,
    # so check the legend/labels area only: no candidate is labelled by model)
    assert "<legend>radfm" not in html and "data-model" not in html
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "https://" not in html and "http://" not in html  # offline: no CDN


def test_scores_persist_and_are_private_to_each_rater(app_and_tokens):
    app, tokens, folder = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    assert alice.post("/api/case/1/score", json={"slot": 0, "score": 4}).json()["ok"]
    assert alice.post("/api/case/1/score", json={"slot": 2, "score": 1}).status_code == 200
    assert alice.post("/api/case/1/score", json={"slot": 2, "score": 2}).status_code == 200  # change
    assert alice.post("/api/case/1/score", json={"slot": 1, "score": 6}).status_code == 422
    assert alice.post("/api/case/1/score", json={"slot": 9, "score": 1}).status_code == 422
    assert alice.post("/api/case/7/score", json={"slot": 0, "score": 1}).status_code == 404
    assert alice.get("/api/case/1").json()["scores"] == {"0": 4, "1": None, "2": 2}

    # a fresh app on the same folder (server restart) still has them
    restarted = _signed_in(create_app(folder), tokens["alice"])
    assert restarted.get("/api/case/1").json()["scores"] == {"0": 4, "1": None, "2": 2}
    assert 'value="4" checked' in restarted.get("/case/1").text

    bob = _signed_in(app, tokens["bob"])
    assert bob.get("/api/case/1").json()["scores"] == {"0": None, "1": None, "2": None}
    assert "checked" not in bob.get("/case/1").text
    assert bob.post("/api/case/1/score", json={"slot": 0, "score": 0}).status_code == 200
    assert alice.get("/api/case/1").json()["scores"]["0"] == 4  # bob's score did not touch alice's

    with store.connect(folder) as conn:
        rows = conn.execute(
            "SELECT r.name, ra.score FROM ratings ra JOIN raters r ON r.pk = ra.rater_pk ORDER BY r.name, ra.score"
        ).fetchall()
    assert [tuple(r) for r in rows] == [("alice", 2), ("alice", 4), ("bob", 0)]


def test_same_slot_means_same_answer_for_one_rater_only(app_and_tokens):
    app, tokens, folder = app_and_tokens
    for name in ("alice", "bob"):
        client = _signed_in(app, tokens[name])
        client.post("/api/case/1/score", json={"slot": 0, "score": 5})
    with store.connect(folder) as conn:
        models = {
            r["name"]: r["model"]
            for r in conn.execute(
                "SELECT r.name, c.model FROM ratings ra JOIN raters r ON r.pk = ra.rater_pk "
                "JOIN candidates c ON c.pk = ra.candidate_pk")
        }
    page = _signed_in(app, tokens["alice"]).get("/case/1").text
    answer_a = page.split("<legend>Answer A</legend>")[1].split("</div>")[0]
    assert models["alice"] in answer_a  # slot 0 on alice's page is the answer alice's score went to


def test_form_fallback_and_skip(app_and_tokens):
    app, tokens, _ = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    saved = alice.post("/case/1", data={"score-0": "3", "score-1": "3", "score-2": "5", "action": "next"})
    assert saved.headers["location"] == "/case/2"
    skipped = alice.post("/case/2", data={"action": "skip"})
    assert skipped.headers["location"] == "/case/3"
    statuses = alice.get("/cases").text
    assert "status-done" in statuses and "status-skipped" in statuses and "status-todo" in statuses
    assert alice.get("/").headers["location"] == "/case/3"
    assert alice.post("/case/1", data={"score-0": "nine"}).status_code == 422


def test_images_are_rendered(app_and_tokens):
    app, tokens, _ = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    info = alice.get("/case/1/image/0.json").json()
    assert info["depth"] == 12 and not info["rgb"] and "lung" in info["presets"]
    png = alice.get("/case/1/image/0.png", params={"slice": 3, "window": "lung"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (48, 48)
    assert alice.get("/case/1/image/0.png", params={"slice": 99}).status_code == 422
    assert alice.get("/case/1/image/0.png", params={"window": "x"}).status_code == 422
    assert alice.get("/case/1/image/5.png").status_code == 404
    assert alice.get("/case/2/image/1.png").status_code == 200  # the DICOM of case 2


@pytest.mark.parametrize(
    "url",
    [
        "/case/1/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd.png",
        "/case/1/image/../../../../etc/passwd",
        "/case/..%2F..%2Fstudy.sqlite/image/0.png",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/../app.py",
        "/images/c00000/0_chest_ct.nii.gz",
        "/study.sqlite",
    ],
)
def test_crafted_paths_are_refused(app_and_tokens, url):
    app, tokens, _ = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    response = alice.get(url)
    assert response.status_code in (403, 404, 422), (url, response.status_code)
    assert b"root:" not in response.content and b"SQLite format" not in response.content
    assert b"def create_app" not in response.content


def test_stored_path_escaping_the_study_is_refused(app_and_tokens, tmp_path):
    """Even a tampered database (or a symlink inside the study) cannot make the app serve outside files."""
    app, tokens, folder = app_and_tokens
    outside = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(outside)
    link = folder / "images" / "c00000" / "sneaky.png"
    os.symlink(outside, link)
    alice = _signed_in(app, tokens["alice"])
    for rel in ("../secret.png", str(outside), "images/c00000/sneaky.png", "images/../../secret.png"):
        with store.connect(folder) as conn:
            conn.execute("UPDATE case_images SET rel_path=? WHERE image_index=0 AND case_pk=1", (rel,))
        response = alice.get("/case/1/image/0.png")
        assert response.status_code == 403, (rel, response.status_code)
        assert "outside the study" in response.json()["detail"]


def test_signout_ends_the_session(app_and_tokens):
    app, tokens, _ = app_and_tokens
    alice = _signed_in(app, tokens["alice"])
    session = alice.cookies.get(SESSION_COOKIE)
    alice.post("/signout")
    replay = TestClient(app, follow_redirects=False)
    replay.cookies.set(SESSION_COOKIE, session)
    assert replay.get("/api/case/1").status_code == 401


def test_unreadable_scan_gives_a_clear_error(app_and_tokens):
    app, tokens, folder = app_and_tokens
    (folder / "images" / "c00000" / "0_chest_ct.nii.gz").write_bytes(b"garbage")
    alice = _signed_in(app, tokens["alice"])
    response = alice.get("/case/1/image/0.png")
    assert response.status_code == 422 and "0_chest_ct.nii.gz" in response.json()["detail"]
    assert alice.get("/case/1").status_code == 200  # the page itself still works
