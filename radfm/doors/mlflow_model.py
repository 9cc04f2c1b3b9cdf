"""RadFM as an MLflow ``pyfunc`` model: log, register, load, serve, batch-score.

``radfm mlflow log-model MODEL_DIR --tracking_uri sqlite:///mlruns.db --registered_model_name radfm``
logs a saved RadFM folder (safetensors weights, config, tokenizer and ``processor_config.json``, the
preprocessing grid) as an MLflow model with

* the model code as a *model from code* (``radfm/doors/mlflow_pyfunc_code.py``; nothing is
  pickled) plus a copy of the ``radfm`` package (``code_paths``), so loading needs only the
  pinned requirements, not a checkout;
* requirements pinned to the versions installed when logging;
* a signature: input columns ``prompt`` (string, ``<image>`` placeholders optional) and
  ``images`` (list of paths: files or DICOM folders, as ``radfm generate`` takes), output
  columns ``answer`` and ``error`` (a row that fails gets its reason there; the others are
  still answered), and params ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``,
  ``seed``;
* an input example (a shipped phantom scan).

``mlflow.pyfunc.load_model(uri).predict(df)`` then answers like ``radfm generate``; so do
``mlflow models serve -m models:/radfm/1`` and ``mlflow.pyfunc.spark_udf`` (docs/interop.md).

:class:`LogMLflowModel` is the Ignite handler the training bundles use to log their final
model into the run that ``--tracking mlflow`` opened.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from radfm.utils.resources import bundle_dir

logger = logging.getLogger(__name__)
CODE_FILE = Path(__file__).resolve().with_name("mlflow_pyfunc_code.py")
PARAM_DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": -1}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+")


class RadFMPyfunc:
    """The pyfunc model (``mlflow.pyfunc.PythonModel`` duck type): loads the folder, answers rows.

    Each row goes through the request path (:mod:`radfm.answering.request`) exactly as
    ``radfm generate`` sends it: the same checks, limits and error messages.
    """

    def __init__(self) -> None:
        self.path = None

    def load_context(self, context) -> None:
        from radfm.answering.engines import load_answerer
        from radfm.answering.limits import Limits
        from radfm.answering.request import RequestPath
        from radfm.doors.generate import CLI_LIMITS

        # the engine logged with the model (log_model(engine=...)); none: $RADFM_ENGINE, else transformers
        engine = (getattr(context, "model_config", None) or {}).get("engine")
        placement = {"dtype": "auto"} if engine == "vllm" else {"device": "auto", "dtype": "auto"}
        answerer = load_answerer(context.artifacts["model_dir"], engine, **placement)
        self.path = RequestPath(answerer, Limits(**CLI_LIMITS))

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        """A DataFrame with ``answer`` and ``error`` for each row of ``prompt``/``images``."""
        import pandas as pd

        from radfm.answering.options import parse_options
        from radfm.doors.generate import run_generate

        options = parse_options(_options(params), self.path.limits)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = {"prompt", "images"} - set(frame.columns)
        if missing:
            raise ValueError(f"model input: missing column(s) {sorted(missing)}; expected 'prompt' (string) and "
                             "'images' (list of scan paths)")
        answers, errors = [], []
        for index, (prompt, images) in enumerate(zip(frame["prompt"], frame["images"])):
            try:  # the same path as `radfm generate`
                answers.append(run_generate(self.path, [str(p) for p in _paths(images)], str(prompt), options)["answer"])
                errors.append(None)
            except (ValueError, OSError) as error:  # per-row failure: record it and go on
                logger.warning("row %d: %s", index, error)
                answers.append(None)
                errors.append(f"row {index}: {error}")
        # object columns keep None as None (JSON null from `mlflow models serve`, not NaN)
        return pd.DataFrame({"answer": pd.Series(answers, dtype=object), "error": pd.Series(errors, dtype=object)})


def _paths(images: Any) -> list[Path]:
    import numpy as np

    if isinstance(images, str):
        images = json.loads(images) if images.strip().startswith("[") else [images]
    if isinstance(images, np.ndarray):
        images = images.tolist()
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"images: expected a list of paths, got {type(images).__name__}")
    return [Path(str(p)) for p in images]


def _options(params: dict[str, Any] | None) -> dict[str, Any]:
    """The pyfunc params as raw generation options (``seed`` -1: none); ``parse_options`` checks them, once."""
    values = {**PARAM_DEFAULTS, **(params or {})}
    unknown = set(values) - set(PARAM_DEFAULTS)
    if unknown:
        raise ValueError(f"params: unknown {sorted(unknown)}; expected {sorted(PARAM_DEFAULTS)}")
    seed = values["seed"]
    if not isinstance(seed, bool) and isinstance(seed, (int, float)) and -(2**63) <= seed < 0:
        values["seed"] = None  # anything else (inf, 10^400, "x") goes to parse_options, which names the field
    return values


def pinned_requirements() -> list[str]:
    """The toolkit's runtime requirements pinned to the installed versions (plus pandas for pyfunc)."""
    pins = []
    for requirement in importlib.metadata.requires("radfm-toolkit") or []:
        if "extra ==" in requirement:
            continue
        name = _NAME.match(requirement).group(0)
        try:
            version = importlib.metadata.version(name).split("+")[0]  # torch 2.x+cpu: PyPI has no local versions
            pins.append(f"{name}=={version}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(requirement.split(";")[0].strip())
    pins.append(f"pandas=={importlib.metadata.version('pandas')}")
    return sorted(set(pins), key=str.lower)


def _mlflow_type(name: str) -> str:
    """MLflow's type of a param, from the generation option's own type (the one definition of the field)."""
    from radfm.answering.options import GenerationOptions

    annotation = GenerationOptions.model_fields[name].annotation
    kinds = {bool: "boolean", int: "long", float: "double"}
    return next(kinds[kind] for kind in (bool, int, float) if kind is annotation or kind in getattr(annotation, "__args__", ()))


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt"), ColSpec(Array("string"), "images")]),
        outputs=Schema([ColSpec("string", "answer", required=False), ColSpec("string", "error", required=False)]),
        params=ParamSchema([
            ParamSpec(name, _mlflow_type(name), default) for name, default in PARAM_DEFAULTS.items()]),
    )


def _use_experiment(mlflow, experiment_name: str, tracking_uri: str | None) -> None:
    """Make ``experiment_name`` current; a new one on a SQLite store keeps its artifacts beside the database."""
    if mlflow.get_experiment_by_name(experiment_name) is None and tracking_uri and tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///"):]).resolve()
        mlflow.create_experiment(experiment_name, artifact_location=(database.parent / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment_name)


def _staged_code(folder: Path) -> Path:
    """A copy of the installed ``radfm`` package with ``radfm.transforms`` inside (for ``code_paths``)."""
    import radfm
    import radfm.transforms

    target = folder / "radfm"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(radfm.__file__).parent, target, ignore=ignore)
    transforms = Path(radfm.transforms.__file__).parent
    if transforms != target / "transforms" and not (target / "transforms").exists():
        shutil.copytree(transforms, target / "transforms", ignore=ignore)
    return target


def log_model(
    model_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    registered_model_name: str | None = None,
    experiment_name: str = "radfm",
    run_id: str | None = None,
    name: str = "radfm",
    example_scan: str | Path | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """Log ``model_dir`` as a pyfunc model (in ``run_id``, else a new run); returns uri, run id, version.

    ``engine`` (transformers | vllm) is recorded in the model's ``model_config``: the loaded model
    answers on it (none recorded: ``$RADFM_ENGINE`` where it is loaded, else transformers).
    """
    import mlflow

    from radfm.answering.engines import check_engine

    if engine is not None:
        check_engine(engine)
    with _restored_mlflow_globals(mlflow):
        return _log_model(mlflow, model_dir, tracking_uri=tracking_uri, registered_model_name=registered_model_name,
                          experiment_name=experiment_name, run_id=run_id, name=name, example_scan=example_scan,
                          engine=engine)


@contextlib.contextmanager
def _restored_mlflow_globals(mlflow):
    """Undo what logging changes process-wide: ``mlflow.set_tracking_uri`` also sets the
    ``MLFLOW_TRACKING_URI`` variable, which MONAI's ``MLFlowHandler`` then prefers over its own
    ``tracking_uri`` (later runs in the same process would land in this store), and
    ``set_experiment`` changes the active experiment."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    saved_uri, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    saved_experiment = fluent._active_experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
        fluent._active_experiment_id = saved_experiment


def _log_model(mlflow, model_dir: str | Path, *, tracking_uri: str | None, registered_model_name: str | None,
               experiment_name: str, run_id: str | None, name: str, example_scan: str | Path | None,
               engine: str | None = None) -> dict[str, Any]:
    from radfm.answering.identity import identity_of_model_dir

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a RadFM model folder (no config.json); save one with save_pretrained")
    if tracking_uri is not None:
        if tracking_uri.startswith("file:") or "://" not in tracking_uri:
            raise ValueError(f"tracking_uri={tracking_uri!r}: MLflow's file store is refused by current MLflow; "
                             "use a database URI such as sqlite:///mlruns.db (or an http(s) tracking server)")
        mlflow.set_tracking_uri(tracking_uri)
    if run_id is not None:  # log into that run: its experiment becomes the current one
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    else:
        _use_experiment(mlflow, experiment_name, tracking_uri)
    example_scan = Path(example_scan) if example_scan is not None else bundle_dir("radfm") / "sample_data" / "ct_phantom.nii.gz"
    input_example = None
    if example_scan.exists():
        import pandas as pd

        input_example = pd.DataFrame({"prompt": ["What is the modality of the input scan <image>?"],
                                      "images": [[str(example_scan.resolve())]]})
    identity = identity_of_model_dir(model_dir)
    from radfm.model.processing import RadFMImageProcessor  # the grid the model folder's processor records

    options = RadFMImageProcessor.from_model_dir(model_dir).options
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    with tempfile.TemporaryDirectory(prefix="radfm-mlflow-") as staging, mlflow.start_run(run_id=run_id) as run:
        code = _staged_code(Path(staging))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE_FILE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(code)],
            pip_requirements=pinned_requirements(),
            signature=signature(),
            input_example=input_example,
            registered_model_name=registered_model_name,
            model_config={"engine": engine} if engine is not None else None,
            metadata={"radfm": {**identity.to_dict(), "preprocess": preprocess, "verification": "UNVERIFIED"}},
        )
        mlflow.set_tags({"radfm.weights_sha256": identity.weights_sha256, "radfm.model_name": identity.name})
        run_id = run.info.run_id
    version = getattr(info, "registered_model_version", None)
    result = {"model_uri": info.model_uri, "run_id": run_id, "registered_model_name": registered_model_name,
              "registered_model_version": version,
              "models_uri": f"models:/{registered_model_name}/{version}" if registered_model_name and version else None}
    logger.info("logged %s as %s", model_dir, result)
    return result


class LogMLflowModel:
    """Ignite handler: at ``COMPLETED``, log the saved final model into the ``--tracking mlflow`` run.

    Place it after ``SavePretrained`` in the trainer's handlers, with the same ``model_dir``.
    It finds MONAI's ``MLFlowHandler`` on the engine (present only with ``--tracking mlflow``)
    and logs into its run and tracking URI; without tracking, or with ``enabled=False``, it
    does nothing. Rank 0 only.
    """

    def __init__(self, model_dir: str, registered_model_name: str | None = None, enabled: bool = True) -> None:
        self.model_dir = model_dir
        self.registered_model_name = registered_model_name or None
        self.enabled = bool(enabled)
        self.logged: dict[str, Any] | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        from radfm.engines.handlers import is_rank0, mlflow_tracker

        if not self.enabled or not is_rank0():
            return
        tracker = mlflow_tracker(engine)
        if tracker is None or tracker.cur_run is None:
            logger.info("no MLflow run (train with --tracking mlflow): the final model is not logged to MLflow")
            return
        self.logged = log_model(self.model_dir, tracking_uri=tracker.client.tracking_uri, run_id=tracker.cur_run.info.run_id,
                                registered_model_name=self.registered_model_name)


class MLflowCommands:
    """MLflow tools: ``radfm mlflow log-model MODEL_DIR --tracking_uri … --registered_model_name …``."""

    def log_model(
        self,
        model_dir: str,
        tracking_uri: str = "sqlite:///mlruns.db",
        registered_model_name: str | None = None,
        experiment_name: str = "radfm",
        name: str = "radfm",
        example_scan: str | None = None,
        engine: str | None = None,
    ) -> dict[str, Any]:
        """Log a RadFM model folder to MLflow as a pyfunc model (and register it).

        Args:
            model_dir: a saved RadFM folder (config.json, safetensors, tokenizer, processor_config.json).
            tracking_uri: MLflow tracking URI: a database (sqlite:///mlruns.db) or a tracking server.
            registered_model_name: register the model under this name (a new version each time).
            experiment_name: MLflow experiment of the run.
            name: the model's name inside the run.
            example_scan: the scan used as input example (default: a shipped phantom CT).
            engine: the engine the loaded model answers on: transformers | vllm (needs the vLLM environment).
        Returns the model URI, run id and registered version.
        """
        from radfm.answering.engines import check_engine
        from radfm.utils.cli import UsageError

        try:
            engine = check_engine(engine) if engine is not None else None
        except ValueError as error:
            raise UsageError(str(error)) from None
        return log_model(model_dir, tracking_uri=tracking_uri, registered_model_name=registered_model_name,
                         experiment_name=experiment_name, name=name, example_scan=example_scan, engine=engine)
