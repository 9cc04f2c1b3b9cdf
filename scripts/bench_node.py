"""Benchmark of the DICOM node: N studies pushed at once through Orthanc -> node -> SR back (demo model).

    python scripts/bench_node.py --studies 20 [--max_studies_in_memory 1] [--engine transformers|vllm]
                                 [--model DIR] [--json out.json]

Starts Debian's Orthanc (``apt-get install orthanc orthanc-dicomweb``) and ``radfm node run`` on
free ports of 127.0.0.1, writes N synthetic studies (CT series and chest X-rays, alternating) into
Orthanc, then asks Orthanc to send them all to the node in one request and waits until every
study's report is back in Orthanc. Prints studies per minute (from the push to the last report
stored) and the time per stage from the node's job table (receive: first to last instance of a
study; queue wait: sealed to started; preprocess; generate; send: report written to delivered),
the most jobs that held images at the same time (must not exceed ``max_studies_in_memory``) and
the node's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lab: tests/support, not installed


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--ct_slices", type=int, default=32)
    parser.add_argument("--ct_size", type=int, default=128)
    parser.add_argument("--max_studies_in_memory", type=int, default=1)
    parser.add_argument("--stable_after_s", type=float, default=2.0)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--timeout_s", type=float, default=900.0)
    parser.add_argument("--engine", default="transformers", choices=("transformers", "vllm"),
                        help="the node config's engine (vllm: run this script with .venv-vllm/bin/python)")
    parser.add_argument("--model", default=None, help="model folder (default: the demo model)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.studies < 1:
        parser.error("--studies must be >= 1")

    import pydicom
    from support.orthanc_lab import LOOPBACK, ORTHANC_AET, NodeProcess, Orthanc, free_port
    from support.synthetic import write_chest_xray, write_ct_series

    work = Path(tempfile.mkdtemp(prefix="radfm-bench-node-"))
    node_port = free_port()
    for name in ("orthanc", "node"):
        (work / name).mkdir()
    orthanc = Orthanc(work / "orthanc", {"radfm": ["RADFM", LOOPBACK, node_port]})
    orthanc.start()
    node = NodeProcess(work / "node", {
        "ae_title": "RADFM", "host": LOOPBACK, "port": node_port, "state_dir": "state",
        "allowed_callers": [{"ae_title": ORTHANC_AET, "host": LOOPBACK}, {"ae_title": "TESTSCU", "host": LOOPBACK}],
        "stable_after_s": args.stable_after_s, "max_new_tokens": args.max_new_tokens,
        "max_studies_in_memory": args.max_studies_in_memory, "retry_first_s": 0.5, "retry_max_s": 5,
        "engine": args.engine, "model": args.model,
        "rules": [{"name": "ct", "modalities": ["CT"], "prompt": "Look at the image <image> and answer: Where is the lesion?"},
                  {"name": "chest-xray", "modalities": ["DX"], "prompt": "What is the modality of the input scan <image>?"}],
        "destinations": [{"name": "orthanc", "kind": "dimse", "ae_title": ORTHANC_AET, "host": LOOPBACK,
                          "port": orthanc.dicom_port}],
    })
    try:
        node.start(timeout_s=900.0)  # the vLLM engine starts in tens of seconds to minutes on a busy CPU
        studies = []
        for i in range(args.studies):
            folder = work / "studies" / f"{i:03d}"
            files = (write_ct_series(folder, slices=args.ct_slices, size=args.ct_size, patient_id=f"BENCH{i:03d}")
                     if i % 2 == 0 else [write_chest_xray(folder, size=512, patient_id=f"BENCH{i:03d}")])
            orthanc.store_files(files)
            studies.append(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        ids = []
        for uid in studies:
            found = orthanc.session.post(f"{orthanc.url}/tools/lookup", data=uid, timeout=30).json()
            ids += [item["ID"] for item in found if item["Type"] == "Study"]
        started = time.time()
        orthanc.post("/modalities/radfm/store", {"Resources": ids, "Synchronous": True})  # all at once
        pushed = time.time() - started
        jobs = [node.wait_for(uid, timeout_s=args.timeout_s) for uid in studies]
        elapsed = max(job["finished_at"] for job in jobs) - started
        failed = [job for job in jobs if job["state"] != "done"]
        reports = sum(len(orthanc.srs_of_study(uid)) for uid in studies)
        stages: dict[str, list[float]] = {}
        for job in jobs:
            for key, value in json.loads(job["timings"] or "{}").items():
                if key != "answered_at":
                    stages.setdefault(key, []).append(value)
        overlap = _max_overlap([(job["started_at"], json.loads(job["timings"])["answered_at"]) for job in jobs
                                if job["state"] == "done"])
        figures = {
            "studies": args.studies, "done": len(jobs) - len(failed), "reports_in_orthanc": reports,
            "push_s": round(pushed, 2), "elapsed_s": round(elapsed, 2),
            "studies_per_minute": round(args.studies / elapsed * 60, 2),
            "stage_s": {key: {"mean": round(statistics.mean(v), 3), "median": round(statistics.median(v), 3),
                              "max": round(max(v), 3)} for key, v in stages.items()},
            "max_jobs_holding_images_at_once": overlap, "max_studies_in_memory": args.max_studies_in_memory,
            "node_peak_rss_mib": _peak_rss_mib(node.process.pid),
            "ct": f"{args.ct_slices} x {args.ct_size}x{args.ct_size}", "xray": "512x512",
            "max_new_tokens": args.max_new_tokens, "stable_after_s": args.stable_after_s, "engine": args.engine,
        }
    finally:
        node.stop()
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{figures['done']}/{args.studies} studies answered, {reports} reports in Orthanc, "
          f"{figures['studies_per_minute']} studies/min ({figures['elapsed_s']} s from the push to the last report; "
          f"Orthanc's push took {figures['push_s']} s)")
    print(f"{'stage':<11} {'mean s':>8} {'median s':>9} {'max s':>8}")
    for key in ("receive", "queue_wait", "preprocess", "generate", "send"):
        if key in figures["stage_s"]:
            s = figures["stage_s"][key]
            print(f"{key:<11} {s['mean']:>8.3f} {s['median']:>9.3f} {s['max']:>8.3f}")
    print(f"jobs holding images at once: at most {overlap} (max_studies_in_memory={args.max_studies_in_memory}); "
          f"node peak RSS {figures['node_peak_rss_mib']} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if failed or reports != args.studies or overlap > args.max_studies_in_memory:
        sys.exit(1)
    return figures


if __name__ == "__main__":
    main()
