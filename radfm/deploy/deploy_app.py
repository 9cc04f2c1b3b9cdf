"""RadFM as a MONAI Deploy application (MONAI Deploy App SDK 4.0, in its own environment).

    make install-deploy
    .venv-deploy/bin/python -m radfm.deploy.deploy_app -i DICOM_DIR -o OUT [-m MODEL_DIR] [--rules RULES.json]

The input folder is first checked with radfm's scan guards and staged (``deploy_rules.stage_input``):
the SDK's loader reads only the series the rules (the node's, ``series_rules``) choose.

``compose()`` chains the SDK's own DICOM operators with two of ours::

    DICOMDataLoaderOperator          DICOM_DIR -> studies
      -> RadFMSeriesSelector           the node's series rules (--rules FILE, as in the node config):
                                       the SDK's selector on our rules translated (deploy_rules.sdk_selections),
                                       the choice made by the node's select_series (deploy_rules.select_sdk_series)
      -> DICOMSeriesToVolumeOperator   the selected series as a volume (checked: a readable image)
      -> RadFMOperator                 the series' files through the one request path
                                       (radfm.answering.request.RequestPath): our processor's grid,
                                       windows and scan guards, then the model
      -> RadFMSRWriterOperator         our Comprehensive SR (radfm.dicom.sr.build_sr), referencing
                                       the source series, UNVERIFIED, in OUT

The model is ``-m`` (a RadFM model folder; ``MODEL_DIR``/``HOLOSCAN_MODEL_PATH`` in a MAP) or
the demo model. Packaging for ``holoscan package`` (needs Docker): ``deploy/app.yaml`` and
``deploy/requirements.txt`` (docs/hospital.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SDK_MISSING = ("radfm deploy app: the MONAI Deploy App SDK is not installed in this Python ({python}); "
               "run `make install-deploy`, then `.venv-deploy/bin/python -m radfm.deploy.deploy_app "
               "-i DICOM_DIR -o OUT [-m MODEL_DIR]`")

try:
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import Application, ConditionType, Fragment, Operator, OperatorSpec
    from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
    from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
    from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
    from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
except ModuleNotFoundError as missing:  # run as a command without the SDK: one line saying what to run
    if __name__ == "__main__" and (missing.name or "").split(".")[0] in ("monai", "holoscan"):
        raise SystemExit(SDK_MISSING.format(python=sys.executable)) from None
    raise

# after the SDK's imports: without the SDK the command says what to run, in one line (above)
from radfm.deploy.deploy_rules import sdk_selections, select_sdk_series, stage_input  # noqa: E402
from radfm.dicom.series_rules import DEFAULT_RULES, SeriesRule, load_series_rules  # noqa: E402

logger = logging.getLogger("radfm.deploy")

def _series_files(dicom_series) -> list[str]:
    return [sop.get_native_sop_instance().filename for sop in dicom_series.get_sop_instances()]


class RadFMSeriesSelector(DICOMSeriesSelectorOperator):
    """The SDK's series selector deciding as the node does: of the series the SDK's own matching finds for
    our rules (:func:`~radfm.deploy.deploy_rules.sdk_selections`, all matches), the ones the node's
    ``select_series`` chooses (``min_instances``, the most instances, first rule wins), named by rule."""

    def __init__(self, fragment: Fragment, *args, series_rules: list[SeriesRule], **kwargs) -> None:
        self.series_rules = list(series_rules)
        super().__init__(fragment, *args, rules=json.dumps(sdk_selections(self.series_rules)), **kwargs)

    def filter(self, selection_rules, dicom_study_list, all_matched: bool = False,
               sort_by_sop_instance_count: bool = False) -> list:
        """Per study, the series :func:`~radfm.deploy.deploy_rules.select_sdk_series` chooses among the SDK's
        candidates (the selection's name is the rule's)."""
        chosen_list = []
        for candidates in super().filter(selection_rules, dicom_study_list, all_matched=True):
            study = StudySelectedSeries(candidates.study)
            for series, rule in select_sdk_series((s.series for s in candidates.selected_series), self.series_rules):
                study.add_selected_series(SelectedSeries(rule.name, series, None))
            if study.selected_series:
                chosen_list.append(study)
        return chosen_list


class RadFMOperator(Operator):
    """Selected series -> RadFM's answer: ``report`` = ``[{"text", "prompt", "series", "files", "rule"}]``.

    Each selected series goes through :meth:`RequestPath.run_blocking
    <radfm.answering.request.RequestPath.run_blocking>` as one DICOM folder (links to its files), so
    the answer is the one ``radfm generate`` or the node would give.
    """

    def __init__(self, fragment: Fragment, *args, model_dir: str | None, rules: list[SeriesRule],
                 max_new_tokens: int = 128, **kwargs) -> None:
        self.model_dir = model_dir
        self.prompts: dict[str, str] = {}
        for rule in rules:  # the selection name is the rule's name (the first rule of a name chose it)
            self.prompts.setdefault(rule.name, rule.prompt)
        self.max_new_tokens = max_new_tokens
        self._path = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.input("image").condition(ConditionType.NONE)  # the SDK's volume: a check that the series reads
        spec.output("report")

    def request_path(self):
        if self._path is None:
            from radfm.answering.answerer import ModelAnswerer
            from radfm.answering.request import RequestPath
            from radfm.model.loading import resolve_model_dir

            answerer = ModelAnswerer.from_model_dir(resolve_model_dir(self.model_dir), device="cpu")
            self._path = RequestPath(answerer)
        return self._path

    def compute(self, op_input, op_output, context) -> None:
        from radfm.answering.request import AnswerRequest, ScanInput

        studies = op_input.receive("study_selected_series_list") or []
        image = op_input.receive("image")
        if image is not None:
            logger.info("series volume from the SDK: %s", tuple(image.asnumpy().shape))
        reports = []
        path = self.request_path()
        for study in studies:
            for selected in study.selected_series:
                files = _series_files(selected.series)
                prompt = self.prompts[selected.selection_name]
                with tempfile.TemporaryDirectory(prefix="radfm-deploy-") as folder:
                    for i, file in enumerate(files):  # one folder per series, so the reader sees one series
                        os.symlink(os.path.abspath(file), Path(folder) / f"{i:05d}.dcm")
                    result = path.run_blocking(AnswerRequest(prompt, [ScanInput(str(selected.series.SeriesInstanceUID),
                                                                                path=Path(folder))],
                                                             {"max_new_tokens": self.max_new_tokens}))
                reports.append({"text": result.text or "", "prompt": result.prompt, "files": files,
                                "series": str(selected.series.SeriesInstanceUID), "rule": selected.selection_name,
                                "identity": path.answerer.identity})
        if not reports:  # the rules chose none of the staged series (e.g. all below min_instances)
            logger.warning("no series matched the series rules; nothing to answer")
        op_output.emit(reports, "report")


class RadFMSRWriterOperator(Operator):
    """``report`` -> one Comprehensive SR per series in ``output_folder`` (``radfm-sr-<series>.dcm``)."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("report")

    def compute(self, op_input, op_output, context) -> None:
        from radfm.dicom.sr import build_sr, read_dicom_headers, write_dataset

        self.output_folder.mkdir(parents=True, exist_ok=True)
        for report in op_input.receive("report"):
            sources = [header for file in report["files"] for header in read_dicom_headers(file)]
            sr = build_sr(report["text"], report["prompt"], sources, report["identity"],
                          parameters=[f"rule={report['rule']}", "app=monai-deploy"])
            path = write_dataset(sr, self.output_folder / f"radfm-sr-{report['series']}.dcm")
            logger.info("SR for series %s written: %s", report["series"], path.name)


class RadFMDeployApp(Application):
    """DICOM folder -> selected series -> RadFM -> Comprehensive SR (see the module docstring)."""

    name = "radfm-deploy"
    description = "RadFM answers about selected DICOM series, written as UNVERIFIED Comprehensive SR"
    version = "0.1"

    def __init__(self, *args, rules: list[SeriesRule] | None = None, max_new_tokens: int = 128,
                 input_folder: str | None = None, **kwargs) -> None:
        self.rules = list(rules or DEFAULT_RULES)
        self.max_new_tokens = max_new_tokens
        self.input_folder = input_folder  # the staged input (main); None: the SDK's -i as given
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        model = model_folder(context)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1),
                                         input_folder=Path(self.input_folder or context.input_path), name="dicom_loader")
        selector = RadFMSeriesSelector(self, series_rules=self.rules, name="series_selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        radfm = RadFMOperator(self, model_dir=model, rules=self.rules, max_new_tokens=self.max_new_tokens,
                              name="radfm")
        writer = RadFMSRWriterOperator(self, output_folder=Path(context.output_path), name="sr_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, radfm, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, radfm, {("image", "image")})
        self.add_flow(radfm, writer, {("report", "report")})


def model_folder(context: Any) -> str | None:
    """The ``-m`` folder when it is one (the SDK's default ``models`` when absent), else None: the demo model."""
    return str(context.model_path) if context.model_path and Path(context.model_path).is_dir() else None


def main(argv: list[str] | None = None) -> None:
    """``-i/-o/-m`` as the SDK reads them; ``--rules FILE`` (the node's series rules) and ``--max_new_tokens N``
    are ours.

    The input folder is first checked with radfm's scan guards and staged (``deploy_rules.stage_input``):
    the SDK's loader then reads only the series the rules choose. No such file: one line, exit status 0.
    """
    argv = list(sys.argv if argv is None else argv)
    rules_path, max_new_tokens = None, 128
    for flag in ("--rules", "--max_new_tokens"):
        if flag in argv:
            at = argv.index(flag)
            if at + 1 >= len(argv):
                raise SystemExit(f"{flag} needs a value")
            value = argv[at + 1]
            del argv[at:at + 2]
            if flag == "--rules":
                rules_path = value
            else:
                max_new_tokens = int(value)
    logging.basicConfig(level=logging.INFO)
    try:
        rules = DEFAULT_RULES if rules_path is None else load_series_rules(rules_path)
    except ValueError as error:
        raise SystemExit(f"radfm deploy app: {error}") from None
    sys.argv = argv  # the SDK parses -i/-o/-m from sys.argv
    from radfm.model.loading import resolve_model_dir

    context = Application.init_app_context(argv)
    # the SDK logs its default model_path ("models") even when that folder does not exist: say what is used
    logger.info("model: %s", resolve_model_dir(model_folder(context)))
    staging = tempfile.mkdtemp(prefix="radfm-deploy-input-")
    try:
        staged = stage_input(context.input_path, rules, staging)
        for reason in staged.skipped:
            logger.info("left out of the input: %s", reason)
        if not staged.kept:
            names = ", ".join(rule.name for rule in rules)
            print(f"radfm deploy app: no DICOM image in {context.input_path} matches the series rules ({names}); "
                  "nothing to answer", file=sys.stderr)
            return
        RadFMDeployApp(rules=rules, max_new_tokens=max_new_tokens, input_folder=staging).run()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
