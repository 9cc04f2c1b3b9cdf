"""``radfm --help``, usage errors and ``radfm node status`` answer without importing torch or transformers.

Each command runs in a fresh interpreter (what a user's shell does), so modules imported by other tests
cannot hide a heavy import. RadFM must still register with transformers' Auto classes as soon as
transformers is imported, whichever of the two is imported first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "monai")

# runs `radfm ARGS` in-process and reports the exit status and which heavy modules got imported
_RUN_CLI = """
import json, sys
from radfm.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules]}), file=sys.__stderr__)
""" % (HEAVY,)  # noqa: UP031 (the code below is a template with braces of its own)


def _radfm(*args: str, cwd: Path = ROOT) -> dict:
    done = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0),
    (["generate", "--limt", "3"], 2),  # a misspelled flag: refused from the signature alone
    (["generate", "--help"], 0),
    (["node", "status", "--help"], 0),
    (["node", "status"], 2),  # --config is required
    (["info", "--presett", "tiny"], 2),
    (["preprocess", "--help"], 0),
    (["batch", "--help"], 0),  # radfm batch imports Ray, torch and the model only inside the run
    (["batch", "--ouptut", "x"], 2),
    (["serve", "--help"], 0),  # the flags live in radfm/http/cli.py; the app loads inside the run
    (["serve", "--prot", "1"], 2),
    (["evaluate", "--help"], 0),  # the loaders and text metrics load inside the run
    (["evaluate", "--manifset", "m.jsonl"], 2),
    (["data", "--help"], 0),  # the manifest's placeholder rule loads the processor when a manifest is read
])
def test_help_and_usage_errors_import_no_torch_or_transformers(args, code):
    result = _radfm(*args)
    assert result == {"code": code, "imported": []}


@pytest.mark.parametrize("args", [["--help"], ["generate", "--limt", "3"]])
def test_python_m_radfm_cli_imports_no_torch_or_transformers(args):
    """The entry point as ``python -m radfm.cli`` (runpy asks the import machinery for the module's code)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "radfm.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == (0 if args == ["--help"] else 2), done.stderr[-2000:]
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert imported.isdisjoint(HEAVY)


def test_node_status_imports_no_torch_or_transformers(tmp_path):
    (tmp_path / "node.json").write_text(json.dumps({"allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
                                                    "state_dir": "state"}), encoding="utf-8")
    from radfm.node.job_queue import JobQueue

    JobQueue(tmp_path / "state").close()  # an empty job table: status lists no jobs
    result = _radfm("node", "status", "--config", str(tmp_path / "node.json"), cwd=tmp_path)
    assert result == {"code": 0, "imported": []}


# prints the class transformers' Auto classes give for model_type "radfm"
_CHECK_REGISTERED = """
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
config = AutoConfig.for_model("radfm")
print(type(config).__name__, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)].__name__,
      PROCESSOR_MAPPING[type(config)].__name__)
"""


@pytest.mark.parametrize("first", [
    "import radfm\nimport transformers",  # the README's order
    "import transformers\nimport radfm",
    "import radfm\nfrom radfm.model.config import RadFMConfig",  # our own model code imports transformers first
])
def test_auto_classes_register_in_either_import_order(first):
    done = subprocess.run([sys.executable, "-c", first + "\n" + _CHECK_REGISTERED], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["RadFMConfig", "RadFMForConditionalGeneration", "RadFMProcessor"]
