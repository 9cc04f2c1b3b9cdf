"""``radfm`` command line: a thin fire entry point, one target per subcommand.

Each subcommand lives next to the code it drives and is imported only when it is called,
so ``radfm score`` does not pay for loading torch models and a broken optional dependency
of one subcommand does not break the others. ``radfm SUBCOMMAND --help`` shows its options.
"""

from __future__ import annotations

import importlib
import inspect
import sys

# subcommand -> ("module:attribute", one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("radfm.interop.generate:generate", "answer a prompt about one or more scans (files or DICOM folders)"),
    "convert": ("radfm.model.checkpoint:convert", "convert the published pytorch_model.bin to our safetensors format"),
    "evaluate": ("radfm.engines.evaluate:evaluate", "run a model over a manifest; write predictions, metrics, report, plot"),
    "score": ("radfm.metrics.score:score", "score existing predictions (our JSONL or the published CSV layout)"),
    "data": ("radfm.data.cli:DataCommands", "dataset tools: convert public layouts to manifests, make phantoms"),
    "train": ("radfm.engines.cli:train", "run a training bundle config (pretrain, instruct, classification)"),
    "serve": ("radfm.interop.service:serve", "local inference service (HTTP, 127.0.0.1 by default)"),
    "export-sr": ("radfm.interop.sr:export_sr", "write a generated answer as a DICOM Comprehensive SR"),
    "info": ("radfm.interop.info:info", "model sizes, parameter counts, device and dtypes"),
    "rate": ("radfm.rating.cli:RateCommands", "blinded radiologist rating of model answers in the browser"),
    "preprocess": ("radfm.transforms.preprocess:preprocess_cli", "preprocess a scan and show what the model receives"),
    "mlflow": ("radfm.interop.mlflow_model:MLflowCommands", "MLflow: log-model (RadFM as a pyfunc model, registered)"),
    "demo": ("radfm.demo:main", "the quick-start job: the demo model answers questions about shipped scans"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: radfm SUBCOMMAND [ARGS] [--help]", "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def load_subcommand(name: str):
    """The callable or class that implements subcommand ``name``."""
    if name not in SUBCOMMANDS:
        raise KeyError(f"unknown subcommand {name!r}; choose from: {', '.join(SUBCOMMANDS)}")
    module_name, attribute = SUBCOMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def main(argv: list[str] | None = None) -> None:
    import fire

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"radfm: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    target = load_subcommand(name)
    if inspect.isclass(target):  # a command group: an instance lets `radfm data --help` list its commands
        target = target()
    # fire shell-quotes a name with a space ('radfm score'); as program "radfm" with the
    # subcommand as a member, help and usage read "radfm score" unquoted
    fire.Fire({name: target}, command=[name, *rest], name="radfm")


if __name__ == "__main__":
    main()
