"""Small ignite handlers for the bundles: progress bar, final safetensors export, MLflow params."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from radfm.model.processing import RadFMImageProcessor

logger = logging.getLogger(__name__)


def is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ProgressBar:
    """ignite's tqdm progress bar showing the running loss (rank 0 only).

    Redirected to a file, it writes a plain line every 30 s instead of ``\r`` redraws
    (:func:`radfm.utils.progress.tqdm_options`).
    """

    def __init__(self, output_key: str = "loss", persist: bool = False) -> None:
        self.output_key = output_key
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        if not is_rank0():
            return
        from ignite.handlers import ProgressBar as IgniteBar

        key = self.output_key

        def transform(output: Any) -> dict[str, float]:
            if isinstance(output, list) and output:
                output = output[0]
            if isinstance(output, dict) and key in output and output[key] is not None:
                return {key: float(output[key])}
            return {}

        from radfm.utils.progress import tqdm_options

        IgniteBar(persist=self.persist, **tqdm_options()).attach(engine, output_transform=transform)


class SavePretrained:
    """At ``COMPLETED``, write the model (safetensors + config) and ``processor`` with ``save_pretrained``,
    and the run's ``image_grid`` in the processor's ``processor_config.json``.

    ``processor``: the run's :class:`~radfm.model.processing.RadFMProcessor` (the bundle's ``@processor``,
    from :func:`radfm.engines.build.load_model`), so the folder loads on its own.

    LoRA adapters are merged into the LLM weights of the copy written, so the output loads
    with plain ``radfm.load`` / ``from_pretrained``.
    """

    def __init__(self, model: torch.nn.Module, output_dir: str, processor: Any, merge_lora: bool = True,
                 image_grid: dict | None = None) -> None:
        self.model = model
        self.processor = processor
        self.output_dir = output_dir
        self.merge_lora = merge_lora
        self.image_grid = image_grid

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        model = self._gathered_fsdp_model()  # collective: every rank must take part
        if not is_rank0():
            return
        model = model if model is not None else getattr(self.model, "module", self.model)
        language_model = model.language_model
        if self.merge_lora and hasattr(language_model, "merge_and_unload"):
            import copy

            model = copy.deepcopy(model)
            model.language_model = model.language_model.merge_and_unload()
        model.save_pretrained(self.output_dir, processor=self.processor)
        if self.image_grid is not None:  # the grid travels with the weights; inference reads it back
            RadFMImageProcessor.at_grid(self.image_grid).save_grid(self.output_dir)
        logger.info("saved model to %s", Path(self.output_dir).resolve())

    def _gathered_fsdp_model(self) -> torch.nn.Module | None:
        """For an FSDP model: a full CPU copy on rank 0 (None elsewhere and without FSDP)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not isinstance(self.model, FullyShardedDataParallel):
            return None
        from radfm.engines.distributed import FullStateModel
        from radfm.model.radfm import RadFMForConditionalGeneration

        state = FullStateModel(self.model).state_dict()
        if not is_rank0():
            return None
        inner = self.model.module
        full = RadFMForConditionalGeneration(inner.config)
        full.load_state_dict(state)
        return full


def mlflow_tracker(engine: Engine):
    """MONAI's ``MLFlowHandler`` attached to ``engine`` (``--tracking mlflow``), or ``None``."""
    from monai.handlers import MLFlowHandler

    for handlers in engine._event_handlers.values():
        for handler, _args, _kwargs in handlers:
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler):
                return owner
    return None


def source_commit() -> str:
    """The git commit of the checkout the ``radfm`` package runs from (``-dirty`` with local changes).

    ``"unknown"`` for an installed wheel (or without git): the package folder must sit directly
    in the repository, so a wheel inside some other repository's virtual environment is not
    credited with that repository's commit.
    """
    import subprocess

    import radfm

    package = Path(radfm.__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != package.parent:
            return "unknown"
        described = subprocess.run(["git", "-C", str(package.parent), "describe", "--always", "--dirty", "--abbrev=40"],
                                   capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() if described.returncode == 0 and described.stdout.strip() else "unknown"


# MONAI's `--tracking` names the executed config `<output_dir> + '/config_<time>.json'` by joining the raw
# config text of `output_dir` with `+`: right for an expression, a literal `DIR + '/config_....json'` for a
# plain `--output_dir DIR`, which MLFlowHandler then skips without a word.
_UNEVALUATED_CONFIG_PATH = re.compile(r"^(?P<dir>[^$].*) \+ '/(?P<name>config_[0-9_]+\.json)'$")


def executed_config_path(artifact: Any) -> Any:
    """The file MONAI wrote the executed config to, for an artifact path built from a plain ``output_dir``.

    Args:
        artifact: one entry of ``MLFlowHandler.artifacts``.

    Returns:
        ``DIR/config_<time>.json`` for the literal ``"DIR + '/config_<time>.json'"``; anything else unchanged.
    """
    match = _UNEVALUATED_CONFIG_PATH.match(artifact) if isinstance(artifact, str) else None
    return os.path.join(match["dir"], match["name"]) if match else artifact


class TrackingParams:
    """Hands ``params`` (learning rate, batch size, model sizes ...) to MONAI's ``MLFlowHandler``,
    points it at the executed config file (:func:`executed_config_path`: a plain ``--output_dir DIR``
    otherwise loses that artifact), and closes its run as FAILED when training raises. ``git_commit`` (:func:`source_commit`) is
    added to every run's params, so a result can be traced to the code that made it.

    ``--tracking mlflow`` appends an ``MLFlowHandler`` to the trainer handlers; before it starts
    its run, this handler puts ``params`` in its ``experiment_param`` so they are logged as
    MLflow params. MONAI ends the run only on completion, so a crash would leave it RUNNING;
    here an exception marks it FAILED and is raised again. Without tracking it does nothing.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.fail_run)

    def __call__(self, engine: Engine) -> None:
        tracker = mlflow_tracker(engine)
        if tracker is not None:
            params = {"git_commit": source_commit(), **self.params}
            tracker.experiment_param = {**(tracker.experiment_param or {}), **params}
            tracker.artifacts = tuple(executed_config_path(artifact) for artifact in tracker.artifacts)

    def fail_run(self, engine: Engine, error: BaseException) -> None:
        """Ignite's EXCEPTION_RAISED: end the MLflow run as FAILED, then raise ``error`` again."""
        tracker = mlflow_tracker(engine)
        run = getattr(tracker, "cur_run", None) if tracker is not None else None
        if run is not None and is_rank0():
            tracker.client.set_terminated(run.info.run_id, status="FAILED")
            tracker.cur_run = None
        raise error


class SaveGrid:
    """Handler: at the end of training, record ``image_grid`` beside the weights (``preprocess.json`` for a
    classifier folder, the processor's config for a RadFM folder)."""

    def __init__(self, model_dir: str | os.PathLike, image_grid: Mapping[str, Any]) -> None:
        self.model_dir = model_dir
        self.image_processor = RadFMImageProcessor.at_grid(image_grid)  # validated now, not at the end of training

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if is_rank0():
            self.image_processor.save_grid(self.model_dir)


class SaveClassifierConfig:
    """Handler: at the end of training, record the classifier's architecture beside its weights
    (``classifier.json``, :func:`radfm.model.classifier.save_classifier_config`), so the folder loads alone."""

    def __init__(self, model_dir: str | os.PathLike, network: torch.nn.Module, multi_label: bool,
                 class_names: list[str] | None = None) -> None:
        from radfm.model.classifier import classifier_config

        self.model_dir = model_dir
        self.network = network
        self.multi_label = multi_label
        self.class_names = class_names
        classifier_config(network, multi_label=multi_label, labels=class_names)  # checked now, not at the end

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from radfm.model.classifier import save_classifier_config

        if is_rank0():
            save_classifier_config(self.network, self.model_dir, multi_label=self.multi_label, labels=self.class_names)
