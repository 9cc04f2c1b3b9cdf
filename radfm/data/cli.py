"""``radfm data``: convert published dataset layouts to manifests; make synthetic phantoms."""

from __future__ import annotations

from pathlib import Path


class DataCommands:
    """Dataset tools. ``radfm data convert FORMAT SRC --output manifest.jsonl`` or
    ``radfm data phantoms --output DIR --n 2000 --seed 0``."""

    def convert(self, format: str, src: str, output: str, **options) -> dict:
        """Convert a published dataset layout to a JSONL manifest.

        Args:
            format: one of vqa-rad, slake, pmc-vqa, iu-xray, mimic-cxr, report-csv,
                diagnosis-table, radiopaedia, medpix, pmc-inline, pmc-casereport.
            src: the dataset file or folder, as published.
            output: the manifest to write (image paths are stored relative to its folder).
            **options: adapter options, e.g. --seed 0, --check_images False,
                --multiple_choice True (pmc-vqa), --languages en (slake).
        Returns a summary: samples written per task.
        """
        from collections import Counter

        from radfm.data.adapters import ADAPTERS, get_adapter
        from radfm.data.manifest import write_manifest
        from radfm.utils.cli import UsageError, check_call, nearest

        try:
            adapter = get_adapter(str(format))
        except KeyError:
            guess = nearest(str(format).lower(), list(ADAPTERS))
            raise UsageError(f"unknown format {format!r}{f' (did you mean {guess}?)' if guess else ''}; "
                             f"choose from: {', '.join(ADAPTERS)}") from None
        # the adapter's options are checked like flags before anything is read
        check_call(adapter, ["SRC", *(f"--{key}={value}" for key, value in options.items())])
        if "languages" in options and isinstance(options["languages"], str):
            options["languages"] = tuple(options["languages"].split(","))
        samples = get_adapter(format)(src, **options)
        if not samples:
            raise SystemExit(f"radfm data convert: no samples found in {src} for format {format!r}")
        counts = Counter(sample.id for sample in samples)
        duplicates = sorted(case_id for case_id, count in counts.items() if count > 1)
        if duplicates:  # write nothing the manifest loader would refuse
            raise ValueError(f"{src}: {len(duplicates)} duplicate sample id(s), e.g. {duplicates[:3]}; nothing written")
        count = write_manifest(samples, output)
        out_dir = Path(output).resolve().parent
        outside = sum(1 for s in samples for im in s.images if not Path(im.path).resolve().is_relative_to(out_dir))
        summary = {"output": str(output), "samples": count,
                   "tasks": dict(Counter(s.task or "interleaved" for s in samples))}
        if outside:
            summary["note"] = (f"{outside} image path(s) lie outside {out_dir}; load the manifest with "
                               "data_root= a folder that holds both")
        return summary

    def phantoms(self, output: str, n: int = 2000, seed: int = 0, overwrite: bool = False) -> dict:
        """Write synthetic 2D/3D phantoms with VQA/diagnosis/report/rationale manifests.

        Args:
            output: folder to create (images/, train/val/test.jsonl, cases.jsonl).
            n: number of cases (scans); each gives 5–7 samples.
            seed: everything is determined by it (same seed -> identical files).
            overwrite: replace a non-empty output folder.
        """
        from radfm.data.phantoms import make_phantoms

        return make_phantoms(output, n=int(n), seed=int(seed), overwrite=bool(overwrite))
