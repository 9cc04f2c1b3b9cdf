"""Generated DICOMweb answers from a hostile server on 127.0.0.1: the pull never hangs, never keeps part
of a study, never reads past the cap, never follows a redirect off its host, and takes what is clean.

Each example is one poll against answers hypothesis draws: a search answer (good, or bad JSON, a
JSON object, 100,000 nested arrays, HTTP 500, a redirect, a trickle, an oversized answer, gzip;
with junk entries: UIDs of 65+ digits, with a trailing newline, numbers, missing tags) and 1-3
studies, each with a status, maybe a redirect (same host or another), a Content-Type (the
boundary quoted, missing, wrong, over 70 characters, not multipart), parts (valid instances,
instances padded to the cap -2/0/+2 bytes, random bytes, empty, an endless part, a Content-Length
over the cap, a part Content-Type that is not DICOM, the boundary inside a payload, no part
Content-Type), the closing boundary (missing, an epilogue, a preamble), the framing
(Content-Length, chunked, until close), chunk sizes, Content-Encoding, and trickles.

CI runs ``RADFM_PULL_EXAMPLES`` examples (default 12, derandomized); ``scripts/fuzz_dicomweb_pull.py``
runs thousands and prints :data:`OUTCOMES`.
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import json
import os
import shutil
import struct
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.dicomweb_lab import BOUNDARY, HostileDicomweb, Reply
from support.synthetic import write_chest_xray

from radfm.node.dicomweb_pull import MAX_QIDO_BYTES, DicomwebPull, PullError
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

EXAMPLES = int(os.environ.get("RADFM_PULL_EXAMPLES", "12"))
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 50, database=None,
                             suppress_health_check=list(HealthCheck))
MiB = 1024 * 1024
CAP = 1 * MiB  # max_instance_mb=1
ENDLESS_BYTES = 32 * MiB  # an "endless" part: far more than the node may read
READ_LIMIT = 24 * MiB  # the cap, the kernel's socket buffers and the client's read buffer, with room
OUTCOMES: Counter[str] = Counter()  # what each poll and study came to (the fuzz script prints it)

CLEAN_PARTS = {"valid", "padded_below", "padded_at", "no_part_type"}
PART_KINDS = ["valid", "valid", "valid", "padded_below", "padded_at", "padded_over", "garbage", "garbage_at_cap",
              "garbage_over_cap", "empty", "endless", "claims_over_cap", "wrong_part_type", "boundary_in_payload",
              "no_part_type"]
CONTENT_TYPES = ["ok"] * 6 + ["quoted", "missing_boundary", "wrong_boundary", "not_multipart", "huge_boundary",
                              "empty"]
CLOSINGS = ["ok"] * 5 + ["missing", "epilogue", "preamble"]
QIDO_KINDS = ["ok"] * 10 + ["bad_json", "object", "deep", "http_500", "no_content", "redirect_off", "redirect_same",
                            "trickle", "oversize", "gzip"]
JUNK = ["huge_uid", "newline_uid", "number", "missing_tag", "not_object", "empty_value", "letters", "duplicate"]

study_cases = st.fixed_dictionaries({
    "status": st.sampled_from([200] * 8 + [204, 404, 500]),
    "redirect": st.sampled_from([None] * 6 + ["same", "off"]),
    "content_type": st.sampled_from(CONTENT_TYPES),
    "parts": st.lists(st.sampled_from(PART_KINDS), max_size=3),
    "garbage": st.binary(max_size=300),
    "closing": st.sampled_from(CLOSINGS),
    "framing": st.sampled_from(["length", "chunked", "close"]),
    "chunk": st.sampled_from([1 << 16, 4096, 1 << 20, 7]),
    "encoding": st.sampled_from([None] * 8 + ["gzip"]),
    "slow": st.sampled_from([None] * 18 + ["body", "head"]),
})
cases = st.fixed_dictionaries({
    "qido": st.sampled_from(QIDO_KINDS),
    "qido_text": st.text(max_size=40),
    "qido_framing": st.sampled_from(["length", "chunked", "close"]),
    "junk": st.lists(st.sampled_from(JUNK), max_size=3),
    "studies": st.lists(study_cases, min_size=1, max_size=3),
})

_uids = itertools.count(1)
_made = tempfile.mkdtemp(prefix="radfm-pull-props-")  # where synthetic instances are written before being read
atexit.register(shutil.rmtree, _made, True)


def _instance(study_uid: str, pad_to: int | None = None) -> bytes:
    """A valid DX instance of ``study_uid``; with ``pad_to``, exactly that long (Data Set Trailing Padding)."""
    data = write_chest_xray(_made, size=16, study_uid=study_uid).read_bytes()
    if pad_to is None:
        return data
    fill = pad_to - len(data) - 12  # (FFFC,FFFC) OB: tag, VR, 2 reserved bytes, 4-byte length
    return data + b"\xfc\xff\xfc\xff" + b"OB\0\0" + struct.pack("<I", fill) + b"\0" * fill


def _part(kind: str, study_uid: str, garbage: bytes) -> tuple[str | None, bytes]:
    """``(part headers, payload)`` of one multipart part of ``kind``."""
    dicom = "Content-Type: application/dicom\r\n"
    payloads = {
        "valid": lambda: _instance(study_uid), "no_part_type": lambda: _instance(study_uid),
        "padded_below": lambda: _instance(study_uid, CAP - 2), "padded_at": lambda: _instance(study_uid, CAP),
        "padded_over": lambda: _instance(study_uid, CAP + 2), "garbage": lambda: garbage,
        "garbage_at_cap": lambda: (garbage or b"x") * (CAP // max(len(garbage), 1) + 1),
        "garbage_over_cap": lambda: b"\x01" * (CAP + 1), "empty": lambda: b"",
        "claims_over_cap": lambda: _instance(study_uid), "wrong_part_type": lambda: _instance(study_uid),
        "boundary_in_payload": lambda: _instance(study_uid)[:200] + f"\r\n--{BOUNDARY}\r\n".encode() + b"tail",
    }
    payload = payloads[kind]()
    if kind == "garbage_at_cap":
        payload = payload[:CAP]
    headers = {"no_part_type": "", "wrong_part_type": "Content-Type: text/plain\r\n",
               "claims_over_cap": dicom + f"Content-Length: {CAP + 1}\r\n"}.get(kind, dicom)
    return headers, payload


def _study_reply(case: dict, study_uid: str, server: HostileDicomweb) -> tuple[Reply, bool]:
    """The WADO-RS answer for one generated study, and whether it holds an endless part."""
    boundary = BOUNDARY
    content_type = {
        "ok": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "quoted": f'Multipart/Related; boundary="{boundary}"; type="application/dicom"',
        "missing_boundary": 'multipart/related; type="application/dicom"',
        "wrong_boundary": 'multipart/related; type="application/dicom"; boundary=not-the-one',
        "not_multipart": "application/dicom",
        "huge_boundary": "multipart/related; boundary=" + "b" * 71,
        "empty": "",
    }[case["content_type"]]
    if case["content_type"] == "huge_boundary":
        boundary = "b" * 71
    body: list[bytes] = [b"preamble text\r\n"] if case["closing"] == "preamble" else []
    endless = False
    for kind in case["parts"]:
        if kind == "endless":
            endless = True
            body.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.extend(itertools.repeat(b"\0" * MiB, ENDLESS_BYTES // MiB))
            break  # nothing comes after an endless part
        headers, payload = _part(kind, study_uid, case["garbage"])
        body.append(f"--{boundary}\r\n{headers}\r\n".encode() + payload + b"\r\n")
    if not endless and case["closing"] != "missing":
        body.append(f"--{boundary}--\r\n".encode())
        if case["closing"] == "epilogue":
            body.append(b"an epilogue, which carries nothing\r\n")
    data = b"".join(body)
    headers = [("Content-Type", content_type)] if content_type else []
    if case["encoding"] == "gzip":
        data = gzip.compress(data, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    size = max(case["chunk"], len(data) // 256)  # tiny chunks on small bodies only: keep examples quick
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    if case["slow"] == "body":
        chunks = itertools.chain(chunks[:1], itertools.repeat(b" "))  # trickles on for ever
    reply = Reply(case["status"], headers, chunks, "close" if case["slow"] == "body" else case["framing"],
                  delay_s=0.2 if case["slow"] == "body" else 0.0, head_delay_s=0.05 if case["slow"] == "head" else 0.0)
    return reply, endless


def _is_clean(case: dict) -> bool:
    """A study the pull must take whole (when the search is answered and the deadline allows)."""
    return (case["status"] == 200 and case["redirect"] in (None, "same") and case["content_type"] in ("ok", "quoted")
            and case["closing"] in ("ok", "epilogue") and case["encoding"] is None and case["slow"] is None
            and all(kind in CLEAN_PARTS for kind in case["parts"]))


def _qido_reply(case: dict, uids: list[str], server: HostileDicomweb, prefix: str) -> Reply:
    kind = case["qido"]
    entries: list[object] = [{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in uids]
    junk = {"huge_uid": {"0020000D": {"Value": ["1." + "2" * 70]}},
            "newline_uid": {"0020000D": {"Value": [f"{uids[0]}9\n"]}}, "number": {"0020000D": {"Value": [1.5]}},
            "missing_tag": {"00100010": {"Value": [{"Alphabetic": "X"}]}}, "not_object": "1.2.3",
            "empty_value": {"0020000D": {"vr": "UI"}}, "letters": {"0020000D": {"Value": ["1.2.abc"]}},
            "duplicate": {"0020000D": {"Value": [uids[0]]}}}
    entries += [junk[name] for name in case["junk"]]
    body = json.dumps(entries).encode()
    json_type = [("Content-Type", "application/dicom+json")]
    if kind == "bad_json":
        return Reply(200, json_type, [case["qido_text"].encode()], case["qido_framing"])
    if kind == "object":
        return Reply(200, json_type, [b'{"0020000D": {}}'], case["qido_framing"])
    if kind == "deep":
        return Reply(200, json_type, [b"[" * 100_000 + b"]" * 100_000], case["qido_framing"])
    if kind == "http_500":
        return Reply(500, [("Content-Type", "text/plain")], [b"boom"], case["qido_framing"])
    if kind == "no_content":
        return Reply(204, [], [], "length")
    if kind == "redirect_off":
        return Reply(302, [("Location", f"http://localhost:{server.port}{prefix}/offhost-search")], [b""], "length")
    if kind == "redirect_same":
        server.routes[f"{prefix}/moved-search"] = Reply(200, json_type, [body], case["qido_framing"])
        return Reply(301, [("Location", f"{prefix}/moved-search")], [b""], "length")
    if kind == "trickle":
        return Reply(200, json_type, itertools.chain([b"["], itertools.repeat(b" ")), "close", delay_s=0.1)
    if kind == "oversize":
        return Reply(200, json_type, [b"[" + b"{}," * (MAX_QIDO_BYTES // 3) + b"{}]"], case["qido_framing"])
    if kind == "gzip":
        return Reply(200, json_type + [("Content-Encoding", "gzip")], [gzip.compress(body)], case["qido_framing"])
    return Reply(200, json_type, [body], case["qido_framing"])


def _reason_class(reason: str) -> str:
    for needle, name in (("max_instance_mb", "over max_instance_mb (counted while streaming)"),
                         ("redirect", "redirect off the configured host"), ("pull.timeout_s", "poll deadline"),
                         ("Content-Encoding", "Content-Encoding not identity"), ("malformed", "malformed multipart"),
                         ("Content-Type", "Content-Type"), ("ended inside", "truncated (no closing boundary)"),
                         ("status 0x", "instance refused by the SCP's checks"), ("HTTP ", "HTTP status"),
                         ("not JSON", "search answer not JSON"), ("expected an array", "search answer not an array"),
                         ("larger than", "search answer over the size cap"), ("headers longer", "part headers too long")):
        if needle in reason:
            return name
    return "other: " + reason[:60]


def run_case(server: HostileDicomweb, root: Path, case: dict) -> None:
    """One generated poll; asserts the properties; counts the outcome in :data:`OUTCOMES`."""
    n = next(_uids)
    prefix = f"/case{n}/dicom-web"  # each example its own DICOMweb root on the one server
    uids = [f"1.2.826.0.1.3680043.8.498.{n}.{i + 1}" for i in range(len(case["studies"]))]
    endless = {}
    for uid, study in zip(uids, case["studies"]):
        reply, endless[uid] = _study_reply(study, uid, server)
        path = f"{prefix}/studies/{uid}"
        if study["redirect"] == "off":
            server.routes[path] = Reply(302, [("Location", f"http://localhost:{server.port}{prefix}/off/{uid}")],
                                        [b""], "length")
            server.routes[f"{prefix}/off/{uid}"] = reply
        elif study["redirect"] == "same":
            server.routes[path] = Reply(307, [("Location", f"{prefix}/same/{uid}")], [b""], "length")
            server.routes[f"{prefix}/same/{uid}"] = reply
        else:
            server.routes[path] = reply
    server.routes[f"{prefix}/studies"] = _qido_reply(case, uids, server, prefix)
    slow = any(s["slow"] for s in case["studies"]) or case["qido"] == "trickle"
    state = root / f"case{n}"
    config = NodeConfig.from_dict({
        "state_dir": str(state), "max_instance_mb": CAP // MiB, "retry_first_s": 60, "max_attempts": 3,
        "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "pull": {"url": f"http://127.0.0.1:{server.port}{prefix}"}})
    config.pull.timeout_s = 0.5 if slow else 20.0  # a trickle costs the deadline: keep it short there
    queue = JobQueue(config.state_path)
    try:
        puller = DicomwebPull(config, StorageSCP(config, queue))
        started = time.monotonic()
        try:
            puller.poll_once()
            poll_error = None
        except PullError as error:  # the only error a poll may raise
            poll_error = str(error)
        took = time.monotonic() - started
        assert took < config.pull.timeout_s + 3, f"the poll took {took:.1f} s (pull.timeout_s={config.pull.timeout_s})"
        OUTCOMES["polls"] += 1
        OUTCOMES["poll: " + ("searched" if poll_error is None else "refused: " + _reason_class(poll_error))] += 1
        assert not list((state / "tmp").iterdir()), "temp files left behind"
        requested = [p for p in server.requests if p.startswith(prefix)]
        assert not any("/off" in p for p in requested), f"followed a redirect off the host: {requested}"
        listed = case["qido"] in ("ok", "redirect_same")  # the search names this example's studies
        if listed:
            assert poll_error is None or slow, poll_error
        else:
            assert not any("/studies/" in p for p in requested), (poll_error, requested)
        pulls = {p["study_uid"]: p for p in queue.pulls()}
        for uid, study in zip(uids, case["studies"]):
            fetched = f"{prefix}/studies/{uid}" in requested
            state_of = "done" if (fetched and uid not in pulls and not queue.pull_due(uid)) else (
                pulls[uid]["state"] if uid in pulls else "not fetched")
            if endless[uid]:
                sent = server.bytes_sent(f"{prefix}/{'same' if study['redirect'] == 'same' else 'studies'}/{uid}")
                assert sent < READ_LIMIT, f"{sent / MiB:.1f} MiB of an endless part read"
            if state_of == "done":
                assert _is_clean(study), f"a study with {study} was taken"
                want = sum(kind in CLEAN_PARTS for kind in study["parts"])
                assert queue.pending_count(uid) == want, (queue.pending_count(uid), want)
                OUTCOMES["study: taken whole"] += 1
            elif state_of == "not fetched":
                assert not listed or slow, f"a listed study was never fetched: {study}"
                assert queue.pending_count(uid) == 0
                OUTCOMES["study: not reached (search refused or deadline)"] += 1
            else:
                reason = pulls[uid]["reason"] or ""
                assert queue.pending_count(uid) == 0, "a failed study kept part of its instances"
                assert not _is_clean(study) or (slow and "pull.timeout_s" in reason), (study, reason)
                OUTCOMES["study refused: " + _reason_class(reason)] += 1
    finally:
        queue.close()
        shutil.rmtree(state, ignore_errors=True)
        for path in [p for p in server.routes if p.startswith(prefix)]:
            del server.routes[path]


def test_generated_dicomweb_answers_never_hold_the_pull_keep_part_of_a_study_or_read_past_the_cap():
    root = Path(tempfile.mkdtemp(prefix="radfm-pull-cases-"))
    with HostileDicomweb() as server:
        @PROPERTY_SETTINGS
        @given(case=cases)
        def check(case: dict) -> None:
            run_case(server, root, case)

        try:
            check()
        finally:
            shutil.rmtree(root, ignore_errors=True)
