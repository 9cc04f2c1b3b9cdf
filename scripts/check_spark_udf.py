"""The Spark alternative of ``radfm batch``, run once by hand: the MLflow model as ``mlflow.pyfunc.spark_udf``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python scripts/check_spark_udf.py [--folder outputs/spark_udf]

Needs ``pip install pyspark`` and a Java runtime (17+); neither is a dependency of the package (docs/batch.md).
Logs the demo model to a SQLite MLflow store in FOLDER, starts a local Spark session (``local[1]``, no UI)
and scores three rows (two answerable, one missing file) through ``spark_udf``; prints each row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bundles" / "radfm" / "models" / "demo"
SAMPLES = ROOT / "bundles" / "radfm" / "sample_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="outputs/spark_udf")
    args = parser.parse_args()
    folder = (ROOT / args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment
    started = time.time()
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    from radfm.doors.mlflow_model import log_model

    logged = log_model(str(DEMO), tracking_uri=uri, registered_model_name="radfm-spark")
    import mlflow.pyfunc
    from pyspark.sql import SparkSession

    mlflow.set_tracking_uri(uri)
    spark = (SparkSession.builder.master("local[1]").appName("radfm-spark-udf").config("spark.ui.enabled", "false")
             .getOrCreate())
    cases = spark.createDataFrame([
        ("What are the modalities of these scans? <image> <image>",
         [str(SAMPLES / "xray_phantom.png"), str(SAMPLES / "ct_phantom.nii.gz")]),
        ("What is the modality of the input scan <image>?", [str(SAMPLES / "mri_phantom.nii.gz")]),
        ("<image> Which modality?", [str(folder / "missing.nii.gz")]),
    ], "prompt string, images array<string>")
    radfm = mlflow.pyfunc.spark_udf(spark, logged["models_uri"], result_type="answer string, error string",
                                    env_manager="local", params={"max_new_tokens": 16})
    for row in cases.withColumn("out", radfm("prompt", "images")).select("prompt", "out.answer", "out.error").collect():
        print(json.dumps(row.asDict()))
    print(f"{time.time() - started:.1f} s (model logged, Spark started, 3 rows scored)")
    spark.stop()


if __name__ == "__main__":
    main()
