"""Benchmark ``radfm.transforms.preprocess_scan`` against two references, side by side.

Cases: (a) nilearn's MNI152 T1 template (NIfTI), (b) a generated 512x512x300 int16 CT
(uncompressed NIfTI, LPS storage so that our pipeline has to reorient), (c) the 1955x1841
chest radiograph of pydicom-data (RG1_UNCR.dcm).

Reference ("bare"): nibabel / pydicom load -> float32 -> min-max -> one
``torch.nn.functional.interpolate`` (trilinear 3D / bilinear 2D) -> 3 channels (-> depth 4 for 2D).
It does no reorientation, no DICOM rescale and no checks.

Reference ("monai"): the pipeline a MONAI user would write for the same output grid:
``LoadImage(image_only=True, ensure_channel_first=True)`` (MONAI picks its reader: nibabel for
NIfTI, pydicom/ITK for DICOM) -> ``ScaleIntensity()`` (min-max to [0, 1]) -> ``Resize`` to
[256, 256, target_depth(D)] (3D) or [512, 512] (2D) with the same linear interpolation as ours
(``mode="trilinear"``/``"bilinear"``, no antialiasing) -> ``RepeatChannel(3)`` (2D: the slice
repeated to depth 4). Acceptance (issue 12): ours <= 0.5x its time and <= its peak RSS.

Each (case, method) runs in its own subprocess so peak memory does not leak between cases:
after a warm-up call (lazy imports, caches), the kernel's peak-RSS mark (VmHWM) is reset and
peak RSS increase = VmHWM after one call minus the RSS just before it. Time = median of
``--repeats`` further calls. Usage::

    python scripts/bench_preprocess.py [--repeats 3] [--output bench.md] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_now_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reference(path: str):
    """Bare reference: load, float32, min-max, one interpolate, 3 channels."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from radfm.transforms import target_depth

    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        array = np.asanyarray(nib.load(path).dataobj)
    else:
        import pydicom

        array = pydicom.dcmread(path).pixel_array
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))  # one converting copy, C order
    low, high = torch.aminmax(x)
    x.sub_(low).div_(high - low)  # in place: no extra full-size temporaries
    if x.ndim == 2:
        x = F.interpolate(x[None, None], size=(512, 512), mode="bilinear", align_corners=False)[0]
        return x[..., None].repeat(3, 1, 1, 4)
    size = (256, 256, target_depth(x.shape[2]))
    return F.interpolate(x[None, None], size=size, mode="trilinear", align_corners=False)[0].repeat(3, 1, 1, 1)


def _monai(path: str):
    """MONAI's own pipeline for the same grid (see the module docstring)."""
    from monai.transforms import LoadImage, RepeatChannel, Resize, ScaleIntensity, SqueezeDim

    from radfm.transforms import target_depth

    image = LoadImage(image_only=True, ensure_channel_first=True)(path)
    if image.ndim == 4 and image.shape[-1] == 1:  # MONAI's DICOM readers give a radiograph as [C, H, W, 1]
        image = SqueezeDim(dim=-1)(image)
    image = ScaleIntensity(minv=0.0, maxv=1.0)(image)
    if image.ndim == 3:  # [C, H, W] radiograph
        image = Resize(spatial_size=(512, 512), mode="bilinear", align_corners=False)(image)
        return RepeatChannel(repeats=3)(image[..., None].repeat(1, 1, 1, 4))
    size = (256, 256, target_depth(image.shape[-1]))
    image = Resize(spatial_size=size, mode="trilinear", align_corners=False)(image)
    return RepeatChannel(repeats=3)(image)


def _ours(path: str):
    from radfm.transforms import preprocess_scan

    return preprocess_scan(path)


def worker(method: str, path: str, repeats: int) -> dict:
    """Run one method on one file in this process; returns timings and memory as a dict."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    run = {"ours": _ours, "reference": _reference, "monai": _monai}[method]
    run(path)  # warm-up: lazy imports and first-call caches are not what we measure
    import gc

    gc.collect()
    before = _rss_now_bytes()
    _reset_peak_rss()
    start = time.perf_counter()
    output = run(path)
    first_s = time.perf_counter() - start
    peak_increase = max(0, _peak_rss_bytes() - before)
    shape = tuple(output.shape)
    del output
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = run(path)
        times.append(time.perf_counter() - start)
        del output
    return {"method": method, "first_s": first_s, "median_s": statistics.median(times) if times else first_s,
            "peak_increase_bytes": peak_increase, "output_shape": shape}


def _run_worker(method: str, path: Path, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", method, str(path), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_cases(workdir: Path) -> list[tuple[str, Path, int]]:
    """(name, path, raw size in bytes of the stored pixel array) for the three cases."""
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_template
    from pydicom.data import get_testdata_file

    from radfm.utils.io import atomic_path

    mni = workdir / "mni152_t1.nii.gz"
    template = load_mni152_template()
    nib.save(template, mni)
    ct = workdir / "ct_512x512x300_int16.nii"
    if not ct.exists():
        rng = np.random.default_rng(0)
        volume = np.full((512, 512, 300), -1000, dtype=np.int16, order="F")
        body = (np.arange(512)[:, None] - 256) ** 2 + (np.arange(512)[None, :] - 256) ** 2 < 200 ** 2
        for k in range(300):  # an air-filled scanner with a water-like body and noise
            plane = np.where(body, 40, -1000).astype(np.int16)
            plane += rng.integers(-20, 20, size=(512, 512), dtype=np.int16)
            volume[:, :, k] = plane
        with atomic_path(ct) as temp:  # keeps the ".nii" suffix nibabel needs
            nib.save(nib.Nifti1Image(volume, np.diag([-0.7, -0.7, 1.0, 1.0])), temp)
    radiograph = Path(get_testdata_file("RG1_UNCR.dcm", download=False))
    return [
        ("MNI152 T1 (nilearn)", mni, int(np.prod(template.shape)) * template.get_data_dtype().itemsize),
        ("CT 512x512x300 int16 (generated)", ct, 512 * 512 * 300 * 2),
        ("chest radiograph 1955x1841 (pydicom-data RG1_UNCR)", radiograph, 1955 * 1841 * 2),
    ]


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:.1f}"


def benchmark(repeats: int, workdir: Path) -> str:
    rows = []
    for name, path, raw in make_cases(workdir):
        results = {}
        for method in ("reference", "monai", "ours"):
            print(f"[bench] {name}: {method} ...", file=sys.stderr, flush=True)
            results[method] = _run_worker(method, path, repeats)
        ours, ref, mon = results["ours"], results["reference"], results["monai"]
        rows.append((name, raw, ours, ref, mon))
        print(f"[bench] {name}: ours {ours['median_s']:.3f} s, bare {ref['median_s']:.3f} s, "
              f"monai {mon['median_s']:.3f} s; peak +{_mb(ours['peak_increase_bytes'])} MB "
              f"(monai +{_mb(mon['peak_increase_bytes'])} MB) vs raw {_mb(raw)} MB", file=sys.stderr, flush=True)
    lines = [
        f"Preprocessing benchmark (median of {repeats} calls after a first call; "
        f"torch threads: {os.environ.get('BENCH_THREADS', 'default')}; {os.cpu_count()} CPUs visible)",
        "",
        "| scan | raw MB | output | ours s | bare ref s | MONAI s | ours/bare | ours/MONAI "
        "| ours peak RSS +MB | bare peak +MB | MONAI peak +MB | ours peak / raw | ours peak / MONAI peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, raw, ours, ref, mon in rows:
        lines.append(
            f"| {name} | {_mb(raw)} | {list(ours['output_shape'])} | {ours['median_s']:.3f} | {ref['median_s']:.3f} "
            f"| {mon['median_s']:.3f} | {ours['median_s'] / ref['median_s']:.2f} "
            f"| {ours['median_s'] / mon['median_s']:.2f} | {_mb(ours['peak_increase_bytes'])} "
            f"| {_mb(ref['peak_increase_bytes'])} | {_mb(mon['peak_increase_bytes'])} "
            f"| {ours['peak_increase_bytes'] / raw:.2f} "
            f"| {ours['peak_increase_bytes'] / max(mon['peak_increase_bytes'], 1):.2f} |")
        if list(ours["output_shape"]) != list(mon["output_shape"]):
            lines[-1] += f" (MONAI output {list(mon['output_shape'])})"
    lines += ["", "Targets: vs the bare reference: time ratio <= 1.5, peak RSS increase <= 3x the raw (stored) "
              "pixel array; vs MONAI's LoadImage + ScaleIntensity + Resize (issue 12): time ratio <= 0.5 and "
              "peak RSS <= MONAI's.",
              "Peak RSS increase = peak RSS (VmHWM, reset after a warm-up call) minus RSS before the call, "
              "in a fresh process per case and method (includes the output tensor)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="write the Markdown table here (default: print it)")
    parser.add_argument("--workdir", help="where to write the generated scans (default: a temp folder)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.repeats)))
        return
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(args.workdir) if args.workdir else Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        table = benchmark(args.repeats, workdir)
    if args.output:
        output = Path(args.output)
        from radfm.utils.io import atomic_write_text

        atomic_write_text(output, table)
        print(f"wrote {output}")
    print(table)


if __name__ == "__main__":
    main()
