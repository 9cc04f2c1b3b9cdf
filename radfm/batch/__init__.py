"""``radfm batch``: RadFM over an archive on Ray Data (docs/batch.md).

* :mod:`radfm.batch.archive_items` — the work: one item per study/series (or manifest case) from a
  manifest, a folder tree or a DICOMweb QIDO query, with its prompt (a prompt-bank entry, a text,
  or the node's series rules) and its output key.
* :mod:`radfm.batch.ray_pipeline` — the Ray Data pipeline: read + guard + preprocess as CPU tasks,
  generation in actors that load the model once, results written as they arrive;
  :func:`radfm.batch.ray_pipeline.run_batch` is the Python API.
* :mod:`radfm.batch.parquet_results` — the output: one Parquet file per finished block, written
  atomically; rerun skips what is there; read back deduplicated; the Markdown summary.

Nothing here imports Ray, torch or transformers at import time (``radfm batch --help`` stays fast).
"""
