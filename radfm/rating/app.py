"""The rating web app (FastAPI): sign in with a token, rate blinded answers 0–5, skip, move on.

Routes (``N`` = 1-based case number, ``I`` = image index within the case)::

    GET  /signin, POST /signin, POST /signout
    GET  /                      -> the rater's next open case (or the case list when all are done)
    GET  /cases                 the rater's own progress per case
    GET  /case/N                the case page; POST /case/N: form fallback without JavaScript
    GET  /case/N/image/I.json   {"depth", "rgb", "presets", "auto_window"}
    GET  /case/N/image/I.png?slice=K&window=W   one rendered slice
    GET  /api/case/N            this rater's scores; POST /api/case/N/score, POST /api/case/N/skip

Images are addressed only by case number and image index, never by a path from the
request; the stored relative path is resolved and must stay inside ``DIR/images``.
Every write is committed before the response is sent.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, StrictBool, StrictInt

from radfm.rating import store, views
from radfm.rating.images import ScanDisplayError, VolumeCache, render_slice_png, resolve_window, window_presets
from radfm.rating.study import IMAGES_DIR

PACKAGE_DIR = Path(__file__).resolve().parent
SESSION_COOKIE = "radfm_rating_session"
SECURITY_HEADERS = {
    # everything is served by this app: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # not "no-referrer": under it a browser sends "Origin: null" with the sign-in form, which the
    # server's cross-site check (radfm.http.http_guard) must refuse; same-origin keeps the origin
    # for this server and still sends nothing to any other site
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ScoreIn(BaseModel):
    """Strict types: JSON ``true`` or ``"3"`` is a 422, not a score of 1 or 3."""

    slot: StrictInt
    score: StrictInt | None  # None clears the score


class SkipIn(BaseModel):
    skipped: StrictBool = True


class NotSignedIn(Exception):
    pass


def create_app(study_dir: str | Path, *, session_ttl_s: float = store.DEFAULT_SESSION_TTL_S,
               max_scan_bytes: int | None = None) -> FastAPI:
    """The app for one study folder (which must contain ``study.sqlite``).

    ``session_ttl_s``: a sign-in lasts this long (then the token is asked again);
    ``max_scan_bytes``: decoded size a scan's header may claim (None: 2 GiB, see ``radfm.transforms.guards``).
    """
    if not session_ttl_s > 0:
        raise ValueError(f"session_ttl_s={session_ttl_s!r}: expected a positive number of seconds")
    study_dir = Path(study_dir).resolve()
    images_root = (study_dir / IMAGES_DIR).resolve()
    with store.connect(study_dir):
        pass  # fail now, with a clear message, when the folder is not a study
    templates = Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=select_autoescape())
    volumes = VolumeCache(max_scan_bytes=max_scan_bytes)
    app = FastAPI(title="RadFM rating", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(NotSignedIn)
    async def to_signin(request: Request, _: NotSignedIn):
        if request.url.path.startswith("/api/") or request.url.path.endswith((".png", ".json")):
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        return RedirectResponse("/signin", status_code=303)

    def page(name: str, status_code: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)

    def rater_of(request: Request, conn) -> dict:
        row = store.rater_for_session(conn, request.cookies.get(SESSION_COOKIE), max_age_s=session_ttl_s)
        if row is None:
            raise NotSignedIn()
        return {"pk": row["pk"], "name": row["name"]}

    def case_or_404(conn, rater: dict, number: int) -> views.CaseView:
        case = views.load_case(conn, rater["pk"], number)
        if case is None:
            raise HTTPException(404, f"no case {number} in this study")
        return case

    def image_file(conn, number: int, image_index: int) -> Path:
        """The stored scan of a case, refused unless it lies inside the study's image folder."""
        row = conn.execute(
            "SELECT ci.rel_path, ci.error FROM case_images ci JOIN cases c ON c.pk = ci.case_pk "
            "WHERE c.position=? AND ci.image_index=?",
            (number - 1, image_index),
        ).fetchone()
        if row is None:
            raise HTTPException(404, f"case {number} has no image {image_index}")
        if row["rel_path"] is None:
            raise HTTPException(404, row["error"] or "image unavailable")
        path = (study_dir / row["rel_path"]).resolve()  # follows symlinks and '..'
        if not path.is_relative_to(images_root):
            raise HTTPException(403, "image path is outside the study folder")
        if not path.exists():
            raise HTTPException(404, f"image file missing from the study folder: {row['rel_path']}")
        return path

    def load_volume(path: Path):
        try:
            return volumes.get(path)
        except ScanDisplayError as error:
            raise HTTPException(422, str(error)) from None

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form():
        return page("signin.html", error=None)

    @app.post("/signin")
    async def signin(request: Request):
        form = await request.form()
        token = str(form.get("token", ""))
        with store.connect(study_dir) as conn:
            rater = store.rater_for_token(conn, token) if token.strip() else None
            if rater is None:
                return page("signin.html", status_code=401, error="Unknown token. Ask the study owner for yours.")
            store.purge_expired_sessions(conn, session_ttl_s)
            session = store.open_session(conn, rater["pk"])
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/",
                            max_age=int(session_ttl_s))
        return response

    @app.post("/signout")
    def signout(request: Request):
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            with store.connect(study_dir) as conn:
                store.close_session(conn, session)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/")
    def home(request: Request):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            number = views.next_open_case(views.case_statuses(conn, rater["pk"]))
        return RedirectResponse(f"/case/{number}" if number else "/cases", status_code=303)

    @app.get("/cases", response_class=HTMLResponse)
    def case_list(request: Request):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            statuses = views.case_statuses(conn, rater["pk"])
        return page("cases.html", rater=rater, statuses=statuses, progress=views.progress(statuses))

    @app.get("/case/{number}", response_class=HTMLResponse)
    def case_page(request: Request, number: int):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            case = case_or_404(conn, rater, number)
            statuses = views.case_statuses(conn, rater["pk"])
        return page(
            "case.html",
            rater=rater,
            case=case,
            total=len(statuses),
            progress=views.progress(statuses),
            rubric=store.RUBRIC,
            presets=list(window_presets()),
        )

    @app.post("/case/{number}")
    async def case_form(request: Request, number: int):
        """Form fallback: save all scores of the page, or skip, then go to the next open case."""
        form = await request.form()
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            case = case_or_404(conn, rater, number)
            if form.get("action") == "skip":
                store.set_skipped(conn, rater["pk"], case.case_pk, True)
            else:
                for candidate in case.candidates:
                    value = form.get(f"score-{candidate.slot}")
                    if value not in (None, ""):
                        score = _parse_score(value)
                        store.set_score(conn, rater["pk"], candidate.candidate_pk, score)
            conn.commit()
            following = views.next_open_case(views.case_statuses(conn, rater["pk"]), after=number)
        return RedirectResponse(f"/case/{following}" if following else "/cases", status_code=303)

    @app.get("/api/case/{number}")
    def own_scores(request: Request, number: int):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            case = case_or_404(conn, rater, number)
        return {
            "number": number,
            "scores": {str(c.slot): c.score for c in case.candidates},
            "skipped": case.skipped,
        }

    @app.post("/api/case/{number}/score")
    def save_score(request: Request, number: int, body: ScoreIn):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            case = case_or_404(conn, rater, number)
            if not 0 <= body.slot < len(case.candidates):
                raise HTTPException(422, f"slot: expected 0..{len(case.candidates) - 1}, got {body.slot}")
            if body.score is not None:
                _parse_score(body.score)
            store.set_score(conn, rater["pk"], case.candidates[body.slot].candidate_pk, body.score)
        return {"ok": True, "slot": body.slot, "score": body.score}

    @app.post("/api/case/{number}/skip")
    def save_skip(request: Request, number: int, body: SkipIn):
        with store.connect(study_dir) as conn:
            rater = rater_of(request, conn)
            case = case_or_404(conn, rater, number)
            store.set_skipped(conn, rater["pk"], case.case_pk, body.skipped)
            conn.commit()
            following = views.next_open_case(views.case_statuses(conn, rater["pk"]), after=number)
        return {"ok": True, "skipped": body.skipped, "next": following}

    @app.get("/case/{number}/image/{image_index}.json")
    def image_info(request: Request, number: int, image_index: int):
        with store.connect(study_dir) as conn:
            rater_of(request, conn)
            path = image_file(conn, number, image_index)
        volume = load_volume(path)
        return {
            "depth": volume.depth,
            "rgb": volume.rgb,
            "presets": ["auto", *window_presets()],
            "auto_window": list(volume.auto_window),
        }

    @app.get("/case/{number}/image/{image_index}.png")
    def image_slice(
        request: Request,
        number: int,
        image_index: int,
        slice_index: int | None = Query(None, alias="slice"),
        window: str = "auto",
    ):
        with store.connect(study_dir) as conn:
            rater_of(request, conn)
            path = image_file(conn, number, image_index)
        volume = load_volume(path)
        index = volume.depth // 2 if slice_index is None else slice_index
        try:
            resolve_window(volume, window)
            png = render_slice_png(volume, index, window)
        except (ValueError, IndexError) as error:
            raise HTTPException(422, str(error)) from None
        return Response(png, media_type="image/png")

    app.state.study_dir = study_dir
    return app


def _parse_score(value: object) -> int:
    """A score from the API (an int, never a bool) or the form fallback (the text "0".."5")."""
    if isinstance(value, int) and not isinstance(value, bool):
        score = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]", value.strip()):
        score = int(value.strip())
    else:
        raise HTTPException(422, f"score: expected an integer 0..5, got {value!r}")
    if not store.MIN_SCORE <= score <= store.MAX_SCORE:
        raise HTTPException(422, f"score: expected an integer 0..5, got {value!r}")
    return score
