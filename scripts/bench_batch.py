"""``radfm batch`` (Ray Data) against ``radfm evaluate`` on the same studies: studies per minute and peak memory.

    .venv/bin/python scripts/bench_batch.py [--studies 200] [--models demo,cpu-small] [--workers 1,2]
                                            [--max-new-tokens 16] [--batch-size 8] [--folder outputs/bench_batch]

The studies are generated phantoms (``support.synthetic``): half DICOM CT series (16 slices of
128 x 128), half DX chest X-rays (256 x 256), listed in one manifest. Each command runs as its own
process, as a user runs it (model loading and, for batch, Ray's start-up included in the wall time):

* ``radfm evaluate --manifest M`` (one process: its reading pool, then the batch's one generate call);
* ``radfm batch --manifest M --read_workers W --actors 1`` for each W in ``--workers`` (W CPU workers
  read + preprocess, one model actor with one torch thread; a local Ray with W + 1 CPUs).

Reported per command: wall seconds, studies per minute over the wall time (start-up included), the
rate once the model is up (batch: first generate call to last answer, from its rows; evaluate: its
progress bar's final rate over the prediction loop), and peak RSS sampled every 0.2 s:
the driver, the largest Ray worker and all Ray workers together, and Ray's own daemons.
Models: ``demo`` = bundles/radfm/models/demo; ``cpu-small`` = the ``cpu-small`` preset with random
weights (its LLaMA vocabulary cut to the tiny tokenizer's), saved once under the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def make_studies(folder: Path, n: int) -> Path:
    """``n`` phantom studies (half CT series, half X-rays) and their manifest; reused when already there."""
    from support.synthetic import write_chest_xray, write_ct_series

    manifest = folder / f"studies{n}.jsonl"
    if manifest.is_file():
        return manifest
    lines = []
    for i in range(n):
        study = folder / "studies" / f"{i:04d}"
        if i % 2 == 0:
            write_ct_series(study, slices=16, size=128, patient_id=f"BENCH{i:04d}")
            path, question = study, "<image> Describe the findings of this CT scan."
        else:
            path = write_chest_xray(study, size=256, patient_id=f"BENCH{i:04d}")
            question = "<image> Describe the findings of this chest X-ray."
        lines.append(json.dumps({"id": f"study{i:04d}", "dataset": "bench", "task": "report", "instruction": question,
                                 "response": "", "split": "test", "images": [{"path": str(path)}]}))
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def model_folder(name: str, folder: Path) -> Path:
    """The demo model, or a saved ``cpu-small`` (random weights, seeded)."""
    if name == "demo":
        return ROOT / "bundles" / "radfm" / "models" / "demo"
    target = folder / "cpu-small"
    if not (target / "config.json").is_file():
        import torch

        from radfm.model.config import RadFMConfig
        from radfm.model.loading import tiny_tokenizer
        from radfm.model.radfm import RadFMForConditionalGeneration

        torch.manual_seed(0)
        tokenizer = tiny_tokenizer()
        base = tokenizer.convert_tokens_to_ids("<image>")
        RadFMForConditionalGeneration(RadFMConfig.preset("cpu-small", vocab_size=base)).eval().save_pretrained(target, tokenizer=tokenizer)
    return target


class PeakRss:
    """Samples the RSS of a process and its descendants every 0.2 s: driver, Ray workers, Ray daemons."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.driver = self.worker_max = self.workers_sum = self.daemons_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                workers, daemons = [], []
                for child in self.root.children(recursive=True):
                    try:
                        name = " ".join(child.cmdline()[:1]) or child.name()
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    (workers if name.startswith("ray::") or "default_worker.py" in " ".join(child.cmdline())
                     else daemons).append(rss)
                self.worker_max = max([self.worker_max, *workers])
                self.workers_sum = max(self.workers_sum, sum(workers))
                self.daemons_sum = max(self.daemons_sum, sum(daemons))
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"driver_mb": self.driver / MiB, "largest_worker_mb": self.worker_max / MiB,
                "workers_total_mb": self.workers_sum / MiB, "ray_daemons_mb": self.daemons_sum / MiB}


def run(command: list[str], log: Path) -> tuple[float, dict[str, float], int]:
    """(wall seconds, peak RSS figures, exit status) of one command."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = PeakRss(process.pid)
        code = process.wait()
    wall = time.perf_counter() - started
    return wall, sampler.stop(), code


def busy_rate(output: Path) -> float | None:
    """Studies per minute of ``radfm batch`` once the model is up: first generate call to last answer."""
    from radfm.batch.parquet_results import read_results

    rows = read_results(output)
    if not len(rows):
        return None
    span = rows["generate_finished"].max() - rows["generate_started"].min()
    return len(rows) / span * 60 if span > 0 else None


def evaluate_rate(log: Path) -> float | None:
    """Studies per minute of ``radfm evaluate``'s prediction loop (its progress bar's final rate)."""
    import re

    rate = None
    for match in re.finditer(r"(\d+(?:\.\d+)?)(case/s|s/case)", log.read_text(errors="replace")):
        value = float(match.group(1))
        rate = value * 60 if match.group(2) == "case/s" else 60 / value
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--models", default="demo,cpu-small")
    parser.add_argument("--workers", default="1,2", help="CPU workers (read tasks) of radfm batch, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--folder", default="outputs/bench_batch")
    args = parser.parse_args()
    folder = (ROOT / args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = make_studies(folder, args.studies)
    radfm = [sys.executable, "-m", "radfm.cli"]
    print(f"{args.studies} studies (phantoms: {args.studies - args.studies // 2} DICOM CT series of 16 x 128 x 128, "
          f"{args.studies // 2} DX X-rays of 256 x 256), batch size {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| model | command | wall s | studies/min (wall) | studies/min (model up) | answered | "
          "driver peak MiB | largest worker MiB | workers total MiB | Ray daemons MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = model_folder(name, folder)
        runs = [("radfm evaluate", [*radfm, "evaluate", "--manifest", str(manifest), "--model", str(model),
                                    "--batch_size", str(args.batch_size), "--max_new_tokens", str(args.max_new_tokens),
                                    "--bertscore", "False", "--n_resamples", "1"], None)]
        for workers in [int(w) for w in args.workers.split(",")]:
            runs.append((f"radfm batch, {workers} CPU worker(s)",
                         [*radfm, "batch", "--manifest", str(manifest), "--model", str(model), "--read_workers",
                          str(workers), "--actors", "1", "--num_cpus", str(workers + 1), "--batch_size",
                          str(args.batch_size), "--max_new_tokens", str(args.max_new_tokens), "--progress", "False"],
                         workers))
        for label, command, workers in runs:
            output = folder / "out" / f"{name}-{label.split(',')[0].split()[-1]}-{workers or 0}"
            shutil.rmtree(output, ignore_errors=True)
            command = [*command, "--output", str(output)]
            wall, memory, code = run(command, folder / f"{output.name}.log")
            if workers is None:
                answered = sum(1 for line in (output / "predictions.jsonl").read_text().splitlines()
                               if line.strip() and json.loads(line).get("error") is None) if code == 0 else 0
                busy = evaluate_rate(folder / f"{output.name}.log")
            else:
                from radfm.batch.parquet_results import read_results

                rows = read_results(output) if code == 0 else []
                answered = int(rows["error"].isna().sum()) if len(rows) else 0
                busy = busy_rate(output) if code == 0 else None
            print(f"| {name} | {label} | {wall:.1f} | {args.studies / wall * 60:.1f} | "
                  f"{'-' if busy is None else f'{busy:.1f}'} | {answered}{'' if code == 0 else f' (exit {code})'} | "
                  f"{memory['driver_mb']:.0f} | {memory['largest_worker_mb']:.0f} | {memory['workers_total_mb']:.0f} | "
                  f"{memory['ray_daemons_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
