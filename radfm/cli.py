"""``radfm`` command line: a thin fire entry point, one target per subcommand.

Each subcommand lives next to the code it drives and is imported only when it is called,
so ``radfm score`` does not pay for loading torch models and a broken optional dependency
of one subcommand does not break the others. ``radfm SUBCOMMAND --help`` shows its options.

Every command line is checked against the subcommand's signature before it runs (fire itself
only complains after the work is done). Exit status: 0 ok, 1 input or runtime error (one line
on stderr naming the file/field; ``--debug`` shows the traceback), 2 usage error (unknown or
misspelled flag, bad flag value, missing argument), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import signal
import sys
from collections.abc import Iterator

# INPUT_ERRORS: errors a user causes, printed as one line (re-exported here with one_line)
from radfm.utils.cli import INPUT_ERRORS, one_line

# subcommand -> ("module:attribute", one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("radfm.doors.generate:generate", "answer a prompt about one or more scans (files or DICOM folders)"),
    "convert": ("radfm.model.convert:convert", "convert the published pytorch_model.bin (or an old-format model folder) to a transformers model folder"),
    "classify": ("radfm.doors.classify:classify", "classify scans with a classifier folder (the classification bundle's finetune)"),
    "evaluate": ("radfm.doors.evaluate:evaluate", "run a model over a manifest; write predictions, metrics, report, plot"),
    "batch": ("radfm.batch.cli:batch", "run a model over an archive on Ray Data (manifest, folder tree, DICOMweb); Parquet, resumable"),
    "score": ("radfm.metrics.score:score", "score existing predictions (our JSONL or the published CSV layout)"),
    "data": ("radfm.data.cli:DataCommands", "dataset tools: convert public layouts to manifests, make phantoms"),
    "train": ("radfm.engines.cli:train", "run a training bundle config (pretrain, instruct, classification)"),
    "serve": ("radfm.http.cli:serve", "local inference service (HTTP, 127.0.0.1 by default)"),
    "export-sr": ("radfm.dicom.sr:export_sr", "write a generated answer as a DICOM Comprehensive SR"),
    "info": ("radfm.model.info:info", "model sizes, parameter counts, device and dtypes"),
    "rate": ("radfm.rating.cli:RateCommands", "blinded radiologist rating of model answers in the browser"),
    "preprocess": ("radfm.model.info:preprocess", "preprocess a scan and show what a model receives (--model DIR)"),
    "mlflow": ("radfm.doors.mlflow_model:MLflowCommands", "MLflow: log-model (RadFM as a pyfunc model, registered)"),
    "node": ("radfm.node.cli:NodeCommands", "DICOM node: studies from the PACS in, RadFM reports (SR) back"),
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


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@contextlib.contextmanager
def quiet_interrupt() -> Iterator[None]:
    """Ctrl-C ends the command with our one line only.

    Why: Ignite logs "Engine run is terminating due to exception" and MONAI's ``StatsHandler`` logs the
    whole ``KeyboardInterrupt`` traceback before the exception reaches :func:`main`. On SIGINT this
    handler turns logging off, then raises ``KeyboardInterrupt`` as Python's own handler does.
    """
    def interrupt(signum: int, frame: object) -> None:
        logging.disable(logging.CRITICAL)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        logging.disable(logging.NOTSET)


def main(argv: list[str] | None = None) -> None:
    """Run ``radfm SUBCOMMAND ...``; exit status 0 ok, 1 input or runtime error, 2 usage error, 130 interrupted.

    The command line is checked against the subcommand's signature before anything runs
    (unknown flags name the nearest valid one). Errors print one line; ``--debug`` shows the traceback.
    """
    from radfm.utils.cli import UsageError, nearest

    argv = list(sys.argv[1:] if argv is None else argv)
    separator = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:separator]
    if debug:
        argv = [token for i, token in enumerate(argv) if not (token == "--debug" and i < separator)]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        guess = nearest(name, list(SUBCOMMANDS))
        hint = f" (did you mean {guess}?)" if guess else ""
        print(f"radfm: unknown subcommand {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    target = load_subcommand(name)
    if inspect.isclass(target):  # a command group: an instance lets `radfm data --help` list its commands
        target = target()
    prefix = f"radfm {name}"
    # the command line configures logging; library code only logs (progress lines as plain messages)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        interrupts = contextlib.nullcontext() if debug else quiet_interrupt()
        with interrupts:
            _run(target, name, rest, separator)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except UsageError as error:
        if debug:
            raise
        message = one_line(error).removeprefix(prefix + ": ")
        print(f"{prefix}: usage error: {message} (see radfm {name} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except SystemExit as exit_:
        if debug or exit_.code is None or isinstance(exit_.code, int):
            raise
        message = str(exit_.code)  # SystemExit("why"): Python prints it and exits with status 1
        raise SystemExit(message if message.startswith("radfm") else f"{prefix}: error: {one_line(exit_)}") from None
    except Exception as error:
        if debug:
            raise
        from radfm.utils.cli_bundle import user_error

        # a user error inside MONAI's wrappers (`radfm train` runs a bundle): say what it was
        cause = error if isinstance(error, INPUT_ERRORS) else user_error(error)
        if isinstance(cause, UsageError):  # e.g. a misspelled config key given to `radfm train`
            print(f"{prefix}: usage error: {one_line(cause)} (see radfm {name} --help)", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        if cause is not None:
            message = one_line(cause)
            print(f"{prefix}: error: {message.removeprefix(prefix + ': ')}", file=sys.stderr)
        else:
            print(f"{prefix}: error: {type(error).__name__}: {one_line(error)} "
                  "(unexpected; run again with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def _run(target, name: str, rest: list[str], separator: int) -> None:
    """Check the command line of subcommand ``name`` and run it through fire."""
    import fire

    from radfm.utils.cli import check_command_line

    check_command_line(target, rest)
    # fire shell-quotes a name with a space ('radfm score'); as program "radfm" with the
    # subcommand as a member, help and usage read "radfm score" unquoted
    if any(token in ("--help", "-h") for token in rest[:separator - 1]):
        # after fire's `--` a help flag is help even for commands that take **options
        rest = [token for token in rest if token not in ("--help", "-h")] + ["--", "--help"]
    fire.Fire({name: target}, command=[name, *rest], name="radfm")


if __name__ == "__main__":
    main()
