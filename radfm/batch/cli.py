"""``radfm batch``: the command line of :func:`radfm.batch.ray_pipeline.run_batch` (docs/batch.md)."""

from __future__ import annotations

from typing import Any


def batch(output: str, manifest: str | None = None, folder: str | None = None, dicomweb: str | None = None,
          qido: Any = None, prompt: str | None = None, rules: str | None = None, model: str | None = None,
          engine: str = "transformers", device: str = "cpu", dtype: str | None = None, batch_size: int = 4,
          actors: int = 1, gpus_per_actor: float = 0, cpus_per_actor: float = 1, read_workers: int = 1,
          read_cpus: float = 1, max_new_tokens: int = 64, max_scan_mb: int = 2048, budget_mb: int = 2048,
          retry_failed: bool = False, sr_folder: str | None = None, split: str | None = None,
          address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 200,
          progress: bool = True, limit: int | None = None) -> None:
    """Run RadFM over an archive on Ray Data: one Parquet row per study/series, resumable; prints the summary.

    Args:
        output: output folder (results/part-*.parquet, summary.md); rerun with the same folder to resume.
        manifest: a JSONL manifest (docs/data.md); each sample's instruction is its question unless --prompt.
        folder: a folder tree of studies: DICOM series (picked by --rules), NIfTI/NRRD/MHA/PNG files.
        dicomweb: a DICOMweb root (http://HOST:PORT/dicom-web): the studies --qido finds are fetched and answered.
        qido: QIDO-RS study filters, NAME=VALUE,... (e.g. ModalitiesInStudy=CT,StudyDate=20240101-20241231).
        prompt: the question, or bank:TASK[:N] (entry N of a prompt bank, e.g. bank:report:2).
        rules: a rules file in the node's series-rules format (or a node config): series and their questions.
        model: model folder (default: the demo model).
        engine: transformers (vllm is not wired yet and is refused).
        device: cpu or cuda (each actor's GPU). dtype: e.g. bfloat16.
        batch_size: studies per generate call and per output file.
        actors: model actors (each loads the model once). gpus_per_actor / cpus_per_actor: what each holds.
        read_workers: read + preprocess tasks at once. read_cpus: CPUs per read task.
        max_new_tokens: answer length limit.
        max_scan_mb: largest decoded scan, from its header. budget_mb: image bytes of the whole run at once.
        retry_failed: answer again the studies recorded with an error.
        sr_folder: write one DICOM SR per answered series into this folder.
        split: with --manifest, only this split.
        address: a Ray cluster (auto, or ray://HEAD:10001); default: a local Ray for this run.
        num_cpus: CPUs of the local Ray (default: all). object_store_mb: its object store.
        progress: Ray Data's progress bars.
        limit: only the first LIMIT studies.
    """
    from radfm.batch.ray_pipeline import run_batch

    outcome = run_batch(output, manifest=manifest, folder=folder, dicomweb=dicomweb, qido=qido, prompt=prompt,
                        rules=rules, model=model, engine=engine, device=device, dtype=dtype, batch_size=batch_size,
                        actors=actors, gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor,
                        read_workers=read_workers, read_cpus=read_cpus, max_new_tokens=max_new_tokens,
                        max_scan_mb=max_scan_mb, budget_mb=budget_mb, retry_failed=retry_failed, sr_folder=sr_folder,
                        split=split, address=address, num_cpus=num_cpus, object_store_mb=object_store_mb,
                        progress=progress, limit=limit)
    print(outcome["summary"], end="")
